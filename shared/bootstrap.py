"""The one place that reads settings and builds clients: lazily, cached, overridable by tests.

Nothing here runs at import. The Azure SDKs are imported on first use, so an import of function_app
never fails on a missing setting and a cold start pays only for the clients a function touches.
Tests replace the whole container with ``set_container``.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol

from shared.adapters.environment import settled_environment
from shared.config import ConfigurationError, KeyVaultSettings, Settings
from shared.domain.policy import Rotator
from shared.ports import DependencyProbe

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.data.tables import TableServiceClient
    from azure.keyvault.secrets import SecretClient
    from azure.storage.queue import QueueServiceClient

    from shared.adapters.tables import TableAuditLog
    from shared.domain.state import StateTampered
    from shared.ports import (
        AuditArchive,
        Clock,
        DigestAnchor,
        FindingStore,
        MacKeyRing,
        Publisher,
        RotationRequests,
        SecretStore,
        StateStore,
        TargetRotator,
    )
    from shared.services.audit import AuditTrail
    from shared.services.findings import FindingPeers
    from shared.services.peers import AuditPeers, Peers
    from shared.services.revocation import Services as RevocationServices
    from shared.services.sweep_run import SweepPeers

#: Health probes must answer quickly when a peer is down: no retries beyond one, short timeouts.
_PROBE_TRANSPORT: dict[str, Any] = {
    "retry_total": 1,
    "retry_backoff_factor": 0.2,
    "connection_timeout": 3,
    "read_timeout": 5,
}


#: Retries of a throttled (429) or failing (5xx) Key Vault call before the error reaches the service.
KEY_VAULT_STATUS_RETRIES = 10


class Container:
    """Builds and caches the service's clients from one Settings."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self._lock = threading.RLock()
        self._probe_clients: dict[str, SecretClient] = {}
        # azure-core logs every request URL and header set at INFO; the Python worker forwards that to
        # Application Insights. Table filters carry actor ids and IPs: keep only warnings and errors.
        http_log = logging.getLogger("azure.core.pipeline.policies.http_logging_policy")
        if http_log.level == logging.NOTSET:
            http_log.setLevel(logging.WARNING)

    # -- credentials ------------------------------------------------------------------------------

    def _key_vault_credential(self, kv: KeyVaultSettings | None = None) -> TokenCredential:
        if (kv or self.settings.key_vault).is_local:
            from shared.adapters.key_vault import LocalTokenCredential

            return LocalTokenCredential()
        return self._azure_credential

    @cached_property
    def _azure_credential(self) -> TokenCredential:
        """In Azure, the app's managed identity and nothing else (AZURE_CLIENT_ID picks a user-assigned
        one): DefaultAzureCredential would probe environment and workload credentials first, and a stray
        setting could make the app act as someone else. Outside Azure (the operator CLI, a laptop), the
        developer's sign-in (az, azd, VS Code) through DefaultAzureCredential."""
        return self._identity(self.settings.managed_identity_client_id)

    @cached_property
    def _storage_credential(self) -> TokenCredential:
        """The Functions convention: ``SECRETS_STORAGE__clientId`` names a user-assigned identity."""
        client_id = self.settings.storage.client_id
        if client_id is None:
            return self._azure_credential
        return self._identity(client_id)

    def _identity(self, client_id: str | None) -> TokenCredential:
        if self.settings.running_in_azure:
            from azure.identity import ManagedIdentityCredential

            return ManagedIdentityCredential(client_id=client_id)
        from azure.identity import DefaultAzureCredential

        return DefaultAzureCredential(managed_identity_client_id=client_id)

    # -- clients ----------------------------------------------------------------------------------

    def _secret_client(self, kv: KeyVaultSettings | None = None, **transport: Any) -> SecretClient:
        from azure.keyvault.secrets import SecretClient

        kv = kv or self.settings.key_vault
        options: dict[str, Any] = dict(transport)
        if kv.is_local:
            # The emulator is on loopback: its challenge names no real resource, and its certificate is
            # self-signed. Neither shortcut is ever taken for a non-loopback vault.
            options["verify_challenge_resource"] = False
            options["connection_verify"] = str(kv.ca_bundle)
        return settled_environment(
            SecretClient,
            lambda c: c.vault_url,
            vault_url=kv.url,
            credential=self._key_vault_credential(kv),
            **options,
        )

    @cached_property
    def secret_client(self) -> SecretClient:
        with self._lock:
            # Key Vault throttles per vault (300 sets / 4,000 other calls per 10 s) and says when to come
            # back (Retry-After, up to ~10 s): a burst of rotations waits it out instead of failing after
            # azure-core's default of 3 status retries.
            return self._secret_client(retry_status=KEY_VAULT_STATUS_RETRIES)

    def vault_secret_store(self, kv: KeyVaultSettings) -> SecretStore:
        """The secrets of a vault other than the designated one, through a client of its own: Key Vault
        throttles per vault, so each vault's calls wait out only its own 429s."""
        from shared.adapters.key_vault import KeyVaultSecretStore

        with self._lock:
            return KeyVaultSecretStore(self._secret_client(kv, retry_status=KEY_VAULT_STATUS_RETRIES))

    def _table_service(self, **transport: Any) -> TableServiceClient:
        from azure.data.tables import TableServiceClient

        service: TableServiceClient = self._storage_client(
            TableServiceClient, "endpoint", self.settings.storage.table_service_uri, **transport
        )
        return service

    def _storage_client(self, client: Any, uri_option: str, uri: str | None, **options: Any) -> Any:
        """A storage service client: from the connection string when the settings give one, else from the
        service's URI (``uri_option``: the client's name for it) with the app's identity."""
        storage = self.settings.storage
        if storage.connection_string is not None:
            return settled_environment(
                client.from_connection_string, _url, conn_str=storage.connection_string, **options
            )
        assert uri is not None
        options[uri_option] = uri
        return settled_environment(client, _url, credential=self._storage_credential, **options)

    @cached_property
    def table_service(self) -> TableServiceClient:
        with self._lock:
            return self._table_service()

    def _queue_service(self, **transport: Any) -> QueueServiceClient:
        from azure.storage.queue import QueueServiceClient

        from shared.adapters.storage import QUEUE_API_VERSION

        uri = self.settings.storage.queue_service_uri
        service: QueueServiceClient = self._storage_client(
            QueueServiceClient, "account_url", uri, api_version=QUEUE_API_VERSION, **transport
        )
        return service

    @cached_property
    def queue_service(self) -> QueueServiceClient:
        with self._lock:
            return self._queue_service()

    # -- audit and notifications ----------------------------------------------------------------------

    @cached_property
    def clock(self) -> Clock:
        from shared.adapters.clock import SystemClock

        return SystemClock()

    @cached_property
    def key_ring(self) -> MacKeyRing:
        from shared.adapters.key_vault import KeyVaultMacKeyRing

        return KeyVaultMacKeyRing(self.secret_client)

    @cached_property
    def digest_anchor(self) -> DigestAnchor:
        """The newest audit digest, anchored in Key Vault where a storage writer cannot rewrite it."""
        from shared.adapters.key_vault import KeyVaultDigestAnchor

        return KeyVaultDigestAnchor(self.secret_client, self.settings.audit_anchor_secret)

    @cached_property
    def audit_archive(self) -> AuditArchive | None:
        """The archive the retention export writes and verify reads: None while AUDIT_RETENTION_DAYS is 0
        (nothing leaves the table). Raises ConfigurationError when blobs cannot be reached."""
        if not self.settings.audit_retention_days:
            return None
        from azure.storage.blob import BlobServiceClient

        from shared.adapters.archive import BLOB_API_VERSION, BlobAuditArchive

        uri = self.settings.storage.blob_service_uri
        if self.settings.storage.connection_string is None and uri is None:
            raise ConfigurationError(
                "SECRETS_STORAGE__blobServiceUri",
                "is not set; the audit archive (AUDIT_RETENTION_DAYS) needs it",
            )
        with self._lock:
            service: BlobServiceClient = self._storage_client(
                BlobServiceClient, "account_url", uri, api_version=BLOB_API_VERSION
            )
        return BlobAuditArchive(service.get_container_client(self.settings.audit_archive_container))

    @cached_property
    def secret_store(self) -> SecretStore:
        from shared.adapters.key_vault import KeyVaultSecretStore

        return KeyVaultSecretStore(self.secret_client)

    @cached_property
    def state_rows(self) -> StateStore:
        """The ``secretstate`` table as stored (tests put an in-memory store here)."""
        from shared.adapters.tables import STATE_TABLE, TableStateStore

        return TableStateStore(self.table_service, STATE_TABLE)

    @cached_property
    def state_store(self) -> StateStore:
        """Rotation progress, leases, retirement schedules, revocations, claims: compare-and-swap entities,
        each sealed (shared/services/sealed_state.py), every tampered one reported."""
        from shared.adapters.tables import STATE_TABLE
        from shared.services.sealed_state import SealedStateStore

        return SealedStateStore(self.state_rows, self.key_ring, STATE_TABLE, self.tamper_alarm)

    @cached_property
    def finding_rows(self) -> StateStore:
        """The ``auditfindings`` table as stored (tests put an in-memory store here)."""
        from shared.adapters.tables import FINDINGS_TABLE, TableStateStore

        return TableStateStore(self.table_service, FINDINGS_TABLE)

    @cached_property
    def tamper_alarm(self) -> Callable[[StateTampered], None]:
        """What hears of a tampered state row: a STATE_TAMPERED record, a finding and an event, once (its
        peers are built on first use: the findings store is sealed with this alarm)."""
        from shared.services.findings import TamperAlarm

        return TamperAlarm(lambda: self.finding_peers)

    @cached_property
    def finding_peers(self) -> FindingPeers:
        """What reporting a finding uses: the store, the trail, the publisher, the clock."""
        from shared.services.findings import FindingPeers

        return FindingPeers(self.findings, self.audit_trail, self.publisher, self.clock)

    @cached_property
    def rotation_queue(self) -> RotationRequests:
        """The ``rotation-requests`` queue as stored (tests put an in-memory one here)."""
        from shared.adapters.storage import StorageQueueRotationRequests

        return StorageQueueRotationRequests(self.queue_service)

    @cached_property
    def rotation_requests(self) -> RotationRequests:
        """Rotation requests, each sealed when sent (``rotate_secret`` acts only on sealed ones)."""
        from shared.services.sealed_queue import SealedRotationRequests

        return SealedRotationRequests(self.rotation_queue, self.key_ring)

    @cached_property
    def target_rotators(self) -> Mapping[Rotator, TargetRotator]:
        """The target rotators, each built (and its technology imported) on first use."""
        return self.rotators_of(self.secret_store)

    def rotators_of(self, store: SecretStore) -> Mapping[Rotator, TargetRotator]:
        """The target rotators over ``store`` (one vault's secrets), each built on first use."""
        from shared.services.peers import LazyRotators

        return LazyRotators(
            {
                Rotator.POSTGRES_SINGLE_USER: lambda: self._postgres(store, alternating=False),
                Rotator.POSTGRES_ALTERNATING: lambda: self._postgres(store, alternating=True),
                Rotator.WEBHOOK: lambda: self._webhook(store),
            }
        )

    def _postgres(self, store: SecretStore, *, alternating: bool) -> TargetRotator:
        from shared.adapters.postgres import PostgresRotator

        return PostgresRotator(store, alternating=alternating, reserved=self.reserved_secrets)

    def _webhook(self, store: SecretStore) -> TargetRotator:
        from shared.adapters.webhook import WebhookRotator

        bundle = self.settings.webhook_ca_bundle
        return WebhookRotator(
            store,
            self.key_ring,
            allow_loopback_http=self.settings.allow_loopback_webhooks,
            ca_bundle=str(bundle) if bundle else None,
        )

    # -- vaults -------------------------------------------------------------------------------------

    @cached_property
    def vaults(self) -> Mapping[str, VaultScope]:
        """Every managed vault's peers by its name, the designated vault (audit key, anchor) first. Raises
        ConfigurationError."""
        kvs = self.settings.key_vaults
        return {kv.name: VaultScope(self, kv.name, None if i == 0 else kv) for i, kv in enumerate(kvs)}

    def vault(self, name: str | None = None) -> VaultScope:
        """The peers of the vault ``name`` (None: the designated vault). Raises UnknownVault for a vault
        this service does not manage, ConfigurationError."""
        vaults = self.vaults
        if name is None:
            return next(iter(vaults.values()))
        found = vaults.get(name.lower())
        if found is None:
            from shared.services.vaults import UnknownVault

            raise UnknownVault(name, list(vaults))
        return found

    @property
    def peers(self) -> Peers:
        """What the secret services use, for the designated vault (``vault(name).peers``: another's)."""
        return self.vault().peers

    @property
    def audit_peers(self) -> AuditPeers:
        """What the audit services use (built per call: cheap, every peer is cached)."""
        from shared.services.peers import AuditPeers

        return AuditPeers(
            log=self.audit_log,
            reader=self.audit_log,
            keys=self.key_ring,
            anchor=self.digest_anchor,
            trail=self.audit_trail,
            findings=self.findings,
            publisher=self.publisher,
            clock=self.clock,
            archive=self.audit_archive,
        )

    @property
    def revocations(self) -> RevocationServices:
        """The peers and settings of the revocation services, for the designated vault."""
        return self.vault().revocations

    def _report_missing_state(self, partition: str, key: str) -> None:
        """A state the audit trail says exists whose row is gone: reported as tampering (once)."""
        from shared.adapters.tables import STATE_TABLE
        from shared.domain.state import StateTampered

        self.tamper_alarm(StateTampered(STATE_TABLE, partition, key, "missing", "", "missing"))

    @property
    def sweep_peers(self) -> SweepPeers:
        """What the hourly rotation sweep uses, for the designated vault."""
        return self.vault().sweep_peers

    @property
    def reserved_secrets(self) -> frozenset[str]:
        """The service's own secrets in the vault (the audit MAC key, the digest anchor): never rotated,
        revoked or listed as managed, whatever their tags say."""
        from shared.adapters.key_vault import AUDIT_KEY_SECRET

        return frozenset({AUDIT_KEY_SECRET, self.settings.audit_anchor_secret})

    @cached_property
    def audit_log(self) -> TableAuditLog:
        """The audit table: AuditLog for writers, AuditReader for queries, verify and digests."""
        from shared.adapters.tables import TableAuditLog

        return TableAuditLog(self.table_service, self.key_ring)

    @cached_property
    def audit_trail(self) -> AuditTrail:
        from shared.adapters.telemetry import observe_records
        from shared.services.audit import AuditTrail

        return AuditTrail(self.audit_log, self.clock, self.settings.key_vault.name, observe_records)

    @cached_property
    def findings(self) -> FindingStore:
        from shared.adapters.tables import FINDINGS_TABLE
        from shared.services.findings import StateFindingStore
        from shared.services.sealed_state import SealedStateStore

        return StateFindingStore(
            SealedStateStore(self.finding_rows, self.key_ring, FINDINGS_TABLE, self.tamper_alarm)
        )

    @cached_property
    def publisher(self) -> Publisher:
        from shared.adapters.event_grid import EventGridPublisher, LoggingPublisher

        settings = self.settings.event_grid
        if settings.endpoint is None:
            return LoggingPublisher()
        from azure.core.credentials import AzureKeyCredential
        from azure.eventgrid import EventGridPublisherClient

        credential: Any = AzureKeyCredential(settings.key) if settings.key else self._azure_credential
        endpoint = settings.endpoint
        client = settled_environment(
            EventGridPublisherClient, lambda _: endpoint, endpoint=endpoint, credential=credential
        )
        return EventGridPublisher(client)

    # -- probes -----------------------------------------------------------------------------------

    def health_probes(self) -> dict[str, DependencyProbe]:
        """Probes for GET /api/health: Key Vault, the storage account, and the audit store (its table exists
        and answers). Settings are read when a probe runs, so a bad setting is a failed check naming the
        setting, not a crashed endpoint."""

        def key_vault() -> DependencyProbe:
            from shared.adapters.key_vault import KeyVaultProbe

            return KeyVaultProbe(self._probe_secret_client)

        def storage() -> DependencyProbe:
            from shared.adapters.storage import StorageProbe

            return StorageProbe(self._probe_table_service, self._probe_queue_service)

        def audit_store() -> DependencyProbe:
            from shared.adapters.storage import AuditStoreProbe
            from shared.adapters.tables import AUDIT_TABLE

            return AuditStoreProbe(self._probe_table_service, AUDIT_TABLE)

        probes: dict[str, DependencyProbe] = {
            "key_vault": _Deferred(key_vault),
            "storage": _Deferred(storage),
            "audit_store": _Deferred(audit_store),
        }
        try:
            others = self.settings.key_vaults[1:]
        except ConfigurationError:
            others = ()  # the key_vault check names the setting
        # By position, not by name: the endpoint is anonymous, and a vault's name is nobody's business there.
        for position, kv in enumerate(others, start=2):
            probes[f"key_vault_{position}"] = _Deferred(functools.partial(self._other_vault_probe, kv))
        return probes

    def _other_vault_probe(self, kv: KeyVaultSettings) -> DependencyProbe:
        from shared.adapters.key_vault import KeyVaultProbe

        with self._lock:
            client = self._probe_clients.get(kv.name)
            if client is None:
                client = self._probe_clients[kv.name] = self._secret_client(kv, **_PROBE_TRANSPORT)
        return KeyVaultProbe(client)

    @cached_property
    def _probe_secret_client(self) -> SecretClient:
        return self._secret_client(**_PROBE_TRANSPORT)

    @cached_property
    def _probe_table_service(self) -> TableServiceClient:
        return self._table_service(**_PROBE_TRANSPORT)

    @cached_property
    def _probe_queue_service(self) -> QueueServiceClient:
        return self._queue_service(**_PROBE_TRANSPORT)


