#!/usr/bin/env python3
"""`livepolicy-ipam`: the CNI IPAM plugin that gives a restored pod its old address.

Why: CRIU restores a TCP connection only onto the address it was made on ("Can't bind
inet socket back: Cannot assign requested address" otherwise), and a client reconnects
nowhere if the address moved. The kubelet runtime's restored copy is a new pod sandbox,
so its CNI must be told to hand it the source pod's address. This plugin wraps the
node's own IPAM (host-local, in `ipam.delegate`) and is a pass-through for every other pod.

It runs on the node, outside the agent, as containerd runs any CNI plugin: standard
library only, Python >= 3.9 (Amazon Linux 2023 has 3.9). Everything it knows is files in
`ipam.dataDir` (default `/var/lib/cni/livepolicy`), written by the agent of the node:

- `reserved/<namespace>_<pod>`: an address (destination agent, before it creates the
  copy). ADD for that pod returns it (with the prefix, gateway and routes of the delegate
  range it falls in), records `assigned/<container id>` and *gates* the sandbox: an
  nftables table (`nft` on the node) drops what arrives on any link but loopback, so the
  client's retransmissions, sent here once the copy's ARP announcement is out, never meet
  a socket CRIU has not restored yet (a reset would end the connection). The agent lifts
  the gate once the copy runs. DEL forgets the record.
- `moved/<namespace>_<pod>`: the source agent, at the commit. DEL for that pod's sandbox
  keeps the address allocated in the delegate (it lives on, on another node) and records
  `held/<container id>`; a pod created here later cannot get it.
- `released/<container id>`: the agent found no pod with a held address any more; the next
  call of this plugin hands the address back to the delegate (its own DEL).

Config: `{"type": "livepolicy-ipam", "dataDir": "...", "delegate": {"type": "host-local",
"ranges": [...], "routes": [...]}}`. `python3 kubelet_ipam.py install DIR` copies the
plugin to DIR/livepolicy-ipam (the chart's init container does).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any

PLUGIN = "livepolicy-ipam"
DEFAULT_DATA_DIR = "/var/lib/cni/livepolicy"
Conf = dict[str, Any]  # a network configuration (runs on 3.9: PEP 585 generics)
GATE_TABLE = "livepolicy-freeze"  # the agent's kubelet_address.TABLE: it lifts both
GATE = f"""add table inet {GATE_TABLE}
flush table inet {GATE_TABLE}
add chain inet {GATE_TABLE} in {{ type filter hook input priority -300; policy drop; }}
add rule inet {GATE_TABLE} in iifname "lo" accept
"""
SUPPORTED = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]


class CniError(Exception):
    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code, self.msg, self.details = code, msg, details


def pod_key(namespace: str, name: str) -> str:
    """File name for a pod: namespaces and pod names are DNS labels/subdomains (no `_`)."""
    return f"{namespace}_{name}"


def write_file(path: str, text: str) -> None:
    """Atomic: the plugin and the agent never see half a file."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def read_file(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None


