"""The lab: a Kubernetes-like cluster on one machine where pods really move.

Lab nodes are network namespaces, each with a node agent running the `criu` runtime; lab
pods are processes in their own network and pid namespaces, with an IP on their subnet's
bridge. `Lab` (lab.py) builds and removes it, `LabSource` (source.py) shows it as a
cluster snapshot to the planner, `move_pod` (move.py) drives one migration through the
agents' HTTP API, `StreamClient` (client.py) is a TCP client that checks every reply.
See docs/lab.md.
"""
