"""A suspicious-activity finding as stored: reported once, audited before it is announced."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.domain.audit import format_time
from shared.domain.errors import InvalidTransition


@dataclass(frozen=True)
class StoredFinding:
    id: str
    rule: str
    time: datetime
    secret_name: str | None = None
    #: The vault of ``secret_name`` (None: a finding about no one vault's secret, or one stored before
    #: several vaults: the designated vault's).
    vault: str | None = None
    #: What the SUSPICIOUS_ACTIVITY record and the notification carry (never a value).
    details: Mapping[str, Any] = field(default_factory=dict)
    #: Its SUSPICIOUS_ACTIVITY record is written.
    audited: bool = False
    #: Its notification is sent (only ever after it is audited).
    notified: bool = False
    #: "open" until an operator reviews it, then "reviewed".
    status: str = "open"
    reviewer: str | None = None


def review(finding: StoredFinding, reviewer: str, note: str | None, time: datetime) -> dict[str, Any]:
    """The stored changes that mark a finding reviewed: open → reviewed, the only transition a finding
    has. Raises InvalidTransition when it is not open."""
    if finding.status != "open":
        raise InvalidTransition(f"finding {finding.id} is {finding.status}, not open")
    return {"status": "reviewed", "reviewer": reviewer, "review_note": note, "reviewed_at": format_time(time)}
