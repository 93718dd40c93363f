"""The health service with in-memory probes: concurrency, deadline, error mapping, the audit store check."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from shared.adapters.storage import AuditStoreProbe
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
    assert report.to_json()["status"] == "ok"
    assert set(report.to_json()["checks"]) == {"key_vault", "storage"}
    assert report.to_json()["checks"]["storage"]["status"] == "ok"


def test_one_failure_degrades_with_a_safe_detail() -> None:
    report = check_health(
        {
            "key_vault": Probe(DependencyUnavailable("key_vault", "unreachable (connection failed)")),
            "storage": Probe(),
        }
    )
    body = report.to_json()
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
    detail = report.to_json()["checks"]["storage"]["detail"]
    assert detail == "misconfigured: SECRETS_STORAGE"


def test_unexpected_exception_is_contained() -> None:
    report = check_health({"storage": Probe(RuntimeError("boom with internals"))})
    assert report.to_json()["checks"]["storage"]["detail"] == "unexpected error (RuntimeError)"


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
    assert report.to_json()["checks"]["key_vault"]["detail"] == "timed out"
    assert report.checks["storage"].ok
    assert list(report.to_json()["checks"]) == ["key_vault", "storage"]


# -- the audit store check: the real probe over an in-memory table service -----------------------


class FakeTableService:
    """Just what AuditStoreProbe uses of TableServiceClient: one query of one row, failing with ``error``."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.queried: list[str] = []

    def get_table_client(self, name: str) -> FakeTableService:
        self.queried.append(name)
        return self

    def list_entities(self, **_: Any) -> FakeTableService:
        return self

    def by_page(self) -> Iterator[list[dict[str, Any]]]:
        if self.error is not None:
            raise self.error
        yield [{"PartitionKey": "p"}]

    def create_table(self, name: str) -> None:
        raise AssertionError("a health probe must never create the table it checks")

    create_table_if_not_exists = create_table


def _table_not_found() -> ResourceNotFoundError:
    err = ResourceNotFoundError(message="The table specified does not exist.")
    err.status_code, err.error_code = 404, "TableNotFound"
    return err


def test_a_missing_audit_table_degrades_health_while_storage_answers() -> None:
    tables = FakeTableService(_table_not_found())

    report = check_health(
        {"key_vault": Probe(), "storage": Probe(), "audit_store": AuditStoreProbe(tables, "auditlog")}
    )

    body = report.to_json()
    assert not report.ok
    assert body["status"] == "degraded"
    assert body["checks"]["storage"]["status"] == "ok"
    assert body["checks"]["audit_store"] == {
        "status": "error",
        "duration_ms": body["checks"]["audit_store"]["duration_ms"],
        "detail": "audit table auditlog does not exist",
    }
    assert tables.queried == ["auditlog"]


def test_the_audit_store_is_ok_when_its_table_answers() -> None:
    report = check_health({"audit_store": AuditStoreProbe(FakeTableService(), "auditlog")})

    assert report.ok


def test_a_refused_audit_table_is_a_failed_check_naming_status_and_code_only() -> None:
    refused = HttpResponseError(message="This request is not authorized: secret-looking internals")
    refused.status_code, refused.error_code = 403, "AuthorizationPermissionMismatch"

    report = check_health({"audit_store": AuditStoreProbe(FakeTableService(refused), "auditlog")})

    detail = report.to_json()["checks"]["audit_store"]["detail"]
    assert detail == "forbidden (HTTP 403, AuthorizationPermissionMismatch)"
