"""Sealed rotation requests: the ``rotation-requests`` queue is storage too. Every request the service
sends is sealed with the audit key ring (``SealedRotationRequests``); ``accepted`` decides whether a
received one may be acted on. A request a queue writer put there (no seal, another key, edited fields)
is never acted on: the alarm reports it (a STATE_TAMPERED record naming the queue and the check, a
finding and an event, once per message content)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence

from shared.domain.rotation import RotationRequest
from shared.domain.state import StateTampered
from shared.ports import MacKeyRing, RotationRequests

logger = logging.getLogger(__name__)


class SealedRotationRequests:
    """RotationRequests over ``inner`` that seals every request it sends."""

    def __init__(self, inner: RotationRequests, keys: MacKeyRing) -> None:
        self._inner = inner
        self._keys = keys

    def send(self, requests: Sequence[RotationRequest]) -> None:
        if not requests:
            return
        key_id, key = self._keys.current()
        self._inner.send([r.sealed(key_id, key) for r in requests])


def accepted(
    request: RotationRequest, keys: MacKeyRing, queue: str, alarm: Callable[[StateTampered], None]
) -> bool:
    """Whether a received request was sent by the service (its seal checks). One that was not is reported
    to ``alarm`` (by the queue's name and the request's content: the same forged message delivered five
    times is one report) and must be dropped."""
    problem = request.seal_problem(keys.get)
    if problem is None:
        return True
    body = request.to_json()
    fingerprint = hashlib.sha256(body.encode()).hexdigest()[:32]
    logger.error("rotation request for %s refused: %s", request.secret_name, problem)
    try:
        alarm(StateTampered("queue", queue, request.rotation_id or fingerprint, problem, "", fingerprint))
    except Exception:  # the refusal stands whatever the alarm does
        logger.exception("the alarm about a forged rotation request failed")
    return False
