"""Stored state with its version: every stored state transition is a compare-and-swap.

A reader gets the state and the version (the Table entity's ETag) it read; a write goes through only if
the state is still at that version, and the loser of a race gets ``Conflict`` — never a 500, never a
silent overwrite. State machines decide *whether* a transition is allowed (``InvalidTransition``); the
store decides whether it still applies to what was read (``Conflict``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Versioned:
    """A stored state (flat, JSON-safe properties) and the version it was read at."""

    state: Mapping[str, Any]
    etag: str
