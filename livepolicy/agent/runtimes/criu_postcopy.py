"""Post-copy moves of the `criu` runtime: the pod runs on the destination before its memory.

Source: `checkpoint_lazy` freezes the pod with `criu dump --lazy-pages` (CRIU serves the
memory on loopback, the agent's relay seals it across the node network, see `criu_lazy`);
commit waits until every page was served; a rollback nobody pulled restores the pod here
from CRIU's own page server; a restarted agent serves a still-running lazy dump again.
Destination: `criu lazy-pages` in the gated pod namespace pulls through the agent, and
`criu restore --lazy-pages` runs the pod while its pages arrive (`lazy_pending`).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from livepolicy.agent.crypto import Sink
from livepolicy.agent.errors import ApiError, conflict
from livepolicy.agent.fsutil import ensure_private_dir
from livepolicy.agent.runtimes import criu_archive as archive
from livepolicy.agent.runtimes import criu_lazy as lazy
from livepolicy.agent.runtimes import netns as nets
from livepolicy.agent.runtimes.base import PodRef, RoundResult
from livepolicy.agent.runtimes.criu_node import CriuNode, Job, LazyDump, LazyPull
from livepolicy.agent.runtimes.criu_pods import PodRecord, query_stats
from livepolicy.agent.runtimes.criu_tool import CRIU_TIMEOUT_S, log_tail, pages_bytes

log = logging.getLogger("livepolicy.agent.criu")


class PostCopy(CriuNode):
    """The post-copy (lazy pages) path of `CriuRuntime`."""

    # -- post-copy (lazy pages) ------------------------------------------------------------
    def checkpoint_lazy(self, ref: PodRef, sink: Sink, *, on_pull: Callable[[], bool]
                        ) -> RoundResult:
        """Freeze the pod with `criu dump --lazy-pages`: its state goes into `sink`, its
        memory stays with CRIU (on loopback) and the agent's relay until the destination
        pulled it. `on_pull` is asked when a destination starts pulling."""
        if not self._features.post_copy:
            raise conflict("post_copy_unavailable", "this node cannot serve lazy pages "
                           "(no userfaultfd, or no node address for the relay)")
        with self._pod_lock(ref):
            rec = self._need_settled(ref)
            state = self._state(rec)
            started = time.monotonic()
            if state == "running":
                rec = self._dump_lazy(rec, on_pull)
            elif not rec.lazy or ref.key not in self._lazy:
                raise conflict("already_frozen", f"pod {ref.key} is frozen, not by a lazy "
                               "dump this agent serves")
            dump = self._lazy[ref.key]
            manifest = {
                **self._manifest(rec), "restore_dir": rec.dump_dir, "pages": None,
                "lazy": {"address": self.net.address, "port": dump.relay.port,
                         "key": base64.b64encode(dump.relay.key).decode(),
                         "stream_id": rec.lazy["stream_id"]},
            }
            archive.write_archive(sink, manifest, self._pod_dir(rec), [rec.dump_dir])
            log.info("lazy checkpoint %s: %.3fs", ref.key, time.monotonic() - started)
        return RoundResult(bytes=pages_bytes(self._pod_dir(rec) / rec.dump_dir),
                           dirty_bytes=0, seconds=time.monotonic() - started, frozen=True)

    def _dump_lazy(self, rec: PodRecord, on_pull: Callable[[], bool]) -> PodRecord:
        ok, value = lazy.pipe_max_ok()
        if not ok:
            raise conflict("post_copy_unavailable", f"fs.pipe-max-size is {value}: CRIU's "
                           f"lazy dump needs {lazy.PIPE_MAX_NEEDED} (the lab raises it)")
        pod_dir = ensure_private_dir(self._pod_dir(rec))
        target = pod_dir / "lazy"
        shutil.rmtree(target, ignore_errors=True)
        ensure_private_dir(target)
        stats = query_stats(rec.netns, rec.ip, rec.port, timeout=1.0)
        if stats is not None:
            rec.token = str(stats.get("token", rec.token))
            if isinstance(stats.get("count"), int):
                rec.counter = stats["count"]
        port = lazy.free_loopback_port(rec.netns)
        rec.state, rec.dump_dir, rec.work_dir = "freezing", "lazy", str(pod_dir)
        rec.lazy = {"criu_port": port, "stream_id": os.urandom(16).hex(), "old_netns": ""}
        self.pods.save(rec)
        args = ["dump", "-t", str(rec.pid), "-D", str(target), "--tcp-established",
                "--skip-in-flight", "--shell-job", "--network-lock", "nftables",
                "-o", "dump.log", "--lazy-pages", "--address", "127.0.0.1", "--port",
                str(port), "--status-fd", "{fd}"]
        t0 = time.monotonic()
        proc, code = lazy.start_with_status(self.tool.command(args, rec.netns))
        if proc is None:
            why = log_tail(target / "dump.log") or f"exit code {code}"
            self._keep_log(target / "dump.log", "dump", rec)
            if rec.alive():
                rec.state, rec.dump_dir, rec.lazy = "running", "", {}
                self.pods.save(rec)
            raise ApiError(500, "criu_failed", f"criu lazy dump of {rec.key} failed: {why}")
        nets.set_host_link(self._podnet(rec), False)  # its IP must not answer here now
        key = os.urandom(32)
        context = lazy.lazy_context(rec.namespace, rec.name, rec.uid, rec.lazy["stream_id"])
        relay = lazy.Relay(node_netns=self.net.netns, address=self.net.address,
                           pod_netns=rec.netns, criu_port=port, key=key, context=context,
                           on_pull=on_pull)
        start = nets.proc_start_time(proc.pid) or 0
        self._lazy[rec.key] = LazyDump(proc, proc.pid, start, relay)
        # kept beside the plaintext images they protect (tmpfs, 0600): a restarted agent
        # serves the pages again on the same port, as the sealed image describes them
        rec.lazy.update({"pid": proc.pid, "start": start, "relay_port": relay.port,
                         "relay_key": base64.b64encode(key).decode()})
        rec.state = "frozen"
        self.pods.save(rec)
        log.info("lazy dump %s: %.3fs to serve pages", rec.key, time.monotonic() - t0)
        return rec

    def _serve_lazy_again(self, rec: PodRecord) -> None:
        """After an agent restart: the relay of a lazy dump still serving, same port and
        key, so the sealed image already sent still describes it."""
        info = rec.lazy
        try:
            key = base64.b64decode(str(info["relay_key"]), validate=True)
            context = lazy.lazy_context(rec.namespace, rec.name, rec.uid,
                                        str(info["stream_id"]))
            ref = PodRef(rec.namespace, rec.name)
            relay = lazy.Relay(node_netns=self.net.netns, address=self.net.address,
                               pod_netns=rec.netns, criu_port=int(info["criu_port"]),
                               key=key, context=context, on_pull=lambda: self.pull_hook(ref),
                               port=int(info["relay_port"]))
        except (KeyError, ValueError, TypeError, OSError) as exc:
            log.warning("cannot serve the lazy pages of %s again: %s", rec.key, exc)
            return
        self._lazy[rec.key] = LazyDump(None, int(info.get("pid", 0)),
                                        int(info.get("start", 0)), relay)

    def _lazy_dump_alive(self, rec: PodRecord) -> bool:
        dump = self._lazy.get(rec.key)
        if dump is not None:
            return dump.alive()
        return bool(rec.lazy) and nets.proc_alive(int(rec.lazy.get("pid", 0)),
                                                  int(rec.lazy.get("start", 0)))

    def _wait_lazy_served(self, rec: PodRecord) -> None:
        """Commit on the source: the pod's memory leaves with the lazy dump; wait for it."""
        dump = self._lazy.pop(rec.key, None)
        if dump is not None:
            if not dump.relay.pulled.is_set():  # nobody pulls (or will): nothing to wait for
                dump.relay.close()
                dump.stop()
            elif not dump.wait(CRIU_TIMEOUT_S):
                log.warning("lazy dump of %s still serving after %.0fs: stopping it",
                            rec.key, CRIU_TIMEOUT_S)
                dump.stop()
            dump.relay.close()
        elif rec.lazy:
            nets.wait_for(lambda: not self._lazy_dump_alive(rec), CRIU_TIMEOUT_S, 0.05)
        self._keep_log(self._pod_dir(rec) / "lazy" / "dump.log", "dump", rec)

    def _resume_lazy(self, rec: PodRecord) -> None:
        """Rollback of a lazy dump nobody pulled: restore the pod on this node from CRIU's
        own page server, into a fresh namespace with the same IP and MAC (the frozen tasks
        and CRIU's copies of their sockets hold the old one until the dump ends)."""
        dump = self._lazy.get(rec.key)
        if dump is not None:
            dump.relay.close()
            if dump.relay.pulled.is_set():
                raise conflict("committed", f"the destination pulls the pages of {rec.key}")
        if not self._lazy_dump_alive(rec):
            raise ApiError(500, "criu_failed", f"pod {rec.key} cannot be resumed: its lazy "
                           "dump is gone")
        old = self._podnet(rec)
        netns, veth = self._new_names(PodRef(rec.namespace, rec.name),
                                      f"resume-{os.urandom(4).hex()}")
        rec.lazy["old_netns"], rec.lazy["old_veth"] = old.netns, old.host_veth
        rec.netns, rec.host_veth = netns, veth
        self.pods.save(rec)
        nets.create_pod_net(self._podnet(rec), gated=True)
        pod_dir = self._pod_dir(rec)
        proc = self._start_lazy_daemon(old.netns, int(rec.lazy["criu_port"]),
                                       pod_dir / "lazy", pod_dir / "lazy-work")
        try:
            self._restore_into(rec, pod_dir, "lazy", fresh=True, keep=True,
                               lazy_work=pod_dir / "lazy-work")
        except BaseException:
            lazy.stop_process(proc)
            nets.delete_pod_net(self._podnet(rec))
            rec.netns, rec.host_veth, rec.state = old.netns, old.host_veth, "frozen"
            rec.lazy.pop("old_netns", None)
            self.pods.save(rec)
            raise
        self._lazy.pop(rec.key, None)
        threading.Thread(target=self._after_lazy_resume, args=(rec, old, proc, dump),
                         daemon=True, name=f"lazy-resume-{rec.key}").start()

    def _after_lazy_resume(self, rec: PodRecord, old: nets.PodNet,
                           daemon: subprocess.Popen[bytes], dump: LazyDump | None) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            daemon.wait(CRIU_TIMEOUT_S)
        if dump is not None:
            dump.wait(30)
        nets.delete_pod_net(old)
        with self._pod_lock(PodRef(rec.namespace, rec.name)):
            cur = self.pods.get(rec.namespace, rec.name)
            if cur is not None and cur.lazy.get("old_netns") == old.netns:
                shutil.rmtree(self._pod_dir(cur), ignore_errors=True)
                cur.lazy, cur.dump_dir, cur.work_dir = {}, "", ""
                self.pods.save(cur)

    def _start_lazy_daemon(self, netns: str, port: int, images: Path,
                           work: Path) -> subprocess.Popen[bytes]:
        """`criu lazy-pages` fetching from 127.0.0.1:`port` in `netns`; ready to serve a
        `restore --lazy-pages -W work` once its socket exists."""
        shutil.rmtree(work, ignore_errors=True)
        ensure_private_dir(work)
        cmd = self.tool.command(["lazy-pages", "--page-server", "--address", "127.0.0.1",
                                 "--port", str(port), "-D", str(images), "-W", str(work),
                                 "-o", str(work / "lazy-pages.log")], netns)
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        if not lazy.wait_socket(work / "lazy-pages.socket", proc):
            lazy.stop_process(proc)
            raise ApiError(500, "criu_failed", "criu lazy-pages did not start: "
                           f"{log_tail(work / 'lazy-pages.log')}")
        return proc

    def _restore_lazy(self, manifest: dict[str, Any], rec: PodRecord, unpack: Path) -> None:
        """Destination of a post-copy move: relay CRIU's lazy-pages daemon (loopback in the
        gated pod namespace) to the source's relay, then `criu restore --lazy-pages`."""
        info = manifest["lazy"]
        try:
            address, port = str(info["address"]), int(info["port"])
            key = base64.b64decode(str(info["key"]), validate=True)
            context = lazy.lazy_context(rec.namespace, rec.name, rec.uid,
                                        str(info["stream_id"]))
        except (KeyError, ValueError, TypeError):
            raise ApiError(422, "image_invalid", "bad lazy pages description") from None
        # A spare namespace gets its address while CRIU's lazy-pages daemon starts in it.
        spare = nets.netns_exists(rec.netns)
        bring_up = Job(lambda: self._bring_up(rec)) if spare else None
        try:
            if bring_up is None:
                self._bring_up(rec)
            pull = lazy.Pull(pod_netns=rec.netns, node_netns=self.net.netns,
                             address=address, port=port, key=key, context=context)
        except BaseException:
            if bring_up is not None:
                with contextlib.suppress(BaseException):
                    bring_up.join()
            raise
        work = unpack / "lazy-work"
        try:
            proc = self._start_lazy_daemon(rec.netns, pull.port,
                                           unpack / str(manifest["restore_dir"]), work)
        except BaseException:
            pull.close()
            if bring_up is not None:
                with contextlib.suppress(BaseException):
                    bring_up.join()
            raise
        self._pulls[rec.key] = LazyPull(proc, pull, unpack)
        try:
            if bring_up is not None:
                bring_up.join()
            self._restore_into(rec, unpack, str(manifest["restore_dir"]), fresh=True,
                               lazy_work=work)
        except BaseException:
            self._stop_pull(rec.key)
            raise
        threading.Thread(target=self._after_pull, args=(rec, self._pulls[rec.key]),
                         daemon=True, name=f"lazy-pull-{rec.key}").start()

    def _after_pull(self, rec: PodRecord, job: LazyPull) -> None:
        t0 = time.monotonic()
        with contextlib.suppress(subprocess.TimeoutExpired):
            job.proc.wait(CRIU_TIMEOUT_S)
        log.info("lazy pages of %s: all received %.3fs after restore (daemon exit %s%s)",
                 rec.key, time.monotonic() - t0, job.proc.returncode,
                 f", relay: {job.pull.error}" if job.pull.error else "")
        self._keep_log(job.unpack / "lazy-work" / "lazy-pages.log", "lazy-pages", rec)
        if self._pulls.get(rec.key) is job:
            self._stop_pull(rec.key)

    def _stop_pull(self, key: str) -> None:
        job = self._pulls.pop(key, None)
        if job is not None:
            lazy.stop_process(job.proc)
            job.pull.close()
            shutil.rmtree(job.unpack, ignore_errors=True)

    def lazy_pending(self, ref: PodRef) -> bool:
        """Are pages of this pod still on their way (destination) or being served (source)?"""
        job = self._pulls.get(ref.key)
        if job is not None and job.proc.poll() is None:
            return True
        dump = self._lazy.get(ref.key)
        return dump is not None and dump.alive()
