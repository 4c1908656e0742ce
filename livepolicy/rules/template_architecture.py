"""TPL001: a node template declares exactly one architecture."""

from livepolicy.policy.models import NodeTemplate, SettingsSpec
from livepolicy.rules.base import TemplateProblem, TemplateRule

ARCHITECTURES = ("amd64", "arm64")


class TemplateArchitecture(TemplateRule):
    """A NodeTemplate's architecture must be amd64 or arm64, never "any".

    Pods never migrate across architectures, so a template that mixes them would produce
    nodes that cannot take each other's pods.
    """

    code = "TPL001"
    name = "template-single-architecture"

    def check(self, template: NodeTemplate, settings: SettingsSpec) -> list[TemplateProblem]:
        arch = template.spec.architecture
        if arch in ARCHITECTURES:
            return []
        why = ("'any' mixes architectures, and pods cannot live-migrate between amd64 and "
               "arm64" if arch.lower() == "any" else f"unknown architecture {arch!r}")
        return [TemplateProblem("/spec/architecture", f"{why}; set architecture to amd64 or "
                                "arm64")]
