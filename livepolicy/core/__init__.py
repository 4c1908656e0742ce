"""Shared vocabulary used by every stage: diagnostics, quantities, selectors, instance catalog."""
