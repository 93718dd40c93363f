"""Digests: sealed snapshots of every chain's head, chained themselves, written hourly.

A digest records each chain's head (sequence number and MAC) at one moment, so cutting the newest records
of a chain shows against it; digests form a chain of their own, anchored outside the table.

The heads are cut into pages, so a digest holds any number of chains: a chain's page is the bucket its
name hashes to (``fanout`` buckets, a power of two chosen so a page holds about ``PAGE_CHAINS`` chains),
and a page is known by the SHA-256 of its heads. The digest's MAC covers the list of pages (bucket, chain
count, hash), not the heads themselves: whoever holds one page and the digest can check that page, and so
one chain's sealed head, without reading the others (an inclusion proof), and a page that did not change
since the previous digest is the same page, stored once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from shared.domain.audit.canonical import compute_mac, format_time
from shared.domain.audit.records import DIGEST_CHAIN, ChainHead

#: About how many chains a page holds: a page is one table entity, and this many of the longest chain
#: names (about 240 characters with the head) stay well under the 1 MiB an entity may hold.
PAGE_CHAINS = 1000


@dataclass(frozen=True)
class DigestPage:
    """One page of a digest's heads: its bucket, how many chains it holds, and the SHA-256 of its heads."""

    bucket: int
    chains: int
    hash: str


def fanout_for(chains: int) -> int:
    """How many buckets a digest of ``chains`` chains cuts its heads into (a power of two)."""
    fanout = 1
    while fanout * PAGE_CHAINS < chains:
        fanout *= 2
    return fanout


def bucket_of(chain: str, fanout: int) -> int:
    """The bucket (page) of a chain in a digest of ``fanout`` buckets."""
    return int(hashlib.sha256(chain.encode()).hexdigest()[:8], 16) % fanout


def page_text(heads: Mapping[str, ChainHead]) -> str:
    """A page's heads in their stored, hashed form."""
    return json.dumps({n: [h.seq, h.mac] for n, h in sorted(heads.items())}, separators=(",", ":"))


def page_hash(heads: Mapping[str, ChainHead]) -> str:
    return hashlib.sha256(page_text(heads).encode()).hexdigest()


def paged(heads: Mapping[str, ChainHead], fanout: int) -> dict[int, dict[str, ChainHead]]:
    """The heads, by bucket (empty buckets left out)."""
    pages: dict[int, dict[str, ChainHead]] = {}
    for chain, head in heads.items():
        pages.setdefault(bucket_of(chain, fanout), {})[chain] = head
    return pages


def pages_of(heads: Mapping[str, ChainHead], fanout: int) -> tuple[DigestPage, ...]:
    return tuple(
        DigestPage(bucket, len(page), page_hash(page))
        for bucket, page in sorted(paged(heads, fanout).items())
    )


#: One acknowledged break as an incident's page lists it: (chain, kind, seq, detail).
BreakEntry = tuple[str, str, int | None, str]


def baseline_text(entries: Iterable[BreakEntry]) -> str:
    """The stored, hashed form of an incident's acknowledged breaks (sorted: one text per set)."""
    rows = sorted({(c, k, s, d) for c, k, s, d in entries}, key=lambda e: (e[0], e[1], e[2] or 0, e[3]))
    return json.dumps([list(e) for e in rows], separators=(",", ":"), ensure_ascii=True)


def baseline_hash(entries: Iterable[BreakEntry]) -> str:
    return hashlib.sha256(baseline_text(entries).encode()).hexdigest()


def baseline_entries(text: str) -> tuple[BreakEntry, ...]:
    """The entries a stored page of acknowledged breaks holds. Raises ValueError (TypeError) for a text
    that is no such page."""
    return tuple((str(c), str(k), None if s is None else int(s), str(d)) for c, k, s, d in json.loads(text))


@dataclass(frozen=True)
class Baseline:
    """A new baseline sealed by an acknowledged incident: the breaks two people acknowledged, a page of
    entries stored under its SHA-256 (the digest's MAC covers the incident, the count and the hash)."""

    incident: str
    count: int
    hash: str
    #: The entries as read back (None: not read, or the page is gone or unreadable).
    entries: tuple[BreakEntry, ...] | None = None

    @classmethod
    def of(cls, incident: str, entries: Sequence[BreakEntry]) -> Baseline:
        listed = baseline_entries(baseline_text(entries))  # sorted, each once: as it is stored
        return cls(incident, len(listed), baseline_hash(listed), listed)

    @property
    def intact(self) -> bool:
        """Whether the entries read back are the ones sealed."""
        return self.entries is not None and baseline_hash(self.entries) == self.hash


@dataclass(frozen=True)
class DigestNotes:
    """What a digest says besides the heads, when the digest chain needs it. After a break in the digest
    chain (the anchored digest is gone or differs, a digest is forged or missing) the next digest follows
    ``after`` (the newest digest that can be trusted, often only as the anchor knows it) and names the
    digests it holds as broken; an acknowledged incident's digest carries its ``baseline``."""

    after: ChainHead | None = None
    held_digests: tuple[tuple[int, int], ...] = ()
    baseline: Baseline | None = None


