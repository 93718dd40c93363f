"""Expiry triggers: the daily ``expiry_check`` timer and the ``key_vault_events`` Event Grid trigger.

``expiry_check`` warns before secret versions expire, reports expired ones and policy violations, once per
version (``shared.services.expiry``); it fails the invocation when any secret's check failed. Key Vault's
SecretNearExpiry / SecretExpired / SecretNewVersionCreated events reach ``key_vault_events``
(``shared.services.key_vault_events``). A malformed or irrelevant event is logged and dropped: raising
would make Event Grid retry it for 24 hours. A dependency failure is raised, so Event Grid delivers the
event again and the redelivery finishes what was left pending.
"""

from __future__ import annotations

import logging
import uuid

import azure.functions as func

from shared.adapters import telemetry
from shared.bootstrap import get_container
from shared.domain.key_vault_events import MalformedEvent, event_type, parse_event
from shared.entrypoints.http import correlation_id
from shared.services.expiry import check_expiry
from shared.services.key_vault_events import handle_event
from shared.services.vaults import UnknownVault, failures, for_each

logger = logging.getLogger(__name__)


def expiry_check(timer: func.TimerRequest, context: func.Context) -> None:
    with telemetry.invocation("expiry_check", "timer", correlation_id(context), context):
        _expiry_check(timer, context)


def _expiry_check(timer: func.TimerRequest, context: func.Context) -> None:
    container = get_container()
    require_exp, cid = container.settings.expiry_require_exp, correlation_id(context) or uuid.uuid4().hex
    reports, errors = for_each(
        container.vaults,
        lambda scope: check_expiry(scope.peers, require_exp=require_exp, correlation_id=cid),
    )
    failed = failures("expiry check", errors)
    for vault, report in reports.items():
        logger.info("expiry check: %s (vault %s)", report.counts(), vault)
        if report.failed:
            failed.append(f"{vault}: {len(report.failed)} secret(s) could not be checked")
    if failed:
        # Each failure is on record; failing the invocation makes the platform show it. Tomorrow's run
        # finishes whatever was left pending.
        raise RuntimeError("expiry check: " + "; ".join(failed))


def key_vault_events(event: func.EventGridEvent) -> None:
    with telemetry.invocation("key_vault_events", "eventgrid", event.id[:128]):
        _key_vault_events(event)


def _key_vault_events(event: func.EventGridEvent) -> None:
    kind = event_type(event.event_type)
    if kind is None:
        logger.info("Key Vault event %.80s ignored: type %.80r is not handled", event.id, event.event_type)
        return
    try:
        parsed = parse_event(event_id=event.id, type_=kind, subject=event.subject, data=event.get_json())
    except MalformedEvent as err:
        logger.warning("Key Vault event %.80s dropped: %s", event.id, err)
        return
    container = get_container()
    try:
        scope = container.vault(parsed.vault_name)
    except UnknownVault:
        # Not retried (Event Grid would for 24 hours): a subscription left on a vault no longer listed.
        logger.warning(
            "Key Vault event %.80s ignored: the vault %.64r is not one this service manages (%s)",
            event.id, parsed.vault_name, ", ".join(container.vaults),
        )  # fmt: skip
        return
    handle_event(scope.peers, parsed)
