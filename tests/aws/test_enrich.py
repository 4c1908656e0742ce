"""AwsFacts against a moto EC2 server on loopback: subnets, instance types, region, errors."""

from __future__ import annotations

import json
import socket
from dataclasses import FrozenInstanceError
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import Stubber

from livepolicy.aws import AwsFacts, InstanceTypeInfo, RegionMismatch
from livepolicy.core.diagnostics import DiagnosticError
from livepolicy.facts.model import ClusterFacts, NodeFacts
from livepolicy.facts.snapshot import SnapshotSource
from livepolicy.rules.base import Context
from livepolicy.rules.cluster_subnet_discovery import CNI_TAG, SubnetDiscovery
from tests.aws.conftest import REGION

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "cluster.yaml"


@pytest.fixture(scope="module")
def example_facts() -> ClusterFacts:
    return SnapshotSource(EXAMPLE).read()


@pytest.fixture(scope="module")
def aws(moto_endpoint: str) -> AwsFacts:
    return AwsFacts(endpoint_url=moto_endpoint)


def _closed_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- subnets ---------------------------------------------------------------------------------


def test_read_subnets_of_vpc(aws: AwsFacts, vpc: dict[str, Any]) -> None:
    subnets = aws.read_subnets(vpc_id=vpc["id"])
    by_name = {s.tags["Name"]: s for s in subnets}
    assert set(by_name) == {"nodes-a", "nodes-b", "pods-a"}
    assert [s.id for s in subnets] == sorted(s.id for s in subnets)
    pods = by_name["pods-a"]
    assert pods.id == vpc["subnets"]["pods-a"]
    assert (pods.zone, pods.cidr) == ("us-east-1a", "10.30.64.0/19")
    assert pods.tags[CNI_TAG] == "1"
    assert CNI_TAG not in by_name["nodes-a"].tags
    assert by_name["nodes-a"].tags["kubernetes.io/cluster/t"] == "shared"


def test_read_subnets_by_id(aws: AwsFacts, vpc: dict[str, Any]) -> None:
    ids = [vpc["subnets"]["nodes-b"], vpc["subnets"]["nodes-a"]]
    assert [s.id for s in aws.read_subnets(ids)] == sorted(ids)
    assert aws.read_subnets([]) == ()


def test_unknown_subnet_id_is_a_diagnostic(aws: AwsFacts, vpc: dict[str, Any]) -> None:
    with pytest.raises(DiagnosticError) as err:
        aws.read_subnets(["subnet-00000000000000000"])
    assert "InvalidSubnetID.NotFound" in str(err.value)
    assert "\n" not in str(err.value)


def test_enrich_fills_subnets_and_cl003_fires(aws: AwsFacts, vpc: dict[str, Any],
                                              example_facts: ClusterFacts) -> None:
    before = SubnetDiscovery().check(Context(example_facts))
    assert before.ok, before.message

    original = example_facts.info.subnets
    enriched = aws.enrich(example_facts, vpc_id=vpc["id"])

    assert enriched is not example_facts
    assert example_facts.info.subnets is original  # the input is untouched
    assert enriched.nodes is example_facts.nodes and enriched.pods is example_facts.pods
    ids = [s.id for s in enriched.info.subnets]
    assert ids[:len(example_facts.info.subnets)] == [s.id for s in example_facts.info.subnets]
    assert set(vpc["subnets"].values()) <= set(ids)
    assert enriched.info.region == "us-east-1"

    verdict = SubnetDiscovery().check(Context(enriched))
    assert not verdict.ok and verdict.blocks
    assert vpc["subnets"]["pods-a"] in verdict.message
    assert vpc["subnets"]["nodes-a"] not in verdict.message


def test_enrich_without_region_fills_it(aws: AwsFacts, vpc: dict[str, Any]) -> None:
    from livepolicy.facts.model import ClusterInfo

    facts = ClusterFacts(info=ClusterInfo(name="bare"), nodes=(), pods=())
    enriched = aws.enrich(facts, subnet_ids=[vpc["subnets"]["nodes-a"]])
    assert enriched.info.region == REGION
    assert [s.id for s in enriched.info.subnets] == [vpc["subnets"]["nodes-a"]]
    assert SubnetDiscovery().check(Context(enriched)).ok
    with pytest.raises(FrozenInstanceError):
        enriched.info.region = "x"  # type: ignore[misc]


