"""The rotation sweep's Key Vault requests and the draining of its queue, against a vault held to Key
Vault's limits: a small version of ``bench.sweep`` (which see) with assertions instead of figures.

300 secrets, 5 % of them managed and due (made 40 days ago on the emulator's clock), seeded with throttling
off; then the limits are switched on — a create limit of 5 per 2 s here, so that draining meets 429s — and
the production sweep and ``rotate_requested`` run with the production adapters on Azurite.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.data.tables import TableServiceClient
from azure.keyvault.secrets import SecretClient
from azure.storage.queue import QueueServiceClient

from bench.sweep import (
    MAX_REQUEST_RATIO,
    World,
    build_world,
    drain,
    not_due_reads,
    plan_population,
    run_sweep,
    seed,
)
from devtools.azurite import AzuriteProcess
from devtools.eventgrid_sink import EventGridSink
from devtools.keyvault_emulator.process import EmulatorProcess
from shared.adapters.key_vault import AUDIT_KEY_SECRET, KeyVaultMacKeyRing, LocalTokenCredential
from shared.adapters.storage import QUEUE_API_VERSION
from shared.domain.notifications import SECRET_ROTATED
from shared.domain.rotation import RotationRequest
from shared.services.rotation import PREVIOUS_VERSION_TAG, ROTATION_ID_TAG

SECRETS = 300
DUE = 15  # 5 %
PAGE = 25


@pytest.fixture
def limited_emulator(tmp_path: Path) -> Iterator[EmulatorProcess]:
    try:
        emulator = EmulatorProcess.start(
            tmp_path / "kv.pem",
            latency_ms=10,
            create_limit=5,
            tx_limit=4000,
            window_seconds=2,
            throttling=False,
        )
    except RuntimeError as err:
        pytest.fail(f"the Key Vault emulator could not start: {err}", pytrace=False)
    yield emulator
    emulator.stop()


def test_the_sweep_lists_once_and_draining_rotates_each_due_secret_once(
    limited_emulator: EmulatorProcess, azurite: AzuriteProcess
) -> None:
    emulator = limited_emulator
    population = plan_population(0, SECRETS, DUE)
    with (
        SecretClient(emulator.url, LocalTokenCredential(), **emulator.client_kwargs()) as client,
        EventGridSink(key="sweep-topic-key") as sink,
        QueueServiceClient.from_connection_string(
            azurite.connection_string, api_version=QUEUE_API_VERSION
        ) as queues,
        TableServiceClient.from_connection_string(azurite.connection_string) as tables,
    ):
        keys = KeyVaultMacKeyRing(client)
        keys.current()  # the audit MAC key, as the app has it before the sweep (and the client is warm)
        seed(client, emulator, population)
        emulator.set_throttling(True)
        run_id = uuid.uuid4().hex[:10]
        world = build_world(
            client,
            tables,
            queues,
            keys,
            sink.endpoint,
            sink.key or "",
            queue=f"rotation-requests-{run_id}",
            state_table=f"sweepstate{run_id}",
            audit_table=f"sweepaudit{run_id}",
        )

        swept = run_sweep(world, emulator)
        queued = _queued(world)
        drained = drain(world, emulator, workers=4)
        versions = {
            name: sorted(client.list_properties_of_secret_versions(name), key=lambda v: v.created_on)
            for name in sorted(population.due)
        }
        untouched = [
            len(list(client.list_properties_of_secret_versions(n))) for n in sorted(population.not_due)[:5]
        ]
        after = run_sweep(world, emulator)
        left = world.queue.get_queue_properties().approximate_message_count
        events = [e for e in sink.events if e["type"] == SECRET_ROTATED]

    # The sweep: one list request per 25 secrets and nothing else, no value read, exactly the due enqueued.
    report, requests = swept.report, swept.requests
    assert report.listed == SECRETS + 1  # and the audit MAC key
    minimum = math.ceil(report.listed / PAGE)
    assert requests.total <= MAX_REQUEST_RATIO * minimum
    assert requests.stats["requests"] == {"list_secrets": minimum}
    assert requests.names("get_secret") == {}
    assert not_due_reads(requests, population.due) == 0
    assert set(report.due) == population.due and report.sent == DUE and not report.failed
    assert sorted(queued) == sorted(population.due)

    # Draining with 4 workers under the create limit: every due secret rotated once, every 429 absorbed.
    assert drained.failures == []
    assert sorted(drained.rotated) == sorted(population.due)
    assert drained.requests is not None
    assert drained.requests.throttled > 0, "the create limit should have throttled some set_secret calls"
    assert set(drained.requests.names("get_secret")) <= {n.lower() for n in population.due}
    assert not_due_reads(drained.requests, population.due) == 0
    for name, found in versions.items():
        assert len(found) == 2, name  # one new version each
        first, new = found
        assert new.tags is not None and new.tags[PREVIOUS_VERSION_TAG] == first.version
        assert new.tags[ROTATION_ID_TAG]
    assert untouched == [1] * len(untouched)
    assert sorted(e["subject"] for e in events) == sorted(population.due)
    assert AUDIT_KEY_SECRET not in drained.rotated

    # Nothing is due any more, and the queue is empty.
    assert after.report.due == () and after.report.listed == SECRETS + 1
    assert left == 0


def _queued(world: World) -> list[str]:
    """The secret names of the messages on the queue (peeked: they stay)."""
    peeked = world.queue.peek_messages(max_messages=32)
    return [RotationRequest.from_json(str(m.content)).secret_name for m in peeked]
