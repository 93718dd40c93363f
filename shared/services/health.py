"""Health of the service's dependencies: every probe runs at once, each under one deadline."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from shared.config import ConfigurationError
from shared.domain.errors import DependencyUnavailable
from shared.ports import DependencyProbe

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    duration_ms: int
    #: Short and safe for an anonymous caller: a category, never a credential or a value.
    detail: str | None = None

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"status": "ok" if self.ok else "error", "duration_ms": self.duration_ms}
        if self.detail:
            body["detail"] = self.detail
        return body


@dataclass(frozen=True)
class HealthReport:
    checks: Mapping[str, CheckResult]

    @property
    def ok(self) -> bool:
        return all(result.ok for result in self.checks.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.ok else "degraded",
            "checks": {name: result.to_dict() for name, result in self.checks.items()},
        }


def check_health(
    probes: Mapping[str, DependencyProbe],
    *,
    timeout_s: float = 10.0,
    monotonic: Callable[[], float] = time.monotonic,
) -> HealthReport:
    """Run every probe concurrently; a probe that has not answered by the deadline counts as failed.

    Never raises: every failure becomes a failed check with a short detail (the full error is logged).
    """
    results: dict[str, CheckResult] = {}
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
            results[name] = CheckResult(ok=detail is None, duration_ms=elapsed, detail=detail)

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
            final[name] = CheckResult(ok=False, duration_ms=int(timeout_s * 1000), detail="timed out")
    return HealthReport(checks={name: final[name] for name in probes})
