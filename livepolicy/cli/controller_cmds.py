"""`livepolicy controller`: options, signals and exit codes; the work is in
`livepolicy.controller` (imported when the command runs: the Kubernetes client is slow
to load, and no other command needs it)."""

from __future__ import annotations

import os
import signal
import socket
import sys
from pathlib import Path
from types import FrameType

import click

from livepolicy.cli.common import EXIT_OK, fail, no_color_option
from livepolicy.core.diagnostics import Diagnostic

SA_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
DEFAULT_NAMESPACE = "livepolicy-system"


def default_namespace(path: Path = SA_NAMESPACE_FILE) -> str:
    try:
        ns = path.read_text().strip()
    except OSError:
        return DEFAULT_NAMESPACE
    return ns or DEFAULT_NAMESPACE


def _address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise click.BadParameter(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


@click.command()
@no_color_option
@click.option("--kubeconfig", metavar="FILE", help="kubeconfig file (default: in-cluster "
              "service account inside a pod, else the usual chain).")
@click.option("--context", metavar="NAME", help="kubeconfig context.")
@click.option("--policies", "policies_dir", metavar="DIR", type=click.Path(file_okay=False),
              help="Directory of policy files (e.g. a mounted ConfigMap), re-read on change.")
@click.option("--policies-configmap", metavar="NAMESPACE/NAME",
              help="ConfigMap watched through the API; each data key is one policy file.")
@click.option("--namespace", metavar="NS", help="Namespace of the Lease (default: the pod's "
              f"namespace, else {DEFAULT_NAMESPACE}).")
@click.option("--lease-name", default="livepolicy-controller", show_default=True)
@click.option("--lease-duration", default=15.0, show_default=True,
              type=click.FloatRange(2, 3600), metavar="SECONDS",
              help="How long a leader that stopped renewing keeps the Lease.")
@click.option("--identity", metavar="NAME", help="Holder identity (default: hostname_pid).")
@click.option("--metrics-address", default="0.0.0.0:8080", show_default=True,
              metavar="HOST:PORT", help="Serves /metrics, /healthz and /readyz.")
@click.option("--resync", default=300.0, show_default=True, type=click.FloatRange(1, None),
              metavar="SECONDS", help="Full relist and reassessment period.")
@click.option("--debounce", default=0.5, show_default=True, type=click.FloatRange(0, 60),
              metavar="SECONDS", help="Quiet time that ends a burst of changes.")
@click.option("--dry-run", is_flag=True,
              help="Have the API server check every label change without saving it.")
@click.option("--json", "as_json", is_flag=True, help="Log JSON lines.")
def controller(kubeconfig: str | None, context: str | None, policies_dir: str | None,
               policies_configmap: str | None, namespace: str | None, lease_name: str,
               lease_duration: float, identity: str | None, metrics_address: str,
               resync: float, debounce: float, dry_run: bool, as_json: bool) -> None:
    """Keep the migration-enabled label true exactly where the rules allow it, forever.

    Watches the cluster and the policies, reassesses after every change, and writes
    only the label changes; several replicas elect one leader through a Lease. Stops
    cleanly (releasing the Lease) on SIGTERM or SIGINT. Logs go to standard error.
    """
    if bool(policies_dir) == bool(policies_configmap):
        fail([Diagnostic("controller", "give exactly one of --policies DIR and "
                         "--policies-configmap NAMESPACE/NAME", None)], False)
    if policies_configmap:
        ns, _, name = policies_configmap.partition("/")
        if not ns or not name or "/" in name:
            fail([Diagnostic("--policies-configmap", f"expected NAMESPACE/NAME, got "
                             f"{policies_configmap!r}", None)], False)
    try:
        host, port = _address(metrics_address)
    except click.BadParameter as exc:
        fail([Diagnostic("--metrics-address", exc.message, None)], False)

    from livepolicy.controller.controller import Controller, Options
    from livepolicy.controller.logs import EventLog
    from livepolicy.kube.client import KubeClient
    from livepolicy.kube.errors import KubeError

    log = EventLog(as_json=as_json)
    try:
        client = KubeClient.from_config(kubeconfig, context, prefer_in_cluster=True)
    except KubeError as exc:
        fail([exc.diagnostic("kube")], False)
    options = Options(policies_dir=policies_dir or "",
                      policies_configmap=policies_configmap or "",
                      namespace=namespace or default_namespace(), lease_name=lease_name,
                      lease_duration=lease_duration,
                      identity=identity or f"{socket.gethostname()}_{os.getpid()}",
                      metrics_host=host, metrics_port=port, resync=resync, dry_run=dry_run,
                      quiet=debounce)
    try:
        ctl = Controller(client, options, log)
    except OSError as exc:  # the metrics port
        fail([Diagnostic("--metrics-address", f"cannot listen on {metrics_address}: "
                         f"{exc.strerror or exc}", None)], False)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log("signal", signal=signal.Signals(signum).name)
        ctl.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    ctl.start()
    try:
        ctl.run()
    finally:
        client.close()
    sys.exit(EXIT_OK)
