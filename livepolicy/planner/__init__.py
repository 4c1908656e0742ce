"""From policies, facts and the graph to an immutable Plan (selection, placement, budgets)."""
