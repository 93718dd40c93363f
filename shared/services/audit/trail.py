"""The audit trail as the services write it: ``AuditTrail`` stamps each record (time, vault, actor) and
appends it; a change is an intent record, the change, then its outcome record (fail closed)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypedDict, TypeVar, Unpack

from shared.domain.audit import (
    SYSTEM_ACTOR,
    Action,
    Actor,
    AuditError,
    AuditEvent,
    AuditRecord,
    Result,
)
from shared.domain.errors import (
    DependencyUnavailable,
    DomainError,
    OutcomeNotRecorded,
)
from shared.ports import AuditLog, Clock

logger = logging.getLogger(__name__)
T = TypeVar("T")

MAX_PAGE = 500


class AuditUnavailable(DependencyUnavailable):
    """The audit record could not be written: the operation it describes must not be reported done."""


class EventFields(TypedDict, total=False):
    """What a caller may say about an event besides its action (the trail adds vault and time)."""

    secret_name: str | None
    version: str | None
    result: Result
    actor: Actor
    correlation_id: str | None
    details: Mapping[str, Any] | None
    error: str | None
    duration_ms: int | None


@dataclass(frozen=True)
class Change:
    """A change as its records name it (intent, then outcome): what (``action``), by whom, under which
    correlation id, and what else the records say (``extra``)."""

    action: Action
    actor: Actor
    correlation_id: str | None
    extra: Mapping[str, Any] = field(default_factory=dict)


class AuditTrail:
    """What every service uses to record what it did. Fail closed: raises AuditUnavailable."""

    def __init__(
        self,
        log: AuditLog,
        clock: Clock,
        vault: str,
        observe: Callable[[Sequence[AuditEvent]], None] | None = None,
    ) -> None:
        self._log = log
        self._clock = clock
        self.vault = vault
        #: Hears of every batch of events once it is on record (the metrics: shared/adapters/telemetry.py).
        self._observe = observe

    def of(self, vault: str | None) -> AuditTrail:
        """The trail of ``vault``'s records (this one for None or its own vault)."""
        if vault is None or vault == self.vault:
            return self
        return AuditTrail(self._log, self._clock, vault, self._observe)

    def event(self, action: Action, **fields: Unpack[EventFields]) -> AuditEvent:
        """An event of this vault, timed now by the trail's clock. Raises AuditUnavailable for details the
        audit refuses (too large, a key that would hold a value): such a record is not written, and a
        fail-closed caller sees that one way, never an unexpected error."""
        try:
            return self._event(action, **fields)
        except AuditError as err:
            logger.error("%s record refused: %s", action.value, err)
            raise AuditUnavailable("audit_store", f"record not written ({err})") from err

    def _event(self, action: Action, **fields: Unpack[EventFields]) -> AuditEvent:
        return AuditEvent(
            action=action,
            vault=self.vault,
            time=self._clock.now(),
            result=fields.get("result", Result.SUCCESS),
            actor=fields.get("actor", SYSTEM_ACTOR),
            secret_name=fields.get("secret_name"),
            version=fields.get("version"),
            correlation_id=fields.get("correlation_id"),
            details=dict(fields.get("details") or {}),
            error=fields.get("error"),
            duration_ms=fields.get("duration_ms"),
        )

    def record(self, action: Action, **fields: Unpack[EventFields]) -> AuditRecord:
        """Record one event now. Raises AuditUnavailable."""
        return self.record_all([self.event(action, **fields)])[0]

    def attempt(self, action: Action, change: Callable[[], T], **fields: Unpack[EventFields]) -> T:
        """The ``intent`` record, then ``change``; when it raises a DomainError, a ``failure`` record (best
        effort: the error is what the caller sees) and the error. Returns what ``change`` returned.
        Raises AuditUnavailable when the intent cannot be recorded (then nothing was attempted)."""
        self.record_all([replace(self.event(action, **fields), result=Result.INTENT)])
        try:
            return change()
        except DomainError as err:
            failure = replace(self.event(action, **fields), result=Result.FAILURE, error=type(err).__name__)
            try:
                self.record_all([failure])
            except AuditUnavailable:
                logger.error("%s failure could not be audited", action.value)
            raise

    def outcome(
        self, action: Action, change: str, changed: Mapping[str, str], **fields: Unpack[EventFields]
    ) -> None:
        """The outcome record (``success`` unless ``result`` says otherwise) of a change that took effect
        (``change`` says what, ``changed`` its ids).
        Raises OutcomeNotRecorded when it cannot be written: never "nothing was changed", or the caller
        repeats the change."""
        try:
            self.record(action, **fields)
        except AuditUnavailable as err:
            raise OutcomeNotRecorded.after(change, err, **changed) from err

    def record_all(self, events: list[AuditEvent]) -> list[AuditRecord]:
        """Record several events (batched per chain). Raises AuditUnavailable."""
        try:
            written = self._log.append(events)
        except DependencyUnavailable as err:
            logger.error("audit write failed (%s); %d record(s) not written", err.detail, len(events))
            raise AuditUnavailable(err.dependency, err.detail) from err
        except (DomainError, ValueError, KeyError, TypeError) as err:
            # A refused MAC key, an unreadable chain head, a value the store rejects: whatever it is, the
            # record is not written, and fail-closed callers must see that one way.
            logger.error("audit write failed (%s); %d record(s) not written", type(err).__name__, len(events))
            raise AuditUnavailable("audit_store", f"record not written ({type(err).__name__})") from err
        if self._observe is not None:
            try:
                self._observe(events)
            except Exception:  # what is on record stays on record whatever the observer does
                logger.exception("the observer of %d audit record(s) failed", len(events))
        return written
