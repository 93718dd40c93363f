"""The two files Core Tools reads at start: ``local.settings.json`` (app settings) and ``host.json``."""

from __future__ import annotations

import json
import os
import re
from collections.abc import MutableMapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

__all__ = ["HostConfig", "SettingsFileError", "load_host_json", "load_local_settings", "parse_timespan"]


class SettingsFileError(ValueError):
    """local.settings.json or host.json cannot be used; the message says which and why."""


@dataclass(frozen=True)
class HostConfig:
    """The host.json values the dev host honours (runtime defaults otherwise)."""

    route_prefix: str = "api"
    queue_batch_size: int = 16
    queue_max_dequeue_count: int = 5
    # Delay before a failed message is visible again (host.json queues.visibilityTimeout, default 0).
    queue_visibility_timeout: timedelta = timedelta(0)
    queue_max_polling_interval: timedelta = timedelta(seconds=2)
    queue_message_encoding: str = "base64"


_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{1,2}):(\d{1,2})(?:\.(\d{1,7}))?$")

# Locally we want a snappy loop: the runtime's default maxPollingInterval (1 min) is capped at this.
LOCAL_MAX_POLLING_INTERVAL = timedelta(seconds=2)


def parse_timespan(text: str) -> timedelta:
    """Parse a .NET TimeSpan as host.json writes it: ``[d.]hh:mm:ss[.fffffff]``. Raises ValueError."""
    match = _TIMESPAN.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a TimeSpan ([d.]hh:mm:ss[.fff])")
    days, hours, minutes, seconds, fraction = match.groups()
    return timedelta(
        days=int(days or 0),
        hours=int(hours),
        minutes=int(minutes),
        seconds=int(seconds),
        microseconds=int(fraction.ljust(6, "0")[:6]) if fraction else 0,
    )


def load_local_settings(
    path: Path, *, required: bool, environ: MutableMapping[str, str] | None = None
) -> tuple[list[str], list[str]]:
    """Copy ``Values`` into the environment without overriding what is already set (as Core Tools does).

    A variable set to the empty string counts as unset, as in Core Tools: the file's value replaces it.

    Returns (names applied, warnings). A missing file is fine unless ``required``. Raises SettingsFileError.
    """
    env = os.environ if environ is None else environ
    if not path.is_file():
        if required:
            raise SettingsFileError(f"settings file {str(path)!r} does not exist")
        return [], []
    try:
        document = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as err:
        raise SettingsFileError(f"cannot read {str(path)!r}: {err}") from err
    if not isinstance(document, dict):
        raise SettingsFileError(f"{str(path)!r} must hold a JSON object with a 'Values' object")
    if document.get("IsEncrypted") is True:
        raise SettingsFileError(
            f"{str(path)!r} is encrypted (IsEncrypted: true); the dev host reads plain values only"
        )
    values = document.get("Values", {})
    if not isinstance(values, dict):
        raise SettingsFileError(f"'Values' in {str(path)!r} must be an object of name: value")
    applied: list[str] = []
    warnings: list[str] = []
    for name, raw in values.items():
        if raw is None:
            continue
        if not isinstance(raw, str):
            warnings.append(f"setting {name!r} in {path.name} is not a string; using its JSON text")
        if env.get(name):
            continue
        env[name] = raw if isinstance(raw, str) else json.dumps(raw)
        applied.append(name)
    return applied, warnings


def load_host_json(path: Path) -> HostConfig:
    """Read the route prefix and queue options from host.json (defaults when the file is absent)."""
    if not path.is_file():
        return HostConfig()
    try:
        document = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as err:
        raise SettingsFileError(f"cannot read {str(path)!r}: {err}") from err
    extensions = _object(document, "extensions")
    http = _object(extensions, "http")
    queues = _object(extensions, "queues")
    defaults = HostConfig()
    try:
        prefix = http.get("routePrefix", defaults.route_prefix)
        polling = (
            parse_timespan(str(queues["maxPollingInterval"])) if "maxPollingInterval" in queues else None
        )
        config = HostConfig(
            route_prefix=str(prefix).strip("/"),
            queue_batch_size=int(queues.get("batchSize", defaults.queue_batch_size)),
            queue_max_dequeue_count=int(queues.get("maxDequeueCount", defaults.queue_max_dequeue_count)),
            queue_visibility_timeout=parse_timespan(str(queues.get("visibilityTimeout", "00:00:00"))),
            queue_max_polling_interval=min(polling, LOCAL_MAX_POLLING_INTERVAL)
            if polling
            else LOCAL_MAX_POLLING_INTERVAL,
            queue_message_encoding=str(
                queues.get("messageEncoding", defaults.queue_message_encoding)
            ).lower(),
        )
    except (TypeError, ValueError) as err:
        raise SettingsFileError(f"{str(path)!r}: {err}") from err
    if not 1 <= config.queue_batch_size <= 32:
        raise SettingsFileError(f"{str(path)!r}: queues.batchSize must be 1-32")
    if config.queue_max_dequeue_count < 1:
        raise SettingsFileError(f"{str(path)!r}: queues.maxDequeueCount must be at least 1")
    if config.queue_message_encoding not in ("base64", "none"):
        raise SettingsFileError(f"{str(path)!r}: queues.messageEncoding must be 'base64' or 'none'")
    return config


def _object(parent: Any, key: str) -> dict[str, Any]:
    value = parent.get(key, {}) if isinstance(parent, dict) else {}
    return value if isinstance(value, dict) else {}
