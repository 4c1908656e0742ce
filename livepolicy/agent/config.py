"""What one agent process is: its node, address, credentials, storage and simulated link.

A frozen dataclass built by `main.run_agent` from the command line (or directly by tests);
`validate()` reports every problem at once.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

from livepolicy.agent.errors import ApiError
from livepolicy.agent.ids import check_node_name

MIN_TOKEN_LEN = 16
DEFAULT_PORT = 7474
DEFAULT_MAX_IMAGE_BYTES = 256 * 2**20
DEFAULT_MAX_JSON_BYTES = 2**20
DEFAULT_BANDWIDTH = 125_000_000  # 1 Gbit/s
TOKEN_ENV = "LIVEPOLICY_AGENT_TOKEN"
AUDIENCE_PREFIX = "livepolicy.io/agent/"  # + node name: tokens for one agent only

_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def host_architecture() -> str:
    machine = platform.machine().lower()
    return _ARCH.get(machine, machine or "unknown")


def read_token_file(path: Path) -> str:
    """The bearer token stored in `path` (surrounding whitespace stripped)."""
    return path.read_text(encoding="utf-8").strip()


@dataclass(frozen=True)
class AgentConfig:
    """Settings of one agent. `token` never appears in repr() or logs."""

    node: str
    token: str = field(repr=False)  # this node's own static token ("" with auth_allow only)
    state_dir: Path
    address: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    runtime: str = "sim"
    architecture: str = field(default_factory=host_architecture)
    # sim runtime: real sleep = simulated seconds * time_scale (tests use 0.001)
    time_scale: float = 1.0
    bandwidth_bytes: int = DEFAULT_BANDWIDTH
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    max_json_bytes: int = DEFAULT_MAX_JSON_BYTES
    # None: on unless the architecture lacks soft-dirty tracking (arm64), like CRIU.
    dirty_tracking: bool | None = None
    post_copy: bool = False
    tcp_established: bool = False
    # seconds a client may take to send one request (slow senders are cut off)
    request_timeout: float = 60.0
    # socket timeout of the source's connection to the destination during transfer
    peer_timeout: float = 120.0
    # optional TLS: serve https with this cert/key; require client certs signed by client_ca
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    # CA bundle used to verify https peers during transfer (default: system store)
    tls_ca_file: Path | None = None
    # criu runtime: the CRIU binary (None: $LIVEPOLICY_CRIU, then the setup script's
    # wrapper, then PATH) and the node's pod network description (JSON, see
    # runtimes/criu.py NodeNetwork)
    criu_path: Path | None = None
    criu_node_config: Path | None = None
    # accept /v1/faults with runtimes other than sim (test labs only)
    fault_injection: bool = False
    # kubelet runtime: kubelet checkpoint API, containerd and Kubernetes API settings
    kubelet: KubeletOptions | None = None
    # ServiceAccount tokens accepted from these users when their audience is auth_audience
    # (checked with a TokenReview through auth_kubeconfig, None: in-cluster); agent/auth.py
    auth_allow: tuple[str, ...] = ()
    auth_audience: str = ""
    auth_kubeconfig: Path | None = None

    @property
    def dirty_tracking_enabled(self) -> bool:
        if self.dirty_tracking is None:
            return self.architecture != "arm64"
        return self.dirty_tracking

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert_file is not None

    def problems(self) -> list[str]:
        out: list[str] = []
        try:
            check_node_name(self.node)
        except ApiError as exc:
            out.append(exc.message)
        if not self.token and not self.auth_allow:
            out.append("no credential: give a token, or users to accept (auth_allow)")
        elif self.token and len(self.token) < MIN_TOKEN_LEN:
            out.append(f"token must be at least {MIN_TOKEN_LEN} characters")
        if bool(self.auth_allow) != bool(self.auth_audience):
            out.append("auth_allow and auth_audience go together")
        if any(c.isspace() or not c.isprintable() or ord(c) > 126 for c in self.token):
            out.append("token must be printable ASCII without spaces")
        if not 0 <= self.port <= 65535:
            out.append("port must be 0-65535")
        if not 0 < self.time_scale <= 1000:
            out.append("time_scale must be in (0, 1000]")
        if self.bandwidth_bytes <= 0:
            out.append("bandwidth must be positive")
        if self.max_image_bytes <= 0 or self.max_json_bytes <= 0:
            out.append("size limits must be positive")
        if self.request_timeout <= 0 or self.peer_timeout <= 0:
            out.append("timeouts must be positive")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            out.append("tls_cert_file and tls_key_file go together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            out.append("tls_client_ca_file needs tls_cert_file and tls_key_file")
        if self.runtime == "criu" and self.criu_node_config is None:
            out.append("the criu runtime needs a node network config (--criu-node-config)")
        if self.runtime == "kubelet" and self.kubelet is not None:
            out.extend(self.kubelet.problems())
        return out

    def validate(self) -> None:
        problems = self.problems()
        if problems:
            raise ValueError("invalid agent config: " + "; ".join(problems))


def node_audience(node: str) -> str:
    """The audience of the ServiceAccount tokens an agent accepts: its node's alone."""
    return f"{AUDIENCE_PREFIX}{node}"


def token_from_env() -> str | None:
    value = os.environ.get(TOKEN_ENV)
    return value.strip() if value else None


@dataclass(frozen=True)
class KubeletOptions:
    """The `kubelet` runtime's settings (docs/kubelet-runtime.md)."""

    url: str = "https://127.0.0.1:10250"
    ca_file: Path | None = None  # verifies the kubelet's serving certificate
    # bearer token for the kubelet (default: the pod's ServiceAccount token)
    token_file: Path | None = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
    client_cert: Path | None = None  # or a client certificate instead of the token
    client_key: Path | None = None
    checkpoints_dir: Path = Path("/var/lib/kubelet/checkpoints")  # as mounted in the agent
    checkpoint_timeout_s: int = 600
    restore_timeout_s: float = 120.0
    ctr: str = "ctr"
    containerd_address: str = "/run/containerd/containerd.sock"
    containerd_config: Path = Path("/etc/containerd/config.toml")
    kubeconfig: Path | None = None  # None: the in-cluster ServiceAccount
    # Keep pod IPs and TCP connections (kubelet_address.py): the node's CNI IPAM is
    # livepolicy-ipam with this data directory, and CRIU has `tcp-established`.
    keep_address: bool = False
    ipam_dir: Path = Path("/var/lib/cni/livepolicy")

    def problems(self) -> list[str]:
        out = []
        if not self.url.startswith("https://"):
            out.append("--kubelet-url must be https://HOST[:PORT]")
        if (self.client_cert is None) != (self.client_key is None):
            out.append("--kubelet-client-cert and --kubelet-client-key go together")
        if self.checkpoint_timeout_s <= 0 or self.restore_timeout_s <= 0:
            out.append("kubelet timeouts must be positive")
        return out
