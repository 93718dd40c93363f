"""Verification: walk chains and digests and report every kind of break. Pure."""

from __future__ import annotations

import hmac
import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from shared.domain.audit.canonical import canonical, compute_mac, event_from_fields
from shared.domain.audit.digests import AnchoredDigest, Digest, digest_payload, missing_pages
from shared.domain.audit.records import (
    DIGEST_CHAIN,
    GENESIS_MAC,
    AuditEvent,
    ChainContents,
    ChainHead,
    StoredRecord,
)


class BreakKind(StrEnum):
    EDITED = "edited"  # a record's content does not match its MAC
    DELETED = "deleted"  # a gap in the sequence
    REORDERED = "reordered"  # a valid record stands at another record's place
    TRUNCATED = "truncated"  # the newest records of a chain are gone
    FORGED_DIGEST = "forged_digest"  # a digest does not match its MAC or its chain
    STALE_DIGEST = "stale_digest"  # no digest as recent as the digest schedule promises
    UNKNOWN_KEY = "unknown_key"  # the MAC key a record names does not exist
    MALFORMED = "malformed"  # a stored record lacks fields or has invalid ones
    UNEXPECTED = "unexpected"  # records beyond the chain head the service knows of
    MISSING_HEAD = "missing_head"  # records exist but the chain head row is gone
    REGRESSED = "regressed"  # a sealed chain went backwards or vanished between two digests
    ANCHOR_MISMATCH = "anchor_mismatch"  # the digest anchored outside the table is not in the table
    UNANCHORED = "unanchored"  # digests exist but no anchor outside the table does


@dataclass(frozen=True)
class Break:
    chain: str
    kind: BreakKind
    seq: int | None
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"chain": self.chain, "kind": self.kind.value, "seq": self.seq, "detail": self.detail}


#: Returns the MAC key for a key id, or None when there is no such key.
KeyLookup = Callable[[str], bytes | None]


@dataclass
class ChainVerdict:
    chain: str
    records: int
    last_seq: int
    breaks: list[Break]


def verify_chain(
    chain: str, stored: Iterable[StoredRecord], keys: KeyLookup, head: ChainHead | None = None
) -> ChainVerdict:
    """Walk one chain in position order and report every break."""
    breaks: list[Break] = []
    expected = 1
    prev_mac = GENESIS_MAC
    count = 0
    last_seq = 0
    for item in sorted(stored, key=lambda s: s.position):
        count += 1
        gap = None
        if item.position > expected:
            missing = f"{expected}" if item.position == expected + 1 else f"{expected}-{item.position - 1}"
            gap = Break(chain, BreakKind.DELETED, expected, f"record(s) {missing} missing")
        prev_mac = _record_breaks(
            chain, item, keys, prev_mac if item.position == expected else "", gap, breaks
        )
        expected, last_seq = item.position + 1, item.position
    if head is not None:
        breaks += _head_breaks(chain, head, last_seq, prev_mac if count else None)
    return ChainVerdict(chain=chain, records=count, last_seq=last_seq, breaks=breaks)


def _record_breaks(
    chain: str, item: StoredRecord, keys: KeyLookup, prev_mac: str, gap: Break | None, breaks: list[Break]
) -> str:
    """The breaks of one record (appended to ``breaks``), given the MAC of the record right before it
    (``prev_mac``; "" when that one is missing or unreadable: the link is not judged) and the records
    missing before it (``gap``, reported unless this record is unreadable). Returns the MAC the next
    record must follow ("" for an unreadable record)."""
    fields = dict(item.fields)
    try:
        seq = int(fields.pop("seq"))
        stored_prev = str(fields.pop("prev_mac"))
        key_id = str(fields.pop("key_id"))
        mac = str(fields.pop("mac"))
        event_from_fields(fields)  # every field present and valid
    except (KeyError, ValueError, TypeError) as err:
        breaks.append(Break(chain, BreakKind.MALFORMED, item.position, f"unreadable record: {err}"))
        return ""
    key = keys(key_id)
    if key is None:
        breaks.append(
            Break(chain, BreakKind.UNKNOWN_KEY, item.position, f"MAC key {key_id!r} does not exist")
        )
        mac_ok = False
    else:
        mac_ok = hmac.compare_digest(
            mac, compute_mac(key, canonical(chain, seq, stored_prev, key_id, fields))
        )
    if gap is not None:
        breaks.append(gap)
    if seq != item.position:
        if mac_ok:
            moved = f"record {seq} stands at position {item.position}"
            breaks.append(Break(chain, BreakKind.REORDERED, item.position, moved))
        else:
            breaks.append(Break(chain, BreakKind.EDITED, item.position, "content does not match its MAC"))
    elif not mac_ok and key is not None:
        breaks.append(Break(chain, BreakKind.EDITED, seq, "content does not match its MAC"))
    elif mac_ok and prev_mac and not hmac.compare_digest(stored_prev, prev_mac):
        breaks.append(Break(chain, BreakKind.REORDERED, seq, "does not follow the record before it"))
    return mac


