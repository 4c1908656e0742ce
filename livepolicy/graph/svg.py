"""SVG picture of the compatibility graph (placeholder replaced below)."""

from livepolicy.graph.compat import CompatibilityGraph
from livepolicy.graph.export import to_dot


def to_svg(graph: CompatibilityGraph) -> str:
    raise NotImplementedError(to_dot.__name__)
