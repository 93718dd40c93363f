"""The webhook target rotator against a real HTTPS consumer on loopback (tests/integration/
webhook_consumer.py): signed requests the consumer verifies, its key set through set/test/finish, retries
on 5xx/429/no answer and none on 4xx, redirects never followed, URLs refused, the signing key created
once and never borrowed from another consumer, replays rejected, and the value in no header, URL, log
line or error message. The signing key lives in the in-memory fake store.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from shared.adapters.webhook import WebhookRotator
from shared.domain.errors import DependencyUnavailable
from shared.domain.targets import (
    BINDING_TAG,
    SIGNATURE_HEADER,
    SIGNATURE_TOLERANCE_SECONDS,
    SIGNING_KEY_TAG,
    SIGNS_FOR_SECRET_TAG,
    SIGNS_FOR_TAG,
    TIMESTAMP_HEADER,
    TargetNotBound,
    TargetRefused,
    TargetSecret,
    sign,
    signing_key_name,
    verify_signature,
)
from tests.fakes import FakeKeyRing, InMemorySecretStore
from tests.integration.webhook_consumer import WebhookConsumer
from tests.waiting import eventually

OLD = "old-value-Zq9xW2"
NEW = "new-value-Kp4vT7"
NAME = "dispatch-api-key"
#: The audit key ring the service binds signing keys with.
KEYS = FakeKeyRing()


@pytest.fixture
def store() -> InMemorySecretStore:
    return InMemorySecretStore()


@pytest.fixture
def consumer(store: InMemorySecretStore, tmp_path: Path) -> Iterator[WebhookConsumer]:
    with WebhookConsumer.start(store, tmp_path, current=OLD, current_version="rot-0") as running:
        yield running


def rotator_for(consumer: WebhookConsumer, store: InMemorySecretStore, **options: Any) -> WebhookRotator:
    """A rotator for the consumer, whose signing key exists (as onboarding through the API makes it)."""
    settings: dict[str, Any] = {"ca_bundle": consumer.ca_bundle, "backoff": 0.01, "timeout": 2.0}
    settings.update(options)
    enrol(store, consumer.url)
    return WebhookRotator(store, KEYS, **settings)


def enrol(store: InMemorySecretStore, url: str) -> None:
    """Make the secret's signing key, bound to it and the URL, as the API's onboarding or policy change
    does (``bind``)."""
    WebhookRotator(store, KEYS, allow_loopback_http=True).bind(secret_at(url))


def secret_at(url: str, rotation_id: str | None = "rot-1", name: str = NAME) -> TargetSecret:
    return TargetSecret(name, rotation_id, url, OLD)


def key_of(store: InMemorySecretStore) -> bytes:
    return store.get_value(signing_key_name(NAME)).value.encode()


def test_set_test_finish_are_signed_and_drive_the_consumers_key_set(
    consumer: WebhookConsumer, store: InMemorySecretStore
) -> None:
    rotator = rotator_for(consumer, store)
    secret = secret_at(consumer.url)

    assert rotator.pending(secret, NEW) == NEW
    assert rotator.tags(secret) == {SIGNING_KEY_TAG: signing_key_name(NAME)}
    rotator.set(secret, NEW)
    assert consumer.accepts(OLD) and consumer.accepts(NEW)
    rotator.test(secret, NEW)
    assert consumer.accepts(OLD), "the old value stays valid through the grace period"
    rotator.finish(secret, OLD)  # the promoted version carries rotation id rot-1
    assert consumer.accepts(NEW) and not consumer.accepts(OLD)
    assert consumer.key_versions() == {"rot-1"}

    seen = [(c.step, c.secret_name, c.version, c.has_value, c.signature_ok, c.status) for c in consumer.calls]
    assert seen == [
        ("set", "dispatch-api-key", "rot-1", True, True, 204),
        ("test", "dispatch-api-key", "rot-1", True, True, 204),
        ("finish", "dispatch-api-key", "rot-1", False, True, 204),
    ]
    headers = consumer.calls[0].headers
    assert headers["Content-Type"] == "application/json"
    assert headers[SIGNATURE_HEADER].startswith("sha256=")
    assert abs(int(headers[TIMESTAMP_HEADER]) - time.time()) < 5


def test_every_step_is_rerunnable(consumer: WebhookConsumer, store: InMemorySecretStore) -> None:
    rotator = rotator_for(consumer, store)
    secret = secret_at(consumer.url)
    for _ in range(2):
        rotator.set(secret, NEW)
        rotator.test(secret, NEW)
    for _ in range(2):
        rotator.finish(secret, OLD)
    assert [c.status for c in consumer.calls] == [204] * 6
    assert consumer.key_versions() == {"rot-1"}


def test_a_test_the_consumer_fails_refuses_the_rotation(
    consumer: WebhookConsumer, store: InMemorySecretStore
) -> None:
    """``test`` without a ``set`` before it: the consumer does not accept the value (409)."""
    with pytest.raises(TargetRefused) as refused:
        rotator_for(consumer, store).test(secret_at(consumer.url), NEW)
    assert refused.value.step == "test"
    assert refused.value.reason == "the consumer answered 409"


def test_finish_without_a_rotation_id_sends_nothing(
    consumer: WebhookConsumer, store: InMemorySecretStore, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="shared.adapters.webhook"):
        rotator_for(consumer, store).finish(secret_at(consumer.url, rotation_id=None), OLD)
    assert consumer.calls == []
    assert "not made by a rotation" in caplog.text
    assert consumer.accepts(OLD)


def test_server_errors_are_retried_until_the_consumer_answers(
    consumer: WebhookConsumer, store: InMemorySecretStore
) -> None:
    consumer.fail("set", 500, times=2)
    rotator_for(consumer, store).set(secret_at(consumer.url), NEW)
    assert [c.status for c in consumer.calls_to("set")] == [500, 500, 204]
    assert consumer.accepts(NEW)
    assert all(c.signature_ok for c in consumer.calls), "each attempt is signed afresh"


def test_too_many_requests_is_retried(consumer: WebhookConsumer, store: InMemorySecretStore) -> None:
    consumer.fail("set", 429, headers={"Retry-After": "0"})
    rotator_for(consumer, store).set(secret_at(consumer.url), NEW)
    assert [c.status for c in consumer.calls_to("set")] == [429, 204]


def test_a_client_error_refuses_at_once(consumer: WebhookConsumer, store: InMemorySecretStore) -> None:
    consumer.fail("set", 400)
    with pytest.raises(TargetRefused) as refused:
        rotator_for(consumer, store).set(secret_at(consumer.url), NEW)
    assert (refused.value.step, refused.value.reason) == ("set", "the consumer answered 400")
    assert len(consumer.calls) == 1
    assert not consumer.accepts(NEW)


def test_a_consumer_that_keeps_failing_is_unavailable_after_the_attempts(
    consumer: WebhookConsumer, store: InMemorySecretStore
) -> None:
    consumer.fail("set", 503, times=None)
    with pytest.raises(DependencyUnavailable) as unavailable:
        rotator_for(consumer, store, attempts=3).set(secret_at(consumer.url), NEW)
    assert unavailable.value.dependency == "webhook"
    assert unavailable.value.detail == f"127.0.0.1:{consumer.port} answered 503"
    assert len(consumer.calls) == 3


def test_a_slow_consumer_times_out(consumer: WebhookConsumer, store: InMemorySecretStore) -> None:
    consumer.slow("set", 3.0, times=None)
    started = time.monotonic()
    with pytest.raises(DependencyUnavailable) as unavailable:
        rotator_for(consumer, store, timeout=0.3, attempts=2).set(secret_at(consumer.url), NEW)
    assert time.monotonic() - started < 2.0
    assert unavailable.value.detail == f"127.0.0.1:{consumer.port} did not answer"
    assert len(consumer.calls) == 2


def test_a_consumer_that_is_not_listening_is_unavailable(
    consumer: WebhookConsumer, store: InMemorySecretStore
) -> None:
    rotator = rotator_for(consumer, store, attempts=2)
    url = consumer.url
    consumer.stop()
    with pytest.raises(DependencyUnavailable) as unavailable:
        rotator.set(secret_at(url), NEW)
    assert unavailable.value.detail == f"127.0.0.1:{consumer.port} did not answer"


def test_redirects_are_never_followed(consumer: WebhookConsumer, store: InMemorySecretStore) -> None:
    elsewhere = f"{consumer.base_url}/elsewhere"
    consumer.redirect("set", elsewhere)
    with pytest.raises(TargetRefused) as refused:
        rotator_for(consumer, store).set(secret_at(consumer.url), NEW)
    assert refused.value.reason == "the consumer answered 302"
    assert [c.path for c in consumer.calls] == ["/rotate"]
    assert not consumer.accepts(NEW)


def test_an_untrusted_certificate_is_unavailable(
    consumer: WebhookConsumer, store: InMemorySecretStore
) -> None:
    with pytest.raises(DependencyUnavailable) as unavailable:
        rotator_for(consumer, store, ca_bundle=None, attempts=2).set(secret_at(consumer.url), NEW)
    assert unavailable.value.detail == f"127.0.0.1:{consumer.port} failed the TLS handshake"
    assert consumer.calls == []
    # The server notices each hang-up in its own thread.
    failures = eventually(
        lambda: consumer.handshake_failures, "two failed handshakes", timeout=2, until=lambda n: n >= 2
    )
    assert failures == 2


def test_environment_proxies_are_bypassed_for_a_loopback_consumer(
    consumer: WebhookConsumer, store: InMemorySecretStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(variable, "http://127.0.0.1:9")  # nothing listens there
    for variable in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(variable, raising=False)
    rotator_for(consumer, store).set(secret_at(consumer.url), NEW)
    assert consumer.accepts(NEW)


@pytest.mark.parametrize(
    "url", ["http://localhost:1/rotate", "http://[::1]:1/rotate", "http://127.0.0.2:1/r"]
)
def test_every_loopback_host_may_be_plain_http_when_allowed(store: InMemorySecretStore, url: str) -> None:
    """Accepted as a target (port 1: nothing answers there), where without the option it is refused."""
    with pytest.raises(TargetRefused):
        enrol(store, url)
        WebhookRotator(store, KEYS, attempts=1).set(secret_at(url), NEW)
    with pytest.raises(DependencyUnavailable, match="did not answer"):
        WebhookRotator(store, KEYS, allow_loopback_http=True, attempts=1).set(secret_at(url), NEW)


@pytest.mark.parametrize(
    "url",
    [
        "http://app.example.com/rotate",
        "http://127.0.0.1.nip.io/rotate",
        "https://user:pass@app.example.com/rotate",
        "https://token@app.example.com/rotate",
        "ftp://app.example.com/rotate",
        "https:///rotate",
        "https://app.example.com:notaport/rotate",
        "",
    ],
)
def test_urls_the_rotator_refuses(store: InMemorySecretStore, url: str) -> None:
    rotator = WebhookRotator(store, KEYS, allow_loopback_http=True)
    for call in (
        lambda: rotator.bind(secret_at(url)),
        lambda: rotator.set(secret_at(url), NEW),
        lambda: rotator.finish(secret_at(url), OLD),
    ):
        with pytest.raises(TargetRefused):
            call()
    assert store.secrets == {}, "no signing key is made for a refused URL"


def test_plain_http_only_to_loopback_and_only_when_allowed(
    store: InMemorySecretStore, tmp_path: Path
) -> None:
    with WebhookConsumer.start(store, tmp_path, current=OLD, tls=False) as plain:
        assert plain.url.startswith("http://127.0.0.1:")
        with pytest.raises(TargetRefused, match="https"):
            enrol(store, plain.url)
            WebhookRotator(store, KEYS).set(secret_at(plain.url), NEW)
        assert plain.calls == []
        WebhookRotator(store, KEYS, allow_loopback_http=True).set(secret_at(plain.url), NEW)
        assert [(c.step, c.signature_ok) for c in plain.calls] == [("set", True)]
        assert plain.accepts(NEW)


def test_the_signing_key_is_made_once_for_its_secret_and_bound_to_its_url(
    consumer: WebhookConsumer, store: InMemorySecretStore
) -> None:
    rotator = rotator_for(consumer, store)
    name = signing_key_name(NAME)
    secret = secret_at(consumer.url)
    assert rotator.tags(secret) == {SIGNING_KEY_TAG: name} == rotator.bind(secret)
    spelled = consumer.url.replace("https://", "HTTPS://").replace("/rotate", "/rotate#again")
    rotator.bind(secret_at(spelled))  # the same URL spelled otherwise: the same consumer, the same key
    rotator.set(secret, NEW)
    rotator_for(consumer, store).test(secret, NEW)  # another instance (another worker) reuses it too
    assert len(store.versions_of(name)) == 1
    stored = store.get_value(name)
    assert {k: stored.properties.tags[k] for k in (SIGNS_FOR_TAG, SIGNS_FOR_SECRET_TAG)} == {
        SIGNS_FOR_TAG: consumer.url, SIGNS_FOR_SECRET_TAG: NAME,
    }  # fmt: skip
    assert stored.properties.tags[BINDING_TAG] and stored.properties.content_type == "text/plain"
    assert len(stored.value) >= 64
    assert all(c.signature_ok for c in consumer.calls)


def test_a_target_changed_by_tag_alone_receives_nothing(
    consumer: WebhookConsumer, store: InMemorySecretStore, tmp_path: Path
) -> None:
    """Secret B's tags pointed at consumer A (onboarded for secret A): B's value is never sent to A; nor to
    a URL written into B's tags after B was bound to another one; nor through a binding tag copied or
    rewritten by a tag editor."""
    rotator = rotator_for(consumer, store)  # secret A (dispatch-api-key) bound to consumer A
    with pytest.raises(TargetNotBound, match="target not bound to this secret"):
        rotator.set(secret_at(consumer.url, name="billing-api-key"), NEW)
    with WebhookConsumer.start(store, tmp_path, current=OLD) as other:
        WebhookRotator(store, KEYS, ca_bundle=other.ca_bundle).bind(
            secret_at(other.url, name="billing-api-key")
        )
        with pytest.raises(TargetNotBound):  # B's tag now names A's URL
            rotator.set(secret_at(consumer.url, name="billing-api-key"), NEW)
        b_key = signing_key_name("billing-api-key")
        b_version = store.versions_of(b_key)[-1]
        a_tags = store.get_properties(signing_key_name(NAME)).tags
        store.update_properties(b_key, b_version, tags={**a_tags})  # A's binding copied onto B's key
        with pytest.raises(TargetNotBound):
            rotator.set(secret_at(consumer.url, name="billing-api-key"), NEW)
        assert other.calls == []
    assert consumer.calls == [] and not consumer.accepts(NEW)


def test_a_binding_of_an_earlier_url_put_back_by_a_tag_editor_is_refused(
    consumer: WebhookConsumer, store: InMemorySecretStore, tmp_path: Path
) -> None:
    rotator = rotator_for(consumer, store)
    name = signing_key_name(NAME)
    first = store.get_properties(name)
    with WebhookConsumer.start(store, tmp_path, current=OLD) as moved:
        WebhookRotator(store, KEYS, ca_bundle=moved.ca_bundle).bind(secret_at(moved.url))  # the API moved it
        assert not store.get_properties(name, first.version).enabled  # the old key is off
        current = store.get_properties(name)
        store.update_properties(name, current.version, tags=dict(first.tags))  # the old binding put back
        with pytest.raises(TargetNotBound):
            rotator.set(secret_at(consumer.url), NEW)
    assert consumer.calls == []


def test_a_disabled_signing_key_refuses(consumer: WebhookConsumer, store: InMemorySecretStore) -> None:
    rotator = rotator_for(consumer, store)
    name = signing_key_name(NAME)
    store.update_properties(name, store.versions_of(name)[0], enabled=False)
    with pytest.raises(TargetRefused, match="disabled"):
        rotator.set(secret_at(consumer.url), NEW)
    assert consumer.calls == []


def test_a_replayed_request_is_rejected(consumer: WebhookConsumer, store: InMemorySecretStore) -> None:
    rotator_for(consumer, store).set(secret_at(consumer.url), NEW)
    sent = consumer.raw[0]
    key = key_of(store)
    timestamp, signature = sent.headers[TIMESTAMP_HEADER], sent.headers[SIGNATURE_HEADER]
    sent_at = int(timestamp)
    assert verify_signature(key, timestamp, sent.body, signature, sent_at)
    # Later than the tolerance; or with a fresh timestamp, which the signature does not cover.
    assert not verify_signature(
        key, timestamp, sent.body, signature, sent_at + SIGNATURE_TOLERANCE_SECONDS + 1
    )
    fresh = str(sent_at + SIGNATURE_TOLERANCE_SECONDS + 1)
    assert not verify_signature(key, fresh, sent.body, signature, sent_at + SIGNATURE_TOLERANCE_SECONDS + 1)
    tampered = sent.body.replace(b'"rot-1"', b'"rot-9"')
    assert not verify_signature(key, timestamp, tampered, signature, sent_at)
    assert signature == sign(key, sent_at, sent.body)

    # The same request sent to the consumer again, later: refused, and its key set is unchanged.
    consumer.now = lambda: time.time() + SIGNATURE_TOLERANCE_SECONDS + 5
    replayed = requests.post(
        consumer.url, data=sent.body, headers=sent.headers, verify=consumer.ca_bundle, timeout=5
    )
    assert replayed.status_code == 401
    restamped = dict(sent.headers, **{TIMESTAMP_HEADER: str(int(consumer.now()))})
    replayed = requests.post(
        consumer.url, data=sent.body, headers=restamped, verify=consumer.ca_bundle, timeout=5
    )
    assert replayed.status_code == 401
    assert [c.signature_ok for c in consumer.calls] == [True, False, False]


def test_the_value_appears_only_in_request_bodies(
    consumer: WebhookConsumer, store: InMemorySecretStore, caplog: pytest.LogCaptureFixture
) -> None:
    errors: list[BaseException] = []
    caplog.set_level(logging.DEBUG)
    rotator = rotator_for(consumer, store, attempts=2, timeout=0.3)
    secret = secret_at(consumer.url)
    rotator.set(secret, NEW)
    failures: list[Callable[[], None]] = [
        lambda: consumer.fail("test", 400),
        lambda: consumer.fail("test", 503, times=2),
        lambda: consumer.slow("test", 1.0, times=2),
        lambda: consumer.redirect("test", f"{consumer.base_url}/elsewhere?leak={NEW}"),
    ]
    for failure in failures:
        failure()
        with pytest.raises((TargetRefused, DependencyUnavailable)) as raised:
            rotator.test(secret, NEW)
        errors.append(raised.value)
    rotator.finish(secret, OLD)

    assert len(consumer.calls) == 1 + 1 + 2 + 2 + 1 + 1
    for call in consumer.calls:
        assert NEW not in call.path and OLD not in call.path
        assert all(NEW not in f"{k}: {v}" and OLD not in f"{k}: {v}" for k, v in call.headers.items())
    for raw in consumer.raw:
        assert NEW not in raw.path and NEW not in str(raw.headers)
        assert NEW not in repr(raw)
    assert sum(NEW.encode() in raw.body for raw in consumer.raw) == 7, "set and test carry it, finish not"
    for error in errors:
        chain: BaseException | None = error
        while chain is not None:
            assert NEW not in str(chain) and NEW not in repr(chain)
            chain = chain.__cause__ or chain.__context__
    assert NEW not in caplog.text and OLD not in caplog.text
    assert NEW not in repr(secret) and OLD not in repr(secret)


def test_no_request_goes_to_a_target_without_a_signing_key(
    consumer: WebhookConsumer, store: InMemorySecretStore
) -> None:
    """Whoever can change a secret's tags cannot make it a consumer: only the API's onboarding or policy
    change makes a secret's key (``bind``); a step never does, nor does ``tags``."""
    rotator = WebhookRotator(store, KEYS, ca_bundle=consumer.ca_bundle)
    rotator.tags(secret_at(consumer.url))
    with pytest.raises(TargetNotBound, match="no signing key"):
        rotator.set(secret_at(consumer.url), NEW)
    assert consumer.calls == [] and not consumer.accepts(NEW) and store.secrets == {}
    rotator.bind(secret_at(consumer.url))
    rotator.set(secret_at(consumer.url), NEW)
    assert consumer.accepts(NEW)


def test_netrc_credentials_never_reach_the_consumer(
    consumer: WebhookConsumer, store: InMemorySecretStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """requests would send what ``~/.netrc`` holds for the consumer's host as basic auth."""
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine 127.0.0.1 login operator password local-only-secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(netrc))
    rotator_for(consumer, store).set(secret_at(consumer.url), NEW)
    [call] = consumer.calls
    assert "Authorization" not in call.headers and "authorization" not in call.headers
