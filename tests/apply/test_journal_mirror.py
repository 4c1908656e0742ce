"""The journal's mirror and seed (what `--lock-backend kube` keeps in a ConfigMap)."""

from __future__ import annotations

import json
from pathlib import Path

from livepolicy.apply.journal import Journal


def test_every_append_reaches_the_mirror_whole(tmp_path: Path) -> None:
    seen: list[str] = []
    j = Journal(tmp_path / "j.jsonl", mirror=seen.append)
    j.phase("m1", "preparing", 0)
    j.phase("m1", "committing", 0)
    j.close()
    assert len(seen) == 2
    assert seen[-1] == (tmp_path / "j.jsonl").read_text()
    assert [json.loads(line)["phase"] for line in seen[-1].splitlines()] == [
        "preparing", "committing"]


def test_a_longer_seed_replaces_the_local_journal_and_a_shorter_one_does_not(
        tmp_path: Path) -> None:
    remote = tmp_path / "remote.jsonl"
    j = Journal(remote)
    for phase in ("preparing", "checkpointing", "transferring"):
        j.phase("m1", phase, 0)
    j.close()
    text = remote.read_text()
    fresh = Journal(tmp_path / "fresh" / "j.jsonl", seed=text + '{"seq": 4, "ki')  # torn
    assert fresh.seeded and fresh.records()["m1"].phase == "transferring"
    fresh.phase("m1", "restoring", 0)  # numbering goes on after the seed's lines
    assert [e["seq"] for e in fresh.events()] == [1, 2, 3, 4]
    fresh.close()
    again = Journal(tmp_path / "fresh" / "j.jsonl", seed=text)  # behind the local one
    assert not again.seeded and again.records()["m1"].phase == "restoring"
    again.close()
