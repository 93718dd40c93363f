"""Rotation triggers: the sweep timer and the queue trigger that rotates one secret.

``rotation_sweep`` lists the vault's properties, enqueues one request per due managed secret on the
``rotation-requests`` queue, records policy violations once per version and retires previous versions
whose grace has ended. ``rotate_secret`` rotates one secret per message: transient failures retry through
the queue (``maxDequeueCount`` in host.json), and ``rotation_gave_up`` records a request that reached the
poison queue, however its attempts ended.
"""

from __future__ import annotations

import logging
import time
import uuid

import azure.functions as func

from shared.adapters import telemetry
from shared.bootstrap import Container, VaultScope, get_container
from shared.domain.rotation import MAX_DEQUEUE_COUNT, RotationRequest
from shared.entrypoints.http import correlation_id
from shared.services import rotation, sealed_queue, sweep_run
from shared.services.vaults import UnknownVault, failures, for_each

logger = logging.getLogger(__name__)
QUEUE = "rotation-requests"


def rotation_sweep(timer: func.TimerRequest, context: func.Context) -> None:
    cid = correlation_id(context) or uuid.uuid4().hex
    with telemetry.invocation("rotation_sweep", "timer", cid, context):
        runs, errors = for_each(get_container().vaults, lambda scope: _sweep(scope, cid))
        failed = failures("rotation sweep", errors)
        for vault, done in runs.items():
            logger.info("rotation sweep: %s (vault %s)", done.summary(), vault)
            failed.extend(f"{vault}: {failure}" for failure in done.failures)
        if failed:
            # Fail the invocation so the platform shows it; the next sweep tries again (each is on record).
            raise RuntimeError("rotation sweep: " + "; ".join(failed))


def _sweep(scope: VaultScope, cid: str) -> sweep_run.SweepRun:
    """One vault's sweep, timed, and what it found counted."""
    started = time.perf_counter()
    done = sweep_run.run(scope.sweep_peers, cid)
    metrics, vault = telemetry.metrics(), {"vault": scope.name}
    metrics.sweep_duration.record(time.perf_counter() - started, vault)
    metrics.scanned.add(done.report.listed, vault)
    metrics.due.add(len(done.report.due), vault)
    return done


def rotate_secret(msg: func.QueueMessage, context: func.Context) -> None:
    with telemetry.invocation("rotate_secret", "queue", correlation_id(context), context) as span:
        container = get_container()
        request = sealed_queue.receive(msg.get_body(), QUEUE, container.key_ring, container.tamper_alarm)
        if request is None:
            return  # not the service's (malformed, unsealed, edited): reported, never acted on
        span.set_attribute("secret_lifecycle.request.correlation_id", request.correlation_id)
        scope = _scope(container, request)
        if scope is None:
            return
        started, result = time.perf_counter(), "error"  # raised: the queue delivers it again
        try:
            outcome = rotation.rotate_requested(scope.peers, request)
            result = outcome.status
        finally:
            elapsed = time.perf_counter() - started
            telemetry.metrics().rotation_duration.record(elapsed, {"result": result, "vault": scope.name})
        logger.info("rotation of %s: %s (%s)", request.secret_name, outcome.status, outcome.reason)


def rotation_gave_up(msg: func.QueueMessage) -> None:
    with telemetry.invocation("rotation_gave_up", "queue", None):
        container = get_container()
        poison = f"{QUEUE}-poison"
        request = sealed_queue.receive(msg.get_body(), poison, container.key_ring, container.tamper_alarm)
        if request is None:
            return
        scope = _scope(container, request)
        if scope is None:
            return
        rotation.gave_up(request, scope.trail, MAX_DEQUEUE_COUNT, scope.states)


def _scope(container: Container, request: RotationRequest) -> VaultScope | None:
    """The peers of the request's vault (the designated one for a request that names none); None, with a
    warning, for a vault no longer listed (the request, sealed by this service, is dropped)."""
    try:
        return container.vault(request.vault)
    except UnknownVault:
        logger.warning(
            "rotation request of %s dropped: the vault %s is not managed by this service any more",
            request.secret_name, request.vault,
        )  # fmt: skip
        return None
