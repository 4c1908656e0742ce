"""AWS facts source (boto3): subnets and their tags, instance types, region checks.

The only package that imports boto3 or botocore (an import-linter contract enforces it).
"""

from livepolicy.aws.enrich import AwsFacts, InstanceTypeInfo, RegionMismatch

__all__ = ["AwsFacts", "InstanceTypeInfo", "RegionMismatch"]