@dataclass(frozen=True)
class Digest:
    """A sealed digest. ``heads``: every chain's, as read back (only the pages read: see ``pages``, which
    the MAC covers, and ``complete``)."""

    seq: int
    time: datetime
    heads: Mapping[str, ChainHead]
    prev_mac: str
    key_id: str
    mac: str
    #: Chains whose stored head went backwards or vanished: the digest kept the head it had sealed before
    #: instead of sealing the regression. Part of the MAC (only when not empty).
    held: tuple[str, ...] = ()
    fanout: int = 1
    pages: tuple[DigestPage, ...] = ()
    #: The buckets whose pages were read into ``heads`` (None: all of them).
    buckets_read: tuple[int, ...] | None = None
    #: Digests before this one that are gone, forged or differ from the anchor: this digest followed the
    #: last one it could trust and holds these as broken (``DigestNotes``): runs of numbers, first and
    #: last. Part of the MAC (when any).
    held_digests: tuple[tuple[int, int], ...] = ()
    #: The incident this digest sealed a new baseline for. Part of the MAC (when any).
    baseline: Baseline | None = None

    def bucket(self, chain: str) -> DigestPage | None:
        """The page ``chain`` would be on (None: the digest has no chain in that bucket)."""
        wanted = bucket_of(chain, self.fanout)
        return next((p for p in self.pages if p.bucket == wanted), None)


@dataclass(frozen=True)
class AnchoredDigest:
    """The newest digest as recorded outside the table (a Key Vault secret version): a storage writer
    cannot rewrite it, so the table must still hold this digest and everything it sealed."""

    seq: int
    mac: str
    time: datetime


def digest_payload(digest: Digest) -> bytes:
    """What a digest's MAC covers: everything it says but its MAC (its pages, not their heads)."""
    body: dict[str, object] = {
        "chain": DIGEST_CHAIN,
        "seq": digest.seq,
        "time": format_time(digest.time),
        "fanout": digest.fanout,
        "pages": [[p.bucket, p.chains, p.hash] for p in sorted(digest.pages, key=lambda p: p.bucket)],
        "prev_mac": digest.prev_mac,
        "key_id": digest.key_id,
    }
    if digest.held:
        body["held"] = sorted(digest.held)
    if digest.held_digests:
        body["held_digests"] = [list(run) for run in sorted(digest.held_digests)]
    if digest.baseline is not None:
        body["baseline"] = [digest.baseline.incident, digest.baseline.count, digest.baseline.hash]
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def digest_fields(digest: Digest) -> dict[str, Any]:
    """A digest as it is stored (a table row, a line of the archive): what its MAC covers, in strings and
    numbers; fields without a value are left out."""
    fields: dict[str, Any] = {
        "seq": digest.seq,
        "time": format_time(digest.time),
        "prev_mac": digest.prev_mac,
        "key_id": digest.key_id,
        "mac": digest.mac,
        "fanout": digest.fanout,
        "pages": json.dumps([[p.bucket, p.chains, p.hash] for p in digest.pages], separators=(",", ":")),
    }
    if digest.held:
        fields["held"] = json.dumps(list(digest.held))
    if digest.held_digests:
        fields["held_digests"] = json.dumps([list(r) for r in digest.held_digests])
    if digest.baseline is not None:
        fields["baseline"] = json.dumps(
            [digest.baseline.incident, digest.baseline.count, digest.baseline.hash]
        )
    return fields


def seal_digest(  # noqa: PLR0913 - every field of the sealed digest is an input
    seq: int,
    time: datetime,
    heads: Mapping[str, ChainHead],
    prev_mac: str,
    key_id: str,
    key: bytes,
    held: Sequence[str] = (),
    notes: DigestNotes | None = None,
) -> Digest:
    fanout = fanout_for(len(heads))
    unsealed = Digest(
        seq=seq,
        time=time,
        heads=dict(heads),
        prev_mac=prev_mac,
        key_id=key_id,
        mac="",
        held=tuple(sorted(held)),
        fanout=fanout,
        pages=pages_of(heads, fanout),
        held_digests=tuple(sorted(set(notes.held_digests))) if notes is not None else (),
        baseline=notes.baseline if notes is not None else None,
    )
    return replace(unsealed, mac=compute_mac(key, digest_payload(unsealed)))


def missing_pages(digest: Digest, buckets: Iterable[int] | None = None) -> list[DigestPage]:
    """The pages of the digest (of ``buckets``; None: all) whose heads were not read back as sealed
    (gone, or edited): its heads cannot be trusted for those buckets."""
    read = paged(digest.heads, digest.fanout)
    wanted = None if buckets is None else set(buckets)
    return [
        p
        for p in digest.pages
        if (wanted is None or p.bucket in wanted) and page_hash(read.get(p.bucket, {})) != p.hash
    ]


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
