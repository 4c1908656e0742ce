"""The narrow interface every facts source implements."""

from __future__ import annotations

from typing import Protocol

from livepolicy.facts.model import ClusterFacts


class FactsSource(Protocol):
    def read(self) -> ClusterFacts: ...
