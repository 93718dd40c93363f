"""Translate azure-core exceptions into domain errors, with details that are safe to show."""

from __future__ import annotations

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)

from shared.domain.errors import (
    Conflict,
    DependencyUnavailable,
    DomainError,
    Forbidden,
    NotFound,
    SecretDisabled,
)


def translate(dependency: str, err: Exception) -> DomainError:
    """The domain error for an SDK exception raised while talking to ``dependency``.

    Messages carry the status and error code only: SDK messages can echo request content.
    """
    if isinstance(err, ResourceNotFoundError):
        return NotFound(f"{dependency}: not found")
    if isinstance(err, ResourceExistsError | ResourceModifiedError):
        return Conflict(f"{dependency}: {_status(err)}")
    if isinstance(err, ClientAuthenticationError):
        status = getattr(err, "status_code", None)
        if status == 403:
            return Forbidden(f"{dependency}: forbidden (HTTP 403)")
        return DependencyUnavailable(dependency, "authentication failed")
    if isinstance(err, HttpResponseError):
        if err.status_code == 403 and _inner_code(err) == "SecretDisabled":
            return SecretDisabled(f"{dependency}: the secret version is disabled")
        if err.status_code == 403:
            return Forbidden(f"{dependency}: forbidden (HTTP 403{_code(err)})")
        return DependencyUnavailable(dependency, _status(err))
    if isinstance(err, ServiceRequestError):
        return DependencyUnavailable(dependency, "unreachable (connection failed)")
    if isinstance(err, ServiceResponseError):
        return DependencyUnavailable(dependency, "no response")
    return DependencyUnavailable(dependency, f"unexpected {type(err).__name__}")


def _inner_code(err: HttpResponseError) -> str | None:
    """Key Vault's ``error.innererror.code``: tells a disabled secret from a missing permission."""
    inner = getattr(err.error, "innererror", None) if err.error is not None else None
    code = inner.get("code") if isinstance(inner, dict) else None
    return code if isinstance(code, str) else None


def _code(err: HttpResponseError) -> str:
    code = getattr(err, "error_code", None) or (err.error.code if err.error else None)
    return f", {code}" if code else ""


def _status(err: HttpResponseError) -> str:
    return f"HTTP {err.status_code}{_code(err)}" if err.status_code else "no status"
