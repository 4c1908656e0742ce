"""Carry out a plan through node agents: DAG walk, budgets, one commit point, journal, lock."""
