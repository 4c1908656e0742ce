"""Runtime registry: the agent picks its runtime by name (`--runtime sim|criu|kubelet`)."""

from __future__ import annotations

import threading

from livepolicy.agent.config import AgentConfig
from livepolicy.agent.runtimes.base import Features, Runtime
from livepolicy.agent.runtimes.sim import SimRuntime

RUNTIMES = ("sim", "criu", "kubelet")


def make_runtime(config: AgentConfig, stop: threading.Event) -> Runtime:
    if config.runtime == "sim":
        features = Features(
            dirty_tracking=config.dirty_tracking_enabled,
            post_copy=config.post_copy,
            tcp_established=config.tcp_established,
            fault_injection=True,
        )
        return SimRuntime(
            state_dir=config.state_dir,
            node=config.node,
            time_scale=config.time_scale,
            bandwidth_bytes=config.bandwidth_bytes,
            features=features,
            max_image_bytes=config.max_image_bytes,
            stop=stop,
        )
    if config.runtime == "criu":
        # Imported here: the sim agent never needs CRIU, nsenter or nftables.
        from livepolicy.agent.runtimes.criu import CriuRuntime, CriuTool, NodeNetwork, find_criu

        if config.criu_node_config is None:
            raise ValueError("the criu runtime needs --criu-node-config")
        return CriuRuntime(
            state_dir=config.state_dir,
            node=config.node,
            tool=CriuTool(find_criu(config.criu_path)),
            network=NodeNetwork.load(config.criu_node_config),
            architecture=config.architecture,
            dirty_tracking_allowed=config.dirty_tracking_enabled,
            fault_injection=config.fault_injection,
            stop=stop,
        )
    if config.runtime == "kubelet":
        from livepolicy.agent.runtimes.kubelet_setup import make_kubelet_runtime

        return make_kubelet_runtime(config, stop)
    raise ValueError(f"unknown runtime {config.runtime!r} (available: {', '.join(RUNTIMES)})")
