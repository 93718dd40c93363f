"""Settings of the service, read from the environment (app settings in Azure, local.settings.json locally).

Nothing is read at import. Each group of settings is parsed on first use, so a function that does not need
Event Grid keeps working when Event Grid is not configured, and a missing or malformed setting produces
one `ConfigurationError` that names it.

Setting names are fixed (other parts of the platform and the docs rely on them):

- ``KEY_VAULT_URL``: the vault, ``https://<name>.vault.azure.net`` in Azure. A loopback host
  (127.0.0.1, localhost, ::1) means the local emulator: a static local token, no challenge-resource check,
  and the emulator's certificate from ``KEY_VAULT_CA_BUNDLE``. Any other host uses
  the managed identity in Azure (``AZURE_CLIENT_ID`` for a user-assigned one), ``DefaultAzureCredential``
  elsewhere, and never the local shortcuts. It holds the audit MAC key and the digest anchor.
- ``KEY_VAULT_URLS``: more vaults whose secrets the service manages, comma-separated (KEY_VAULT_URL may
  be left out: the first listed is then the one holding the audit key and anchor).
- ``SECRETS_STORAGE``: a storage connection string, or the identity-based form
  ``SECRETS_STORAGE__tableServiceUri`` / ``SECRETS_STORAGE__queueServiceUri`` (+ ``__clientId``).
- ``EVENT_GRID_TOPIC_ENDPOINT`` (+ ``EVENT_GRID_TOPIC_KEY``): where consumer notifications go.
- ``ALLOW_UNVERIFIED_PRINCIPAL``: local development only; refused when running in Azure.
- ``EXPIRY_REQUIRE_EXP``: the daily expiry check reports an enabled secret without ``exp`` as a policy
  violation (default false).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time as dt_time
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shared.domain.risk import RiskRules, Signal
from shared.domain.scan_rules import ScanRules
from shared.domain.secrets import NAME_PATTERN

KEY_VAULT_URL = "KEY_VAULT_URL"
KEY_VAULT_URLS = "KEY_VAULT_URLS"
#: Vaults one deployment manages at most: every timer and listing visits each of them.
MAX_VAULTS = 16
KEY_VAULT_CA_BUNDLE = "KEY_VAULT_CA_BUNDLE"
SECRETS_STORAGE = "SECRETS_STORAGE"
EVENT_GRID_TOPIC_ENDPOINT = "EVENT_GRID_TOPIC_ENDPOINT"
EVENT_GRID_TOPIC_KEY = "EVENT_GRID_TOPIC_KEY"
ALLOW_UNVERIFIED_PRINCIPAL = "ALLOW_UNVERIFIED_PRINCIPAL"
WEBSITE_INSTANCE_ID = "WEBSITE_INSTANCE_ID"
WEBSITE_AUTH_ENABLED = "WEBSITE_AUTH_ENABLED"
AZURE_FUNCTIONS_ENVIRONMENT = "AZURE_FUNCTIONS_ENVIRONMENT"
EXPIRY_REQUIRE_EXP = "EXPIRY_REQUIRE_EXP"
WEBHOOK_CA_BUNDLE = "WEBHOOK_CA_BUNDLE"
REVOCATION_TTL_HOURS = "REVOCATION_TTL_HOURS"
REVOCATION_APPROVALS = "REVOCATION_APPROVALS"
ROTATION_STALL_MINUTES = "ROTATION_STALL_MINUTES"
APPLICATIONINSIGHTS_CONNECTION_STRING = "APPLICATIONINSIGHTS_CONNECTION_STRING"
TELEMETRY_CONSOLE = "TELEMETRY_CONSOLE"

#: AUDIT_RETENTION_DAYS, when on: at least what the summary may ask for (365 days) and a margin, at most a
#: century.
MIN_RETENTION_DAYS = 400
MAX_RETENTION_DAYS = 36_500
CONTAINER_NAME = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")

_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no", ""}


class ConfigurationError(Exception):
    """A required setting is missing or malformed. ``setting`` names it."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"setting {setting}: {problem}")
        self.setting = setting
        self.problem = problem


