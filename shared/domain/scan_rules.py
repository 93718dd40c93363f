"""Thresholds of the suspicious-activity rules (a policy: settings fill it, the scan applies it)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class ScanRules:
    """Thresholds of the rules. Defaults suit a small operations team; settings override them.

    The scan reads ``lookback`` of records and judges a burst only while its first record is younger than
    ``lookback - window`` (older ones were judged by earlier scans), so the lookback must be at least twice
    the longest window, or a rule with that window could never fire.
    """

    lookback: timedelta = timedelta(hours=48)
    window: timedelta = timedelta(minutes=15)
    denied_per_actor: int = 5
    denied_per_ip: int = 10
    rotation_failures: int = 3
    rotation_failure_window: timedelta = timedelta(hours=24)
    revocation_requests: int = 3
    revocation_window: timedelta = timedelta(hours=1)
    working_start: time = time(7, 0)
    working_end: time = time(19, 0)
    working_days: frozenset[int] = frozenset({0, 1, 2, 3, 4})  # Monday=0
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        longest = max(self.window, self.rotation_failure_window, self.revocation_window)
        if self.lookback < 2 * longest:
            raise ValueError(
                f"lookback {self.lookback} must be at least twice the longest window ({longest})"
            )

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def working(self, moment: datetime) -> bool:
        """Whether ``moment`` falls within working hours on a working day, in the configured time zone."""
        local = moment.astimezone(self.zone)
        return self.working_start <= local.time() < self.working_end and local.weekday() in self.working_days