def _head_breaks(chain: str, head: ChainHead, last_seq: int, newest_mac: str | None) -> list[Break]:
    """How the chain's head disagrees with its records (``newest_mac``: the newest record's, None when the
    chain has none)."""
    if head.seq > last_seq:
        ends = f"chain head is at {head.seq}, records end at {last_seq}"
        return [Break(chain, BreakKind.TRUNCATED, last_seq + 1, ends)]
    if head.seq < last_seq:
        beyond = f"records beyond the chain head ({head.seq})"
        return [Break(chain, BreakKind.UNEXPECTED, head.seq + 1, beyond)]
    if newest_mac is not None and not hmac.compare_digest(head.mac, newest_mac):
        return [Break(chain, BreakKind.EDITED, last_seq, "newest record does not match the chain head")]
    return []


def verify_contents(chain: str, contents: ChainContents, keys: KeyLookup) -> ChainVerdict:
    """Verify a chain as stored: its records, its head row — which must exist once records do — and rows
    that are neither."""
    verdict = verify_chain(chain, contents.records, keys, contents.head)
    if contents.head_unreadable:
        verdict.breaks.append(Break(chain, BreakKind.UNEXPECTED, None, "the head row is unreadable"))
    elif contents.head is None and verdict.records:
        detail = f"records end at {verdict.last_seq} but the head is gone"
        verdict.breaks.append(Break(chain, BreakKind.MISSING_HEAD, verdict.last_seq, detail))
    for row in contents.stray_rows:
        verdict.breaks.append(Break(chain, BreakKind.UNEXPECTED, None, f"row {row[:64]!r} is not a record"))
    return verdict


def check_against_digest(
    verdicts: Mapping[str, ChainVerdict], digest: Digest, macs_at: Callable[[str, int], str | None]
) -> list[Break]:
    """Every chain the digest saw must still reach the digest's head with the same MAC there.

    ``macs_at(chain, seq)`` is the stored MAC of record ``seq`` of ``chain``, or None when absent.
    """
    breaks: list[Break] = []
    for chain, head in sorted(digest.heads.items()):
        verdict = verdicts.get(chain)
        last = verdict.last_seq if verdict else 0
        if last < head.seq:
            breaks.append(
                Break(
                    chain,
                    BreakKind.TRUNCATED,
                    last + 1,
                    f"digest {digest.seq} saw this chain at {head.seq}, records end at {last}",
                )
            )
            continue
        stored_mac = macs_at(chain, head.seq)
        if stored_mac is None or not hmac.compare_digest(stored_mac, head.mac):
            breaks.append(
                Break(chain, BreakKind.EDITED, head.seq, f"record differs from what digest {digest.seq} saw")
            )
    return breaks


def digest_fault(digest: Digest, keys: KeyLookup) -> str | None:
    """Why a stored digest cannot be trusted (its MAC, a page of heads or its baseline's page of
    acknowledged breaks), or None when the service sealed it as it reads back."""
    key = keys(digest.key_id)
    if key is None or not hmac.compare_digest(digest.mac, compute_mac(key, digest_payload(digest))):
        return "digest does not match its MAC"
    if lost := missing_pages(digest, digest.buckets_read):
        # The digest itself is authentic, but not every page of heads it sealed reads back as sealed.
        return f"{len(lost)} page(s) of heads gone or edited (bucket {lost[0].bucket} first)"
    if digest.baseline is not None and not digest.baseline.intact:
        return "the page of breaks its incident acknowledged is gone or edited"
    return None


