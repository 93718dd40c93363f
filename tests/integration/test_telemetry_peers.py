"""Operate it, on real peers: a rotation through the registered functions, in this process, with the real
container over Azurite and the Key Vault emulator. The Azure SDKs' own tracing (what Azure Monitor's distro
switches on in Azure) makes every Key Vault, Table and Queue call a child span of the invocation's span."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from azure.core.settings import settings as azure_settings
from azure.keyvault.secrets import SecretClient
from azure.storage.queue import QueueClient, TextBase64DecodePolicy
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from devtools.azurite import AzuriteProcess
from devtools.keyvault_emulator.process import EmulatorProcess
from devtools.stack import create_tables
from shared.adapters import telemetry
from shared.adapters.key_vault import LocalTokenCredential
from shared.adapters.storage import QUEUE_API_VERSION, ROTATION_QUEUE
from shared.bootstrap import Container, set_container
from shared.config import Settings
from shared.domain.identity import encode_principal
from shared.domain.policy import RotationPolicy, SecretKind
from tests.functions.conftest import Context, call_http
from tests.integration.conftest import app_settings

OPERATOR = encode_principal("oid-operator", ["Secrets.Rotation.Operate"], name="olga")
POLICY = RotationPolicy(SecretKind.API_KEY, timedelta(days=30), None, "dispatch-api")
#: The SDK's tracer provider of this process (the global one can be set once): spans of every test here.
SPANS = InMemorySpanExporter()


@pytest.fixture
def traced(tmp_path: Path) -> Iterator[InMemoryMetricReader]:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(SPANS))
        trace.set_tracer_provider(provider)
    SPANS.clear()
    reader = InMemoryMetricReader()
    telemetry.use(telemetry.Telemetry(provider, MeterProvider(metric_readers=[reader])))
    azure_settings.tracing_enabled = True
    yield reader
    azure_settings.tracing_enabled = False
    telemetry.use(None)
    SPANS.clear()  # later tests' invocations still end in this provider: keep nothing of them


def test_a_rotation_traces_its_key_vault_table_and_queue_calls(
    traced: InMemoryMetricReader, functions: dict[str, Any], tmp_path: Path, kv_emulator: EmulatorProcess
) -> None:
    with AzuriteProcess.start(tmp_path / "azurite") as azurite:
        create_tables(azurite.connection_string)
        set_container(Container(Settings(app_settings(azurite, kv_emulator))))
        try:
            name = f"traced-{uuid.uuid4().hex[:8]}"
            vault = SecretClient(kv_emulator.url, LocalTokenCredential(), **kv_emulator.client_kwargs())
            vault.set_secret(name, "initial-value", tags=POLICY.to_tags())
            status, body, _ = call_http(
                functions["secrets_rotate"], Context("inv-rotate"), principal=OPERATOR, method="POST",
                url="http://h/api/x", route={"name": name}, body={"force": True},
                headers={"content-type": "application/json"},
            )  # fmt: skip
            assert status == 202, body
            queue = QueueClient.from_connection_string(
                azurite.connection_string, ROTATION_QUEUE, api_version=QUEUE_API_VERSION,
                message_decode_policy=TextBase64DecodePolicy(),
            )  # fmt: skip
            [message] = list(queue.receive_messages(max_messages=1))
            functions["rotate_secret"].get_user_function()(
                func.QueueMessage(body=str(message.content).encode()), Context("inv-queue")
            )
            assert len(list(vault.list_properties_of_secret_versions(name))) == 2
        finally:
            set_container(None)

    finished = SPANS.get_finished_spans()
    by_trace: dict[int, list[str]] = {}
    for span in finished:
        by_trace.setdefault(span.context.trace_id, []).append(span.name)
    [invocation] = [s for s in finished if s.name == "rotate_secret"]
    children = by_trace[invocation.context.trace_id]
    assert any(n.startswith("SecretClient.") for n in children), children  # Key Vault
    assert any(n.startswith("TableClient.") for n in children), children  # the state and the trail
    [request] = [s for s in finished if s.name == "secrets_rotate"]
    assert any(n.startswith("QueueClient.") for n in by_trace[request.context.trace_id])  # the request sent
    values = " ".join(str(dict(s.attributes or {})) for s in finished)
    assert "initial-value" not in values
    data = traced.get_metrics_data()
    assert data is not None
    rotations = [
        p for r in data.resource_metrics for sm in r.scope_metrics for m in sm.metrics
        if m.name == "secret_lifecycle.rotations" for p in m.data.data_points
    ]  # fmt: skip
    assert [dict(p.attributes)["result"] for p in rotations] == ["rotated"]
