"""Stop-and-copy (and pre-copy) moves of the `criu` runtime: dump, ship, restore, verify.

Source: `precopy` runs `criu pre-dump --track-mem` rounds while the pod runs; `checkpoint`
dumps it (`--tcp-established`, nftables network lock), cuts it from the bridge and writes
the sealed image, its pages served apart over the node network (`criu_pages`). Without
pre-copy rounds it returns as soon as the dump started (`LiveDump`): the image holds only
the manifest, and the page stream sends CRIU's files while CRIU writes them, so the copy
overlaps the dump; whoever touches the pod next (resume, remove, another checkpoint)
waits for that dump to end first.
Destination: `restore` checks the image may live here (pod, architecture, subnet), brings
the pod's namespace up gated while the pages arrive, runs `criu restore`, opens the gate
and announces the MAC; `verify` asks the restored pod for its identity and counter.
A post-copy image is handed to `criu_postcopy` at restore.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from livepolicy.agent.crypto import ImageCorrupt, Sink
from livepolicy.agent.errors import ApiError, conflict
from livepolicy.agent.fsutil import ensure_private_dir
from livepolicy.agent.runtimes import criu_archive as archive
from livepolicy.agent.runtimes import criu_pages as pages
from livepolicy.agent.runtimes import netns as nets
from livepolicy.agent.runtimes.base import PodInfo, PodRef, RoundResult, VerifyResult
from livepolicy.agent.runtimes.criu_node import CriuNode, Job, LiveDump
from livepolicy.agent.runtimes.criu_pods import PodRecord, query_stats
from livepolicy.agent.runtimes.criu_tool import CRIU_TIMEOUT_S, log_tail, pages_bytes

log = logging.getLogger("livepolicy.agent.criu")

RESTORE_PID_TIMEOUT_S = 10.0


def not_pages(name: str) -> bool:
    return not pages.is_pages(name)


def _resident_bytes(pid: int) -> int:
    """The pod's resident memory (its root process): about what its dump will write."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


