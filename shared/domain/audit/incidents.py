"""Acknowledged incidents: how breaks two people acknowledged are told apart from the rest. Pure.

A break is never erased. An incident (opened by one person, acknowledged by another) seals a digest with a
new baseline: the page of the breaks it acknowledged. From then on verify still finds those breaks, and
lists them as acknowledged (with the incident) rather than as breaks; so does a regression sealed into the
baseline digest of a chain the incident named, since the baseline released it. Any other break, old or
new, stays a break.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from shared.domain.audit.digests import BreakEntry, Digest
from shared.domain.audit.verify import Break, BreakKind

#: Breaks that stay until somebody acts: a stale digest or a missing anchor end with the next digest.
ACKNOWLEDGEABLE = frozenset(BreakKind) - {BreakKind.STALE_DIGEST, BreakKind.UNANCHORED}
#: The most breaks one incident acknowledges: its page is one table entity (about 1 MiB).
MAX_ACKNOWLEDGED = 2000

BreakKey = tuple[str, str, int | str]


def fingerprint(entries: Iterable[BreakEntry]) -> str:
    """One hash of a set of breaks by what identifies them (``key_of``): two verifies that found the
    same breaks have the same fingerprint, whatever their details say."""
    keys = sorted({key_of(e) for e in entries}, key=lambda k: (k[0], k[1], str(k[2])))
    return hashlib.sha256(json.dumps(keys, separators=(",", ":")).encode()).hexdigest()


def entry_of(item: Break) -> BreakEntry:
    return (item.chain, item.kind.value, item.seq, item.detail)


def key_of(entry: BreakEntry) -> BreakKey:
    """What identifies a break from one verify to the next: its chain, kind and position (its detail
    when it has no position, as for a stray row)."""
    chain, kind, seq, detail = entry
    return (chain, kind, detail if seq is None else seq)


@dataclass
class Classified:
    """Verify's breaks, told apart: those no incident acknowledged, and those one did (by incident)."""

    active: list[Break] = field(default_factory=list)
    #: (the break, the incident, the digest that sealed its baseline)
    acknowledged: list[tuple[BreakEntry, str, int]] = field(default_factory=list)


def classify(
    breaks: Sequence[Break], history: Sequence[tuple[Digest, Break]], digests: Sequence[Digest]
) -> Classified:
    """Split ``breaks`` by the baselines of the (trusted) ``digests``: a break whose key an intact
    baseline lists is acknowledged, and so is a regression ``history`` found sealed into a baseline
    digest for a chain that baseline names. Every break a baseline lists that verify no longer finds
    (the baseline resolved it: a held chain sealed anew) is shown as acknowledged too: history is kept."""
    listed: dict[BreakKey, tuple[BreakEntry, str, int]] = {}
    released: dict[int, tuple[set[str], str]] = {}  # by baseline digest: the chains it names, its incident
    for digest in sorted(digests, key=lambda d: d.seq):
        baseline = digest.baseline
        if baseline is None or not baseline.intact or baseline.entries is None:
            continue
        for entry in baseline.entries:
            listed.setdefault(key_of(entry), (entry, baseline.incident, digest.seq))
        released[digest.seq] = ({entry[0] for entry in baseline.entries}, baseline.incident)
    by_release: dict[BreakKey, tuple[str, int]] = {}
    for digest, item in history:
        chains, by = released.get(digest.seq, (set(), ""))
        if item.chain in chains:
            by_release[key_of(entry_of(item))] = (by, digest.seq)
    result = Classified()
    shown: set[BreakKey] = set()
    for item in breaks:
        key = key_of(entry_of(item))
        acknowledged_by = listed[key][1:] if key in listed else by_release.get(key)
        if acknowledged_by is None:
            result.active.append(item)
            continue
        result.acknowledged.append((entry_of(item), *acknowledged_by))
        shown.add(key)
    result.acknowledged += [found for key, found in listed.items() if key not in shown]
    return result
