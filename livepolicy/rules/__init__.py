"""Every live-migration rule as its own small unit; see registry.py for the list."""
