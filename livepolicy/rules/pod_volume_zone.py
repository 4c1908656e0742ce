"""ST001: zonal volumes (EBS, PVCs on EBS) pin the destination to their zone."""

from livepolicy.facts.model import NodeFacts, PodFacts, VolumeFacts, VolumeKind
from livepolicy.rules.base import Context, PodNodeRule, Severity, Verdict

_CROSS_NODE = (VolumeKind.NFS,)


def zonal(v: VolumeFacts) -> bool:
    if v.kind in (VolumeKind.EBS, VolumeKind.EPHEMERAL):
        return True
    return v.kind is VolumeKind.PVC and v.backend not in _CROSS_NODE


class VolumeZone(PodNodeRule):
    """The destination must be in the availability zone of every zonal volume.

    EBS volumes (in-tree or CSI, directly or through a PVC) attach only inside their zone;
    NFS and EFS work from any node; emptyDir, ConfigMap, Secret and projected volumes move
    with the pod. A zonal volume's zone comes from its PV's node affinity or labels, or,
    when unknown, from the source node it is attached to.
    """

    code = "ST001"
    name = "volume-zone"
    severity = Severity.BLOCK

    def relevant(self, pod: PodFacts) -> bool:
        return any(zonal(v) for v in pod.volumes)

    def check(self, pod: PodFacts, src: NodeFacts, dst: NodeFacts, ctx: Context) -> Verdict:
        wrong = []
        for v in pod.volumes:
            if zonal(v):
                zone = v.zone or src.zone
                if not zone or zone != dst.zone:
                    wrong.append(f"{v.claim or v.name} in {zone or '?'}")
        if wrong:
            return self.verdict(False, f"{dst.name} is in zone {dst.zone or '?'}; volume "
                                f"{', '.join(wrong)}", destination_zone=dst.zone,
                                volumes=wrong)
        return self.verdict(True, f"zonal volumes fit zone {dst.zone}",
                            destination_zone=dst.zone)
