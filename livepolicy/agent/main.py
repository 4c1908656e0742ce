"""`python -m livepolicy.agent` / `livepolicy agent`: parse flags, start, announce the port.

Once listening, one JSON line goes to stdout:
    {"event": "listening", "node": "n1", "address": "127.0.0.1", "port": 41234,
     "url": "http://127.0.0.1:41234", "pid": 4242}
so a parent can start agents on port 0 and learn where they are. Logs go to stderr.
The token comes from --token-file or $LIVEPOLICY_AGENT_TOKEN, never from argv (visible to
every local user in `ps`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from livepolicy.agent.config import (
    DEFAULT_MAX_IMAGE_BYTES,
    DEFAULT_PORT,
    TOKEN_ENV,
    AgentConfig,
    host_architecture,
    node_audience,
    read_token_file,
    token_from_env,
)
from livepolicy.agent.runtimes import RUNTIMES
from livepolicy.agent.runtimes.kubelet_setup import add_flags as _kubelet_flags
from livepolicy.agent.runtimes.kubelet_setup import kubelet_options
from livepolicy.agent.server import AgentServer, serve
from livepolicy.agent.tls_identity import ensure_identity, publish
from livepolicy.core.quantity import bytes_of, parse_bandwidth
from livepolicy.kube.errors import KubeError


def _bytes(value: str) -> int:
    try:
        return bytes_of(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _bandwidth(value: str) -> int:
    try:
        return int(value) if value.isdigit() else parse_bandwidth(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="livepolicy agent",
        description="Node agent: checkpoint, transfer and restore pods over an authenticated "
        "HTTP API.",
    )
    p.add_argument("--node", required=True, help="node name this agent serves")
    p.add_argument("--address", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port")
    p.add_argument("--token-file", type=Path, help=f"this node's own bearer token file (or "
                   f"${TOKEN_ENV}); not needed with --auth-allow")
    p.add_argument("--auth-allow", action="append", default=[], metavar="USER",
                   help="accept ServiceAccount tokens of USER (system:serviceaccount:NS:NAME) "
                   "whose audience is this node's (TokenReview; repeatable)")
    p.add_argument("--auth-audience", help=f"the audience those tokens must have (default "
                   f"{node_audience('<node>')})")
    p.add_argument("--state-dir", type=Path, required=True, help="images, records, sim state")
    p.add_argument("--runtime", choices=RUNTIMES, default="sim")
    p.add_argument("--architecture", default=host_architecture())
    p.add_argument("--time-scale", type=float, default=1.0, help="sim: real/simulated time")
    p.add_argument("--bandwidth", type=_bandwidth, default=125_000_000,
                   help="sim link bandwidth: bytes/s or 1Gbps, 100MiB/s (default 1Gbps)")
    p.add_argument("--max-image-bytes", type=_bytes, default=DEFAULT_MAX_IMAGE_BYTES,
                   help="largest image accepted (e.g. 256Mi)")
    tracking = p.add_mutually_exclusive_group()
    tracking.add_argument("--dirty-tracking", dest="dirty_tracking", action="store_true",
                          default=None, help="default: on unless arm64")
    tracking.add_argument("--no-dirty-tracking", dest="dirty_tracking", action="store_false")
    p.add_argument("--post-copy", action="store_true")
    p.add_argument("--tcp-established", action="store_true")
    p.add_argument("--tls-cert", type=Path, help="serve HTTPS with this certificate")
    p.add_argument("--tls-key", type=Path)
    p.add_argument("--tls-client-ca", type=Path, help="require client certificates (mTLS)")
    p.add_argument("--tls-ca", type=Path, help="CA bundle to verify https peers on transfer")
    p.add_argument("--tls-self-signed", action="store_true",
                   help="serve HTTPS with this node's own key and certificate, made in "
                   "STATE_DIR/tls on first start and kept (agent/tls_identity.py)")
    p.add_argument("--tls-ip", action="append", default=[], metavar="IP",
                   help="an address the self-signed certificate names (repeatable; "
                   "the node name always)")
    p.add_argument("--tls-publish-pod", metavar="NAMESPACE/NAME",
                   help="write the self-signed certificate on this pod (the agent's own) "
                   "before listening, for apply and peers to trust")
    p.add_argument("--criu", type=Path, help="criu runtime: the CRIU binary (default: "
                   "$LIVEPOLICY_CRIU, then scripts/setup-criu.sh's wrapper, then PATH)")
    p.add_argument("--criu-node-config", type=Path,
                   help="criu runtime: JSON describing this node's pod network")
    _kubelet_flags(p)
    p.add_argument("--fault-injection", action="store_true",
                   help="accept /v1/faults with a real runtime (test labs only)")
    p.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING"])
    return p


def config_from_args(args: argparse.Namespace) -> AgentConfig:
    if args.token_file is not None:
        token = read_token_file(args.token_file)
    else:
        token = token_from_env() or ""
    if not token and not args.auth_allow:
        raise ValueError(f"no credential: give --token-file, set ${TOKEN_ENV} or --auth-allow")
    if args.tls_self_signed and (args.tls_cert or args.tls_key or args.tls_client_ca):
        raise ValueError("--tls-self-signed makes the certificate: no --tls-cert, --tls-key "
                         "or --tls-client-ca with it")
    if (args.tls_ip or args.tls_publish_pod) and not args.tls_self_signed:
        raise ValueError("--tls-ip and --tls-publish-pod go with --tls-self-signed")
    return AgentConfig(
        node=args.node,
        token=token,
        state_dir=args.state_dir,
        address=args.address,
        port=args.port,
        runtime=args.runtime,
        architecture=args.architecture,
        time_scale=args.time_scale,
        bandwidth_bytes=args.bandwidth,
        max_image_bytes=args.max_image_bytes,
        dirty_tracking=args.dirty_tracking,
        post_copy=args.post_copy,
        tcp_established=args.tcp_established,
        tls_cert_file=args.tls_cert,
        tls_key_file=args.tls_key,
        tls_client_ca_file=args.tls_client_ca,
        tls_ca_file=args.tls_ca,
        criu_path=args.criu,
        criu_node_config=args.criu_node_config,
        fault_injection=args.fault_injection,
        kubelet=kubelet_options(args) if args.runtime == "kubelet" else None,
        auth_allow=tuple(args.auth_allow),
        auth_audience=(args.auth_audience or node_audience(args.node)) if args.auth_allow
        else "",
        auth_kubeconfig=args.kubeconfig,
    )


def _self_signed(config: AgentConfig, args: argparse.Namespace) -> AgentConfig:
    """With --tls-self-signed: this node's own certificate, published before listening
    so that no caller ever sees the agent Ready without knowing whom to trust."""
    if not args.tls_self_signed:
        return config
    ips = [*args.tls_ip, *([config.address] if config.address else [])]
    identity = ensure_identity(config.state_dir, config.node, ips)
    if args.tls_publish_pod:
        from livepolicy.kube.client import KubeClient  # only agents that publish

        client = KubeClient.from_config(str(args.kubeconfig) if args.kubeconfig else None)
        publish(client, args.tls_publish_pod, identity)
    logging.getLogger(__name__).info("TLS identity sha256 %s", identity.sha256)
    return replace(config, tls_cert_file=identity.cert_file, tls_key_file=identity.key_file)


def run_agent(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for bad flags or config)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    try:
        config = config_from_args(args)
        config.validate()
    except (OSError, ValueError) as exc:
        print(f"livepolicy agent: {exc}", file=sys.stderr)
        return 2

    try:
        config = _self_signed(config, args)
    except (OSError, ValueError) as exc:
        print(f"livepolicy agent: --tls-self-signed: {exc}", file=sys.stderr)
        return 1
    except KubeError as exc:
        print(f"livepolicy agent: --tls-publish-pod {args.tls_publish_pod}: cannot write the "
              f"certificate on the pod: {exc}", file=sys.stderr)
        return 1

    def announce(server: AgentServer) -> None:
        line = {
            "event": "listening",
            "node": config.node,
            "address": config.address,
            "port": server.port,
            "url": server.url,
            "pid": os.getpid(),
        }
        print(json.dumps(line), flush=True)

    try:
        serve(config, on_ready=announce)
    except (OSError, ValueError) as exc:
        print(f"livepolicy agent: {exc}", file=sys.stderr)
        return 1
    except KubeError as exc:  # --auth-allow reviews tokens through the Kubernetes API
        print(f"livepolicy agent: --auth-allow needs the Kubernetes API: {exc}",
              file=sys.stderr)
        return 1
    return 0