class StopAndCopy(CriuNode):
    """The stop-and-copy and pre-copy paths of `CriuRuntime`."""

    # -- Runtime: source ---------------------------------------------------------------------
    def precopy(self, ref: PodRef, *, previous_dirty_bytes: int | None,
                slowdown: float) -> RoundResult:
        if not self._features.dirty_tracking:
            raise conflict("dirty_tracking_unavailable",
                           "this kernel does not track dirty memory (no soft-dirty)")
        with self._pod_lock(ref):
            rec = self._need_settled(ref)
            if self._state(rec) != "running":
                raise conflict("pod_not_running", f"pod {ref.key} is {rec.state}")
            pod_dir = ensure_private_dir(self._pod_dir(rec))
            if previous_dirty_bytes is None:  # a new migration: forget older rounds
                for d in rec.precopy_dirs:
                    shutil.rmtree(pod_dir / d, ignore_errors=True)
                rec.precopy_dirs = []
            name = f"pre-{len(rec.precopy_dirs)}"
            target = pod_dir / name
            shutil.rmtree(target, ignore_errors=True)
            ensure_private_dir(target)
            args = ["pre-dump", "-t", str(rec.pid), "-D", str(target), "--track-mem",
                    "--shell-job", "-o", "pre-dump.log"]
            if rec.precopy_dirs:
                args += ["--prev-images-dir", f"../{rec.precopy_dirs[-1]}"]
            started = time.monotonic()
            res = self.tool.run(args, netns=rec.netns)
            seconds = time.monotonic() - started
            self._keep_log(target / "pre-dump.log", "pre-dump", rec)
            if res.returncode != 0:
                shutil.rmtree(target, ignore_errors=True)
                raise ApiError(500, "criu_failed", f"criu pre-dump of {ref.key} failed: "
                               f"{log_tail(target / 'pre-dump.log') or res.stderr.strip()}")
            nbytes = pages_bytes(target)
            rec.precopy_dirs.append(name)
            rec.work_dir = str(pod_dir)
            self.pods.save(rec)
        # What the next round must send is what was dirtied meanwhile; the best estimate
        # at hand is what this round had to send (all of memory in round 0).
        return RoundResult(bytes=nbytes, dirty_bytes=nbytes, seconds=seconds, frozen=False)

    def checkpoint(self, ref: PodRef, sink: Sink, *, previous_dirty_bytes: int | None,
                   slowdown: float) -> RoundResult:
        with self._pod_lock(ref):
            rec = self._need_settled(ref)
            state = self._state(rec)
            if state == "restoring":
                raise conflict("pod_not_running", f"pod {ref.key} is being restored")
            started = time.monotonic()
            pod_dir = self._pod_dir(rec)
            if rec.lazy and state != "running":
                raise conflict("already_frozen", f"pod {ref.key} is frozen by a lazy dump")
            if state == "running" and self.net.address and previous_dirty_bytes is None:
                return self._checkpoint_live(rec, sink, started)
            if state == "running":
                rec = self._dump(rec, use_precopy=previous_dirty_bytes is not None)
            elif not (pod_dir / rec.dump_dir / "inventory.img").exists():
                raise ApiError(500, "criu_failed", f"pod {ref.key} is frozen but its images "
                               "are gone")
            dirs = [*rec.precopy_dirs, rec.dump_dir] if rec.dump_dir != "" else []
            select: Callable[[str], bool] | None = None
            page_info: dict[str, Any] | None = None
            if self.net.address:
                self._stop_page_server(ref.key)
                server = pages.PageServer(netns=self.net.netns, address=self.net.address,
                                          root=pod_dir, dirs=dirs, namespace=rec.namespace,
                                          name=rec.name, uid=rec.uid)
                self._page_servers[ref.key] = server
                page_info = server.manifest()
                select = not_pages
                rec.page_stream = page_info
                self.pods.save(rec)
            manifest = {**self._manifest(rec), "restore_dir": rec.dump_dir,
                        "pages": page_info}
            t_archive = time.monotonic()
            archive.write_archive(sink, manifest, pod_dir, dirs, select=select)
            nbytes = sum(pages_bytes(pod_dir / d) for d in dirs[-1:])
            log.info("checkpoint %s: %.3fs, archive %.3fs", ref.key, time.monotonic() - started,
                     time.monotonic() - t_archive)
        return RoundResult(bytes=nbytes, dirty_bytes=0, seconds=time.monotonic() - started,
                           frozen=True)

    def _checkpoint_live(self, rec: PodRecord, sink: Sink, started: float) -> RoundResult:
        """Start the dump and return at once: the image holds the manifest and a live page
        stream (`criu_pages`), which sends CRIU's files as the dump writes them."""
        rss = _resident_bytes(rec.pid)
        target, args = self._dump_prepare(rec, use_precopy=False)
        self._stop_page_server(rec.key)
        job = LiveDump(lambda: self._dump_run(rec, target, args))
        server = pages.PageServer(netns=self.net.netns, address=self.net.address,
                                  root=self._pod_dir(rec), dirs=[rec.dump_dir],
                                  namespace=rec.namespace, name=rec.name, uid=rec.uid,
                                  outcome=job.outcome)
        self._page_servers[rec.key] = server
        page_info = server.manifest()
        rec.page_stream = page_info
        self.pods.save(rec)
        self._dumps[rec.key] = job
        job.start()
        manifest = {**self._manifest(rec), "restore_dir": rec.dump_dir, "pages": page_info}
        archive.write_archive(sink, manifest, self._pod_dir(rec), [rec.dump_dir],
                              select=lambda name: False)  # CRIU's files are in the stream
        log.info("checkpoint %s: live, image %.3fs", rec.key, time.monotonic() - started)
        # The pages are still being written: what will cross is about the pod's memory.
        return RoundResult(bytes=max(rec.memory_bytes, rss), dirty_bytes=0,
                           seconds=time.monotonic() - started, frozen=True)

    def _dump(self, rec: PodRecord, *, use_precopy: bool) -> PodRecord:
        """Dump (and so stop) a running pod; cut it from the bridge. Returns the record."""
        target, args = self._dump_prepare(rec, use_precopy=use_precopy)
        t1 = time.monotonic()
        res = self.tool.run(args, netns=rec.netns)
        self._dump_finish(rec, target, res, t1)
        return rec

    def _dump_run(self, rec: PodRecord, target: Path, args: list[str]) -> None:
        """`_dump`'s CRIU run and finish, in `LiveDump`'s thread; the dump's pid is
        recorded, so a restarted agent waits for it rather than judge a frozen pod."""
        t1 = time.monotonic()
        proc = self.tool.start(args, netns=rec.netns)
        rec.dump_pid, rec.dump_start = proc.pid, nets.proc_start_time(proc.pid) or 0
        self.pods.save(rec)
        try:
            out, err = proc.communicate(timeout=CRIU_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            err = f"criu dump timed out after {CRIU_TIMEOUT_S:.0f}s {err}"
        rec.dump_pid = rec.dump_start = 0
        self._dump_finish(rec, target, subprocess.CompletedProcess(
            args, proc.returncode, out, err), t1)

    def _dump_prepare(self, rec: PodRecord, *, use_precopy: bool) -> tuple[Path, list[str]]:
        """Record a dump under way (state freezing) and its directory; CRIU's arguments."""
        pod_dir = ensure_private_dir(self._pod_dir(rec))
        if not use_precopy and rec.precopy_dirs:
            for d in rec.precopy_dirs:
                shutil.rmtree(pod_dir / d, ignore_errors=True)
            rec.precopy_dirs = []
        t0 = time.monotonic()
        stats = query_stats(rec.netns, rec.ip, rec.port, timeout=1.0)
        if stats is not None:
            rec.token = str(stats.get("token", rec.token))
            if isinstance(stats.get("count"), int):
                rec.counter = stats["count"]
        name = "final" if rec.precopy_dirs else "dump"
        target = pod_dir / name
        shutil.rmtree(target, ignore_errors=True)
        ensure_private_dir(target)
        rec.state, rec.dump_dir, rec.work_dir = "freezing", name, str(pod_dir)
        self.pods.save(rec)
        args = ["dump", "-t", str(rec.pid), "-D", str(target), "--tcp-established",
                "--skip-in-flight", "--shell-job", "--network-lock", "nftables",
                "-o", "dump.log"]
        if rec.precopy_dirs:
            args += ["--track-mem", "--prev-images-dir", f"../{rec.precopy_dirs[-1]}"]
        log.info("dump %s: stats %.3fs", rec.key, time.monotonic() - t0)
        return target, args

    def _dump_finish(self, rec: PodRecord, target: Path,
                     res: subprocess.CompletedProcess[str], t1: float) -> None:
        t2 = time.monotonic()
        self._keep_log(target / "dump.log", "dump", rec)
        if res.returncode != 0:
            why = log_tail(target / "dump.log") or res.stderr.strip()
            if rec.alive():  # CRIU resumed the pod: nothing changed
                rec.state, rec.dump_dir = "running", ""
                self.pods.save(rec)
                shutil.rmtree(target, ignore_errors=True)
            raise ApiError(500, "criu_failed", f"criu dump of {rec.key} failed: {why}")
        # The tasks are gone; CRIU's nftables lock stays in the pod's namespace. Its IP
        # and MAC must not answer while the destination brings them up.
        nets.set_host_link(self._podnet(rec), False)
        nets.reap(rec.pid)
        rec.state = "frozen"
        self.pods.save(rec)
        log.info("dump %s: criu dump %.3fs, unlink %.3fs", rec.key, t2 - t1,
                 time.monotonic() - t2)

    def link_delay(self, nbytes: int, slowdown: float) -> float:
        return 0.0

    # -- Runtime: destination ----------------------------------------------------------------
    def restore(self, ref: PodRef, uid: str, mid: str, image: Iterable[bytes],
                slowdown: float) -> tuple[PodInfo, str]:
        with self._pod_lock(ref):
            existing = self.pods.get(ref.namespace, ref.name)
            if existing is not None and self._state(existing) is None:
                self._teardown(existing)  # a pod whose process died is no pod: clear it
                existing = None
            if existing is not None and existing.restored_by != mid:
                raise conflict("pod_exists", f"pod {ref.key} already exists on this node")
            if existing is not None and self._state(existing) == "running":
                return self._info(existing, "running"), existing.restored_sha256
            if existing is not None:  # a half-finished restore of this migration: redo it
                self._teardown(existing)
            unpack = self.work / f"restore-{mid}"
            shutil.rmtree(unpack, ignore_errors=True)
            try:
                t0 = time.monotonic()
                manifest, sha, _ = archive.read_archive(image, unpack)
                rec = self._check_manifest(manifest, ref, uid, mid, sha)
                self.pods.save(rec)
                t1 = time.monotonic()
                if manifest.get("lazy"):
                    try:
                        self._restore_lazy(manifest, rec, unpack)
                    except BaseException:
                        self._teardown(rec)
                        raise
                    log.info("lazy restore %s: image %.3fs, up and running %.3fs", ref.key,
                             t1 - t0, time.monotonic() - t1)
                    # no probe: its memory is still arriving, and verify asks the pod anyway
                    return self._info(rec, "running", probe=False), sha
                try:
                    # The pod's network comes up (gated) while its pages arrive.
                    bring_up = Job(lambda: self._bring_up(rec))
                    try:
                        nbytes = self._fetch_pages(manifest, rec, unpack)
                    finally:
                        bring_up.join()
                    t2 = time.monotonic()
                    log.info("restore %s: image %.3fs, pages %.3fs (%d MiB), network %.3fs",
                             ref.key, t1 - t0, t2 - t1, nbytes >> 20, bring_up.seconds)
                    self._restore_into(rec, unpack, str(manifest["restore_dir"]), fresh=True)
                except BaseException:
                    self._teardown(rec)
                    raise
            finally:
                if ref.key not in self._pulls:  # else the lazy-pages daemon still reads it
                    shutil.rmtree(unpack, ignore_errors=True)
            return self._info(rec, "running"), sha

    def _bring_up(self, rec: PodRecord) -> None:
        net = self._podnet(rec)
        if nets.netns_exists(net.netns):  # a spare from the pool
            nets.activate_pod_net(net)
        else:
            nets.create_pod_net(net, gated=True)

    def _fetch_pages(self, manifest: dict[str, Any], rec: PodRecord, unpack: Path) -> int:
        info = manifest.get("pages")
        if not info:
            return 0  # the pages were inside the image
        if not isinstance(info, dict):
            raise ApiError(422, "image_invalid", "bad page stream description in image")
        try:
            return pages.fetch_pages(info, netns=self.net.netns, dest=unpack,
                                     namespace=rec.namespace, name=rec.name, uid=rec.uid)
        except ImageCorrupt as exc:
            raise ApiError(422, "image_corrupt", f"page stream: {exc}") from None

    def _check_manifest(self, m: dict[str, Any], ref: PodRef, uid: str, mid: str,
                        sha: str) -> PodRecord:
        if (m.get("namespace"), m.get("name"), m.get("uid")) != (ref.namespace, ref.name, uid):
            raise ApiError(422, "image_invalid", "image belongs to another pod")
        for key in ("ip", "mac", "restore_dir"):
            if not isinstance(m.get(key), str) or not m[key]:
                raise ApiError(422, "image_invalid", f"image manifest lacks {key}")
        arch = str(m.get("architecture", ""))
        if arch and self.architecture and arch != self.architecture:
            raise conflict("architecture_mismatch", f"pod {ref.key} was checkpointed on "
                           f"{arch}; this node is {self.architecture}")
        if not nets.ip_in_subnet(m["ip"], self.net.subnet):
            raise conflict("subnet_mismatch", f"pod {ref.key} has IP {m['ip']} (subnet "
                           f"{m.get('subnet_id') or m.get('subnet')}); this node is in "
                           f"{self.net.subnet_id} ({self.net.subnet}): the pod could not "
                           "keep its address here")
        spare = self._take_spare()
        netns, veth = spare if spare is not None else self._new_names(ref, mid)
        labels = m.get("labels")
        return PodRecord(
            namespace=ref.namespace, name=ref.name, uid=uid, netns=netns, host_veth=veth,
            ip=m["ip"], prefix=int(m.get("prefix", 24)), mac=m["mac"],
            port=int(m.get("port", 0)), memory_bytes=int(m.get("memory_bytes", 0)),
            dirty_rate_bytes=int(m.get("dirty_rate_bytes", 0)), state="restoring",
            restored_by=mid, restored_sha256=sha, token=str(m.get("token", "")),
            counter=int(m.get("counter", 0)), created_at=time.time(),
            labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict)
            else {})

    def _restore_into(self, rec: PodRecord, images: Path, restore_dir: str, *,
                      fresh: bool, keep: bool = False, lazy_work: Path | None = None) -> None:
        """Run `criu restore` for `rec` from `images/restore_dir`: in its new, gated
        namespace (`fresh`, destination: `_bring_up` made it) or in the pod's own namespace
        (rollback on the source)."""
        net = self._podnet(rec)
        self.pods.save(rec)
        pidfile = images / f"restored-{time.monotonic_ns()}.pid"
        t1 = time.monotonic()
        try:
            args = ["restore", "-D", str(images / restore_dir), "--tcp-established",
                    "--shell-job", "-d", "--pidfile",
                    str(pidfile), "-o", "restore.log"]
            if lazy_work is not None:
                args += ["--lazy-pages", "-W", str(lazy_work)]
            res = self.tool.run(args, netns=rec.netns)
            self._keep_log(images / restore_dir / "restore.log", "restore", rec)
            if res.returncode != 0:
                why = log_tail(images / restore_dir / "restore.log") or res.stderr.strip()
                raise ApiError(500, "criu_failed", f"criu restore of {rec.key} failed: {why}")
            t2 = time.monotonic()
            pid = self._read_pid(pidfile)
            rec.pid, rec.pid_start = pid, nets.proc_start_time(pid) or 0
            if fresh:
                nets.gate_open(rec.netns)
                nets.send_garp(net.netns, net.ifname, net.ip, net.mac, count=1)
            else:
                nets.set_host_link(net, True)
                nets.announce(net)
            rec.state = "running"
            self.pods.save(rec)
            log.info("restore %s: criu restore %.3fs, open %.3fs", rec.key, t2 - t1,
                     time.monotonic() - t2)
        except BaseException:
            if fresh and not keep:
                self._teardown(rec)
            raise

    def _read_pid(self, pidfile: Path) -> int:
        ok = nets.wait_for(lambda: pidfile.exists() and pidfile.read_text().strip() != "",
                           RESTORE_PID_TIMEOUT_S)
        if not ok:
            raise ApiError(500, "criu_failed", "criu restore wrote no pid file")
        return int(pidfile.read_text().strip())

    def verify(self, ref: PodRef, mid: str, state_sha256: str) -> VerifyResult:
        rec = self.pods.get(ref.namespace, ref.name)
        if rec is None:
            return VerifyResult(False, 0, "pod is not on this node")
        if rec.restored_by != mid:
            return VerifyResult(False, rec.counter, "pod was not restored by this migration")
        if rec.state != "running" or not rec.alive():
            return VerifyResult(False, rec.counter, f"pod is {rec.state}, process "
                                f"{'alive' if rec.alive() else 'gone'}")
        if rec.restored_sha256 != state_sha256:
            return VerifyResult(False, rec.counter, "pod state does not match the image")
        if not rec.port:
            return VerifyResult(True, rec.counter, "")
        stats = query_stats(rec.netns, rec.ip, rec.port, timeout=2.0)
        if stats is None:
            return VerifyResult(False, rec.counter, "pod does not answer on its port")
        count = stats.get("count")
        if not isinstance(count, int):
            return VerifyResult(False, rec.counter, "pod stats lack a counter")
        if rec.token and stats.get("token") != rec.token:
            return VerifyResult(False, count, "pod answers with another identity (restarted, "
                                "not restored)")
        if count < rec.counter:
            return VerifyResult(False, count, f"counter went backwards ({rec.counter} -> "
                                f"{count})")
        return VerifyResult(True, count, "")
