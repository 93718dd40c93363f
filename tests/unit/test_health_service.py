"""The health service with in-memory probes: concurrency, deadline, error mapping."""

from __future__ import annotations

import threading
import time

from shared.config import ConfigurationError
from shared.domain.errors import DependencyUnavailable
from shared.services.health import check_health


class Probe:
    def __init__(self, error: Exception | None = None, delay: float = 0.0) -> None:
        self.error = error
        self.delay = delay
        self.calls = 0

    def check(self) -> None:
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        if self.error:
            raise self.error


def test_all_ok() -> None:
    report = check_health({"key_vault": Probe(), "storage": Probe()})
    assert report.ok
    assert report.to_dict()["status"] == "ok"
    assert set(report.to_dict()["checks"]) == {"key_vault", "storage"}
    assert report.to_dict()["checks"]["storage"]["status"] == "ok"


def test_one_failure_degrades_with_a_safe_detail() -> None:
    report = check_health(
        {
            "key_vault": Probe(DependencyUnavailable("key_vault", "unreachable (connection failed)")),
            "storage": Probe(),
        }
    )
    body = report.to_dict()
    assert not report.ok
    assert body["status"] == "degraded"
    assert body["checks"]["key_vault"] == {
        "status": "error",
        "duration_ms": body["checks"]["key_vault"]["duration_ms"],
        "detail": "unreachable (connection failed)",
    }
    assert body["checks"]["storage"]["status"] == "ok"


def test_configuration_error_names_only_the_setting() -> None:
    report = check_health(
        {"storage": Probe(ConfigurationError("SECRETS_STORAGE", "AccountKey=abc is wrong"))}
    )
    detail = report.to_dict()["checks"]["storage"]["detail"]
    assert detail == "misconfigured: SECRETS_STORAGE"


def test_unexpected_exception_is_contained() -> None:
    report = check_health({"storage": Probe(RuntimeError("boom with internals"))})
    assert report.to_dict()["checks"]["storage"]["detail"] == "unexpected error (RuntimeError)"


def test_probes_run_concurrently_and_a_hung_probe_times_out() -> None:
    release = threading.Event()

    class Hung:
        def check(self) -> None:
            release.wait(5)

    started = time.monotonic()
    report = check_health({"key_vault": Hung(), "storage": Probe(delay=0.2)}, timeout_s=0.5)
    elapsed = time.monotonic() - started
    release.set()
    assert 0.45 <= elapsed < 1.5
    assert report.to_dict()["checks"]["key_vault"]["detail"] == "timed out"
    assert report.checks["storage"].ok
    assert list(report.to_dict()["checks"]) == ["key_vault", "storage"]
