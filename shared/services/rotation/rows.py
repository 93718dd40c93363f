"""The rows of the rotation partition: each secret's progress (``shared/domain/progress.py``) and, beside it,
its retirement schedule. The schedule is a row of its own keyed after every progress row (``SCHEDULE_PREFIX``
sorts after the characters of a secret name, so each kind is one key range of the partition), so that a
rotation takes its lease and schedules the retirement in one transaction, and retiring never races a
rotation's progress."""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from shared.domain.audit import format_time, parse_time
from shared.domain.errors import Conflict, NotFound
from shared.domain.progress import (
    Progress,
)
from shared.domain.state import Versioned
from shared.ports import StateStore
from shared.services.sealed_state import get_as_found

logger = logging.getLogger(__name__)


PARTITION = "rotation"


#: A secret's retirement schedule is a row beside its progress, in the same partition (a rotation takes
#: its lease and schedules the retirement in one transaction), keyed after every progress row: this
#: prefix sorts after the characters of a secret name, so each kind is one key range of the partition
#: (schedules: [prefix, prefix + "~"), since "~" sorts after them too).
SCHEDULE_PREFIX = "~retire~"


#: Reads of the progress a request makes before it gives up on a row that keeps changing under it.
LEASE_ATTEMPTS = 20


def schedule_key(key: str) -> str:
    """The row key of the retirement schedule of the secret whose progress row is ``key``."""
    return SCHEDULE_PREFIX + key


def progress_rows(states: StateStore) -> dict[str, Versioned]:
    """Every secret's progress row by key (the schedules beside them excluded). Raises
    DependencyUnavailable."""
    return states.list(PARTITION, stop=SCHEDULE_PREFIX)


def write_progress(states: StateStore, key: str, progress: Progress, etag: str | None) -> str:
    if etag is None:
        return states.create(PARTITION, key, progress.state()).etag
    return states.replace(PARTITION, key, progress.state(), etag).etag


def retirements(state: Mapping[str, Any]) -> list[tuple[str, datetime]]:
    """The scheduled retirements in a stored state; an unreadable list is none (and logged)."""
    try:
        return [(str(v), parse_time(str(t))) for v, t in json.loads(str(state.get("versions") or "[]"))]
    except (ValueError, TypeError) as err:
        logger.warning("unreadable retirement schedule ignored: %s", err)
        return []


def schedule_state(planned: Sequence[tuple[str, datetime]]) -> dict[str, Any]:
    return {"versions": json.dumps([[v, format_time(t)] for v, t in planned])}


def ensure_scheduled(
    states: StateStore, key: str, retire: tuple[str, datetime] | None, scheduled: bool
) -> None:
    """The schedule ``take_lease`` could not write with the lease, written before anything else happens."""
    if retire is not None and not scheduled:
        version, after = retire
        schedule_retirement(states, key, [version], after)


def schedule_retirement(states: StateStore, key: str, versions: Collection[str], after: datetime) -> None:
    """Plan the retirement of ``versions`` at ``after`` in their secret's schedule (its own row, so
    retiring never races a rotation's progress), replacing a time planned for them before (a restored
    version replaced again just now starts its grace again). Always a fresh
    compare-and-swap write, even when the version is planned already: a retirement run that read the
    schedule before it and found the version still current (this rotation has not written its version
    yet; an earlier attempt that failed had planned it) then loses its write, instead of dropping the entry
    for good; and a time a storage writer pushed far ahead is pulled back. Raises Conflict when the
    schedule keeps changing (three reads and writes lost to retirement runs), DependencyUnavailable."""
    row = schedule_key(key)
    for _ in range(3):
        stored = schedule_row(states, row)
        kept = [(v, t) for v, t in (retirements(stored.state) if stored else []) if v not in versions]
        state = schedule_state([*kept, *((v, after) for v in versions)])
        try:
            if stored is None:
                states.create(PARTITION, row, state)
            else:
                states.replace(PARTITION, row, state, stored.etag)
            return
        except (Conflict, NotFound):
            continue  # a retirement run changed or removed it meanwhile: read it again
    raise Conflict(f"the retirement schedule of {key} keeps changing; try again")


def schedule_row(states: StateStore, row: str) -> Versioned | None:
    """A retirement schedule row; a tampered one (reported by the store) as an empty schedule at the
    version read, so whoever writes next replaces it: what it planned cannot be trusted, and the vault
    decides what retires anyway (``retire_due``)."""
    return get_as_found(states, PARTITION, row)
