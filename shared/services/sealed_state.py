"""Sealed states: a ``StateStore`` whose every row carries a MAC (``shared.domain.state``), over any other.

Every service that keeps state (rotation progress, leases and retirement schedules, revocation requests,
claims, findings, the inventory) reads and writes it through this store, so none of them can act on a row
nobody authenticated: ``get`` raises StateTampered for a row whose seal is missing or wrong, ``list``
gives such a row with no properties and its failed check (``Versioned.tampered``), and every write seals
what it stores. Each tampered row found goes to the alarm (``TamperAlarm`` in shared/services/findings.py:
a STATE_TAMPERED record, a finding and an event, once per tampering).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from shared.domain.state import (
    KEY_ID_FIELD,
    MAC_FIELD,
    StateTampered,
    StateWrite,
    Versioned,
    check_state,
    fingerprint,
    seal_state,
)
from shared.ports import MacKeyRing, StateStore

logger = logging.getLogger(__name__)

Alarm = Callable[[StateTampered], None]


class SealedStateStore:
    """StateStore over ``inner`` (the rows of ``table``), sealing with ``keys``. ``alarm`` hears of every
    tampered row read (best effort: a failing alarm is logged, the refusal stands)."""

    def __init__(self, inner: StateStore, keys: MacKeyRing, table: str, alarm: Alarm | None = None) -> None:
        self._inner = inner
        self._keys = keys
        self.table = table
        self._alarm = alarm

    def get(self, partition: str, key: str) -> Versioned | None:
        """The authentic state, or None. Raises StateTampered (after the alarm), DependencyUnavailable."""
        stored = self._inner.get(partition, key)
        if stored is None:
            return None
        opened = self._open(partition, key, stored)
        if opened.tampered is not None:
            raise self._tampered(partition, key, stored, opened.tampered)
        return opened

    def create(self, partition: str, key: str, state: Mapping[str, Any]) -> Versioned:
        sealed = self._seal(partition, key, state)
        return self._plain(self._inner.create(partition, key, sealed))

    def replace(self, partition: str, key: str, state: Mapping[str, Any], etag: str) -> Versioned:
        sealed = self._seal(partition, key, state)
        return self._plain(self._inner.replace(partition, key, sealed, etag))

    def delete(self, partition: str, key: str, etag: str) -> None:
        self._inner.delete(partition, key, etag)

    def commit(self, partition: str, writes: Sequence[StateWrite]) -> list[Versioned]:
        sealed = [StateWrite(w.key, self._seal(partition, w.key, w.state), w.etag) for w in writes]
        return [self._plain(v) for v in self._inner.commit(partition, sealed)]

    def list(self, partition: str, *, start: str = "", stop: str | None = None) -> dict[str, Versioned]:
        """Every state of the partition in the range; a tampered one with no properties and its check
        (the alarm hears of it)."""
        found: dict[str, Versioned] = {}
        for key, stored in self._inner.list(partition, start=start, stop=stop).items():
            opened = self._open(partition, key, stored)
            if opened.tampered is not None:
                self._tampered(partition, key, stored, opened.tampered)
            found[key] = opened
        return found

    def _seal(self, partition: str, key: str, state: Mapping[str, Any]) -> dict[str, Any]:
        key_id, mac_key = self._keys.current()
        return seal_state(self.table, partition, key, state, key_id, mac_key)

    def _open(self, partition: str, key: str, stored: Versioned) -> Versioned:
        state, problem = check_state(self.table, partition, key, stored.state, self._keys.get)
        return Versioned(state=state, etag=stored.etag, tampered=problem)

    def _plain(self, stored: Versioned) -> Versioned:
        """What a write stored, as the caller gave it (the seal is this store's business)."""
        state = {k: v for k, v in stored.state.items() if k not in (MAC_FIELD, KEY_ID_FIELD)}
        return Versioned(state=state, etag=stored.etag)

    def _tampered(self, partition: str, key: str, stored: Versioned, check: str) -> StateTampered:
        err = StateTampered(self.table, partition, key, check, stored.etag, fingerprint(stored.state))
        logger.error("state %s/%s/%.140s refused: %s", self.table, partition, key, check)
        if self._alarm is not None:
            try:
                self._alarm(err)
            except Exception:  # the refusal stands whatever the alarm does
                logger.exception("the alarm about state %s/%s/%.140s failed", self.table, partition, key)
        return err


def get_as_found(states: StateStore, partition: str, key: str) -> Versioned | None:
    """A row as found: the authentic state, None, or — when its seal fails (the store has reported it) —
    no properties, the failed check (``tampered``) and the version read. For a reader that goes on without
    the row's contents: a view that says why nothing acts on it, or a writer that replaces it (that
    version is what the replace is conditional on). Raises DependencyUnavailable."""
    try:
        return states.get(partition, key)
    except StateTampered as err:
        return Versioned(state={}, etag=err.etag, tampered=err.check)
