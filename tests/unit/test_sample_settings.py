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


def test_every_setting_read_by_the_code_is_in_the_sample_and_the_readme() -> None:
    values = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    readme = (ROOT / "README.md").read_text()
    source = (ROOT / "shared" / "config.py").read_text()
    read = set(re.findall(r'"((?:AUDIT|KEY_VAULT|SECRETS|EVENT_GRID|ALLOW)_[A-Z_]+)"', source))
    assert read, "the pattern should find the settings"
    for name in read:
        assert name in readme, f"{name} is not documented in README.md"
        if not name.startswith("SECRETS_STORAGE__"):
            assert name in values, f"{name} is missing from local.settings.sample.json"
