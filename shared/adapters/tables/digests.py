"""The audit table's digest store: the ``_digest`` partition, one sealed digest a row (its list of pages,
chained like records and guarded by a head row), and the ``_digestpages`` partition, one page of heads a
row under its SHA-256 (shared/domain/audit/digests.py): a page that did not change since the previous
digest is the same row, written once. A page's heads are JSON cut into string properties."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from azure.core.exceptions import AzureError, ResourceNotFoundError

from shared.adapters.tables.rows import (
    DIGEST_PAGES,
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
    Baseline,
    BreakEntry,
    ChainHead,
    Digest,
    DigestHeadFound,
    DigestNotes,
    DigestPage,
    baseline_entries,
    baseline_text,
    digest_fields,
    judge_digest_head,
    missing_pages,
    page_text,
    paged,
    parse_time,
    seal_digest,
)
from shared.domain.errors import Conflict
from shared.ports import MacKeyRing

logger = logging.getLogger(__name__)

_CHUNK = 32_000  # characters per string property (Azure allows 32K UTF-16 characters)
_EPOCH = parse_time("1970-01-01T00:00:00.000000Z")
#: Pages a transaction writes at most: a page is at most about 0.5 MB, a transaction at most 4 MiB.
_PAGES_PER_BATCH = 6


class TableDigestStore:
    """AuditReader's digests on the audit table."""

    def __init__(self, table: AuditTable) -> None:
        self._audit = table

    def read_digests(self, since: int = 1, chain: str | None = None) -> list[Digest]:
        query = "PartitionKey eq @digest and RowKey ne @head"
        params = {"digest": DIGEST_CHAIN, "head": HEAD_ROW}
        if since > 1:
            # Row keys count down (MAX_SEQ - seq): digests from ``since`` on sort at or before its key.
            # Without ``since`` every row is read, rows that are no digest at all included (verify).
            query += " and RowKey le @upto"
            params["upto"] = row_key(since)
        digests = [_digest_of(entity) for entity in self._audit.query(query, params)]
        pages: dict[str, dict[str, ChainHead] | None] = {}  # by hash: read once however many digests
        return [self._with_baseline(self._with_heads(digest, chain, pages)) for digest in digests]

    def _with_baseline(self, digest: Digest) -> Digest:
        """The digest with its incident's acknowledged breaks read back (None when gone or unreadable)."""
        if digest.baseline is None:
            return digest
        text = self._read_text(digest.baseline.hash)
        try:
            entries: tuple[BreakEntry, ...] | None = baseline_entries(text or "")
        except (ValueError, TypeError):
            entries = None
        return replace(digest, baseline=replace(digest.baseline, entries=entries))

    def _with_heads(
        self, digest: Digest, chain: str | None, pages: dict[str, dict[str, ChainHead] | None]
    ) -> Digest:
        """The digest with the heads of its pages (only ``chain``'s page when named); a page that is gone
        or unreadable adds none (verify reports the page)."""
        wanted = [digest.bucket(chain)] if chain is not None else list(digest.pages)
        heads: dict[str, ChainHead] = {}
        for page in wanted:
            if page is None:
                continue
            if page.hash not in pages:
                pages[page.hash] = self._read_page(page.hash)
            heads.update(pages[page.hash] or {})
        buckets = None if chain is None else tuple(p.bucket for p in wanted if p is not None)
        return replace(digest, heads=heads, buckets_read=buckets)

    def _read_page(self, page: str) -> dict[str, ChainHead] | None:
        raw = self._read_text(page)
        try:
            return {name: ChainHead(int(v[0]), str(v[1])) for name, v in json.loads(raw or "").items()}
        except (KeyError, ValueError, TypeError, IndexError, AttributeError):
            return None

    def _read_text(self, page: str) -> str | None:
        """The text of a row of ``_digestpages`` (None: gone or unreadable)."""
        try:
            entity = self._audit.table.get_entity(DIGEST_PAGES, page)
        except ResourceNotFoundError:
            return None
        except AzureError as err:
            raise unavailable(err) from err
        try:
            return "".join(
                str(entity.get(f"heads_{i}", "")) for i in range(int(entity.get("heads_parts", 0)))
            )
        except (ValueError, TypeError):
            return None

    def append_digest(
        self,
        previous: Digest | None,
        heads: Mapping[str, ChainHead],
        time_: datetime,
        keys: MacKeyRing,
        held: Sequence[str] = (),
        notes: DigestNotes | None = None,
    ) -> Digest:
        key_id, key = keys.current()
        after = ChainHead(previous.seq, previous.mac) if previous else ChainHead(0, GENESIS_MAC)
        if notes is not None and notes.after is not None:
            after = notes.after
        digest = seal_digest(after.seq + 1, time_, heads, after.mac, key_id, key, held, notes)
        # The pages first (content-addressed: writing one twice writes the same row), then the digest
        # that names them: a digest never names a page that is not stored.
        known = set(previous.pages) - set(missing_pages(previous)) if previous is not None else set()
        self._write_pages(digest, {p.hash for p in known})
        if digest.baseline is not None and digest.baseline.entries is not None:
            self._write_text(digest.baseline.hash, baseline_text(digest.baseline.entries))

        def newest(stored: ChainHead | None) -> None:
            found = judge_digest_head(stored, after if after.seq else None, self._digest_exists)
            if found is DigestHeadFound.SEALED_MEANWHILE and stored is not None:
                raise Conflict(f"digest {stored.seq} was sealed meanwhile by another writer")
            if found is DigestHeadFound.STALE:
                logger.warning("the digest head row did not name digest %d; it is rewritten", after.seq)

        row = _digest_row(digest, len(heads))
        return self._audit.write_after(DIGEST_CHAIN, newest, ChainHead(digest.seq, digest.mac), [row], digest)

    def _write_pages(self, digest: Digest, stored: set[str]) -> None:
        """Upsert the digest's pages that the previous digest did not name already."""
        by_bucket = paged(digest.heads, digest.fanout)
        rows = [
            _page_row(page.hash, page_text(by_bucket[page.bucket]))
            for page in digest.pages
            if page.hash not in stored
        ]
        for start in range(0, len(rows), _PAGES_PER_BATCH):
            try:
                self._audit.transact([("upsert", row) for row in rows[start : start + _PAGES_PER_BATCH]])
            except AzureError as err:
                raise unavailable(err) from err

    def _write_text(self, page: str, text: str) -> None:
        try:
            self._audit.transact([("upsert", _page_row(page, text))])
        except AzureError as err:
            raise unavailable(err) from err

    def _digest_exists(self, seq: int) -> bool:
        try:
            self._audit.table.get_entity(DIGEST_CHAIN, row_key(seq), select=["seq"])
        except ResourceNotFoundError:
            return False
        except AzureError as err:
            raise unavailable(err) from err
        return True


