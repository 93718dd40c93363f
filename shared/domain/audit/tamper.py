"""What a writer finds in the store when it writes, judged: its own path, another writer's work, or
tampering.

Records are stored with their chain's head in one write guarded by the head row's version (a storage
ETag, opaque here): a write that meets a head moved by another writer is refused and tried again after
the new head. These rules say when what was found cannot be another writer — the chain was changed
behind the service's back — so the writer stops at once instead of retrying into it. Pure: the adapter
reads the rows and hands them over.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from shared.domain.audit.records import GENESIS_MAC, ChainHead, ChainTampered


@dataclass(frozen=True)
class RefusedAppend:
    """The store refused an append as conflicting (a row it was to create exists, or the head row had
    moved) while the head row the append was guarded by stood at ``head_version`` (None: no head row)."""

    head_version: str | None


def head_to_append_after(
    chain: str, stored: ChainHead | None, version: str | None, refused: RefusedAppend | None = None
) -> ChainHead:
    """The head an append seals its records after, from the head row as just read — ``stored`` (None: no
    row, or one that cannot be read) at ``version`` (None: no row) — and the refusal of the previous
    attempt, if there was one. Genesis when the chain has no head row.

    Raises ChainTampered when that cannot be another writer's doing:

    - a head row stands but holds no head one can read;
    - the previous attempt was refused and the head row is still where it was: nobody moved the head,
      so the rows the append collided with stand beyond it (or in a chain without one).
    """
    if stored is None and version is not None:
        raise ChainTampered(chain, "has an unreadable head")
    if refused is not None and refused.head_version == version:
        where = "has records but no head" if version is None else "has records beyond its head"
        raise ChainTampered(chain, where)
    return stored or ChainHead(0, GENESIS_MAC)


class DigestHeadFound(Enum):
    """What the digest chain's head row says to a writer sealing the digest after ``previous``."""

    #: It names ``previous`` (no row before the first digest): the expected state.
    EXPECTED = "expected"
    #: It names a later digest, which exists: another writer sealed one meanwhile.
    SEALED_MEANWHILE = "sealed_meanwhile"
    #: Anything else (missing, rewound, unreadable, ahead of any digest): a stale or tampered copy. The
    #: head row only guards concurrent writers; the digest follows ``previous``, which the caller checked
    #: against the anchor, so the row is rewritten.
    STALE = "stale"


def judge_digest_head(
    stored: ChainHead | None, previous: ChainHead | None, digest_exists: Callable[[int], bool]
) -> DigestHeadFound:
    """Judge the digest head row (``stored``, None: missing or unreadable) against the digest a writer
    seals after (``previous``, None: it seals the first). ``digest_exists`` is asked only about a later
    digest the row names (and may raise what the store raises)."""
    after = previous or ChainHead(0, GENESIS_MAC)
    if stored is not None and stored.seq > after.seq and digest_exists(stored.seq):
        return DigestHeadFound.SEALED_MEANWHILE
    if stored != previous:
        return DigestHeadFound.STALE
    return DigestHeadFound.EXPECTED
