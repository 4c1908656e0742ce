"""Command-line flags of the `kubelet` runtime and how the runtime is built from them.

Kept apart from `agent/main.py` and `runtimes/__init__.py` so the runtime's dozen options
live next to the runtime; the Kubernetes client is imported only when this runtime is
chosen (a sim or criu agent never loads it).
"""

from __future__ import annotations

import argparse
import threading
from pathlib import Path

from livepolicy.agent.config import AgentConfig, KubeletOptions
from livepolicy.agent.runtimes.base import Runtime


def add_flags(p: argparse.ArgumentParser) -> None:
    d = KubeletOptions()
    g = p.add_argument_group("kubelet runtime (docs/kubelet-runtime.md)")
    g.add_argument("--kubelet-url", default=d.url, help=f"kubelet API (default {d.url})")
    g.add_argument("--kubelet-ca", type=Path, help="CA of the kubelet's serving certificate")
    g.add_argument("--kubelet-token-file", type=Path, default=d.token_file,
                   help="bearer token for the kubelet (default: the ServiceAccount token)")
    g.add_argument("--kubelet-client-cert", type=Path, help="client certificate instead")
    g.add_argument("--kubelet-client-key", type=Path)
    g.add_argument("--kubelet-checkpoints-dir", type=Path, default=d.checkpoints_dir,
                   help="the kubelet's checkpoints directory as mounted in the agent")
    g.add_argument("--kubelet-checkpoint-timeout", type=int, default=d.checkpoint_timeout_s,
                   help="seconds the kubelet may take per container checkpoint")
    g.add_argument("--kubelet-restore-timeout", type=float, default=d.restore_timeout_s,
                   help="seconds a restored pod may take to run")
    g.add_argument("--ctr", default=d.ctr, help="containerd's ctr binary (default: ctr)")
    g.add_argument("--containerd-address", default=d.containerd_address)
    g.add_argument("--containerd-config", type=Path, default=d.containerd_config,
                   help="read to check that CRI restore is enabled")
    g.add_argument("--kubelet-keep-pod-address", action="store_true",
                   help="keep a moved pod's IP and TCP connections (the node's CNI IPAM is "
                   "livepolicy-ipam; docs/kubelet-runtime.md, IP and TCP)")
    g.add_argument("--kubelet-ipam-dir", type=Path, default=d.ipam_dir,
                   help=f"livepolicy-ipam's dataDir, as mounted in the agent (default "
                   f"{d.ipam_dir})")
    g.add_argument("--kubeconfig", type=Path,
                   help="Kubernetes API access for the kubelet runtime and --auth-allow "
                   "(default: the in-cluster ServiceAccount)")


def kubelet_options(args: argparse.Namespace) -> KubeletOptions:
    return KubeletOptions(
        url=args.kubelet_url, ca_file=args.kubelet_ca, token_file=args.kubelet_token_file,
        client_cert=args.kubelet_client_cert, client_key=args.kubelet_client_key,
        checkpoints_dir=args.kubelet_checkpoints_dir,
        checkpoint_timeout_s=args.kubelet_checkpoint_timeout,
        restore_timeout_s=args.kubelet_restore_timeout, ctr=args.ctr,
        containerd_address=args.containerd_address,
        containerd_config=args.containerd_config, kubeconfig=args.kubeconfig,
        keep_address=args.kubelet_keep_pod_address, ipam_dir=args.kubelet_ipam_dir)


def make_kubelet_runtime(config: AgentConfig, stop: threading.Event) -> Runtime:
    from livepolicy.agent.runtimes.kubelet import KubeletRuntime
    from livepolicy.agent.runtimes.kubelet_address import PodAddresses
    from livepolicy.agent.runtimes.kubelet_api import KubeletAuth, KubeletClient
    from livepolicy.agent.runtimes.kubelet_image import ContainerdImages
    from livepolicy.agent.runtimes.kubelet_pods import KubePodApi
    from livepolicy.kube.client import KubeClient
    from livepolicy.kube.errors import KubeError

    o = config.kubelet or KubeletOptions()
    auth = KubeletAuth(ca_file=o.ca_file, token_file=o.token_file,
                       client_cert=o.client_cert, client_key=o.client_key)
    try:
        client = KubeClient.from_config(str(o.kubeconfig) if o.kubeconfig else None)
    except KubeError as exc:
        raise ValueError(f"kubelet runtime: {exc}") from None
    return KubeletRuntime(
        state_dir=config.state_dir, node=config.node, kubelet=KubeletClient(o.url, auth),
        containerd=ContainerdImages(o.ctr, address=o.containerd_address,
                                    config_file=o.containerd_config),
        pods=KubePodApi(client), checkpoints_dir=o.checkpoints_dir,
        architecture=config.architecture, checkpoint_timeout_s=o.checkpoint_timeout_s,
        restore_timeout_s=o.restore_timeout_s, fault_injection=config.fault_injection,
        addresses=PodAddresses(o.ipam_dir) if o.keep_address else None, stop=stop)
