"""Views of a plan, all rendered from its JSON document so they never disagree."""