class VaultScope:
    """One managed vault's peers: its secrets (through a client of its own: Key Vault's limits are per
    vault), its namespace of stored state (``shared.services.vaults``), the trail that stamps its records
    and its target rotators, with what every vault shares (the audit log and keys, the queue, the topic,
    the findings). The designated vault's are the container's own. Built per use: cheap, all cached."""

    def __init__(self, container: Container, name: str, kv: KeyVaultSettings | None) -> None:
        self._c = container
        self.name = name
        self._kv = kv  # None: the designated vault
        self._own: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _built(self, role: str, build: Callable[[], Any]) -> Any:
        """This vault's ``role``, built on first use. Built with no lock held: it reads the container's
        cached peers, each computed under its own lock (Python 3.11's cached_property), some under the
        container's; holding a lock here while waiting for theirs would deadlock against a thread doing
        the reverse (the vaults' sweeps start at once on a new container). Two threads may both build it;
        the first stored is kept, the other dropped (a client or a wrapper, nothing written)."""
        with self._lock:
            if role in self._own:
                return self._own[role]
        made = build()
        with self._lock:
            return self._own.setdefault(role, made)

    @property
    def store(self) -> SecretStore:
        if self._kv is None:
            return self._c.secret_store
        kv = self._kv
        store: SecretStore = self._built("store", lambda: self._c.vault_secret_store(kv))
        return store

    @property
    def states(self) -> StateStore:
        if self._kv is None:
            return self._c.state_store
        from shared.services.vaults import ScopedStateStore

        states: StateStore = self._built("states", lambda: ScopedStateStore(self._c.state_store, self.name))
        return states

    @property
    def trail(self) -> AuditTrail:
        return self._c.audit_trail.of(None if self._kv is None else self.name)

    @property
    def rotators(self) -> Mapping[Rotator, TargetRotator]:
        if self._kv is None:
            return self._c.target_rotators
        rotators: Mapping[Rotator, TargetRotator] = self._built(
            "rotators", lambda: self._c.rotators_of(self.store)
        )
        return rotators

    def report_missing(self, partition: str, key: str) -> None:
        """A state the audit trail names whose row is gone, in this vault's namespace."""
        from shared.services.vaults import scoped_partition

        self._c._report_missing_state(
            scoped_partition(None if self._kv is None else self.name, partition), key
        )

    def _peer_fields(self) -> dict[str, Any]:
        c = self._c
        return {
            "store": self.store,
            "states": self.states,
            "trail": self.trail,
            "publisher": c.publisher,
            "clock": c.clock,
            "requests": c.rotation_requests,
            "reader": c.audit_log,
            "keys": c.key_ring,
            "reserved": c.reserved_secrets,
            "rotators": self.rotators,
            "report_missing": self.report_missing,
        }

    @property
    def peers(self) -> Peers:
        """What the secret services use."""
        from shared.services.peers import Peers

        return Peers(**self._peer_fields())

    @property
    def revocations(self) -> RevocationServices:
        """The peers and settings of the revocation services."""
        from shared.domain.revocation import Severity
        from shared.services.revocation import RevocationSettings, Services

        settings = self._c.settings
        approvals = {Severity(k): v for k, v in settings.revocation_approvals.items()}
        return Services(
            **self._peer_fields(), settings=RevocationSettings(settings.revocation_ttl, approvals)
        )

    @property
    def audit_peers(self) -> AuditPeers:
        """The audit services' peers, their own records and the vault they read about this vault's."""
        import dataclasses

        peers = self._c.audit_peers
        return peers if self._kv is None else dataclasses.replace(peers, trail=self.trail)

    @property
    def finding_peers(self) -> FindingPeers:
        """Findings (one store for every vault) reported on this vault's trail."""
        from shared.services.findings import FindingPeers

        c = self._c
        if self._kv is None:
            return c.finding_peers
        return FindingPeers(c.findings, self.trail, c.publisher, c.clock, scope=self.name)

    @property
    def sweep_peers(self) -> SweepPeers:
        """What the hourly rotation sweep uses."""
        from shared.services.sweep_run import SweepPeers

        return SweepPeers(
            **self._peer_fields(),
            findings=self.finding_peers,
            stall_after=self._c.settings.rotation_stall_after,
        )


class _Located(Protocol):
    @property
    def url(self) -> str: ...


def _url(client: _Located) -> str:
    return client.url


class _Deferred:
    """A probe whose real probe (and its client) is built on the first check."""

    def __init__(self, factory: Callable[[], DependencyProbe]) -> None:
        self._factory = factory

    def check(self) -> None:
        self._factory().check()


_container: Container | None = None
_container_lock = threading.Lock()


def get_container() -> Container:
    """The process-wide container, created on first use."""
    global _container  # noqa: PLW0603 - the one cached wiring object of the process
    with _container_lock:
        if _container is None:
            _container = Container()
        return _container


def set_container(container: Container | None) -> None:
    """Replace the process-wide container (tests), or drop it so the next use rebuilds from settings."""
    global _container  # noqa: PLW0603
    with _container_lock:
        _container = container
