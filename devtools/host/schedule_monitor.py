"""The timer trigger's schedule monitor (``use_monitor``), kept in a local file instead of blob storage.

The runtime records, per timer, when it last ran and when it is next due. When the host starts after a
missed occurrence (it was stopped across it), the timer runs once at once with ``past_due=True``. The
runtime monitors by default, except timers with ``use_monitor=False`` and schedules that fire more often
than once a minute (``ncrontab.monitor_disabled``).

``check_past_due`` and ``status_after_run`` are the extension's rules (``ScheduleMonitor.CheckPastDueAsync``
and ``TimerListener``), pure; ``TimerStateStore`` keeps the statuses in ``<state dir>/timers.json``:
``{"<function>": {"last": iso or null, "next": iso, "lastUpdated": iso}}`` in UTC.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from devtools.host.ncrontab import Schedule
from devtools.processes import write_atomically

__all__ = ["STATE_FILE", "ScheduleStatus", "TimerStateStore", "check_past_due", "status_after_run"]

logger = logging.getLogger("devtools.host")

STATE_FILE = "timers.json"

# What the runtime shows in ScheduleStatus.Last before a timer's first run (.NET's default DateTime).
_NEVER = "0001-01-01T00:00:00"


@dataclass(frozen=True)
class ScheduleStatus:
    """One timer's record: its last run (None before the first), its next occurrence, and the instant
    ``next`` was computed from."""

    last: datetime | None
    next: datetime
    last_updated: datetime | None

    def to_json(self) -> dict[str, str | None]:
        return {
            "last": _iso(self.last),
            "next": self.next.isoformat(),
            "lastUpdated": _iso(self.last_updated),
        }

    @classmethod
    def from_json(cls, document: Any) -> ScheduleStatus:
        """Raises ValueError when ``document`` is not a status object."""
        following = _parse(document.get("next")) if isinstance(document, dict) else None
        if not isinstance(document, dict) or following is None:
            raise ValueError("expected an object with 'next' (ISO 8601) and optional 'last', 'lastUpdated'")
        return cls(
            last=_parse(document.get("last")),
            next=following,
            last_updated=_parse(document.get("lastUpdated")),
        )

    def for_function(self) -> dict[str, str]:
        """``TimerRequest.schedule_status`` as the Python worker passes it."""
        return {
            "Last": _iso(self.last) or _NEVER,
            "Next": self.next.isoformat(),
            "LastUpdated": _iso(self.last_updated) or _NEVER,
        }


def check_past_due(
    stored: ScheduleStatus | None, schedule: Schedule, now: datetime
) -> tuple[ScheduleStatus, bool, timedelta]:
    """At host start: the status to use, whether it must be written back, and how late the timer is
    (``timedelta(0)`` when not past due).

    A first start records the next occurrence (so that an occurrence missed before the first run is caught
    next time). A stored ``next`` that the schedule would not produce means the schedule changed: it is
    recomputed, from now if it would already be past, so that a schedule change alone never counts as missed.
    """
    if stored is None:
        return ScheduleStatus(None, schedule.next_after(now), now), True, timedelta(0)
    if stored.last is not None:
        basis = stored.last
    elif stored.last_updated is not None:
        basis = stored.last_updated
    else:
        basis = now
    expected = schedule.next_after(basis)
    status, changed = stored, False
    if stored.next != expected:
        if now > expected:
            basis, expected = now, schedule.next_after(now)
        status, changed = ScheduleStatus(None, expected, basis), True
    late = now - status.next if now > status.next else timedelta(0)
    return status, changed, late


def status_after_run(
    schedule: Schedule, invoked_at: datetime, previous: ScheduleStatus | None, *, scheduled: bool
) -> ScheduleStatus:
    """The status recorded after an invocation (whether or not it succeeded).

    A scheduled run that started a hair before its occurrence counts from the occurrence, so that the same
    ``next`` is never recorded twice (which would run it again after a restart).
    """
    moment = invoked_at
    if scheduled and previous is not None and previous.next > invoked_at:
        moment = previous.next
    return ScheduleStatus(moment, schedule.next_after(moment), moment)


class TimerStateStore:
    """``<directory>/timers.json``, shared by all timers of one host (thread-safe).

    Every update re-reads the file and replaces it atomically (temporary file + rename), so entries of
    timers this host does not run are kept. An unreadable file is reported and treated as empty.
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / STATE_FILE
        self._lock = threading.Lock()

    def get(self, name: str) -> ScheduleStatus | None:
        with self._lock:
            entry = self._read().get(name)
        if entry is None:
            return None
        try:
            return ScheduleStatus.from_json(entry)
        except ValueError as err:
            logger.warning("Ignoring the stored status of timer '%s' in %s: %s", name, self.path, err)
            return None

    def put(self, name: str, status: ScheduleStatus) -> None:
        """Record ``status``; a write failure is logged, never raised (the timer keeps running)."""
        with self._lock:
            entries = self._read()
            entries[name] = status.to_json()
            try:
                write_atomically(self.path, json.dumps(entries, indent=2, sort_keys=True) + "\n")
            except OSError as err:
                logger.warning("Cannot record the status of timer '%s' in %s: %s", name, self.path, err)

    def _read(self) -> dict[str, Any]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as err:
            logger.warning("Cannot read %s (%s); timer statuses start afresh", self.path, err)
            return {}
        try:
            document = json.loads(text)
        except ValueError as err:
            logger.warning("%s is not valid JSON (%s); timer statuses start afresh", self.path, err)
            return {}
        if not isinstance(document, dict):
            logger.warning("%s does not hold a JSON object; timer statuses start afresh", self.path)
            return {}
        return document


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _parse(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not an ISO 8601 string")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as err:
        raise ValueError(f"{value!r} is not ISO 8601") from err
    # A time without offset is UTC, the timer trigger's time zone.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
