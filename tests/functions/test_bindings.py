"""Every trigger the app registers, with its binding: routes, methods, auth levels, schedules.

A new function must be added to EXPECTED_HTTP / EXPECTED_TIMERS / EXPECTED_OTHER, so a binding never
changes (or appears) without a test noticing.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import azure.functions as func

from devtools.host import ncrontab

# name -> (route, methods, auth level)
EXPECTED_HTTP: dict[str, tuple[str, set[str], func.AuthLevel]] = {
    "health": ("health", {"GET"}, func.AuthLevel.ANONYMOUS),
    "audit_query": ("audit", {"GET"}, func.AuthLevel.FUNCTION),
    "audit_summary": ("audit/summary", {"GET"}, func.AuthLevel.FUNCTION),
    "audit_actor": ("audit/actors/{actor_id}", {"GET"}, func.AuthLevel.FUNCTION),
    "compliance_report": ("compliance/report", {"GET"}, func.AuthLevel.FUNCTION),
    "audit_verify": ("audit/verify", {"GET"}, func.AuthLevel.FUNCTION),
    "audit_review_finding": ("audit/findings/{finding_id}/review", {"POST"}, func.AuthLevel.FUNCTION),
    "audit_incident_open": ("audit/incidents", {"POST"}, func.AuthLevel.FUNCTION),
    "audit_incident_acknowledge": (
        "audit/incidents/{incident_id}/acknowledge",
        {"POST"},
        func.AuthLevel.FUNCTION,
    ),
    "secrets_list": ("secrets", {"GET"}, func.AuthLevel.FUNCTION),
    "secrets_onboard": ("secrets", {"POST"}, func.AuthLevel.FUNCTION),
    "secrets_policy": ("secrets/{name}/policy", {"PUT"}, func.AuthLevel.FUNCTION),
    "secrets_rotate": ("secrets/{name}/rotate", {"POST"}, func.AuthLevel.FUNCTION),
    "secrets_status": ("secrets/{name}/status", {"GET"}, func.AuthLevel.FUNCTION),
    "secrets_rollback": ("secrets/{name}/rollback", {"POST"}, func.AuthLevel.FUNCTION),
    "rotation_plan": ("rotation/plan", {"GET"}, func.AuthLevel.FUNCTION),
    "openapi": ("openapi.json", {"GET"}, func.AuthLevel.ANONYMOUS),
    "secrets_delete": ("secrets/{name}", {"DELETE"}, func.AuthLevel.FUNCTION),
    "secrets_recover": ("secrets/{name}/recover", {"POST"}, func.AuthLevel.FUNCTION),
    "revocations_request": ("revocations", {"POST"}, func.AuthLevel.FUNCTION),
    "revocations_list": ("revocations", {"GET"}, func.AuthLevel.FUNCTION),
    "revocations_get": ("revocations/{id}", {"GET"}, func.AuthLevel.FUNCTION),
    "revocations_approve": ("revocations/{id}/approve", {"POST"}, func.AuthLevel.FUNCTION),
    "revocations_reject": ("revocations/{id}/reject", {"POST"}, func.AuthLevel.FUNCTION),
    "revocations_cancel": ("revocations/{id}/cancel", {"POST"}, func.AuthLevel.FUNCTION),
    "revocations_execute": ("revocations/{id}/execute", {"POST"}, func.AuthLevel.FUNCTION),
    "revocations_review": ("revocations/{id}/review", {"POST"}, func.AuthLevel.FUNCTION),
}
# name -> NCRONTAB schedule
EXPECTED_TIMERS: dict[str, str] = {
    "audit_digest": "0 0 * * * *",  # hourly, on the hour
    "audit_retention": "0 15 4 * * *",  # daily at 04:15 UTC
    "audit_verify_daily": "0 30 3 * * *",  # daily at 03:30
    "suspicious_activity_scan": "0 */15 * * * *",  # every 15 minutes
    "rotation_sweep": "%ROTATION_SWEEP_SCHEDULE%",  # an app setting: hourly in the sample and the Bicep
    "expiry_check": "%EXPIRY_CHECK_SCHEDULE%",  # an app setting: daily at 06:00 in the sample and the Bicep
    "revocation_expiry": "0 */5 * * * *",  # every 5 minutes
}
# name -> trigger type of every other function
EXPECTED_OTHER: dict[str, str] = {
    "rotate_secret": "queueTrigger",
    "rotation_gave_up": "queueTrigger",
    "key_vault_events": "eventGridTrigger",
}
SAMPLE_SETTINGS = Path(__file__).resolve().parents[2] / "local.settings.sample.json"


def _trigger(f: Any) -> Any:
    return f.get_trigger()


def test_the_app_registers_exactly_the_expected_functions(functions: dict[str, Any]) -> None:
    assert set(functions) == set(EXPECTED_HTTP) | set(EXPECTED_TIMERS) | set(EXPECTED_OTHER)


def test_http_bindings(functions: dict[str, Any]) -> None:
    for name, (route, methods, auth_level) in EXPECTED_HTTP.items():
        trigger = _trigger(functions[name])
        assert trigger.get_binding_name() == "httpTrigger", name
        assert trigger.route == route, name
        assert {str(m.value if hasattr(m, "value") else m).upper() for m in trigger.methods} == methods, name
        assert trigger.auth_level == auth_level, name


def test_only_health_and_openapi_are_anonymous(functions: dict[str, Any]) -> None:
    for name, f in functions.items():
        trigger = _trigger(f)
        if trigger.get_binding_name() == "httpTrigger" and name not in ("health", "openapi"):
            assert trigger.auth_level in (func.AuthLevel.FUNCTION, None), f"{name} must use function keys"


def test_http_routes_are_unique_per_method(functions: dict[str, Any]) -> None:
    seen: set[tuple[str, str]] = set()
    for f in functions.values():
        trigger = _trigger(f)
        if trigger.get_binding_name() != "httpTrigger":
            continue
        for method in trigger.methods or ["*"]:
            key = (trigger.route, str(method))
            assert key not in seen, f"two functions answer {key}"
            seen.add(key)


def test_timer_schedules_are_valid_ncrontab(functions: dict[str, Any]) -> None:
    now = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    for name, schedule in EXPECTED_TIMERS.items():
        trigger = _trigger(functions[name])
        assert trigger.get_binding_name() == "timerTrigger", name
        assert trigger.schedule == schedule, name
        effective = schedule
        if schedule.startswith("%"):  # a binding expression: the schedule the sample settings give it
            effective = json.loads(SAMPLE_SETTINGS.read_text())["Values"][schedule.strip("%")]
        parsed = ncrontab.parse(effective)
        first = parsed.next_after(now)
        assert first > now, name
        period = parsed.next_after(first) - first
        assert period == expected_period(effective), name


def expected_period(schedule: str) -> timedelta:
    return {
        "0 0 * * * *": timedelta(hours=1),
        "0 */15 * * * *": timedelta(minutes=15),
        "0 */5 * * * *": timedelta(minutes=5),
        "0 0 6 * * *": timedelta(days=1),
        "0 30 3 * * *": timedelta(days=1),
        "0 15 4 * * *": timedelta(days=1),
    }[schedule]


def test_other_triggers(functions: dict[str, Any]) -> None:
    # Compared with what the app registers, so the test means something even while EXPECTED_OTHER is empty.
    others = {
        name: _trigger(f).get_binding_name()
        for name, f in functions.items()
        if _trigger(f).get_binding_name() not in ("httpTrigger", "timerTrigger")
    }
    assert others == EXPECTED_OTHER


def test_importing_the_app_needs_no_settings() -> None:
    """Nothing happens at import: a fresh interpreter with an empty environment imports the app."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    code = "import function_app; print(len(function_app.app.get_functions()))"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) == len(EXPECTED_HTTP) + len(EXPECTED_TIMERS) + len(EXPECTED_OTHER)
