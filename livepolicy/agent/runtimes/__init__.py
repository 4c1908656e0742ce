"""Runtime registry: the agent picks its runtime by name (`--runtime sim`)."""

from __future__ import annotations

import threading

from livepolicy.agent.config import AgentConfig
from livepolicy.agent.runtimes.base import Features, Runtime
from livepolicy.agent.runtimes.sim import SimRuntime

RUNTIMES = ("sim",)


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
    raise ValueError(f"unknown runtime {config.runtime!r} (available: {', '.join(RUNTIMES)})")
