"""CL001: only platforms with live-migration support (EKS) can migrate."""

from livepolicy.rules.base import ClusterRule, Context, Severity, Verdict


class Platform(ClusterRule):
    """The cluster must run on a supported platform (EKS by default).

    Live migration needs the platform's CNI to move a pod IP between nodes and keep TCP
    sessions; that exists on Amazon EKS. GKE and AKS are not supported. The supported list
    is `Settings.spec.supportedPlatforms`.
    """

    code = "CL001"
    name = "supported-platform"
    severity = Severity.BLOCK

    def check(self, ctx: Context) -> Verdict:
        platform = ctx.facts.info.platform or "unknown"
        supported = ctx.settings.supported_platforms
        ok = platform.lower() in {p.lower() for p in supported}
        if ok:
            return self.verdict(True, f"platform {platform} is supported", platform=platform)
        return self.verdict(False, f"platform {platform!r} does not support live migration "
                            f"(supported: {', '.join(supported)})", platform=platform)
