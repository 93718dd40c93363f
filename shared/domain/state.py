"""Stored state with its version: every stored state transition is a compare-and-swap.

A reader gets the state and the version (the Table entity's ETag) it read; a write goes through only if
the state is still at that version, and the loser of a race gets ``Conflict`` — never a 500, never a
silent overwrite. State machines decide *whether* a transition is allowed (``InvalidTransition``); the
store decides whether it still applies to what was read (``Conflict``).

Sealed: a storage writer can write any row, so every state carries a MAC over its table, partition, key
and properties, made with the audit key ring (``seal_state``; the key id is stored beside it, so the key
can rotate). A row whose MAC is missing or wrong is tampered (``check_state``, ``StateTampered``): never
acted on. A sealed row replayed from the past is authentic; what it could decide is bounded by leases
that expire and by decisions the audit trail bears out.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from shared.domain.audit import parse_time
from shared.domain.errors import Conflict

logger = logging.getLogger(__name__)

#: host.json's ``functionTimeout``: the platform stops an invocation that runs longer (a test pins it).
FUNCTION_TIMEOUT = timedelta(minutes=10)
#: Every lease this service takes (a write to a secret, a revocation's execution, an expiry claim) runs
#: this long: longer than FUNCTION_TIMEOUT, so a holder is stopped by the platform before its lease can
#: run out under it, and a lease that ran out belongs to a holder that is gone.
LEASE = timedelta(minutes=15)

#: The MAC of a sealed state and the id of the key that made it: stored beside the state's properties.
MAC_FIELD = "state_mac"
KEY_ID_FIELD = "state_key_id"
_SEAL_FIELDS = (MAC_FIELD, KEY_ID_FIELD)
#: Tells a state's MAC input from an audit record's, although the same keys make both.
_DOMAIN = b"secret-lifecycle/state/v1\n"
#: Table Storage keeps integers of 32 bits as they are; anything wider would come back as another type.
_INT32 = range(-(2**31), 2**31)


@dataclass(frozen=True)
class Versioned:
    """A stored state (flat, JSON-safe properties) and the version it was read at. ``tampered``: the check
    its seal failed (``check_state``); such a state is listed with no properties, never acted on."""

    state: Mapping[str, Any]
    etag: str
    tampered: str | None = None


class StateTampered(Conflict):
    """A stored state's seal is missing or wrong: a storage writer wrote or rewrote it (409, never acted
    on). Names the row's keys and the failed check, never its contents; ``etag`` is the version read, for
    the one who replaces the row. ``fingerprint`` tells one tampering of the row from the next."""

    def __init__(self, table: str, partition: str, key: str, check: str, etag: str, fingerprint: str) -> None:
        super().__init__(f"the stored state {table}/{partition}/{key[:140]} was tampered with ({check})")
        self.table = table
        self.partition = partition
        self.key = key
        self.check = check
        self.etag = etag
        self.fingerprint = fingerprint


def _body(state: Mapping[str, Any]) -> dict[str, Any]:
    """The properties a seal covers: all but the seal's own, None dropped (as storage drops them)."""
    return {k: v for k, v in state.items() if v is not None and k not in _SEAL_FIELDS}


def _payload(table: str, partition: str, key: str, body: Mapping[str, Any]) -> bytes:
    """The MAC input of a state's ``_body``. Raises ValueError for a property storage would change."""
    for name, value in body.items():
        if isinstance(value, float) or (
            isinstance(value, int) and not isinstance(value, bool) and value not in _INT32
        ):
            raise ValueError(f"state property {name}: only strings, booleans and 32-bit integers are sealed")
        if not isinstance(value, str | bool | int):
            raise ValueError(f"state property {name}: {type(value).__name__} cannot be sealed")
    document = {"table": table, "partition": partition, "key": key, "state": body}
    return _DOMAIN + json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def seal_state(
    table: str, partition: str, key: str, state: Mapping[str, Any], key_id: str, mac_key: bytes
) -> dict[str, Any]:
    """The state as stored: its properties (None dropped, as storage drops them) and its seal. Raises
    ValueError for a property storage would not give back as it was (a float, a wide integer)."""
    body = _body(state)
    mac = hmac.new(mac_key, _payload(table, partition, key, body), hashlib.sha256).hexdigest()
    return {**body, KEY_ID_FIELD: key_id, MAC_FIELD: mac}


def check_state(
    table: str, partition: str, key: str, stored: Mapping[str, Any], keys: Callable[[str], bytes | None]
) -> tuple[dict[str, Any], str | None]:
    """The state in a stored row without its seal, and None; or ({}, the failed check) when the seal is
    missing, names a key that does not exist, or does not match."""
    mac, key_id = stored.get(MAC_FIELD), stored.get(KEY_ID_FIELD)
    if not isinstance(mac, str) or not isinstance(key_id, str):
        return {}, "no seal"
    mac_key = keys(key_id)
    if mac_key is None:
        return {}, "unknown key"
    body = _body(stored)
    try:
        payload = _payload(table, partition, key, body)
    except ValueError:
        return {}, "unsealable property"
    if not hmac.compare_digest(mac, hmac.new(mac_key, payload, hashlib.sha256).hexdigest()):
        return {}, "mac mismatch"
    return body, None


def fingerprint(stored: Mapping[str, Any]) -> str:
    """A short digest of a stored row's contents as found: one tampering of a row from the next."""
    text = json.dumps({k: str(v) for k, v in stored.items()}, sort_keys=True, ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


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
