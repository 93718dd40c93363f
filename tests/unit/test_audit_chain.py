"""Chains and digests in the pure core: every kind of tampering is reported, and only tampering."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.domain.audit import (
    GENESIS_MAC,
    Action,
    Actor,
    ActorType,
    AuditError,
    AuditEvent,
    AuditRecord,
    BreakKind,
    ChainHead,
    StoredRecord,
    check_against_digest,
    event_fields,
    seal_all,
    seal_digest,
    verify_chain,
    verify_digests,
)

KEY = b"k" * 32
KEYS = {"v1": KEY}
T0 = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)


def lookup(key_id: str) -> bytes | None:
    return KEYS.get(key_id)


def events(n: int, secret: str = "db-password") -> list[AuditEvent]:
    return [
        AuditEvent(
            action=Action.ROTATED,
            vault="fleet",
            secret_name=secret,
            version=f"{i:032x}",
            time=T0 + timedelta(minutes=i),
            actor=Actor("op-1", ActorType.USER, "10.0.0.1", "curl/8"),
            details={"step": i},
        )
        for i in range(n)
    ]


def stored(records: list[AuditRecord]) -> list[StoredRecord]:
    return [
        StoredRecord(
            position=r.seq,
            fields={
                **event_fields(r.event),
                "seq": r.seq,
                "prev_mac": r.prev_mac,
                "key_id": r.key_id,
                "mac": r.mac,
            },
        )
        for r in records
    ]


def kinds(verdict: Any) -> list[tuple[BreakKind, int | None]]:
    return [(b.kind, b.seq) for b in verdict.breaks]


def test_an_untouched_chain_verifies() -> None:
    records = seal_all(events(5), 0, GENESIS_MAC, "v1", KEY)
    verdict = verify_chain("fleet:db-password", stored(records), lookup, ChainHead(5, records[-1].mac))
    assert verdict.breaks == []
    assert verdict.records == 5
    assert [r.seq for r in records] == [1, 2, 3, 4, 5]
    assert records[1].prev_mac == records[0].mac


def test_appending_later_continues_the_chain() -> None:
    first = seal_all(events(2), 0, GENESIS_MAC, "v1", KEY)
    more = seal_all(events(2), 2, first[-1].mac, "v1", KEY)
    assert verify_chain("fleet:db-password", stored(first + more), lookup).breaks == []


def test_edited_field_is_reported() -> None:
    rows = stored(seal_all(events(4), 0, GENESIS_MAC, "v1", KEY))
    rows[2] = StoredRecord(3, {**rows[2].fields, "result": "failure"})
    assert kinds(verify_chain("fleet:db-password", rows, lookup)) == [(BreakKind.EDITED, 3)]


def test_deleted_middle_record_is_reported() -> None:
    rows = stored(seal_all(events(5), 0, GENESIS_MAC, "v1", KEY))
    del rows[2]
    assert kinds(verify_chain("fleet:db-password", rows, lookup)) == [(BreakKind.DELETED, 3)]


def test_swapped_records_are_reported() -> None:
    rows = stored(seal_all(events(5), 0, GENESIS_MAC, "v1", KEY))
    rows[1], rows[2] = StoredRecord(2, rows[2].fields), StoredRecord(3, rows[1].fields)
    found = kinds(verify_chain("fleet:db-password", rows, lookup))
    assert (BreakKind.REORDERED, 2) in found
    assert (BreakKind.REORDERED, 3) in found


def test_truncated_tail_is_reported_against_the_head() -> None:
    records = seal_all(events(5), 0, GENESIS_MAC, "v1", KEY)
    verdict = verify_chain("fleet:db-password", stored(records)[:3], lookup, ChainHead(5, records[-1].mac))
    assert kinds(verdict) == [(BreakKind.TRUNCATED, 4)]


def test_rewritten_chain_without_the_key_is_reported_everywhere() -> None:
    records = seal_all(events(3), 0, GENESIS_MAC, "v1", KEY)
    forged = seal_all(events(3), 0, GENESIS_MAC, "v1", b"guess" * 8)
    verdict = verify_chain("fleet:db-password", stored(forged), lookup, ChainHead(3, records[-1].mac))
    assert [k for k, _ in kinds(verdict)].count(BreakKind.EDITED) >= 3


def test_unknown_key_is_reported() -> None:
    rows = stored(seal_all(events(1), 0, GENESIS_MAC, "v2", KEY))
    assert kinds(verify_chain("fleet:db-password", rows, lookup)) == [(BreakKind.UNKNOWN_KEY, 1)]


def test_malformed_record_is_reported() -> None:
    rows = stored(seal_all(events(2), 0, GENESIS_MAC, "v1", KEY))
    broken = dict(rows[0].fields)
    del broken["action"]
    rows[0] = StoredRecord(1, broken)
    assert (BreakKind.MALFORMED, 1) in kinds(verify_chain("fleet:db-password", rows, lookup))


def test_digest_catches_a_tail_cut_together_with_the_head() -> None:
    records = seal_all(events(5), 0, GENESIS_MAC, "v1", KEY)
    digest = seal_digest(1, T0, {"fleet:db-password": ChainHead(5, records[-1].mac)}, GENESIS_MAC, "v1", KEY)
    cut = stored(records)[:3]
    verdict = verify_chain(
        "fleet:db-password", cut, lookup, ChainHead(3, records[2].mac)
    )  # head rewritten too
    assert verdict.breaks == []
    macs = {r.seq: r.mac for r in records[:3]}
    found = check_against_digest({"fleet:db-password": verdict}, digest, lambda c, s: macs.get(s))
    assert [(b.kind, b.seq) for b in found] == [(BreakKind.TRUNCATED, 4)]


def test_digest_catches_a_vanished_chain() -> None:
    digest = seal_digest(1, T0, {"fleet:api-key": ChainHead(2, "ab" * 32)}, GENESIS_MAC, "v1", KEY)
    found = check_against_digest({}, digest, lambda c, s: None)
    assert [(b.chain, b.kind) for b in found] == [("fleet:api-key", BreakKind.TRUNCATED)]


def test_forged_and_missing_digests_are_reported() -> None:
    d1 = seal_digest(1, T0, {}, GENESIS_MAC, "v1", KEY)
    d2 = seal_digest(2, T0 + timedelta(hours=1), {"fleet:x": ChainHead(1, "a" * 64)}, d1.mac, "v1", KEY)
    d3 = seal_digest(3, T0 + timedelta(hours=2), {}, d2.mac, "v1", KEY)
    assert verify_digests([d1, d2, d3], lookup) == []
    forged = seal_digest(2, d2.time, {}, d1.mac, "v1", b"nokey" * 8)
    assert [(b.kind, b.seq) for b in verify_digests([d1, forged, d3], lookup)] == [
        (BreakKind.FORGED_DIGEST, 2)
    ]
    assert [(b.kind, b.seq) for b in verify_digests([d1, d3], lookup)] == [(BreakKind.DELETED, 2)]


def test_details_never_take_a_value_key() -> None:
    with pytest.raises(AuditError):
        AuditEvent(action=Action.ROTATED, vault="v", time=T0, details={"value": "hunter2"})
    with pytest.raises(AuditError):
        AuditEvent(action=Action.ROTATED, vault="v", time=T0, details={"nested": [{"Password": "x"}]})
    with pytest.raises(AuditError):
        AuditEvent(action=Action.ROTATED, vault="v", time=T0, details={"blob": "x" * 5000})
    with pytest.raises(AuditError):
        AuditEvent(action=Action.ROTATED, vault="v", time=datetime(2026, 1, 1))  # naive time


def test_one_chain_per_secret_whatever_the_spelling() -> None:
    from shared.domain.audit import chain_of

    assert chain_of("Fleet", "DB-Password") == chain_of("fleet", "db-password") == "fleet:db-password"
    assert chain_of("fleet", None) == "fleet:_service"
