"""The compatibility graph: which node may send a live pod to which node."""
