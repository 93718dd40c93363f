"""The one error type of the emulator: a Key Vault error response (status, code, message)."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """Raised by the store and the router; the server answers it as ``{"error": {"code", "message"}}``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        inner_code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.inner_code = inner_code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.inner_code:
            error["innererror"] = {"code": self.inner_code}
        return {"error": error}


def bad_parameter(message: str) -> ServiceError:
    return ServiceError(400, "BadParameter", message)


def secret_not_found(name: str, version: str | None = None) -> ServiceError:
    what = f"{name}/{version}" if version else name
    return ServiceError(
        404,
        "SecretNotFound",
        f"A secret with (name/id) {what} was not found in this key vault. If you recently deleted this "
        "secret you may be able to recover it using the correct recovery command. For help resolving this "
        "issue, please see https://go.microsoft.com/fwlink/?linkid=2125182",
    )


def deleted_secret_not_found(name: str) -> ServiceError:
    return ServiceError(404, "SecretNotFound", f"Deleted Secret not found: {name}")


def deleted_but_recoverable(name: str) -> ServiceError:
    return ServiceError(
        409,
        "Conflict",
        f"Secret {name} is currently in a deleted but recoverable state, and its name cannot be reused; "
        "in this state, the secret can only be recovered or purged.",
        inner_code="ObjectIsDeletedButRecoverable",
    )


def managed_by_certificate(name: str) -> ServiceError:
    # The status is the service's; the wording is the emulator's (no recorded service message was found).
    return ServiceError(
        409,
        "Conflict",
        f"Secret {name} backs a certificate and is managed by Key Vault: it cannot be set, updated or "
        "deleted through the secrets API; use the certificates API.",
    )
