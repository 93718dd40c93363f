"""Sealed rotation requests: the ``rotation-requests`` queue is storage too. Every request the service
sends is sealed with the audit key ring (``SealedRotationRequests``); ``receive`` decides whether a
received one may be acted on. A request a queue writer put there (no seal, another key, edited fields)
is never acted on: ``receive`` reports it (a STATE_TAMPERED record naming the queue and the check, a
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


def receive(
    body: bytes, queue: str, keys: MacKeyRing, alarm: Callable[[StateTampered], None]
) -> RotationRequest | None:
    """The request in a received message when the service sent it (it parses, and its seal checks), else
    None: a message a queue writer put there (malformed, no seal, another key, edited fields) is reported
    to ``alarm`` — by the queue's name and the message's content, so the same forged message delivered
    five times is one report — and must be dropped, never acted on."""
    text = body.decode("utf-8", errors="replace")
    try:
        request = RotationRequest.from_json(text)
    except ValueError:
        _report(alarm, queue, text, "malformed")
        return None
    problem = request.seal_problem(keys.get)
    if problem is None:
        return request
    _report(alarm, queue, text, problem, request.rotation_id)
    return None


def _report(
    alarm: Callable[[StateTampered], None], queue: str, text: str, problem: str, key: str | None = None
) -> None:
    fingerprint = hashlib.sha256(text.encode()).hexdigest()[:32]
    logger.error("a message on queue %s refused: %s", queue, problem)
    try:
        alarm(StateTampered("queue", queue, key or fingerprint, problem, "", fingerprint))
    except Exception:  # the refusal stands whatever the alarm does
        logger.exception("the alarm about a forged rotation request failed")