def remove_file(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def list_dir(path: str) -> list[str]:
    """The sorted entries of a directory the agent or this plugin may not have made yet."""
    return sorted(os.listdir(path)) if os.path.isdir(path) else []


def _cni_args() -> dict[str, str]:
    pairs = (kv.split("=", 1) for kv in os.environ.get("CNI_ARGS", "").split(";") if "=" in kv)
    return {k: v for k, v in pairs}


def _delegate(conf: Conf, command: str | None = None,
              env: dict[str, str] | None = None) -> tuple[int, bytes]:
    ipam = conf["ipam"]["delegate"]
    exe = None
    for d in os.environ.get("CNI_PATH", "").split(os.pathsep):
        candidate = os.path.join(d, str(ipam.get("type", "")))
        if d and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            exe = candidate
            break
    if exe is None:
        raise CniError(7, f"delegate IPAM plugin {ipam.get('type')!r} not in CNI_PATH")
    body = dict(conf)
    body["ipam"] = ipam
    run_env = dict(os.environ)
    run_env.update(env or {})
    if command:
        run_env["CNI_COMMAND"] = command
    res = subprocess.run([exe], input=json.dumps(body).encode(), env=run_env,
                         stdout=subprocess.PIPE, timeout=60, check=False)
    return res.returncode, res.stdout


def _release(conf: Conf, data: str) -> None:
    """Hand back the held addresses the agent released (best effort: retried next call)."""
    released = os.path.join(data, "released")
    for cid in list_dir(released):
        held = read_file(os.path.join(data, "held", cid))
        if held is not None:
            ifname = json.loads(held).get("ifname", "eth0")
            rc, _ = _delegate(conf, "DEL", {"CNI_CONTAINERID": cid, "CNI_IFNAME": ifname,
                                            "CNI_NETNS": ""})
            if rc != 0:
                continue
            remove_file(os.path.join(data, "held", cid))
        remove_file(os.path.join(released, cid))


def _address_result(conf: Conf, address: str) -> Conf:
    ip = ipaddress.ip_address(address)
    ipam = conf["ipam"]["delegate"]
    for rng in (r for ranges in ipam.get("ranges") or [] for r in ranges):
        net = ipaddress.ip_network(rng["subnet"], strict=False)
        if ip in net:
            entry = {"address": f"{ip}/{net.prefixlen}"}
            if rng.get("gateway"):
                entry["gateway"] = rng["gateway"]
            return {"cniVersion": conf.get("cniVersion", "1.0.0"), "ips": [entry],
                    "routes": ipam.get("routes") or [], "dns": {}}
    raise CniError(11, f"reserved address {address} is in none of the delegate's ranges")


def _gate(netns: str) -> None:
    nsenter, nft = shutil.which("nsenter"), shutil.which("nft")
    if not netns or nsenter is None or nft is None:
        raise CniError(999, f"{PLUGIN}: gating the restored pod's network needs nsenter "
                       f"and nft on the node and a network namespace (CNI_NETNS={netns!r})")
    res = subprocess.run([nsenter, f"--net={netns}", "--", nft, "-f", "-"],
                         input=GATE.encode(), capture_output=True, timeout=30, check=False)
    if res.returncode != 0:
        raise CniError(999, f"{PLUGIN}: gating {netns}: "
                       f"{res.stderr.decode(errors='replace').strip()[-300:]}")


def handle(conf: Conf, command: str) -> Conf | None:
    """One CNI call; returns the JSON to print (None: nothing), raises CniError."""
    if command == "VERSION":
        return {"cniVersion": "1.0.0", "supportedVersions": SUPPORTED}
    data = str(conf.get("ipam", {}).get("dataDir") or DEFAULT_DATA_DIR)
    cid = os.environ.get("CNI_CONTAINERID", "")
    args = _cni_args()
    key = pod_key(args.get("K8S_POD_NAMESPACE", ""), args.get("K8S_POD_NAME", ""))
    _release(conf, data)
    assigned = os.path.join(data, "assigned", cid)
    held = os.path.join(data, "held", cid)
    if command == "ADD":
        reserved = read_file(os.path.join(data, "reserved", key))
        if reserved is not None and args.get("K8S_POD_NAME"):
            result = _address_result(conf, reserved.strip())
            _gate(os.environ.get("CNI_NETNS", ""))
            write_file(assigned, json.dumps({"pod": key, "address": reserved.strip()}))
            return result
    elif command in ("DEL", "CHECK"):
        if os.path.exists(assigned) or os.path.exists(held):
            if command == "DEL":
                remove_file(assigned)  # an address this plugin gave: nothing to release
                remove_file(os.path.join(data, "moved", key))
            return None
        moved = os.path.join(data, "moved", key)
        if command == "DEL" and args.get("K8S_POD_NAME") and os.path.exists(moved):
            write_file(held, json.dumps({"pod": key, "ifname": os.environ.get(
                "CNI_IFNAME", "eth0"), **json.loads(read_file(moved) or "{}")}))
            remove_file(moved)
            return None
    elif command == "GC":
        # The runtime lists the attachments it knows; the held ones are ours to keep.
        keep = conf.setdefault("cni.dev/valid-attachments", [])
        for name in list_dir(os.path.join(data, "held")):
            entry = json.loads(read_file(os.path.join(data, "held", name)) or "{}")
            keep.append({"containerID": name, "ifname": entry.get("ifname", "eth0")})
    rc, out = _delegate(conf)
    if rc != 0:
        sys.stdout.buffer.write(out)
        raise SystemExit(rc)
    return json.loads(out) if out.strip() else None


def install(directory: str) -> str:
    """Copies this file, executable, to DIR/livepolicy-ipam (atomically)."""
    target = os.path.join(directory, PLUGIN)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".livepolicy-ipam-")
    os.close(fd)
    shutil.copyfile(os.path.abspath(__file__), tmp)
    os.chmod(tmp, 0o755)
    os.replace(tmp, target)
    return target


def main() -> int:
    if sys.argv[1:2] == ["install"] and len(sys.argv) == 3:
        print(install(sys.argv[2]))
        return 0
    command = os.environ.get("CNI_COMMAND", "")
    version = "1.0.0"
    try:
        conf = json.loads(sys.stdin.read() or "{}") if command != "VERSION" else {}
        version = str(conf.get("cniVersion") or version)
        if command != "VERSION" and not isinstance(conf.get("ipam", {}).get("delegate"), dict):
            raise CniError(7, f"{PLUGIN}: ipam.delegate (the node's own IPAM) is required")
        out = handle(conf, command)
    except CniError as exc:
        json.dump({"cniVersion": version, "code": exc.code, "msg": exc.msg,
                   "details": exc.details}, sys.stdout)
        return 1
    except (OSError, ValueError, KeyError, subprocess.SubprocessError) as exc:
        json.dump({"cniVersion": version, "code": 999, "msg": f"{PLUGIN}: {exc}"}, sys.stdout)
        return 1
    if out is not None:
        json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
