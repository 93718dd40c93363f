"""Health of the service's dependencies: every probe runs at once, each under one deadline."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Literal

from pydantic import Field

from shared.config import ConfigurationError
from shared.domain.errors import DependencyUnavailable
from shared.ports import DependencyProbe
from shared.services.results import Answer

logger = logging.getLogger(__name__)


class HealthCheck(Answer):
    status: Literal["ok", "error"]
    duration_ms: int = Field(ge=0)
    detail: str | None = Field(
        default=None, description="Why the check failed: a category, never a credential."
    )

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class HealthReport(Answer):
    status: Literal["ok", "degraded"]
    checks: dict[str, HealthCheck]

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _check(detail: str | None, duration_ms: int) -> HealthCheck:
    """A check's result; its detail (short and safe for an anonymous caller: a category, never a
    credential or a value) only when it failed."""
    if detail is None:
        return HealthCheck(status="ok", duration_ms=duration_ms)
    return HealthCheck(status="error", duration_ms=duration_ms, detail=detail)


def check_health(
    probes: Mapping[str, DependencyProbe],
    *,
    timeout_s: float = 10.0,
    monotonic: Callable[[], float] = time.monotonic,
) -> HealthReport:
    """Run every probe concurrently; a probe that has not answered by the deadline counts as failed.

    Never raises: every failure becomes a failed check with a short detail (the full error is logged).
    """
    results: dict[str, HealthCheck] = {}
    lock = threading.Lock()
    started = monotonic()

    def run(name: str, probe: DependencyProbe) -> None:
        t0 = monotonic()
        detail: str | None = None
        try:
            probe.check()
        except ConfigurationError as err:
            logger.error("health check %s: %s", name, err)
            detail = f"misconfigured: {err.setting}"
        except DependencyUnavailable as err:
            logger.warning("health check %s failed: %s", name, err.detail)
            detail = err.detail
        except Exception as err:  # a probe bug must not take the health endpoint down with it
            logger.exception("health check %s raised unexpectedly", name)
            detail = f"unexpected error ({type(err).__name__})"
        elapsed = int((monotonic() - t0) * 1000)
        with lock:
            results[name] = _check(detail, elapsed)

    threads = [
        threading.Thread(target=run, args=(name, probe), name=f"health-{name}", daemon=True)
        for name, probe in probes.items()
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, timeout_s - (monotonic() - started)))
    with lock:
        final = dict(results)
    for name in probes:
        if name not in final:
            logger.warning("health check %s timed out after %.1fs", name, timeout_s)
            final[name] = _check("timed out", int(timeout_s * 1000))
    checks = {name: final[name] for name in probes}
    return HealthReport(status="ok" if all(c.ok for c in checks.values()) else "degraded", checks=checks)
