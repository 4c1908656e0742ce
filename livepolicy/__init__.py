"""livepolicy: plan and apply container live migrations from declarative YAML policies.

The package is laid out in stages so each can be read and tested alone:
core -> policy / facts -> rules -> graph -> planner -> render -> cli.
"""

__version__ = "0.1.0"
