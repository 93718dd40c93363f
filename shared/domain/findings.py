"""A suspicious-activity finding as stored: reported once, audited before it is announced."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class StoredFinding:
    id: str
    rule: str
    time: datetime
    secret_name: str | None = None
    #: What the SUSPICIOUS_ACTIVITY record and the notification carry (never a value).
    details: Mapping[str, Any] = field(default_factory=dict)
    #: Its SUSPICIOUS_ACTIVITY record is written.
    audited: bool = False
    #: Its notification is sent (only ever after it is audited).
    notified: bool = False
    #: "open" until an operator reviews it, then "reviewed".
    status: str = "open"
    reviewer: str | None = None
