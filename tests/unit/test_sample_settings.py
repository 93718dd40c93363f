"""local.settings.sample.json holds every setting the code reads, with values the code accepts."""

from __future__ import annotations

import json
import re
from pathlib import Path

from shared.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_sample_settings_parse() -> None:
    values = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    settings = Settings({**values, "KEY_VAULT_CA_BUNDLE": __file__})  # the PEM exists only after make run
    assert settings.key_vault.is_local
    assert settings.storage.connection_string == "UseDevelopmentStorage=true"
    assert settings.event_grid.endpoint == "http://127.0.0.1:8790/api/events"
    assert settings.scan_rules.denied_per_actor == 5


def test_every_setting_read_by_the_code_is_in_the_sample_and_the_settings_doc() -> None:
    values = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    doc = (ROOT / "docs" / "settings.md").read_text()
    source = (ROOT / "shared" / "config.py").read_text()
    read = set(
        re.findall(
            r'"((?:AUDIT|KEY_VAULT|SECRETS|EVENT_GRID|ALLOW|REVOCATION|ROTATION|WEBHOOK)_[A-Z_]+)"', source
        )
    )
    assert read, "the pattern should find the settings"
    for name in read:
        assert name in doc, f"{name} is not documented in docs/settings.md"
        # A private CA for webhook consumers has no safe local value: documented, not sampled.
        if not name.startswith("SECRETS_STORAGE__") and name != "WEBHOOK_CA_BUNDLE":
            assert name in values, f"{name} is missing from local.settings.sample.json"


def test_every_binding_expression_is_set_in_the_sample_the_bicep_and_the_test_settings() -> None:
    """A %SETTING% the host resolves at startup: a missing one keeps the host from starting."""
    values = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    bicep = (ROOT / "infra" / "modules" / "functionapp.bicep").read_text()
    tests = (ROOT / "tests" / "integration" / "conftest.py").read_text()
    code = "".join(p.read_text() for p in (ROOT / "shared" / "entrypoints").glob("*.py"))
    expressions = set(re.findall(r'"%([A-Z_]+)%"', code))
    assert {"ROTATION_SWEEP_SCHEDULE", "EXPIRY_CHECK_SCHEDULE"} <= expressions
    for name in expressions:
        assert name in values, f"{name} is missing from local.settings.sample.json"
        assert f"'{name}'" in bicep, f"{name} is missing from infra/modules/functionapp.bicep"
        assert f'"{name}"' in tests, f"{name} is missing from tests/integration/conftest.py app_settings"


def test_the_expiry_settings_are_in_the_sample_and_the_bicep() -> None:
    values = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    bicep = (ROOT / "infra" / "modules" / "functionapp.bicep").read_text()
    assert Settings(values).expiry_require_exp is False
    assert values["EXPIRY_CHECK_SCHEDULE"] == "0 0 6 * * *"
    assert "{ name: 'EXPIRY_REQUIRE_EXP', value: 'false' }" in bicep
    assert "{ name: 'EXPIRY_CHECK_SCHEDULE', value: '0 0 6 * * *' }" in bicep
