"""The policy language: versioned YAML kinds, their loading with positions, and validation."""
