"""The audit writer's head cache (shared/adapters/tables/audit_writer.py) under concurrent chains: each
chain's group-commit leader runs on its own thread, and one chain's eviction must not break another
chain's update half-way."""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict

from shared.adapters.tables.audit_writer import HeadCache
from shared.domain.audit import ChainHead

MAC = "m" * 64


def head(seq: int) -> ChainHead:
    return ChainHead(seq, MAC)


def test_a_taken_head_is_forgotten() -> None:
    cache = HeadCache(bound=4)
    cache.remember("kv:a", head(3), "etag-3")
    assert cache.take("kv:a") == (head(3), "etag-3")
    assert cache.take("kv:a") is None


def test_a_head_without_an_etag_is_not_remembered() -> None:
    cache = HeadCache(bound=4)
    for etag in (None, "", 7):
        cache.remember("kv:a", head(1), etag)
    assert len(cache) == 0


def test_the_oldest_chains_are_forgotten_beyond_the_bound() -> None:
    cache = HeadCache(bound=2)
    for n, chain in enumerate(("kv:a", "kv:b", "kv:a", "kv:c")):
        cache.remember(chain, head(n), f"etag-{n}")
    assert len(cache) == 2
    assert cache.take("kv:b") is None  # the least recently written
    assert cache.take("kv:a") == (head(2), "etag-2")
    assert cache.take("kv:c") == (head(3), "etag-3")


class PausingEntries(OrderedDict[str, tuple[ChainHead, str]]):
    """The cache's entries; reordering ``chain`` waits (a moment at most) until another thread evicted
    an entry meanwhile: the interleaving two chains' leaders may produce at any time, made certain."""

    def __init__(self, chain: str) -> None:
        super().__init__()
        self.chain = chain
        self.paused = threading.Event()
        self.evicted = threading.Event()

    def move_to_end(self, key: str, last: bool = True) -> None:
        if key == self.chain and not self.paused.is_set():
            self.paused.set()
            self.evicted.wait(0.3)
        super().move_to_end(key, last)

    def popitem(self, last: bool = True) -> tuple[str, tuple[ChainHead, str]]:
        item = super().popitem(last)
        if threading.current_thread() is not threading.main_thread():
            self.evicted.set()
        return item


def test_another_chain_s_eviction_cannot_break_an_update_half_way() -> None:
    """Without the cache's lock, chain b's leader evicts chain a's fresh entry while a's leader is between
    storing and reordering it, and a's append fails with KeyError after its transaction committed."""
    entries = PausingEntries("kv:a")
    cache = HeadCache(bound=1, entries=entries)
    cache.remember("kv:old", head(1), "etag-1")
    errors: list[BaseException] = []

    def other_chain() -> None:
        try:
            assert entries.paused.wait(5)
            cache.remember("kv:b", head(1), "etag-b")
        except BaseException as err:  # collected and asserted on below
            errors.append(err)

    other = threading.Thread(target=other_chain)
    other.start()
    cache.remember("kv:a", head(5), "etag-a")
    other.join(5)
    assert errors == []
    assert len(cache) == 1
    assert cache.take("kv:b") == (head(1), "etag-b")


def test_many_chains_committing_at_once_keep_their_own_heads() -> None:
    """Many leaders, one chain each, take and remember through one small cache (evictions interleave
    with every update); each finds its own last head or nothing, and nobody fails."""
    cache = HeadCache(bound=2)
    errors: list[BaseException] = []
    start = threading.Barrier(16)

    def leader(n: int) -> None:
        chain = f"kv:secret-{n}"
        try:
            start.wait()
            for seq in range(1, 2000):
                found = cache.take(chain)
                assert found in (None, (head(seq - 1), f"etag-{seq - 1}")), found
                cache.remember(chain, head(seq), f"etag-{seq}")
        except BaseException as err:  # collected and asserted on below
            errors.append(err)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter will
    try:
        threads = [threading.Thread(target=leader, args=(n,)) for n in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        sys.setswitchinterval(interval)
    assert errors == []
    assert len(cache) <= 2
