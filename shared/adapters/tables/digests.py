"""The audit table's digest store: the ``_digest`` partition, one sealed snapshot of every chain's head a
row (the heads as JSON, cut into string properties), chained like records and guarded by a head row."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from azure.core.exceptions import AzureError, ResourceNotFoundError

from shared.adapters.tables.rows import (
    DEPENDENCY,
    HEAD_ROW,
    AuditTable,
    row_key,
    seq_of,
    strip,
    unavailable,
)
from shared.domain.audit import (
    DIGEST_CHAIN,
    GENESIS_MAC,
    ChainHead,
    Digest,
    DigestHeadFound,
    format_time,
    judge_digest_head,
    parse_time,
    seal_digest,
)
from shared.domain.errors import Conflict, DependencyUnavailable
from shared.ports import MacKeyRing

logger = logging.getLogger(__name__)

_CHUNK = 32_000  # characters per string property (Azure allows 32K UTF-16 characters)
_MAX_DIGEST_BYTES = 900 * 1024  # of the 1 MiB an entity may hold, the rest left for its other properties
_EPOCH = parse_time("1970-01-01T00:00:00.000000Z")


class TableDigestStore:
    """AuditReader's digests on the audit table."""

    def __init__(self, table: AuditTable) -> None:
        self._audit = table

    def read_digests(self, since: int = 1) -> list[Digest]:
        query = "PartitionKey eq @digest and RowKey ne @head"
        params = {"digest": DIGEST_CHAIN, "head": HEAD_ROW}
        if since > 1:
            # Row keys count down (MAX_SEQ - seq): digests from ``since`` on sort at or before its key.
            # Without ``since`` every row is read, rows that are no digest at all included (verify).
            query += " and RowKey le @upto"
            params["upto"] = row_key(since)
        return [_digest_of(entity) for entity in self._audit.query(query, params)]

    def append_digest(
        self,
        previous: Digest | None,
        heads: Mapping[str, ChainHead],
        time_: datetime,
        keys: MacKeyRing,
        held: Sequence[str] = (),
    ) -> Digest:
        key_id, key = keys.current()
        text = json.dumps({n: [h.seq, h.mac] for n, h in sorted(heads.items())}, separators=(",", ":"))
        if 2 * len(text) > _MAX_DIGEST_BYTES:
            # Azure stores strings as UTF-16 and caps an entity at 1 MiB. Say so, rather than let Azure
            # answer a bare 400 every hour (verify would then report a stale digest).
            raise DependencyUnavailable(
                DEPENDENCY,
                f"a digest of {len(heads)} chains does not fit one table entity (about 4,000 at most)",
            )
        after = ChainHead(previous.seq, previous.mac) if previous else ChainHead(0, GENESIS_MAC)
        digest = seal_digest(after.seq + 1, time_, heads, after.mac, key_id, key, held)

        def newest(stored: ChainHead | None) -> None:
            found = judge_digest_head(stored, after if previous else None, self._digest_exists)
            if found is DigestHeadFound.SEALED_MEANWHILE and stored is not None:
                raise Conflict(f"digest {stored.seq} was sealed meanwhile by another writer")
            if found is DigestHeadFound.STALE:
                logger.warning("the digest head row did not name digest %d; it is rewritten", after.seq)

        row = _digest_row(digest, len(heads), text)
        return self._audit.write_after(DIGEST_CHAIN, newest, ChainHead(digest.seq, digest.mac), [row], digest)

    def _digest_exists(self, seq: int) -> bool:
        try:
            self._audit.table.get_entity(DIGEST_CHAIN, row_key(seq), select=["seq"])
        except ResourceNotFoundError:
            return False
        except AzureError as err:
            raise unavailable(err) from err
        return True


def _digest_row(digest: Digest, chains: int, heads_json: str) -> dict[str, Any]:
    parts = [heads_json[i : i + _CHUNK] for i in range(0, len(heads_json), _CHUNK)] or [""]
    row: dict[str, Any] = {
        "PartitionKey": DIGEST_CHAIN,
        "RowKey": row_key(digest.seq),
        "seq": digest.seq,
        "time": format_time(digest.time),
        "prev_mac": digest.prev_mac,
        "key_id": digest.key_id,
        "mac": digest.mac,
        "chains": chains,
        "held": json.dumps(list(digest.held)) if digest.held else None,
        "heads_parts": len(parts),
        **{f"heads_{i}": part for i, part in enumerate(parts)},
    }
    return strip(row)


def _digest_of(entity: Mapping[str, Any]) -> Digest:
    """The digest a row holds; an unreadable one still shows up in verify, with a MAC that cannot match."""
    try:
        raw = "".join(str(entity.get(f"heads_{i}", "")) for i in range(int(entity.get("heads_parts", 0))))
        heads = {name: ChainHead(int(v[0]), str(v[1])) for name, v in json.loads(raw or "{}").items()}
        held = json.loads(str(entity.get("held") or "[]"))
        return Digest(
            seq=int(entity["seq"]),
            time=parse_time(str(entity["time"])),
            heads=heads,
            prev_mac=str(entity["prev_mac"]),
            key_id=str(entity["key_id"]),
            mac=str(entity["mac"]),
            held=tuple(str(name) for name in held),
        )
    except (KeyError, ValueError, TypeError, IndexError):
        try:
            seq = seq_of(str(entity["RowKey"]))
        except ValueError:
            seq = 0  # not even a digest row key: reported as digest 0
        return Digest(seq=seq, time=_EPOCH, heads={}, prev_mac="", key_id="", mac="")
