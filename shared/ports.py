"""Ports: one typing.Protocol per role the services need. Adapters (shared/adapters) implement them with
a technology; tests implement them with in-memory fakes."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol


class Clock(Protocol):
    """Where services get the time from, so tests can set it."""

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class DependencyProbe(Protocol):
    """A cheap, read-only call that proves a peer answers with the service's own identity."""

    def check(self) -> None:
        """Return when the peer answered.

        Raises DependencyUnavailable (or ConfigurationError when its settings are wrong).
        """
        ...
