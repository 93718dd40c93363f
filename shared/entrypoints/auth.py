"""Caller identity for HTTP functions: who is calling, may they, and the ACCESS_DENIED trail.

X-MS-CLIENT-PRINCIPAL is trusted only when the platform vouches for it (App Service Authentication on:
WEBSITE_AUTH_ENABLED=True), or locally with ALLOW_UNVERIFIED_PRINCIPAL=true outside Azure. A request
carrying it without that, or lacking it on a protected endpoint, is refused with 401 — a forged header never
works. A principal without the endpoint's role gets 403. Every 401/403 becomes an ACCESS_DENIED record; when
the refused request carried an unverified or malformed header, the record's details keep the identity it
claimed under ``claimed`` (``verified: false``), while the record's actor stays ``anonymous``.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

import azure.functions as func

from shared.bootstrap import Container
from shared.domain.audit import Action, Actor, ActorType, Result
from shared.domain.errors import DependencyUnavailable
from shared.domain.identity import Principal, PrincipalError, Role, parse_principal
from shared.domain.secrets import VAULT_PATTERN

logger = logging.getLogger(__name__)

PRINCIPAL_HEADER = "x-ms-client-principal"
ANONYMOUS = "anonymous"
#: Bound of each claimed (unverified) id or name kept in a refusal's record.
MAX_CLAIMED_CHARS = 128


class AccessDenied(Exception):
    """The request is refused: ``status`` is 401 or 403."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail


def client_ip(req: func.HttpRequest) -> str | None:
    """The address the platform's front end saw: the last X-Forwarded-For hop (it appends; anything before
    it came from the client). Port stripped; None when absent or not an IP address."""
    forwarded = req.headers.get("x-forwarded-for") or ""
    hop = forwarded.split(",")[-1].strip()
    if not hop:
        return None
    if hop.startswith("["):  # [v6]:port
        hop = hop[1 : hop.find("]")] if "]" in hop else hop
    elif hop.count(":") == 1:  # v4:port
        hop = hop.split(":")[0]
    try:
        return str(ipaddress.ip_address(hop))
    except ValueError:
        return None


def actor_of(req: func.HttpRequest, principal: Principal | None) -> Actor:
    user_agent = (req.headers.get("user-agent") or "")[:256] or None
    if principal is None:
        return Actor(id=ANONYMOUS, type=ActorType.USER, ip=client_ip(req), user_agent=user_agent)
    kind = ActorType.APP if principal.is_app else ActorType.USER
    return Actor(id=principal.id, type=kind, ip=client_ip(req), user_agent=user_agent)


def authorize(
    req: func.HttpRequest,
    role: Role | tuple[Role, ...],
    container: Container,
    *,
    correlation_id: str | None,
    secret_name: str | None = None,
) -> Principal:
    """The verified caller holding ``role`` (a tuple: any one of them). Raises AccessDenied (after
    auditing it) otherwise, and ConfigurationError when the settings make HTTP unsafe."""
    roles = (role,) if isinstance(role, Role) else role
    required = " or ".join(r.value for r in roles)
    settings = container.settings
    settings.check_http_safety()
    header = req.headers.get(PRINCIPAL_HEADER)
    trusted = settings.platform_auth_enabled or (
        settings.allow_unverified_principal and not settings.running_in_azure
    )
    principal: Principal | None = None
    denial: AccessDenied | None = None
    claimed: dict[str, Any] | None = None
    if not header:
        denial = AccessDenied(401, "Unauthorized", "authentication required")
    else:
        parsed: Principal | None = None
        try:
            parsed, invalid = parse_principal(header), ""
        except PrincipalError as err:
            invalid = str(err)
        if not trusted or parsed is None:
            # Kept for the record, never acted on: the actor stays anonymous, so a forged header cannot
            # put someone else's name on a refusal's actor, yet the claim it made is not lost.
            claimed = _claimed(parsed)
        if not trusted:
            denial = AccessDenied(401, "Unauthorized", "the caller identity was not verified by the platform")
        elif parsed is None:
            denial = AccessDenied(401, "Unauthorized", f"invalid caller identity: {invalid}")
        else:
            principal = parsed
            if not any(principal.has(r) for r in roles):
                denial = AccessDenied(403, "Forbidden", f"the caller lacks the role {required}")
    if denial is None:
        assert principal is not None
        return principal
    _audit_denial(req, container, principal, required, denial, correlation_id, secret_name, claimed)
    raise denial


def _claimed(parsed: Principal | None) -> dict[str, Any]:
    """The identity an unverified or malformed principal header claimed (nothing when unreadable)."""
    return {
        "id": parsed.id[:MAX_CLAIMED_CHARS] if parsed else None,
        "name": parsed.name[:MAX_CLAIMED_CHARS] if parsed and parsed.name else None,
        "verified": False,
    }


def _audit_denial(  # noqa: PLR0913 - the refusal's record names all it knows of the caller
    req: func.HttpRequest,
    container: Container,
    principal: Principal | None,
    required: str,
    denial: AccessDenied,
    correlation_id: str | None,
    secret_name: str | None,
    claimed: dict[str, Any] | None,
) -> None:
    actor = actor_of(req, principal)
    details: dict[str, Any] = {
        "status": denial.status,
        "reason": denial.detail,
        "required_role": required,
        "method": req.method,
        "route": route_of(req),
        "secret_name": secret_name,
    }
    vault = str(req.params.get("vault") or "")
    if VAULT_PATTERN.fullmatch(vault):  # the vault of the secret named, when the call named a well-formed one
        details["vault"] = vault
    if claimed is not None:
        details["claimed"] = claimed
    try:
        # The service chain, not the named secret's: a caller must not be able to create chains (and
        # grow every digest) just by naming secrets in refused requests.
        container.audit_trail.record(
            Action.ACCESS_DENIED,
            result=Result.DENIED,
            actor=actor,
            correlation_id=correlation_id,
            details=details,
        )
    except DependencyUnavailable as err:
        # The refusal stands either way; losing its record is logged loudly.
        logger.error("ACCESS_DENIED for %s could not be audited: %s", actor.id, err.detail)
    except Exception:
        logger.exception("ACCESS_DENIED for %s could not be audited", actor.id)


def route_of(req: func.HttpRequest) -> str:
    """The path a request was sent to, below ``/api/`` (no query string), as records name it."""
    return str(req.url).split("?", 1)[0].split("/api/", 1)[-1][:200]