def _page_row(page: str, text: str) -> dict[str, Any]:
    parts = [text[i : i + _CHUNK] for i in range(0, len(text), _CHUNK)] or [""]
    return {
        "PartitionKey": DIGEST_PAGES,
        "RowKey": page,
        "heads_parts": len(parts),
        **{f"heads_{i}": part for i, part in enumerate(parts)},
    }


def _digest_row(digest: Digest, chains: int) -> dict[str, Any]:
    row: dict[str, Any] = {
        "PartitionKey": DIGEST_CHAIN,
        "RowKey": row_key(digest.seq),
        **digest_fields(digest),
        "chains": chains,
    }
    return strip(row)


def _digest_of(entity: Mapping[str, Any]) -> Digest:
    """The digest a row holds, without its heads (``_with_heads`` reads its pages); an unreadable one
    still shows up in verify, with a MAC that cannot match."""
    try:
        held = json.loads(str(entity.get("held") or "[]"))
        held_digests = tuple((int(a), int(b)) for a, b in json.loads(str(entity.get("held_digests") or "[]")))
        baseline = json.loads(str(entity.get("baseline") or "null"))
        pages = tuple(DigestPage(int(b), int(n), str(h)) for b, n, h in json.loads(str(entity["pages"])))
        return Digest(
            seq=int(entity["seq"]),
            time=parse_time(str(entity["time"])),
            heads={},
            prev_mac=str(entity["prev_mac"]),
            key_id=str(entity["key_id"]),
            mac=str(entity["mac"]),
            held=tuple(str(name) for name in held),
            fanout=int(entity["fanout"]),
            pages=pages,
            held_digests=held_digests,
            baseline=None
            if baseline is None
            else Baseline(str(baseline[0]), int(baseline[1]), str(baseline[2])),
        )
    except (KeyError, ValueError, TypeError, IndexError):
        try:
            seq = seq_of(str(entity["RowKey"]))
        except ValueError:
            seq = 0  # not even a digest row key: reported as digest 0
        return Digest(seq=seq, time=_EPOCH, heads={}, prev_mac="", key_id="", mac="")
