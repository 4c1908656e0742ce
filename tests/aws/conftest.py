"""One moto EC2 server on loopback (127.0.0.1, a free port) for every test under tests/aws.

Dummy credentials and region come from the environment, exactly as the standard boto3
chain reads them; shared config files and the instance metadata service are switched off
so nothing outside this machine's loopback is ever contacted.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

HERE = Path(__file__).resolve().parent
REGION = "us-east-1"

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/nonexistent/livepolicy-tests/aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/livepolicy-tests/aws-credentials",
}
UNSET = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
         "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
         "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_EC2", "HTTP_PROXY", "HTTPS_PROXY",
         "http_proxy", "https_proxy")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).resolve().is_relative_to(HERE):
            item.add_marker(pytest.mark.aws)


@pytest.fixture(scope="session")
def aws_env() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        for name in UNSET:
            mp.delenv(name, raising=False)
        for name, value in AWS_ENV.items():
            mp.setenv(name, value)
        mp.setenv("NO_PROXY", "127.0.0.1")
        yield


@pytest.fixture(scope="session")
def moto_endpoint(aws_env: None) -> Iterator[str]:
    """http://127.0.0.1:<port> of a moto server living for the whole session."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    assert host == "127.0.0.1", host
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def ec2(moto_endpoint: str) -> Any:
    """A plain boto3 EC2 client on the moto server, to create fixtures."""
    return boto3.client("ec2", endpoint_url=moto_endpoint, region_name=REGION)


@pytest.fixture(scope="session")
def vpc(ec2: Any) -> dict[str, Any]:
    """A VPC with three subnets; only the pod subnet is tagged kubernetes.io/role/cni."""
    vpc_id = ec2.create_vpc(CidrBlock="10.30.0.0/16")["Vpc"]["VpcId"]
    specs = [
        ("10.30.0.0/19", "us-east-1a", {"Name": "nodes-a", "kubernetes.io/cluster/t": "shared"}),
        ("10.30.32.0/19", "us-east-1b", {"Name": "nodes-b"}),
        ("10.30.64.0/19", "us-east-1a", {"Name": "pods-a", "kubernetes.io/role/cni": "1"}),
    ]
    subnets: dict[str, str] = {}
    for cidr, zone, tags in specs:
        sid = ec2.create_subnet(
            VpcId=vpc_id, CidrBlock=cidr, AvailabilityZone=zone,
            TagSpecifications=[{"ResourceType": "subnet",
                                "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}],
        )["Subnet"]["SubnetId"]
        subnets[tags["Name"]] = sid
    return {"id": vpc_id, "subnets": subnets}