def test_enrich_prefers_aws_tags_for_known_ids(aws: AwsFacts, vpc: dict[str, Any]) -> None:
    from livepolicy.facts.model import ClusterInfo, SubnetFacts

    sid = vpc["subnets"]["pods-a"]
    stale = SubnetFacts(id=sid, tags={"Name": "stale"})
    facts = ClusterFacts(info=ClusterInfo(region="us-east-1", subnets=(stale,)), nodes=(),
                         pods=())
    enriched = aws.enrich(facts, subnet_ids=[sid])
    assert len(enriched.info.subnets) == 1
    assert enriched.info.subnets[0].tags[CNI_TAG] == "1"


# -- instance types --------------------------------------------------------------------------


def test_instance_types_known_and_unknown(aws: AwsFacts) -> None:
    types = aws.read_instance_types(["m5.large", "c6g.large", "zz9.huge", "M5.large", ""])
    assert sorted(types) == ["c6g.large", "m5.large", "zz9.huge"]
    assert types["m5.large"] == InstanceTypeInfo(
        name="m5.large", known=True, architecture="amd64", cpu_manufacturer="Intel",
        family="m5", generation_set="gen5-intel")
    c6g = types["c6g.large"]
    assert (c6g.known, c6g.architecture, c6g.cpu_manufacturer, c6g.generation_set) == (
        True, "arm64", "AWS", "gen6-graviton")
    zz = types["zz9.huge"]
    assert not zz.known
    assert zz.generation_set is None and zz.architecture == ""
    assert "zz9.huge" in zz.problem


def test_instance_types_only_unknown_and_empty(aws: AwsFacts) -> None:
    assert aws.read_instance_types([]) == {}
    only = aws.read_instance_types(["zz9.huge", "qq1.tiny"])
    assert {k: v.known for k, v in only.items()} == {"qq1.tiny": False, "zz9.huge": False}


def test_instance_types_paginate(moto_endpoint: str) -> None:
    """Two pages through DescribeInstanceTypes' NextToken (stubbed: moto returns one page)."""
    aws = AwsFacts(endpoint_url=moto_endpoint)
    proc = {"SupportedArchitectures": ["x86_64"], "Manufacturer": "AMD"}
    with Stubber(aws._ec2) as stub:
        stub.add_response("describe_instance_types",
                          {"InstanceTypes": [{"InstanceType": "m5a.large", "ProcessorInfo": proc}],
                           "NextToken": "page2"},
                          {"InstanceTypes": ["c5.large", "m5a.large"]})
        stub.add_response("describe_instance_types",
                          {"InstanceTypes": [{"InstanceType": "c5.large",
                                              "ProcessorInfo": {"SupportedArchitectures":
                                                                ["i386", "x86_64"]}}]},
                          {"InstanceTypes": ["c5.large", "m5a.large"], "NextToken": "page2"})
        types = aws.read_instance_types(["m5a.large", "c5.large"])
        stub.assert_no_pending_responses()
    assert types["m5a.large"].generation_set == "gen5-amd"
    assert types["m5a.large"].cpu_manufacturer == "AMD"
    assert types["c5.large"].cpu_manufacturer == ""  # no Manufacturer: left empty
    assert types["c5.large"].architecture == "amd64"


def test_subnets_paginate(moto_endpoint: str) -> None:
    aws = AwsFacts(endpoint_url=moto_endpoint)
    with Stubber(aws._ec2) as stub:
        stub.add_response("describe_subnets", {"Subnets": [{"SubnetId": "subnet-b"}],
                                               "NextToken": "t"}, {})
        stub.add_response("describe_subnets", {"Subnets": [
            {"SubnetId": "subnet-a", "Tags": [{"Key": CNI_TAG, "Value": ""}]}]},
            {"NextToken": "t"})
        subnets = aws.read_subnets()
    assert [s.id for s in subnets] == ["subnet-a", "subnet-b"]
    assert subnets[0].tags == {CNI_TAG: ""}


