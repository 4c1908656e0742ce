"""TPL002: a node template's instance families form one generation set."""

from livepolicy.core.catalog import family_info, family_of, generation_set
from livepolicy.policy.models import NodeTemplate, SettingsSpec
from livepolicy.rules.base import TemplateProblem, TemplateRule


class TemplateGenerationSet(TemplateRule):
    """All instance families of a template must be known and in one generation set,
    matching the template's architecture.

    Otherwise the template would provision nodes between which pods cannot migrate
    (c3 with c5), or nodes of the wrong architecture (c6g on an amd64 template).
    """

    code = "TPL002"
    name = "template-one-generation-set"

    def check(self, template: NodeTemplate, settings: SettingsSpec) -> list[TemplateProblem]:
        problems = []
        sets: dict[str, list[str]] = {}
        for i, fam in enumerate(template.spec.instance_families):
            gs = generation_set(fam, settings.generation_sets)
            info = family_info(family_of(fam))
            if gs is None:
                problems.append(TemplateProblem(f"/spec/instanceFamilies/{i}",
                                                f"unknown instance family {fam!r}"))
                continue
            sets.setdefault(gs, []).append(fam)
            arch = template.spec.architecture
            if info and arch in ("amd64", "arm64") and info.architecture != arch:
                problems.append(TemplateProblem(
                    f"/spec/instanceFamilies/{i}",
                    f"instance family {fam} is {info.architecture}, but the template is {arch}"))
        if len(sets) > 1:
            detail = "; ".join(f"{gs}: {', '.join(f)}" for gs, f in sorted(sets.items()))
            problems.append(TemplateProblem(
                "/spec/instanceFamilies",
                f"instance families span {len(sets)} generation sets ({detail}); pods could "
                "not migrate between them"))
        return problems
