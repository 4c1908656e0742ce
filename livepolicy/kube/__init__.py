"""The Kubernetes API adapter: the only package that imports the `kubernetes` client.

`KubeClient` makes raw-JSON calls (paginated lists, writes with optimistic concurrency);
`resources` names the API resources; `lease` is the apply lock kept in a Lease object.
"""

from livepolicy.kube.client import Call, KubeClient, ListResult, Stats, Target
from livepolicy.kube.errors import KubeConfigError, KubeError

__all__ = ["Call", "KubeClient", "KubeConfigError", "KubeError", "ListResult", "Stats",
           "Target"]
