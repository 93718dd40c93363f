"""Telemetry's three configurations, each in a fresh process (OpenTelemetry's global providers can be set
once per process): Azure Monitor's distro with a connection string, the console, or nothing — and
nothing of it at import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
import function_app  # importing the app configures nothing and imports no OpenTelemetry SDK
imported = sorted(m for m in sys.modules if m.startswith(("opentelemetry.sdk", "azure.monitor")))
from opentelemetry import trace, metrics
from shared.adapters import telemetry
from shared.config import TelemetrySettings
telemetry.configure(TelemetrySettings(connection_string=sys.argv[1] or None, console=sys.argv[2] == "true"))
with telemetry.invocation("probe", "timer", "cid-1"):
    pass
print(json.dumps({"imported_at_import": imported,
                  "tracer_provider": type(trace.get_tracer_provider()).__module__,
                  "meter_provider": type(metrics.get_meter_provider()).__module__}))
"""


@pytest.mark.parametrize(
    ("connection_string", "console", "sdk"),
    [
        # A well-formed string whose endpoint answers nothing: configured, nothing exported in the test.
        ("InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=https://127.0.0.1:9/;"
         "LiveEndpoint=https://127.0.0.1:9/", "false", True),
        ("", "true", True),
        ("", "false", False),  # the API's proxies: every span and instrument a no-op
    ],
)  # fmt: skip
def test_telemetry_is_configured_on_first_use_as_the_settings_say(
    connection_string: str, console: str, sdk: bool
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, connection_string, console],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["imported_at_import"] == []
    for provider in (found["tracer_provider"], found["meter_provider"]):
        assert provider.startswith("opentelemetry.sdk") == sdk, found
