"""The minimal consumer in docs/webhook-consumer.md, run as written: its python block is executed as a
module and its registered function called through ``app.get_functions()`` with real
``azure.functions.HttpRequest`` objects signed the way the service signs them (``sign``). It must accept
what the service sends and refuse a bad signature, a stale or malformed timestamp and a tampered body.
"""

from __future__ import annotations

import json
import re
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest

from shared.domain.targets import SIGNATURE_HEADER, SIGNATURE_TOLERANCE_SECONDS, TIMESTAMP_HEADER, sign

DOC = Path(__file__).resolve().parents[2] / "docs" / "webhook-consumer.md"
KEY = "test-signing-key-" + "x" * 48
URL = "https://dispatch-api.example.com/api/rotate"


def example_module() -> types.ModuleType:
    blocks = re.findall(r"^```python\n(.*?)^```", DOC.read_text(encoding="utf-8"), re.MULTILINE | re.DOTALL)
    assert len(blocks) == 1, "the doc has exactly one python block: the consumer example"
    code = blocks[0]
    assert 30 <= len(code.splitlines()) <= 60, "the example stays minimal"
    module = types.ModuleType("webhook_consumer_example")
    exec(compile(code, str(DOC), "exec"), module.__dict__)  # noqa: S102 (the doc's own code, on purpose)
    return module


@pytest.fixture(scope="module")
def example() -> tuple[types.ModuleType, Any]:
    module = example_module()
    (function,) = module.app.get_functions()  # once per FunctionApp
    return module, function


@pytest.fixture
def keys(example: tuple[types.ModuleType, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    monkeypatch.setenv("WEBHOOK_SIGNING_KEY", KEY)
    module, _ = example
    module.KEYS.clear()
    module.KEYS["rot-0"] = "old-value"
    yield module.KEYS
    module.KEYS.clear()


Send = Callable[..., int]


@pytest.fixture
def send(example: tuple[types.ModuleType, Any], keys: dict[str, str]) -> Send:
    _, function = example

    def call(
        document: dict[str, Any],
        *,
        key: str = KEY,
        timestamp: int | None = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> int:
        raw = json.dumps(document, separators=(",", ":")).encode()
        stamp = int(time.time()) if timestamp is None else timestamp
        signed = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: str(stamp),
            SIGNATURE_HEADER: sign(key.encode(), stamp, raw),
            **(headers or {}),
        }
        request = func.HttpRequest("POST", URL, headers=signed, body=raw if body is None else body)
        response: func.HttpResponse = function.get_user_function()(request)
        return int(response.status_code)

    return call


def doc(step: str, version: str = "rot-1", value: str | None = "new-value") -> dict[str, Any]:
    document: dict[str, Any] = {"step": step, "secret_name": "dispatch-api-key", "version": version}
    if value is not None:
        document["value"] = value
    return document


def test_the_example_registers_one_anonymous_post_route(example: tuple[types.ModuleType, Any]) -> None:
    _, function = example
    assert function.get_function_name() == "rotate"
    trigger = function.get_trigger()
    assert trigger.route == "rotate"
    assert trigger.methods == [func.HttpMethod.POST]
    assert trigger.auth_level == func.AuthLevel.ANONYMOUS


def test_it_accepts_the_services_requests_and_keeps_its_key_set(send: Send, keys: dict[str, str]) -> None:
    assert send(doc("set")) == 204
    assert keys == {"rot-0": "old-value", "rot-1": "new-value"}
    assert send(doc("set")) == 204, "a repeated set is harmless"
    assert send(doc("test")) == 204
    assert send(doc("finish", value=None)) == 204
    assert keys == {"rot-1": "new-value"}
    assert send(doc("finish", value=None)) == 204, "a repeated finish is harmless"


def test_it_answers_409_for_what_it_does_not_hold(send: Send, keys: dict[str, str]) -> None:
    assert send(doc("test", value="never-set")) == 409
    assert send(doc("finish", version="rot-unknown", value=None)) == 409
    assert keys == {"rot-0": "old-value"}
    assert send(doc("rename")) == 400


@pytest.mark.parametrize(
    ("case", "options"),
    [
        ("another key", {"key": "not-the-signing-key"}),
        ("stale timestamp", {"age": SIGNATURE_TOLERANCE_SECONDS + 5}),
        ("future timestamp", {"age": -SIGNATURE_TOLERANCE_SECONDS - 60}),
        ("tampered body", {"body": json.dumps(doc("set", value="attacker")).encode()}),
        ("no signature", {"headers": {SIGNATURE_HEADER: ""}}),
        ("non-ascii signature", {"headers": {SIGNATURE_HEADER: "sha256=é"}}),
        ("non-ascii digits", {"headers": {TIMESTAMP_HEADER: "\u0661\u0667" + "\u0660" * 8}}),
        ("superscript digit", {"headers": {TIMESTAMP_HEADER: "\u00b2"}}),
        ("no timestamp", {"headers": {TIMESTAMP_HEADER: ""}}),
    ],
)
def test_it_refuses_what_the_service_did_not_sign_just_now(
    send: Send, keys: dict[str, str], case: str, options: dict[str, Any]
) -> None:
    if "age" in options:  # from now, not from collection: the suite may run minutes after it
        options = {"timestamp": int(time.time()) - options["age"]}
    assert send(doc("set"), **options) == 401, case
    assert keys == {"rot-0": "old-value"}


def test_a_replay_with_a_fresh_timestamp_is_refused(send: Send, keys: dict[str, str]) -> None:
    """A captured request re-sent with a new timestamp: the signature covers the old one."""
    old = int(time.time()) - SIGNATURE_TOLERANCE_SECONDS - 5
    raw = json.dumps(doc("set"), separators=(",", ":")).encode()
    replay = {TIMESTAMP_HEADER: str(int(time.time())), SIGNATURE_HEADER: sign(KEY.encode(), old, raw)}
    assert send(doc("set"), headers=replay) == 401
    assert keys == {"rot-0": "old-value"}
