"""Digests of any number of chains on real Table Storage (Azurite): the heads are cut into pages known by
their hash, a page that did not change is not written again, one chain's sealed head is read (and proven)
with a page, and a page that is gone or edited is reported."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from azure.data.tables import TableServiceClient, UpdateMode

from devtools.azurite import AzuriteProcess
from devtools.keyvault_emulator.process import EmulatorProcess
from shared.adapters.tables import TableAuditLog
from shared.adapters.tables.rows import DIGEST_PAGES
from shared.bootstrap import Container
from shared.config import Settings
from shared.domain.audit import BreakKind, ChainHead, verify_digests
from tests.integration.conftest import app_settings

CHAINS = 5_000  # beyond the 4,000 one entity held


class Requests:
    def __init__(self) -> None:
        self.by_method: Counter[str] = Counter()

    def __call__(self, response: Any) -> None:
        self.by_method[response.http_request.method] += 1


@pytest.fixture
def env(
    azurite: AzuriteProcess, kv_emulator: EmulatorProcess
) -> Iterator[tuple[TableAuditLog, Any, Requests]]:
    keys = Container(Settings(app_settings(azurite, kv_emulator))).key_ring
    requests = Requests()
    tables = TableServiceClient.from_connection_string(azurite.connection_string, raw_response_hook=requests)
    yield TableAuditLog(tables, keys, table="digests" + uuid.uuid4().hex[:10]), keys, requests


def _heads(n: int, seq: int = 1) -> dict[str, ChainHead]:
    return {f"fleet:secret-{i:05d}": ChainHead(seq, f"{i:064x}") for i in range(n)}


def _pages(log: TableAuditLog) -> list[dict[str, Any]]:
    return list(log.table.query_entities("PartitionKey eq @p", parameters={"p": DIGEST_PAGES}))


def test_a_digest_of_thousands_of_chains_is_paged_and_reads_back(env: Any) -> None:
    log, keys, _ = env
    heads = _heads(CHAINS)
    first = log.append_digest(None, heads, datetime(2026, 12, 7, tzinfo=UTC), keys)
    assert first.fanout == 8 and len(_pages(log)) == 8
    [read] = log.read_digests()
    assert read.heads == heads and read.pages == first.pages
    assert verify_digests([read], keys.get) == []

    # One chain moves: the next digest writes the one page that changed, and names the other seven again.
    moved = dict(heads, **{"fleet:secret-00042": ChainHead(2, "a" * 64)})
    second = log.append_digest(read, moved, datetime(2026, 12, 7, 1, tzinfo=UTC), keys)
    assert len(_pages(log)) == 9
    assert len(set(first.pages) & set(second.pages)) == 7
    assert verify_digests(log.read_digests(), keys.get) == []


def test_one_chains_sealed_head_is_read_with_one_page(env: Any) -> None:
    log, keys, requests = env
    heads = _heads(CHAINS)
    log.append_digest(None, heads, datetime(2026, 12, 7, tzinfo=UTC), keys)
    requests.by_method.clear()
    [digest] = log.read_digests(chain="fleet:secret-01234")
    assert requests.by_method == {"GET": 2}  # the digest rows, then the chain's page
    assert digest.heads["fleet:secret-01234"] == heads["fleet:secret-01234"]
    assert len(digest.heads) < CHAINS / 4 and digest.buckets_read is not None
    assert verify_digests([digest], keys.get) == []  # its MAC and its one page check out


def test_a_page_that_is_gone_or_edited_is_reported(env: Any) -> None:
    log, keys, _ = env
    digest = log.append_digest(None, _heads(CHAINS), datetime(2026, 12, 7, tzinfo=UTC), keys)
    first, second = sorted(_pages(log), key=lambda row: row["RowKey"])[:2]
    log.table.delete_entity(DIGEST_PAGES, first["RowKey"])
    assert '[1,"' in second["heads_0"]
    rewound = {**second, "heads_0": second["heads_0"].replace('[1,"', '[0,"', 1)}  # one head set back
    log.table.upsert_entity(rewound, mode=UpdateMode.REPLACE)
    breaks = verify_digests(log.read_digests(), keys.get)
    assert [(b.kind, b.seq) for b in breaks] == [(BreakKind.FORGED_DIGEST, digest.seq)]
    assert "2 page(s) of heads gone or edited" in breaks[0].detail
