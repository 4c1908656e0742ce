"""`livepolicy lab ...`: a cluster on this machine where pods really move (docs/lab.md)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from livepolicy.apply.engine import AgentEndpoint
from livepolicy.cli.common import EXIT_ERROR, json_option, no_color_option, print_json
from livepolicy.core.quantity import bytes_of, parse_bandwidth

LAB_HELP = ("Lab state directory (default: $LIVEPOLICY_LAB_DIR or /run/livepolicy-lab).")


class LabAgentPool:
    """The lab's agents as the apply engine's `AgentPool` (`--cluster lab`)."""

    def __init__(self, root: Path | str | None = None) -> None:
        from livepolicy.lab.lab import Lab

        lab = Lab(root).load()
        self.endpoints = {n.name: AgentEndpoint(n.name, n.agent_url, n.token())
                          for n in lab.nodes}

    def endpoint(self, node: str) -> AgentEndpoint:
        return self.endpoints[node]


@contextmanager
def _lab_errors() -> Iterator[None]:
    from livepolicy.agent.client import AgentClientError
    from livepolicy.agent.runtimes.netns import NetError
    from livepolicy.lab.lab import LabError

    try:
        yield
    except (LabError, NetError, AgentClientError, OSError, ValueError) as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(EXIT_ERROR)


def _root(ctx: click.Context) -> str | None:
    value = ctx.obj.get("root") if isinstance(ctx.obj, dict) else None
    return str(value) if value else None


def _size(value: str) -> int:
    try:
        return bytes_of(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _rate(value: str) -> int:
    if value in ("0", ""):
        return 0
    try:
        return int(value) if value.isdigit() else parse_bandwidth(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.group()
@click.option("--state-dir", envvar="LIVEPOLICY_LAB_DIR", type=click.Path(file_okay=False),
              help=LAB_HELP)
@click.pass_context
def lab(ctx: click.Context, state_dir: str | None) -> None:
    """A cluster on this machine: lab nodes (network namespaces, each with a criu agent),
    subnets (bridges) and pods (processes with their own IP) that really migrate."""
    ctx.ensure_object(dict)
    ctx.obj["root"] = state_dir


@lab.command()
@no_color_option
@click.option("--nodes", default=3, show_default=True, help="Number of lab nodes.")
@click.option("--subnets", default="2", show_default=True,
              help="A number of /24 subnets (198.18.1.0/24, ...) or a comma list of CIDRs "
                   "inside 198.18.0.0/15. Nodes are split over them in order.")
@click.option("--archs", default="amd64", show_default=True,
              help="Comma list of node architectures, given to nodes in turn (arm64 nodes "
                   "are pretend ones: same CPU, no dirty tracking).")
@click.option("--pods", default=2, show_default=True, help="Counter pods to start.")
@click.option("--pod-memory", default="0", help="Memory each pod holds (e.g. 100Mi).")
@click.option("--pod-dirty-rate", default="0", help="Memory each pod rewrites (e.g. 50MiB/s).")
@click.option("--prefix", default="lpl", show_default=True,
              help="Prefix of every namespace the lab creates.")
@click.option("--criu", type=click.Path(dir_okay=False), help="CRIU binary (default: "
              "$LIVEPOLICY_CRIU, then scripts/setup-criu.sh's wrapper).")
@json_option
@click.pass_context
def up(ctx: click.Context, nodes: int, subnets: str, archs: str, pods: int, pod_memory: str,
       pod_dirty_rate: str, prefix: str, criu: str | None, as_json: bool) -> None:
    """Build the lab: subnets, nodes, agents, and counter pods."""
    from livepolicy.lab.lab import Lab

    started = time.monotonic()
    with _lab_errors():
        the_lab = Lab.up(_root(ctx), nodes=nodes, subnets=subnets, archs=archs, prefix=prefix,
                         pods=pods, pod_memory=_size(pod_memory),
                         pod_dirty_rate=_rate(pod_dirty_rate),
                         criu=Path(criu) if criu else None)
        status = the_lab.status()
    if as_json:
        print_json(status)
        return
    _print_status(status)
    click.echo(f"\nLab up in {time.monotonic() - started:.1f}s. Plan with "
               "`livepolicy plan --cluster lab --policies DIR`; remove with "
               "`livepolicy lab down`.")


@lab.command()
@no_color_option
@json_option
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Nodes, agents, pods and pod IPs."""
    from livepolicy.lab.lab import Lab

    with _lab_errors():
        data = Lab(_root(ctx)).load().status()
    if as_json:
        print_json(data)
    else:
        _print_status(data)


