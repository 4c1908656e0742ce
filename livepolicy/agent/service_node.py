"""The node endpoints of the agent: health, capabilities, pods and injected faults.

They answer about the node and its runtime, not about a migration, so they take no
migration lock; fault injection is offered only by runtimes that support it.
"""

from __future__ import annotations

from livepolicy import __version__
from livepolicy.agent.errors import not_found
from livepolicy.agent.faults import parse_fault
from livepolicy.agent.ids import check_namespace, check_pod_name, check_uid
from livepolicy.agent.runtimes.base import PodRef
from livepolicy.agent.service_core import API_VERSION, Json, ServiceCore, int_field


class NodeEndpoints(ServiceCore):
    """Health, capabilities, pods and faults of `AgentService`."""

    # -- node ----------------------------------------------------------------------------
    def health(self) -> Json:
        return {
            "status": "ok",
            "node": self.config.node,
            "runtime": self.runtime.name,
            "version": __version__,
        }

    def capabilities(self) -> Json:
        f = self.runtime.features()
        return {
            "node": self.config.node,
            "architecture": self.config.architecture,
            "runtime": self.runtime.name,
            "version": __version__,
            "api_version": API_VERSION,
            "features": {
                "dirty_tracking": f.dirty_tracking,
                "post_copy": f.post_copy,
                "tcp_established": f.tcp_established,
            },
            "fault_injection": f.fault_injection,
            "max_image_bytes": self.config.max_image_bytes,
            "max_json_bytes": self.config.max_json_bytes,
            "tls": self.config.tls_enabled,
        }

    def list_pods(self) -> Json:
        return {"pods": [p.to_json() for p in self.runtime.list_pods()]}

    def put_pod(self, namespace: str, name: str, body: Json) -> tuple[int, Json]:
        ref = PodRef(check_namespace(namespace), check_pod_name(name))
        uid = check_uid(body.get("uid"))
        memory = int_field(body, "memory_bytes", lo=1)
        dirty = int_field(body, "dirty_rate_bytes", default=0)
        pod, created = self.runtime.put_pod(ref, uid, memory, dirty)
        return (201 if created else 200), {"pod": pod.to_json(), "created": created}

    # -- faults --------------------------------------------------------------------------
    def _need_faults(self) -> None:
        if not self.runtime.features().fault_injection:
            raise not_found("not_found", "fault injection is only available with the sim runtime")

    def list_faults(self) -> Json:
        self._need_faults()
        return {"faults": [f.to_json() for f in self.faults.list()]}

    def add_fault(self, body: Json) -> Json:
        self._need_faults()
        self.faults.add(parse_fault(body))
        return self.list_faults()

    def clear_faults(self) -> Json:
        self._need_faults()
        return {"cleared": self.faults.clear()}