def is_loopback_host(host: str) -> bool:
    """True for localhost and loopback IP literals (127.0.0.0/8, ::1)."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_service_uri(name: str, uri: str) -> None:
    parts = urlsplit(uri)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigurationError(name, "must be a service URL like https://<account>.table.core.windows.net")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ConfigurationError(name, "must use https for a non-local storage account")


def vault_name(host: str, port: int | None) -> str:
    """``fleet`` for fleet.vault.azure.net; ``127-0-0-1-8443`` for a local emulator."""
    host = host.strip("[]").lower()
    labels = host.split(".")
    if not is_loopback_host(host) and len(labels) > 2 and not host.replace(".", "").isdigit():
        return labels[0]
    text = f"{host}-{port}" if port else host
    return "".join(c if c.isalnum() else "-" for c in text).strip("-") or "vault"


@dataclass(frozen=True)
class KeyVaultSettings:
    """Where the vault is and how to reach it."""

    url: str
    #: Short vault name used in audit records: the first DNS label in Azure, host and port locally.
    name: str
    #: Loopback vault (the local emulator): static token, no resource check, custom CA.
    is_local: bool
    #: PEM file to trust for a local vault; None for a real vault (system trust store).
    ca_bundle: Path | None


@dataclass(frozen=True)
class StorageSettings:
    """Table and queue storage of the service: a connection string or identity-based service URIs."""

    #: May hold an AccountKey: never in a repr (a log line, a traceback, a test failure).
    connection_string: str | None = field(default=None, repr=False)
    table_service_uri: str | None = None
    queue_service_uri: str | None = None
    #: Only the audit archive uses blobs (AUDIT_RETENTION_DAYS): needed with managed identity then.
    blob_service_uri: str | None = None
    #: Client id of a user-assigned managed identity; None means the system-assigned one.
    client_id: str | None = None


@dataclass(frozen=True)
class EventGridSettings:
    """The consumer-notification topic. ``endpoint`` None means: log events, send nothing."""

    endpoint: str | None
    #: Topic access key; None means managed identity (Entra ID) is used. Never in a repr.
    key: str | None = field(repr=False)


@dataclass(frozen=True)
class TelemetrySettings:
    """Where spans and metrics go: Application Insights (its connection string: never in a repr), else the
    console (local), else nowhere."""

    connection_string: str | None = field(default=None, repr=False)
    console: bool = False


class Settings:
    """Typed, lazily validated view of the environment. Construct freely: it reads nothing until asked."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._env: Mapping[str, str] = os.environ if environ is None else environ

    def _get(self, name: str) -> str | None:
        value = self._env.get(name)
        if value is None:
            return None
        value = value.strip()
        return value or None

    def _flag(self, name: str) -> bool:
        raw = (self._env.get(name) or "").strip().lower()
        if raw in _TRUE:
            return True
        if raw in _FALSE:
            return False
        raise ConfigurationError(name, f"expected true or false, got {raw!r}")

    @property
    def running_in_azure(self) -> bool:
        """The Functions host sets WEBSITE_INSTANCE_ID on every Azure instance, never locally."""
        return self._get(WEBSITE_INSTANCE_ID) is not None

    @property
    def managed_identity_client_id(self) -> str | None:
        """AZURE_CLIENT_ID: the client id of a user-assigned managed identity; None means the
        system-assigned one."""
        return self._get("AZURE_CLIENT_ID")

    @property
    def allow_unverified_principal(self) -> bool:
        """Local development switch: trust X-MS-CLIENT-PRINCIPAL without Easy Auth."""
        return self._flag(ALLOW_UNVERIFIED_PRINCIPAL)

    @property
    def expiry_require_exp(self) -> bool:
        """EXPIRY_REQUIRE_EXP: an enabled secret without an expiry date is a policy violation (default
        false). Raises ConfigurationError for anything but true/false (1/0, yes/no)."""
        return self._flag(EXPIRY_REQUIRE_EXP)

    @property
    def platform_auth_enabled(self) -> bool:
        """App Service Authentication (Easy Auth) is on, so the platform vouches for the principal header."""
        return (self._get(WEBSITE_AUTH_ENABLED) or "").lower() == "true"

    @property
    def is_development_host(self) -> bool:
        """Core Tools and the dev host set AZURE_FUNCTIONS_ENVIRONMENT=Development; Azure never does."""
        return (self._get(AZURE_FUNCTIONS_ENVIRONMENT) or "").lower() == "development"

    @property
    def allow_loopback_webhooks(self) -> bool:
        """Plain-http webhook targets on a loopback host are allowed on a local development host only."""
        return self.is_development_host and not self.running_in_azure

    @cached_property
    def webhook_ca_bundle(self) -> Path | None:
        """WEBHOOK_CA_BUNDLE: a PEM file of the CAs webhook consumers' certificates are checked against
        instead of the system's (a private CA). Raises ConfigurationError for a file that does not exist."""
        raw = self._get(WEBHOOK_CA_BUNDLE)
        if raw is None:
            return None
        path = Path(raw)
        if not path.is_file():
            raise ConfigurationError(WEBHOOK_CA_BUNDLE, "names a file that does not exist")
        return path

    @cached_property
    def telemetry(self) -> TelemetrySettings:
        """APPLICATIONINSIGHTS_CONNECTION_STRING (the deployment sets it) exports spans and metrics to
        Application Insights; without it, TELEMETRY_CONSOLE=true prints them (local). Raises
        ConfigurationError for a TELEMETRY_CONSOLE that is not true/false (without a connection string)."""
        connection = self._get(APPLICATIONINSIGHTS_CONNECTION_STRING)
        # With a connection string the console is not read: a stray value must not cost Azure its telemetry.
        return TelemetrySettings(connection, connection is None and self._flag(TELEMETRY_CONSOLE))

    @cached_property
    def rotation_stall_after(self) -> timedelta:
        """ROTATION_STALL_MINUTES: how long after it became due a secret still due has stalled (30-10080,
        default 120: two hourly sweeps; twice the sweep's period if ROTATION_SWEEP_SCHEDULE changes).
        Raises ConfigurationError."""
        return timedelta(minutes=self._int(ROTATION_STALL_MINUTES, 120, 30, 10080, "whole minutes"))

    @cached_property
    def revocation_ttl(self) -> timedelta:
        """REVOCATION_TTL_HOURS: how long a revocation request may wait for its approvals and its
        execution (1-168, default 24). Raises ConfigurationError."""
        return timedelta(hours=self._int(REVOCATION_TTL_HOURS, 24, 1, 168, "whole hours"))

    @cached_property
    def revocation_approvals(self) -> dict[str, int]:
        """REVOCATION_APPROVALS: approvals needed per severity, e.g. ``low=2,medium=2,high=1,critical=1``
        (the default; severities left out keep theirs; 1-5 each). Raises ConfigurationError."""
        approvals = {"low": 2, "medium": 2, "high": 1, "critical": 1}
        raw = self._get(REVOCATION_APPROVALS)
        for part in (raw or "").split(","):
            if not part.strip():
                continue
            severity, _, count = part.partition("=")
            severity, count = severity.strip().lower(), count.strip()
            if severity not in approvals or not (
                count.isascii() and count.isdigit() and 1 <= int(count) <= 5
            ):
                raise ConfigurationError(
                    REVOCATION_APPROVALS, "expected severity=count pairs like high=1 (counts 1-5)"
                )
            approvals[severity] = int(count)
        return approvals

    def check_http_safety(self) -> None:
        """Raise when the settings make HTTP functions unsafe to serve: the local principal switch
        anywhere but on a local development host (in Azure, in a container, on a server)."""
        if not self.allow_unverified_principal:
            return
        if self.running_in_azure:
            raise ConfigurationError(
                ALLOW_UNVERIFIED_PRINCIPAL,
                "is a local development switch and must not be set when running in Azure "
                f"({WEBSITE_INSTANCE_ID} is present); remove it from the app settings",
            )
        if not self.is_development_host:
            raise ConfigurationError(
                ALLOW_UNVERIFIED_PRINCIPAL,
                f"is honoured only on a local development host ({AZURE_FUNCTIONS_ENVIRONMENT}=Development, "
                "as Core Tools and the dev host set it); remove it",
            )

    @cached_property
    def key_vault(self) -> KeyVaultSettings:
        """The designated vault: the one that holds the audit MAC key and the digest anchor (KEY_VAULT_URL,
        or the first of KEY_VAULT_URLS). Raises ConfigurationError."""
        return self.key_vaults[0]

    @cached_property
    def key_vaults(self) -> tuple[KeyVaultSettings, ...]:
        """Every vault whose secrets the service manages, the designated one first: KEY_VAULT_URL, then the
        others of KEY_VAULT_URLS (comma-separated; the designated one may be listed too). Each is named by
        its short name in routes, records and events, so two vaults of one name are refused. Raises
        ConfigurationError naming the setting."""
        single = self._get(KEY_VAULT_URL)
        listed = [u.strip() for u in (self._get(KEY_VAULT_URLS) or "").split(",")]
        if single is None and not any(listed):
            raise ConfigurationError(
                KEY_VAULT_URL,
                f"is not set (nor {KEY_VAULT_URLS}); expected https://<vault-name>.vault.azure.net",
            )
        if any(not u for u in listed) and len(listed) > 1:
            raise ConfigurationError(
                KEY_VAULT_URLS, "has an empty entry; expected comma-separated vault URLs"
            )
        vaults: list[KeyVaultSettings] = []
        for setting, url in [(KEY_VAULT_URL, single)] + [(KEY_VAULT_URLS, u) for u in listed if u]:
            if url is None:
                continue
            vault = self._vault(setting, url)
            same = next((v for v in vaults if v.name == vault.name), None)
            if same is not None and same.url.lower() != vault.url.lower():
                raise ConfigurationError(
                    setting, f"names two vaults called {vault.name!r}; each vault needs its own name"
                )
            if same is None:
                vaults.append(vault)
        if len(vaults) > MAX_VAULTS:
            raise ConfigurationError(KEY_VAULT_URLS, f"lists {len(vaults)} vaults; at most {MAX_VAULTS}")
        return tuple(vaults)

    def _vault(self, setting: str, url: str) -> KeyVaultSettings:
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise ConfigurationError(
                setting, "must be an https URL like https://<vault-name>.vault.azure.net"
            )
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ConfigurationError(setting, "must be the vault's base URL, without a path or query")
        local = is_loopback_host(parts.hostname)
        ca_bundle: Path | None = None
        if local:
            raw = self._get(KEY_VAULT_CA_BUNDLE)
            if raw is None:
                raise ConfigurationError(
                    KEY_VAULT_CA_BUNDLE,
                    f"is not set; a loopback {setting} (the local emulator) needs the emulator's PEM "
                    "certificate",
                )
            ca_bundle = Path(raw)
            if not ca_bundle.is_file():
                raise ConfigurationError(KEY_VAULT_CA_BUNDLE, "names a file that does not exist")
        return KeyVaultSettings(
            url=url.rstrip("/"),
            name=vault_name(parts.hostname, parts.port),
            is_local=local,
            ca_bundle=ca_bundle,
        )

    @cached_property
    def storage(self) -> StorageSettings:
        connection = self._get(SECRETS_STORAGE)
        table_uri = self._get(f"{SECRETS_STORAGE}__tableServiceUri")
        queue_uri = self._get(f"{SECRETS_STORAGE}__queueServiceUri")
        client_id = self._get(f"{SECRETS_STORAGE}__clientId")
        if connection is not None:
            if "=" not in connection:
                raise ConfigurationError(
                    SECRETS_STORAGE,
                    "is not a storage connection string "
                    "(expected Key=Value;... or UseDevelopmentStorage=true)",
                )
            return StorageSettings(connection_string=connection)
        if table_uri is None or queue_uri is None:
            missing = (
                f"{SECRETS_STORAGE}__tableServiceUri"
                if table_uri is None
                else f"{SECRETS_STORAGE}__queueServiceUri"
            )
            if table_uri is None and queue_uri is None:
                missing = SECRETS_STORAGE
            raise ConfigurationError(
                missing,
                "is not set; give a connection string in SECRETS_STORAGE, or both "
                "SECRETS_STORAGE__tableServiceUri and SECRETS_STORAGE__queueServiceUri for managed identity",
            )
        blob_uri = self._get(f"{SECRETS_STORAGE}__blobServiceUri")
        for name, uri in (
            (f"{SECRETS_STORAGE}__tableServiceUri", table_uri),
            (f"{SECRETS_STORAGE}__queueServiceUri", queue_uri),
            (f"{SECRETS_STORAGE}__blobServiceUri", blob_uri),
        ):
            if uri is not None:
                _check_service_uri(name, uri)
        return StorageSettings(
            table_service_uri=table_uri,
            queue_service_uri=queue_uri,
            blob_service_uri=blob_uri,
            client_id=client_id,
        )

    @cached_property
    def audit_retention_days(self) -> int:
        """AUDIT_RETENTION_DAYS: records older than this many days are exported to the audit archive and
        removed from the table (0, the default: kept in the table for ever)."""
        days = self._int("AUDIT_RETENTION_DAYS", 0, 0, MAX_RETENTION_DAYS)
        if 0 < days < MIN_RETENTION_DAYS:
            raise ConfigurationError(
                "AUDIT_RETENTION_DAYS", f"expected 0 (off) or {MIN_RETENTION_DAYS} to {MAX_RETENTION_DAYS}"
            )
        return days

    @cached_property
    def audit_archive_container(self) -> str:
        """AUDIT_ARCHIVE_CONTAINER: the blob container of the audit archive (the deployment creates it
        with its retention policy)."""
        name = self._get("AUDIT_ARCHIVE_CONTAINER") or "auditarchive"
        if not CONTAINER_NAME.fullmatch(name) or "--" in name:
            raise ConfigurationError(
                "AUDIT_ARCHIVE_CONTAINER", "must be a container name: 3-63 of a-z, 0-9, -"
            )
        return name

    @cached_property
    def audit_anchor_secret(self) -> str:
        """AUDIT_ANCHOR_SECRET: the Key Vault secret whose versions anchor the audit digests. One per
        audit table: deployments sharing a vault need different names."""
        name = self._get("AUDIT_ANCHOR_SECRET") or "audit-digest-anchor"
        if not NAME_PATTERN.fullmatch(name):
            raise ConfigurationError("AUDIT_ANCHOR_SECRET", "must be 1-127 characters of 0-9, a-z, A-Z and -")
        if name.lower() == "audit-hmac-key":
            raise ConfigurationError("AUDIT_ANCHOR_SECRET", "must not name the audit MAC key")
        return name

    @cached_property
    def scan_rules(self) -> ScanRules:
        """Thresholds of the suspicious-activity scan (AUDIT_SCAN_*, AUDIT_WORKING_*, AUDIT_TIMEZONE)."""
        defaults = ScanRules()
        window = self._int("AUDIT_SCAN_WINDOW_MINUTES", int(defaults.window.total_seconds() // 60), 1, 1440)
        start, end = self._hours("AUDIT_WORKING_HOURS", defaults.working_start, defaults.working_end)
        zone = self._get("AUDIT_TIMEZONE") or defaults.timezone
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigurationError("AUDIT_TIMEZONE", f"{zone!r} is not an IANA time zone") from None
        return ScanRules(
            window=timedelta(minutes=window),
            denied_per_actor=self._int("AUDIT_SCAN_DENIED_PER_ACTOR", defaults.denied_per_actor, 1, 10_000),
            denied_per_ip=self._int("AUDIT_SCAN_DENIED_PER_IP", defaults.denied_per_ip, 1, 10_000),
            rotation_failures=self._int("AUDIT_SCAN_ROTATION_FAILURES", defaults.rotation_failures, 1, 1000),
            revocation_requests=self._int(
                "AUDIT_SCAN_REVOCATION_REQUESTS", defaults.revocation_requests, 1, 1000
            ),
            working_start=start,
            working_end=end,
            working_days=self._days("AUDIT_WORKING_DAYS", defaults.working_days),
            timezone=zone,
        )

    @cached_property
    def risk_rules(self) -> RiskRules:
        """The actor risk score's terms (RISK_*); working hours are the scan's (AUDIT_WORKING_*)."""
        defaults = RiskRules()
        hours = self._int("RISK_WINDOW_HOURS", int(defaults.window.total_seconds() // 3600), 1, 2160)
        days = self._int("RISK_BASELINE_DAYS", defaults.baseline.days, 1, 365)
        threshold = self._int("RISK_THRESHOLD", defaults.threshold, 1, 100_000)
        return RiskRules(
            window=timedelta(hours=hours),
            baseline=timedelta(days=days),
            threshold=threshold,
            weights=self._weights("RISK_WEIGHTS", defaults.weights),
        )

    def _weights(self, name: str, defaults: Mapping[Signal, int]) -> Mapping[Signal, int]:
        """``signal=weight,...``: each named signal's weight (0-1000), the others' defaults kept."""
        raw = self._get(name)
        weights = dict(defaults)
        for part in (raw or "").replace(" ", "").split(","):
            if not part:
                continue
            signal, _, weight = part.partition("=")
            if signal not in {s.value for s in Signal}:
                known = ", ".join(s.value for s in Signal)
                raise ConfigurationError(name, f"unknown signal {signal!r}; the signals are {known}")
            if not weight.isascii() or not weight.isdigit() or int(weight) > 1000:
                raise ConfigurationError(name, f"{signal}: expected a weight from 0 to 1000, got {weight!r}")
            weights[Signal(signal)] = int(weight)
        return weights

    def _int(self, name: str, default: int, low: int, high: int, unit: str = "a whole number") -> int:
        """A whole number of ASCII digits within [low, high]; ``default`` when the setting is absent."""
        raw = self._get(name)
        if raw is None:
            return default
        if not raw.isascii() or not raw.isdigit() or not low <= int(raw) <= high:
            raise ConfigurationError(name, f"expected {unit} from {low} to {high}, got {raw!r}")
        return int(raw)

    def _hours(self, name: str, start: dt_time, end: dt_time) -> tuple[dt_time, dt_time]:
        raw = self._get(name)
        if raw is None:
            return start, end
        try:
            first, last = (dt_time.fromisoformat(part.strip()) for part in raw.split("-"))
        except ValueError:
            raise ConfigurationError(name, f"expected HH:MM-HH:MM, got {raw!r}") from None
        if first >= last:
            raise ConfigurationError(name, "the start must be before the end")
        return first, last

    def _days(self, name: str, default: frozenset[int]) -> frozenset[int]:
        raw = self._get(name)
        if raw is None:
            return default
        names = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        days: set[int] = set()
        for part in raw.lower().replace(" ", "").split(","):
            bounds = part.split("-")
            if not part or len(bounds) > 2 or any(b not in names for b in bounds):
                raise ConfigurationError(name, f"expected days like Mon-Fri or Mon,Wed,Sat, got {raw!r}")
            first, last = names.index(bounds[0]), names.index(bounds[-1])
            if last < first:
                raise ConfigurationError(name, f"range {part!r} runs backwards")
            days.update(range(first, last + 1))
        return frozenset(days)

    @cached_property
    def event_grid(self) -> EventGridSettings:
        endpoint = self._get(EVENT_GRID_TOPIC_ENDPOINT)
        key = self._get(EVENT_GRID_TOPIC_KEY)
        if endpoint is None:
            if key is not None:
                raise ConfigurationError(EVENT_GRID_TOPIC_ENDPOINT, "is not set but EVENT_GRID_TOPIC_KEY is")
            return EventGridSettings(endpoint=None, key=None)
        parts = urlsplit(endpoint)
        local_http = (
            parts.scheme == "http" and bool(parts.hostname) and is_loopback_host(parts.hostname or "")
        )
        if not local_http and (parts.scheme != "https" or not parts.hostname):
            raise ConfigurationError(
                EVENT_GRID_TOPIC_ENDPOINT,
                "must be an https URL like https://<topic>.<region>-1.eventgrid.azure.net/api/events",
            )
        return EventGridSettings(endpoint=endpoint, key=key)
