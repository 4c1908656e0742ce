"""Read EC2 facts with boto3 and merge them into ClusterFacts.

Credentials and region come from the standard boto3 chain (environment, shared config and
credentials files, SSO, instance or pod role); `endpoint_url` points the client elsewhere
(a moto server in tests, a VPC endpoint in production). Every AWS or network failure
becomes a `DiagnosticError` with one clear line, never a traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, NoReturn, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
)

from livepolicy.core.catalog import family_info, family_of
from livepolicy.core.diagnostics import Diagnostic, DiagnosticError
from livepolicy.facts.model import ClusterFacts, NodeFacts, SubnetFacts

WHERE = "aws"  # the Diagnostic "file" for AWS problems
ARCHITECTURES = {"x86_64": "amd64", "arm64": "arm64"}  # EC2 name -> Kubernetes name
_BATCH = 100  # DescribeInstanceTypes accepts at most 100 names per call
_DENIED = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation",
           "AuthFailure", "InvalidClientTokenId", "SignatureDoesNotMatch",
           "UnrecognizedClientException", "ExpiredToken", "RequestExpired"}

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class InstanceTypeInfo:
    """One instance type as EC2 describes it. `known` is False when EC2 does not know it."""

    name: str
    known: bool
    architecture: str = ""  # amd64 | arm64 | "" (unknown or unsupported)
    cpu_manufacturer: str = ""  # ProcessorInfo.Manufacturer: Intel | AMD | AWS | ...
    family: str = ""
    generation_set: str | None = None  # from livepolicy.core.catalog; None when unknown
    problem: str = ""  # why the type is unknown or its facts are incomplete


@dataclass(frozen=True, slots=True)
class RegionMismatch:
    node: str
    region: str  # the node's region
    expected: str  # the AWS client's region


def _fail(message: str) -> NoReturn:
    raise DiagnosticError([Diagnostic(WHERE, message, None)])


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _error_message(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Message", "")) or str(exc)


class AwsFacts:
    """EC2 reader. Construct once, call `read_*`, `region_mismatch` and `enrich`."""

    def __init__(self, *, endpoint_url: str | None = None, region: str | None = None,
                 profile: str | None = None, connect_timeout: float = 5.0,
                 read_timeout: float = 30.0, max_attempts: int = 3) -> None:
        self.endpoint_url = endpoint_url or None
        config = Config(connect_timeout=connect_timeout, read_timeout=read_timeout,
                        retries={"max_attempts": max_attempts, "mode": "standard"})
        try:
            session = boto3.Session(profile_name=profile, region_name=region)
            self.region: str = session.region_name or ""
            if not self.region:
                _fail("no AWS region: set AWS_REGION or AWS_DEFAULT_REGION, a profile region, "
                      "or pass a region")
            self._ec2: Any = session.client("ec2", endpoint_url=self.endpoint_url,
                                            region_name=self.region, config=config)
        except DiagnosticError:
            raise
        except ValueError as exc:  # botocore rejects a malformed endpoint URL with ValueError
            _fail(f"invalid AWS endpoint {self.endpoint_url!r}: {exc}")
        except BotoCoreError as exc:  # ProfileNotFound, unknown region, ...
            _fail(f"cannot set up the AWS client: {exc}")

    # -- calls ------------------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run one AWS call, turning every failure into a one-line DiagnosticError."""
        target = f" at {self.endpoint_url}" if self.endpoint_url else ""
        try:
            return fn()
        except (NoCredentialsError, PartialCredentialsError) as exc:
            _fail(f"{what}: no AWS credentials found ({exc}); configure the standard "
                  "chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, SSO or a role)")
        except NoRegionError:
            _fail(f"{what}: no AWS region configured")
        except EndpointConnectionError as exc:
            _fail(f"{what}: cannot reach the EC2 endpoint{target}: {exc}")
        except ClientError as exc:
            code = _error_code(exc)
            if code in _DENIED:
                _fail(f"{what}: access denied by AWS ({code}): {_error_message(exc)}")
            raise
        except BotoCoreError as exc:  # timeouts, SSL, proxy and other transport errors
            _fail(f"{what}: AWS request failed{target}: {exc}")

    def _pages(self, operation: str, key: str, **params: Any) -> list[dict[str, Any]]:
        paginator = self._ec2.get_paginator(operation)

        def collect() -> list[dict[str, Any]]:
            items: list[dict[str, Any]] = []
            for page in paginator.paginate(**params):
                items.extend(page.get(key, []))
            return items

        try:
            return self._call(operation, collect)
        except ClientError as exc:
            _fail(f"{operation}: {_error_code(exc)}: {_error_message(exc)}")

    # -- subnets ----------------------------------------------------------------------------

    def read_subnets(self, ids: Sequence[str] | None = None, *,
                     vpc_id: str | None = None) -> tuple[SubnetFacts, ...]:
        """Subnets (all, the given ids, or those of one VPC), sorted by id, tags as a dict."""
        params: dict[str, Any] = {}
        if ids is not None:
            if not ids:
                return ()
            params["SubnetIds"] = sorted(set(ids))
        if vpc_id:
            params["Filters"] = [{"Name": "vpc-id", "Values": [vpc_id]}]
        out = [SubnetFacts(id=str(s["SubnetId"]), zone=str(s.get("AvailabilityZone", "")),
                           cidr=str(s.get("CidrBlock", "")),
                           tags={str(t["Key"]): str(t.get("Value", ""))
                                 for t in s.get("Tags", [])})
               for s in self._pages("describe_subnets", "Subnets", **params)]
        return tuple(sorted(out, key=lambda s: s.id))

    # -- instance types ---------------------------------------------------------------------

    def _describe_types(self, names: list[str]) -> list[dict[str, Any]] | None:
        """Describe `names`; None when EC2 rejects one of them as an unknown type."""
        paginator = self._ec2.get_paginator("describe_instance_types")

        def collect() -> list[dict[str, Any]]:
            items: list[dict[str, Any]] = []
            for page in paginator.paginate(InstanceTypes=names):
                items.extend(page.get("InstanceTypes", []))
            return items

        try:
            return self._call("describe_instance_types", collect)
        except ClientError as exc:
            if _error_code(exc) == "InvalidInstanceType":
                return None
            _fail(f"describe_instance_types: {_error_code(exc)}: {_error_message(exc)}")

    def read_instance_types(self, names: Iterable[str]) -> dict[str, InstanceTypeInfo]:
        """Facts for every name; names EC2 does not know come back with known=False."""
        wanted = sorted({n.strip().lower() for n in names if n and n.strip()})
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(wanted), _BATCH):
            batch = wanted[start:start + _BATCH]
            described = self._describe_types(batch)
            if described is None:  # one bad name fails the whole call: retry one by one
                described = []
                for name in batch:
                    described.extend(self._describe_types([name]) or [])
            found.update({str(t["InstanceType"]).lower(): t for t in described})
        return {name: (_type_info(name, found[name]) if name in found else
                       InstanceTypeInfo(name=name, known=False, family=family_of(name),
                                        problem=f"EC2 in this region does not know "
                                                f"instance type {name}"))
                for name in wanted}

    # -- region -----------------------------------------------------------------------------

    def region_mismatch(self, nodes: Iterable[NodeFacts]) -> list[RegionMismatch]:
        """Nodes whose region label differs from the client's region (unlabelled: ignored)."""
        return [RegionMismatch(n.name, n.region, self.region)
                for n in sorted(nodes, key=lambda n: n.name)
                if n.region and n.region != self.region]

    # -- enrich -----------------------------------------------------------------------------

    def enrich(self, facts: ClusterFacts, *, subnet_ids: Sequence[str] | None = None,
               vpc_id: str | None = None) -> ClusterFacts:
        """`facts` with ClusterInfo.subnets refreshed from EC2 and the region filled if empty.

        Subnets read from EC2 replace those of the same id (EC2's tags win) and new ones
        are appended; subnets EC2 was not asked about are kept. Without `subnet_ids` or
        `vpc_id` every subnet of the region is read.
        """
        fresh = self.read_subnets(subnet_ids, vpc_id=vpc_id)
        by_id = {s.id: s for s in fresh}
        known = {s.id for s in facts.info.subnets}
        merged = tuple(by_id.get(s.id, s) for s in facts.info.subnets)
        merged += tuple(s for s in fresh if s.id not in known)
        info = replace(facts.info, subnets=merged, region=facts.info.region or self.region)
        return replace(facts, info=info)


def _type_info(name: str, data: Mapping[str, Any]) -> InstanceTypeInfo:
    processor = data.get("ProcessorInfo", {}) or {}
    archs = [ARCHITECTURES[a] for a in processor.get("SupportedArchitectures", [])
             if a in ARCHITECTURES]
    family = family_of(name)
    catalog = family_info(family)
    problems = []
    if not archs:
        problems.append("no supported architecture (amd64 or arm64) reported")
    if catalog is None:
        problems.append(f"family {family} is not in the generation catalog")
    elif archs and catalog.architecture != archs[0]:
        problems.append(f"catalog says {catalog.architecture}, EC2 says {archs[0]}")
    return InstanceTypeInfo(name=name, known=True, architecture=archs[0] if archs else "",
                            cpu_manufacturer=str(processor.get("Manufacturer", "") or ""),
                            family=family,
                            generation_set=catalog.generation_set if catalog else None,
                            problem="; ".join(problems))
