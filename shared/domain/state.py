"""Stored state with its version: every stored state transition is a compare-and-swap.

A reader gets the state and the version (the Table entity's ETag) it read; a write goes through only if
the state is still at that version, and the loser of a race gets ``Conflict`` — never a 500, never a
silent overwrite. State machines decide *whether* a transition is allowed (``InvalidTransition``); the
store decides whether it still applies to what was read (``Conflict``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from shared.domain.audit import parse_time

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Versioned:
    """A stored state (flat, JSON-safe properties) and the version it was read at."""

    state: Mapping[str, Any]
    etag: str


@dataclass(frozen=True)
class StateWrite:
    """One write of a transaction (``StateStore.commit``): create ``key`` (``etag`` None: it must not
    exist) or replace it if still at version ``etag``."""

    key: str
    state: Mapping[str, Any]
    etag: str | None = None


def lease_runs(until: object, now: datetime, lease: timedelta) -> bool:
    """Whether a stored lease ending ``until`` still runs at ``now``. Anything but a time this service
    writes is no lease; one ending further ahead than any holder can take (``lease`` twice over: a forged
    or skewed row) is not honoured, since it would block what it guards for good."""
    if not isinstance(until, str):
        return False
    try:
        ends = parse_time(until)
    except ValueError:
        return False
    if ends > now + 2 * lease:
        logger.warning("lease until %.40s is not credible; taken over", until)
        return False
    return ends > now