def verify_digests(digests: Sequence[Digest], keys: KeyLookup, *, first: int = 1) -> list[Break]:
    """Walk the digest chain (ordered by seq) and report every forged, missing or reordered digest.
    ``first``: the chain is walked from that digest on (whose own link backwards is not judged)."""
    breaks: list[Break] = []
    prev_mac = GENESIS_MAC if first == 1 else ""
    expected = first
    for digest in sorted(digests, key=lambda d: d.seq):
        fault = digest_fault(digest, keys)
        if fault is not None:
            breaks.append(Break(DIGEST_CHAIN, BreakKind.FORGED_DIGEST, digest.seq, fault))
        elif digest.seq != expected:
            missing = f"digest(s) {expected}-{digest.seq - 1} missing"
            breaks.append(Break(DIGEST_CHAIN, BreakKind.DELETED, expected, missing))
        elif prev_mac and not hmac.compare_digest(digest.prev_mac, prev_mac):
            follows = "does not follow the digest before it"
            breaks.append(Break(DIGEST_CHAIN, BreakKind.FORGED_DIGEST, digest.seq, follows))
        # After a forged digest the next link cannot be judged: report the forgery once, not twice.
        prev_mac = digest.mac if fault is None else ""
        expected = digest.seq + 1
    return breaks


@dataclass(frozen=True)
class DigestTip:
    """Where the next digest goes after a break in the digest chain (``past_break``)."""

    #: The digest the next one follows: the newest number anyone stored or anchored, with the MAC the
    #: anchor or the table vouches for ("" when only a forged row stands there).
    after: ChainHead
    #: Runs of digest numbers up to ``after`` that are gone, forged or not what the anchor holds.
    broken: tuple[tuple[int, int], ...]
    #: The newest digest that can be trusted, whose heads the next digest compares with (None: none).
    base: Digest | None


def past_break(anchored: AnchoredDigest | None, digests: Sequence[Digest], keys: KeyLookup) -> DigestTip:
    """After a break in the digest chain (a lost write, a restored table, a forged digest), what the next
    digest follows and what it holds as broken, so sealing goes on over what is intact without
    forgiving the break: the anchor outside the table stays the authority on the newest number."""
    trusted = {
        d.seq: d
        for d in digests
        if digest_fault(d, keys) is None
        and (anchored is None or d.seq != anchored.seq or hmac.compare_digest(d.mac, anchored.mac))
    }
    top = max([anchored.seq if anchored is not None else 0, *(d.seq for d in digests)])
    if top in trusted:
        mac = trusted[top].mac
    elif anchored is not None and anchored.seq == top:
        mac = anchored.mac
    else:
        mac = ""
    broken: list[tuple[int, int]] = []
    expected = 1
    for seq in sorted(trusted):  # the gaps between trusted numbers, up to ``top``
        if seq > expected:
            broken.append((expected, seq - 1))
        expected = seq + 1
    if expected <= top:
        broken.append((expected, top))
    base = trusted[max(trusted)] if trusted else None
    return DigestTip(after=ChainHead(top, mac), broken=tuple(broken), base=base)


#: ``macs_at(chain, seq)``: the stored MAC of record ``seq`` of ``chain``, or None when there is none.
MacLookup = Callable[[str, int], str | None]


#: ``passes_through(chain, sealed, now)``: whether the chain whose head is ``now`` still passes through
#: the record ``sealed`` names (only asked when ``now`` is beyond it).
PassesThrough = Callable[[str, ChainHead, ChainHead], bool]


def links(
    chain: str, sealed: ChainHead, now: ChainHead, records: Sequence[StoredRecord], keys: KeyLookup
) -> bool:
    """Whether the records from ``sealed`` to ``now`` are all there and intact, the first is the record
    ``sealed`` names, each follows the one before, and the last is the one ``now`` names: the chain still
    passes through what a digest sealed. A valid old record put back at its place does not pass: the
    record after it must name it."""
    by_position = {r.position: r for r in records}
    previous_mac = ""
    for position in range(sealed.seq, now.seq + 1):
        record = by_position.get(position)
        if record is None:
            return False
        fields = dict(record.fields)
        try:
            seq, prev_mac = int(fields.pop("seq")), str(fields.pop("prev_mac"))
            key_id, mac = str(fields.pop("key_id")), str(fields.pop("mac"))
            event_from_fields(fields)
        except (KeyError, ValueError, TypeError):
            return False
        key = keys(key_id)
        if seq != position or key is None:
            return False
        if not hmac.compare_digest(mac, compute_mac(key, canonical(chain, seq, prev_mac, key_id, fields))):
            return False
        expected = sealed.mac if position == sealed.seq else previous_mac
        if not hmac.compare_digest(mac if position == sealed.seq else prev_mac, expected):
            return False
        previous_mac = mac
    return hmac.compare_digest(previous_mac, now.mac)