def _print_status(data: dict[str, Any]) -> None:
    lab_info = data["lab"]
    click.echo(f"Lab {lab_info['name']} at {lab_info['root']} "
               f"(agents file: {lab_info['agents_file']})")
    click.echo("\nSubnets:")
    for s in data["subnets"]:
        click.echo(f"  {s['id']:<16} {s['cidr']:<16} {s['zone']:<12} client "
                   f"{s['client_ip']} (netns {s['client_netns']})")
    click.echo("\nNodes:")
    for n in data["nodes"]:
        agent = n["agent"]
        health = "ok" if isinstance(agent["health"], dict) else agent["health"]
        flags = " cordoned" if n["unschedulable"] else ""
        click.echo(f"  {n['name']:<8} {n['subnet']:<16} {n['zone']:<12} {n['architecture']:<6} "
                   f"{n['instance_type']:<10} {n['ip']:<14} agent {agent['url']} ({health})"
                   f"{flags}")
    click.echo("\nPods:")
    if not data["pods"]:
        click.echo("  (none)")
    for p in data["pods"]:
        mem = f"{p['memory_bytes'] / 2**20:.0f}Mi" if p["memory_bytes"] else "-"
        click.echo(f"  {p['namespace'] + '/' + p['name']:<24} {p['node']:<8} {p['ip']:<14} "
                   f"{p['state']:<9} counter {p['counter']:<8} memory {mem}")


@lab.command()
@no_color_option
@json_option
@click.pass_context
def down(ctx: click.Context, as_json: bool) -> None:
    """Remove every namespace, link, rule, process and file the lab created."""
    from livepolicy.lab.lab import Lab, lab_root

    with _lab_errors():
        the_lab = Lab(_root(ctx))
        if not the_lab.root.exists():
            result: dict[str, Any] = {"removed": False, "root": str(lab_root(_root(ctx)))}
        else:
            result = {"removed": True, **the_lab.down().to_json()}
    if as_json:
        print_json(result)
    elif not result["removed"]:
        click.echo(f"No lab at {result['root']}.")
    else:
        click.echo(f"Lab removed: {result['processes_stopped']} process(es) stopped, "
                   f"{result['netns_deleted']} namespace(s) deleted.")
        for item in result["leftovers"]:
            click.echo(f"  still there: {item}", err=True)
    if result.get("leftovers"):
        sys.exit(EXIT_ERROR)


@lab.group()
def pod() -> None:
    """Create or delete lab pods."""


@pod.command("create")
@no_color_option
@click.argument("name")
@click.option("--namespace", "-n", default="default", show_default=True)
@click.option("--node", help="Node to start it on (default: the one with the fewest pods).")
@click.option("--memory", default="0", help="Memory the pod holds (e.g. 100Mi, 1Gi).")
@click.option("--dirty-rate", default="0", help="Memory it rewrites (e.g. 50MiB/s).")
@click.option("--label", "-l", multiple=True, help="KEY=VALUE label (repeatable).")
@json_option
@click.pass_context
def pod_create(ctx: click.Context, name: str, namespace: str, node: str | None, memory: str,
               dirty_rate: str, label: tuple[str, ...], as_json: bool) -> None:
    """Start a counter pod."""
    from livepolicy.lab.lab import Lab

    labels = dict(item.split("=", 1) for item in label if "=" in item)
    with _lab_errors():
        the_lab = Lab(_root(ctx)).load()
        rec = the_lab.create_pod(name, namespace=namespace, node=node, memory=_size(memory),
                                 dirty_rate=_rate(dirty_rate), labels=labels)
        where, _ = the_lab.find_pod(rec.key)
    if as_json:
        print_json({"pod": rec.key, "node": where.name, "ip": rec.ip, "port": rec.port,
                    "uid": rec.uid})
    else:
        click.echo(f"Pod {rec.key} runs on {where.name} at {rec.ip}:{rec.port}.")


@pod.command("delete")
@no_color_option
@click.argument("pod_ref", metavar="NS/NAME")
@click.pass_context
def pod_delete(ctx: click.Context, pod_ref: str) -> None:
    """Stop a pod and remove its namespace."""
    from livepolicy.lab.lab import Lab

    with _lab_errors():
        Lab(_root(ctx)).load().delete_pod(pod_ref)
    click.echo(f"Pod {pod_ref} deleted.")


@lab.command()
@no_color_option
@click.argument("node")
@click.option("--undo", is_flag=True, help="Uncordon.")
@click.pass_context
def cordon(ctx: click.Context, node: str, undo: bool) -> None:
    """Mark a node unschedulable in the lab's snapshot (policies with `cordoned: true`)."""
    from livepolicy.lab.lab import Lab

    with _lab_errors():
        Lab(_root(ctx)).load().cordon(node, not undo)
    click.echo(f"Node {node} {'uncordoned' if undo else 'cordoned'}.")


