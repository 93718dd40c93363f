"""Digests: sealed snapshots of every chain's head, chained themselves, written hourly.

A digest records each chain's head (sequence number and MAC) at one moment, so cutting the newest records
of a chain shows against it; digests form a chain of their own, anchored outside the table.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
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


def digest_payload(
    seq: int, time: datetime, heads: Mapping[str, ChainHead], prev_mac: str, key_id: str
) -> bytes:
    body = {
        "chain": DIGEST_CHAIN,
        "seq": seq,
        "time": format_time(time),
        "heads": {name: [head.seq, head.mac] for name, head in sorted(heads.items())},
        "prev_mac": prev_mac,
        "key_id": key_id,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def seal_digest(
    seq: int, time: datetime, heads: Mapping[str, ChainHead], prev_mac: str, key_id: str, key: bytes
) -> Digest:
    mac = compute_mac(key, digest_payload(seq, time, heads, prev_mac, key_id))
    return Digest(seq=seq, time=time, heads=dict(heads), prev_mac=prev_mac, key_id=key_id, mac=mac)