# -- region ----------------------------------------------------------------------------------


def test_region_from_chain_and_mismatch(aws: AwsFacts, example_facts: ClusterFacts) -> None:
    assert aws.region == REGION
    assert aws.region_mismatch(example_facts.nodes) == []
    nodes = (NodeFacts(name="b", labels={}, region="eu-west-1"),
             NodeFacts(name="a", labels={}, region="us-east-1"),
             NodeFacts(name="c", labels={}))
    assert aws.region_mismatch(nodes) == [RegionMismatch("b", "eu-west-1", REGION)]
    other = AwsFacts(endpoint_url=aws.endpoint_url, region="eu-west-1")
    assert {m.node for m in other.region_mismatch(example_facts.nodes)} == {
        n.name for n in example_facts.nodes if n.region}


# -- errors ----------------------------------------------------------------------------------


def test_unreachable_endpoint(aws_env: None) -> None:
    endpoint = f"http://127.0.0.1:{_closed_loopback_port()}"
    aws = AwsFacts(endpoint_url=endpoint, max_attempts=1, connect_timeout=2)
    with pytest.raises(DiagnosticError) as err:
        aws.read_subnets()
    message = str(err.value)
    assert "cannot reach the EC2 endpoint" in message and endpoint in message
    assert "\n" not in message
    with pytest.raises(DiagnosticError):
        aws.read_instance_types(["m5.large"])


def test_no_credentials(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN",
                 "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    aws = AwsFacts(endpoint_url=moto_endpoint)
    with pytest.raises(DiagnosticError) as err:
        aws.read_subnets()
    assert "no AWS credentials" in str(err.value)
    assert "\n" not in str(err.value)


def test_no_region(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.delenv("AWS_REGION")
    with pytest.raises(DiagnosticError) as err:
        AwsFacts(endpoint_url=moto_endpoint)
    assert "no AWS region" in str(err.value)


def test_invalid_endpoint(aws_env: None) -> None:
    with pytest.raises(DiagnosticError) as err:
        AwsFacts(endpoint_url="not a url")
    assert "invalid AWS endpoint" in str(err.value)


@pytest.mark.parametrize("code", ["UnauthorizedOperation", "AccessDenied"])
def test_access_denied(moto_endpoint: str, code: str) -> None:
    aws = AwsFacts(endpoint_url=moto_endpoint)
    with Stubber(aws._ec2) as stub:
        stub.add_client_error("describe_subnets", service_error_code=code,
                              service_message="You are not authorized to perform this "
                                              "operation.", http_status_code=403)
        stub.add_client_error("describe_instance_types", service_error_code=code,
                              service_message="denied", http_status_code=403)
        with pytest.raises(DiagnosticError) as err:
            aws.read_subnets()
        assert f"access denied by AWS ({code})" in str(err.value)
        with pytest.raises(DiagnosticError) as err:
            aws.read_instance_types(["m5.large"])
        assert "access denied" in str(err.value)


def test_plan_with_aws_endpoint_sees_the_tagged_subnet(moto_endpoint: str,
                                                       vpc: dict[str, Any]) -> None:
    """`plan --aws-endpoint URL --aws-vpc VPC`: EC2's subnet tags reach rule CL003."""
    from click.testing import CliRunner

    from livepolicy.cli.main import cli

    res = CliRunner().invoke(cli, ["plan", "--cluster", "tests/cases/basic/cluster.yaml",
                                   "--policies", "tests/cases/basic/policies.yaml",
                                   "--aws-endpoint", moto_endpoint, "--aws-vpc", vpc["id"],
                                   "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert [n["code"] for n in doc["notes"]] == ["CL003"]
    assert vpc["subnets"]["pods-a"] in doc["notes"][0]["message"]
    assert not doc["migrations"]