def regressions(
    previous: Digest, heads: Mapping[str, ChainHead], passes_through: PassesThrough
) -> list[Break]:
    """What sealing ``heads`` after ``previous`` would forgive: a sealed chain that has no head any more,
    whose head went backwards, or that no longer passes through the record ``previous`` sealed (a cut
    followed by new appends). Used by the digest writer before it seals and by verify on every
    consecutive pair of digests."""
    found: list[Break] = []
    for chain, sealed in sorted(previous.heads.items()):
        now = heads.get(chain)
        where = f"digest {previous.seq} sealed this chain at {sealed.seq}"
        if now is None:
            found.append(Break(chain, BreakKind.REGRESSED, sealed.seq, f"{where}; now it has no head"))
        elif now.seq < sealed.seq:
            found.append(Break(chain, BreakKind.REGRESSED, sealed.seq, f"{where}; now its head is {now.seq}"))
        elif now.seq == sealed.seq:
            if not hmac.compare_digest(now.mac, sealed.mac):
                found.append(Break(chain, BreakKind.REGRESSED, sealed.seq, f"{where} with another MAC"))
        elif not passes_through(chain, sealed, now):
            detail = f"{where}; the chain no longer passes through that record"
            found.append(Break(chain, BreakKind.REGRESSED, sealed.seq, detail))
    return found


def digest_history(digests: Sequence[Digest], macs_at: MacLookup) -> list[tuple[Digest, Break]]:
    """Every consecutive pair of (trusted) digests, across digests that are gone: no chain sealed by one
    may regress in the next. A regression sealed into a digest is reported even after later digests
    sealed over it; each with the digest it was sealed into. (The stored record at a sealed position is
    enough here: verify walks every chain's links itself.)"""

    def passes_through(chain: str, sealed: ChainHead, _now: ChainHead) -> bool:
        mac = macs_at(chain, sealed.seq)
        return mac is not None and hmac.compare_digest(mac, sealed.mac)

    ordered = sorted(digests, key=lambda d: d.seq)
    found: list[tuple[Digest, Break]] = []
    for before, after in itertools.pairwise(ordered):
        found += [(after, b) for b in regressions(before, after.heads, passes_through)]
    return found


def verify_digest_history(digests: Sequence[Digest], macs_at: MacLookup) -> list[Break]:
    """``digest_history``'s breaks."""
    return [b for _, b in digest_history(digests, macs_at)]


def check_anchor(anchor: AnchoredDigest | None, digests: Sequence[Digest]) -> list[Break]:
    """The digest anchored outside the table must be in the table, unchanged. Digests without any anchor
    mean the anchor was never written or was removed."""
    if anchor is None:
        if not digests:
            return []
        return [Break(DIGEST_CHAIN, BreakKind.UNANCHORED, None, "digests exist but no anchor does")]
    stored = [d for d in digests if d.seq == anchor.seq]
    if not stored:
        newest = max((d.seq for d in digests), default=0)
        detail = f"anchored digest {anchor.seq} is not in the table (newest stored: {newest or 'none'})"
        return [Break(DIGEST_CHAIN, BreakKind.ANCHOR_MISMATCH, anchor.seq, detail)]
    if not any(hmac.compare_digest(d.mac, anchor.mac) for d in stored):
        detail = f"digest {anchor.seq} in the table differs from the anchored one"
        return [Break(DIGEST_CHAIN, BreakKind.ANCHOR_MISMATCH, anchor.seq, detail)]
    return []


def authentic_event(chain: str, fields: Mapping[str, Any], keys: KeyLookup) -> AuditEvent | None:
    """The event of one stored record when its MAC proves the service wrote it (whatever its neighbours:
    verify_chain judges the chain), else None. What a reader may trust from a single record, since a
    storage writer cannot make a MAC without the key."""
    rest = dict(fields)
    try:
        seq = int(rest.pop("seq"))
        prev_mac = str(rest.pop("prev_mac"))
        key_id = str(rest.pop("key_id"))
        mac = str(rest.pop("mac"))
        event = event_from_fields(rest)
    except (KeyError, ValueError, TypeError):
        return None
    key = keys(key_id)
    if key is None or not hmac.compare_digest(
        mac, compute_mac(key, canonical(chain, seq, prev_mac, key_id, rest))
    ):
        return None
    return event