@lab.command()
@no_color_option
@click.option("--out", type=click.Path(dir_okay=False), help="Write to FILE (default: stdout).")
@click.pass_context
def snapshot(ctx: click.Context, out: str | None) -> None:
    """The lab as a cluster snapshot (what `--cluster lab` reads), in JSON."""
    from livepolicy.lab.source import LabSource

    with _lab_errors():
        try:
            doc = LabSource(_root(ctx)).snapshot()
        except Exception as exc:  # DiagnosticError: no lab
            raise OSError(str(exc)) from None
    text = json.dumps(doc, indent=2) + "\n"
    if out:
        Path(out).write_text(text, encoding="utf-8")
        click.echo(f"Wrote {out}.")
    else:
        sys.stdout.write(text)


@lab.command()
@no_color_option
@click.argument("pod_ref", metavar="NS/NAME")
@click.argument("node")
@json_option
@click.pass_context
def move(ctx: click.Context, pod_ref: str, node: str, as_json: bool) -> None:
    """Move one pod to NODE through the agents (prepare ... commit), printing the freeze."""
    from livepolicy.lab.lab import Lab
    from livepolicy.lab.move import move_pod

    with _lab_errors():
        result = move_pod(Lab(_root(ctx)).load(), pod_ref, node)
    if as_json:
        print_json(result.to_json())
    elif result.ok:
        click.echo(f"Moved {result.pod}: {result.source} -> {result.destination}; freeze "
                   f"{result.freeze_s * 1000:.0f} ms, total {result.total_s * 1000:.0f} ms, "
                   f"{result.memory_bytes / 2**20:.1f} MiB of memory pages, "
                   f"{result.image_bytes / 2**10:.0f} KiB sealed image.")
    else:
        click.echo(f"Not moved: {result.error}" + ("; rolled back, the pod runs on "
                   f"{result.source}" if result.rolled_back else ""), err=True)
    if not result.ok:
        sys.exit(EXIT_ERROR)


@lab.command()
@no_color_option
@click.argument("pod_ref", metavar="NS/NAME")
@click.option("--interval", default=0.01, show_default=True,
              help="Seconds between a reply and the next request.")
@click.option("--duration", default=0.0, help="Stop after this many seconds (0: Ctrl-C).")
@click.option("--slow", default=0.1, show_default=True,
              help="Report every wait for a reply longer than this (seconds).")
@json_option
@click.pass_context
def client(ctx: click.Context, pod_ref: str, interval: float, duration: float, slow: float,
           as_json: bool) -> None:
    """Stream requests to a pod over one TCP connection and check every reply."""
    from livepolicy.lab.client import StreamClient
    from livepolicy.lab.lab import Lab

    with _lab_errors():
        the_lab = Lab(_root(ctx)).load()
        node, rec = the_lab.find_pod(pod_ref)
        sub = the_lab.subnet(node.subnet)

        def on_reply(seq: int, count: int, gap: float) -> None:
            if gap > slow and not as_json:
                click.echo(f"{time.strftime('%H:%M:%S')} seq {seq}: reply after "
                           f"{gap * 1000:.0f} ms (counter {count}, same connection)")

        c = StreamClient(sub["client_netns"], rec.ip, rec.port, interval=interval, slow=slow,
                         strict_count=False, on_reply=on_reply)
        c.start()
        if not as_json:
            click.echo(f"Streaming to {rec.key} at {rec.ip}:{rec.port} from "
                       f"{sub['client_ip']} (local port {c.stats.local_port}); Ctrl-C stops.")
        deadline = time.monotonic() + duration if duration else None
        last = time.monotonic()
        try:
            while not c.stats.errors and (deadline is None or time.monotonic() < deadline):
                time.sleep(0.05)
                if not as_json and time.monotonic() - last >= 5:
                    last = time.monotonic()
                    click.echo(f"{time.strftime('%H:%M:%S')} {c.stats.replies} replies, "
                               f"counter {c.stats.last_count}, longest wait "
                               f"{c.stats.max_gap_s * 1000:.0f} ms")
        except KeyboardInterrupt:
            pass
        stats = c.stop()
    if as_json:
        print_json(stats.to_json())
    else:
        verdict = "no error" if stats.ok else f"ERRORS: {'; '.join(stats.errors)}"
        click.echo(f"{stats.sent} requests, {stats.replies} replies over one connection, "
                   f"counter {stats.first_count} -> {stats.last_count}, longest wait "
                   f"{stats.max_gap_s * 1000:.0f} ms; {verdict}.")
    if not stats.ok:
        sys.exit(EXIT_ERROR)
