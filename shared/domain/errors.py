"""Domain errors: only the ones callers branch on.

Adapters translate ``azure.core.exceptions`` into these (``raise ... from err``); HTTP entry points map
them to RFC 9457 problem+json responses.
"""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error the service raises on purpose."""


class NotFound(DomainError):
    """The named thing (secret, version, request) does not exist."""


class NoSuchSecret(NotFound):
    """The vault holds no secret of this name (no current one; for a recovery, no deleted one): not a
    missing version of a secret that exists. A request about it records nothing on a chain of that name
    (no chains at will); the HTTP layer records the attempt on the service chain."""

    def __init__(self, name: str, where: str = "key_vault") -> None:
        super().__init__(f"{where}: secret {name} not found")
        self.name = name


class Conflict(DomainError):
    """The operation collides with the current state (e.g. a concurrent change, a deleted name)."""


class SecretDisabled(Conflict):
    """The secret version exists but is disabled (Key Vault answers 403 ``SecretDisabled`` to a read):
    a state of the secret, not a missing permission of the caller."""


class Forbidden(DomainError):
    """The service's own identity was refused by a peer (HTTP maps it to 503, not to the caller)."""


class NotPermitted(DomainError):
    """The caller may not do this although it holds the role (e.g. review a finding about itself): 403."""


class InvalidTransition(DomainError):
    """A state machine was asked for a transition its current state does not allow."""


class DependencyUnavailable(DomainError):
    """A peer (Key Vault, storage, Event Grid) did not answer or answered with a server error.

    ``detail`` is short and safe to show: it never carries a secret value or a credential.
    """

    def __init__(self, dependency: str, detail: str) -> None:
        super().__init__(f"{dependency} unavailable: {detail}")
        self.dependency = dependency
        self.detail = detail


class OutcomeNotRecorded(DomainError):
    """A change took effect, but its success could not be recorded (the audit store, or the bookkeeping
    that must follow the change, failed after the write).

    Deliberately not a DependencyUnavailable: that one means "nothing was changed, try again", and an
    operator who believes it repeats a change that was made. ``change`` says what was changed (a sentence
    naming the secret and ids); ``changed`` carries the ids as fields (e.g. ``version``, ``rollback_id``);
    ``reason`` what failed. All safe to show: names and ids, never a value.
    """

    def __init__(self, change: str, reason: str, **changed: str) -> None:
        super().__init__(f"{change}, but it could not be recorded: {reason}")
        self.change = change
        self.reason = reason
        self.changed = dict(changed)

    @classmethod
    def after(cls, change: str, err: DomainError, **changed: str) -> OutcomeNotRecorded:
        """The change ``change`` was made and ``err`` stopped its record. ``reason`` is short and safe:
        the dependency that failed, or the error's class (a message could carry anything)."""
        if isinstance(err, DependencyUnavailable):
            reason = f"{err.dependency} unavailable"
        else:
            reason = type(err).__name__
        return cls(change, reason, **changed)
