"""`apply --lock-backend kube`: the apply lock is a Lease on the real apiserver."""

from __future__ import annotations

import shutil
from pathlib import Path

from click.testing import CliRunner

from livepolicy.cli.main import cli
from livepolicy.kube.client import KubeClient
from livepolicy.kube.lease import LeaseLock
from tests.conftest import ROOT
from tests.support.envtest import KubeTestEnv


def _case(tmp_path: Path) -> tuple[Path, Path]:
    cluster = tmp_path / "cluster.yaml"
    shutil.copy(ROOT / "tests/cases/basic/cluster.yaml", cluster)
    return cluster, ROOT / "tests/cases/basic/policies.yaml"


def test_apply_waits_for_nobody_and_refuses_a_held_lease(kube_env: KubeTestEnv,
                                                          kube: KubeClient,
                                                          tmp_path: Path) -> None:
    cluster, policies = _case(tmp_path)
    args = ["apply", "--cluster", str(cluster), "--agents", "sim", "--policies",
            str(policies), "--yes", "--json", "--state-dir", str(tmp_path / "state"),
            "--lock-backend", "kube", "--kubeconfig", str(kube_env.kubeconfig_path)]
    holder = LeaseLock(kube, renew=False)
    holder.acquire()
    try:
        refused = CliRunner().invoke(cli, args)
        assert refused.exit_code == 1, refused.output
        assert holder.id in refused.output and "Lease" in refused.output
        assert "nodeName: a1" in cluster.read_text()  # nothing moved
    finally:
        holder.release()
    done = CliRunner().invoke(cli, args)
    assert done.exit_code == 0, done.output
    assert '"migrated": 3' in done.output
    after = LeaseLock(kube, renew=False)  # released by the apply
    after.acquire()
    after.release()
