"""Digests: sealed snapshots of every chain's head, chained themselves, written hourly.

A digest records each chain's head (sequence number and MAC) at one moment, so cutting the newest records
of a chain shows against it; digests form a chain of their own, anchored outside the table.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from shared.domain.audit.canonical import compute_mac, format_time
from shared.domain.audit.records import DIGEST_CHAIN, ChainHead


@dataclass(frozen=True)
class Digest:
    seq: int
    time: datetime
    heads: Mapping[str, ChainHead]
    prev_mac: str
    key_id: str
    mac: str
    #: Chains whose stored head went backwards or vanished: the digest kept the head it had sealed before
    #: instead of sealing the regression. Part of the MAC (only when not empty, so older digests verify).
    held: tuple[str, ...] = ()


@dataclass(frozen=True)
class AnchoredDigest:
    """The newest digest as recorded outside the table (a Key Vault secret version): a storage writer
    cannot rewrite it, so the table must still hold this digest and everything it sealed."""

    seq: int
    mac: str
    time: datetime


def digest_payload(
    seq: int,
    time: datetime,
    heads: Mapping[str, ChainHead],
    prev_mac: str,
    key_id: str,
    held: Sequence[str] = (),
) -> bytes:
    body: dict[str, object] = {
        "chain": DIGEST_CHAIN,
        "seq": seq,
        "time": format_time(time),
        "heads": {name: [head.seq, head.mac] for name, head in sorted(heads.items())},
        "prev_mac": prev_mac,
        "key_id": key_id,
    }
    if held:
        body["held"] = sorted(held)
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def seal_digest(  # noqa: PLR0913 - every field of the sealed digest is an input
    seq: int,
    time: datetime,
    heads: Mapping[str, ChainHead],
    prev_mac: str,
    key_id: str,
    key: bytes,
    held: Sequence[str] = (),
) -> Digest:
    mac = compute_mac(key, digest_payload(seq, time, heads, prev_mac, key_id, held))
    return Digest(
        seq=seq,
        time=time,
        heads=dict(heads),
        prev_mac=prev_mac,
        key_id=key_id,
        mac=mac,
        held=tuple(sorted(held)),
    )


def hold_regressions(
    previous: Digest | None, heads: Mapping[str, ChainHead], regressed: Iterable[str]
) -> dict[str, ChainHead]:
    """The heads to seal next: the stored heads, except that a chain which regressed keeps the head the
    previous digest sealed. A digest therefore never seals a cut: once sealed, a position stays sealed."""
    sealed = dict(heads)
    if previous is not None:
        for chain in regressed:
            sealed[chain] = previous.heads[chain]
    return sealed
