"""The writer's tamper judgement in the pure core (shared.domain.audit.tamper), on plain data: what a head
row read during an append or a digest says — the writer's own path, another writer, or tampering."""

from __future__ import annotations

import pytest

from shared.domain.audit import (
    GENESIS_MAC,
    ChainHead,
    ChainTampered,
    DigestHeadFound,
    RefusedAppend,
    head_to_append_after,
    judge_digest_head,
)

CHAIN = "kv:db-password"
HEAD = ChainHead(7, "a" * 64)


def test_a_chain_without_a_head_row_starts_at_genesis() -> None:
    assert head_to_append_after(CHAIN, None, None) == ChainHead(0, GENESIS_MAC)


def test_a_readable_head_row_is_appended_after() -> None:
    assert head_to_append_after(CHAIN, HEAD, "etag-1") == HEAD


def test_a_head_row_that_cannot_be_read_is_tampering() -> None:
    with pytest.raises(ChainTampered, match="has an unreadable head") as caught:
        head_to_append_after(CHAIN, None, "etag-1")
    assert caught.value.chain == CHAIN


def test_a_refusal_after_which_the_head_moved_was_another_writer() -> None:
    assert head_to_append_after(CHAIN, HEAD, "etag-2", RefusedAppend("etag-1")) == HEAD


def test_a_first_append_refused_while_a_head_appeared_was_another_writer() -> None:
    assert head_to_append_after(CHAIN, HEAD, "etag-1", RefusedAppend(None)) == HEAD


def test_a_refusal_after_which_the_head_stands_still_is_records_beyond_it() -> None:
    with pytest.raises(ChainTampered, match="has records beyond its head"):
        head_to_append_after(CHAIN, HEAD, "etag-1", RefusedAppend("etag-1"))


def test_a_first_append_refused_with_still_no_head_is_records_without_one() -> None:
    with pytest.raises(ChainTampered, match="has records but no head"):
        head_to_append_after(CHAIN, None, None, RefusedAppend(None))


def test_a_head_gone_after_a_refusal_is_read_as_a_fresh_chain() -> None:
    # A head deleted after the refused write: the next attempt creates it, and that one's refusal judges.
    assert head_to_append_after(CHAIN, None, None, RefusedAppend("etag-1")) == ChainHead(0, GENESIS_MAC)


def test_an_unreadable_head_is_reported_before_a_standing_refusal() -> None:
    with pytest.raises(ChainTampered, match="has an unreadable head"):
        head_to_append_after(CHAIN, None, "etag-1", RefusedAppend("etag-1"))


class Digests:
    """Which digests exist, and which the judgement asked about."""

    def __init__(self, *seqs: int) -> None:
        self.seqs = set(seqs)
        self.asked: list[int] = []

    def exists(self, seq: int) -> bool:
        self.asked.append(seq)
        return seq in self.seqs


PREVIOUS = ChainHead(3, "d" * 64)


def test_a_digest_head_naming_the_previous_digest_is_expected() -> None:
    digests = Digests(1, 2, 3)
    assert judge_digest_head(PREVIOUS, PREVIOUS, digests.exists) is DigestHeadFound.EXPECTED
    assert digests.asked == []


def test_no_digest_head_before_the_first_digest_is_expected() -> None:
    assert judge_digest_head(None, None, Digests().exists) is DigestHeadFound.EXPECTED


def test_a_digest_head_naming_a_later_digest_that_exists_is_another_writer() -> None:
    digests = Digests(1, 2, 3, 4)
    assert (
        judge_digest_head(ChainHead(4, "e" * 64), PREVIOUS, digests.exists)
        is DigestHeadFound.SEALED_MEANWHILE
    )
    assert digests.asked == [4]


def test_a_first_digest_sealed_meanwhile_is_another_writer() -> None:
    found = judge_digest_head(ChainHead(1, "e" * 64), None, Digests(1).exists)
    assert found is DigestHeadFound.SEALED_MEANWHILE


@pytest.mark.parametrize(
    ("stored", "previous"),
    [
        (None, PREVIOUS),  # deleted
        (ChainHead(1, "b" * 64), PREVIOUS),  # rewound
        (ChainHead(3, "f" * 64), PREVIOUS),  # right number, another MAC
        (ChainHead(5, "f" * 64), PREVIOUS),  # ahead of every digest there is
        (ChainHead(0, GENESIS_MAC), None),  # a head row before the first digest, naming none
    ],
)
def test_any_other_digest_head_is_stale_and_rewritten(
    stored: ChainHead | None, previous: ChainHead | None
) -> None:
    assert judge_digest_head(stored, previous, Digests(1, 2, 3).exists) is DigestHeadFound.STALE
