"""The Lease apply lock against the real kube-apiserver: contention, expiry, renewal,
release, racing acquirers and force-unlock."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid

import pytest

from livepolicy.kube.client import KubeClient
from livepolicy.kube.lease import LeaseHeld, LeaseLock, force_unlock
from livepolicy.kube.resources import LEASES

pytestmark = pytest.mark.kube


@pytest.fixture()
def name() -> str:
    return f"apply-{uuid.uuid4().hex[:8]}"


def test_second_holder_is_refused_until_release(kube: KubeClient, name: str) -> None:
    a, b = LeaseLock(kube, name), LeaseLock(kube, name)
    a.acquire()
    try:
        with pytest.raises(LeaseHeld) as err:
            b.acquire()
        info = err.value.info
        assert info["id"] == a.id
        assert (info["pid"], info["host"], info["operation"]) == (os.getpid(),
                                                                  socket.gethostname(), "apply")
        assert info["owner"] and info["since"].endswith("Z") and info["expires"]
        assert f"kube-system/{name}" in str(err.value) and a.id in str(err.value)
        lease = kube.get(LEASES, name, "kube-system")
        assert lease["spec"]["holderIdentity"] == a.id
    finally:
        a.release()
    assert "holderIdentity" not in kube.get(LEASES, name, "kube-system")["spec"]
    with b:  # free again: the other holder gets it at once
        assert kube.get(LEASES, name, "kube-system")["spec"]["holderIdentity"] == b.id
        with pytest.raises(LeaseHeld):
            a.acquire()
    assert not b.lost.is_set()


def test_unrenewed_lease_expires_and_is_taken_over(kube: KubeClient, name: str) -> None:
    crashed = LeaseLock(kube, name, duration=2, renew=False)  # a holder that died
    crashed.acquire()
    successor = LeaseLock(kube, name, duration=2)
    with pytest.raises(LeaseHeld):
        successor.acquire()
    time.sleep(2.3)
    successor.acquire()
    try:
        lease = kube.get(LEASES, name, "kube-system")
        assert lease["spec"]["holderIdentity"] == successor.id
        assert lease["spec"]["leaseTransitions"] == 1
        assert crashed.renew_now() is False and crashed.lost.is_set()
        crashed.release()  # must not free the successor's lease
        assert kube.get(LEASES, name, "kube-system")["spec"]["holderIdentity"] == successor.id
    finally:
        successor.release()


def test_renewal_keeps_the_lease_past_its_duration(kube: KubeClient, name: str) -> None:
    holder = LeaseLock(kube, name, duration=2, renew_every=0.3)
    other = LeaseLock(kube, name, duration=2)
    with holder:
        time.sleep(3.5)  # well past one duration
        with pytest.raises(LeaseHeld):
            other.acquire()
        assert holder.renewals >= 5 and not holder.lost.is_set()
    other.acquire()
    other.release()


def _race(kube: KubeClient, name: str, contenders: int) -> tuple[list[str], list[str]]:
    locks = [LeaseLock(kube, name, renew=False) for _ in range(contenders)]
    won: list[str] = []
    refused: list[str] = []
    start = threading.Barrier(contenders)

    def contend(lock: LeaseLock) -> None:
        start.wait()
        try:
            lock.acquire()
            won.append(lock.id)
        except LeaseHeld as exc:
            refused.append(str(exc.info["id"]))

    threads = [threading.Thread(target=contend, args=(lk,)) for lk in locks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return won, refused


def test_racing_acquirers_have_exactly_one_winner(kube: KubeClient) -> None:
    for _ in range(3):
        name = f"race-{uuid.uuid4().hex[:8]}"
        won, refused = _race(kube, name, 6)
        assert len(won) == 1 and len(refused) == 5
        assert set(refused) == set(won)  # every loser names the winner
        assert kube.get(LEASES, name, "kube-system")["spec"]["holderIdentity"] == won[0]


def test_force_unlock(kube: KubeClient, name: str) -> None:
    stuck = LeaseLock(kube, name, duration=600, renew=False)
    stuck.acquire()
    with pytest.raises(ValueError, match="does not match"):
        force_unlock(kube, "some-other-id", name)
    assert force_unlock(kube, stuck.id, name) == f"lock {stuck.id} removed"
    assert force_unlock(kube, stuck.id, name) == "no lock is recorded"
    fresh = LeaseLock(kube, name)
    with fresh:
        assert kube.get(LEASES, name, "kube-system")["spec"]["holderIdentity"] == fresh.id
