"""Callers: the Easy Auth principal header, roles, and the decision whether to trust it.

App Service Authentication validates the caller's token and forwards ``X-MS-CLIENT-PRINCIPAL``: base64 of
JSON ``{"auth_typ", "name_typ", "role_typ", "claims": [{"typ", "val"}, ...]}``. Anyone can send that
header, so it is trusted only when the platform vouches for it (``WEBSITE_AUTH_ENABLED=True``), or locally
with ``ALLOW_UNVERIFIED_PRINCIPAL=true`` outside Azure. Otherwise its presence alone is refused.
"""

from __future__ import annotations

import base64
import binascii
import json
import unicodedata
import uuid
from dataclasses import dataclass

# Re-exported (the explicit form mypy --strict reads): callers import Role from here, as they always have.
from shared.domain.roles import Role as Role  # noqa: PLC0414

OBJECT_ID_CLAIM = "http://schemas.microsoft.com/identity/claims/objectidentifier"
SHORT_OBJECT_ID_CLAIM = "oid"
ID_TYPE_CLAIM = "idtyp"  # "app" for client-credential tokens of applications
MAX_HEADER_BYTES = 16 * 1024


@dataclass(frozen=True)
class RoleGrant:
    """What an app role is for, as the Entra app registration declares it (deploy/entra.py makes the
    manifest from ``ROLE_GRANTS``): its description, and whether applications (a dispatch app's managed
    identity) may hold it or only people."""

    description: str
    applications: bool


#: Every role, once: the app registration's roles are made from this (and tested against ``Role``).
ROLE_GRANTS: dict[Role, RoleGrant] = {
    Role.AUDIT_READ: RoleGrant("Read the audit trail, its summary and verify; secrets and plans.", True),
    Role.AUDIT_REVIEW: RoleGrant("Mark suspicious-activity findings reviewed.", False),
    Role.AUDIT_INCIDENT: RoleGrant("Open or acknowledge an incident over the audit trail's breaks.", False),
    Role.REVOCATION_REQUEST: RoleGrant("Request (and cancel) an emergency revocation of a secret.", True),
    Role.REVOCATION_APPROVE: RoleGrant("Approve, reject or review a revocation (four eyes).", False),
    Role.REVOCATION_EXECUTE: RoleGrant("Execute an approved revocation; delete and recover secrets.", True),
    Role.BREAK_GLASS: RoleGrant("Request a break-glass revocation, executed before its approvals.", False),
    Role.ROTATION_OPERATE: RoleGrant("Onboard secrets, set policies, rotate and roll back.", True),
}


class PrincipalError(ValueError):
    """The principal header is malformed or carries no identity."""


#: Unicode categories an identity never contains: control (a NUL, an escape), format (zero-width and
#: direction marks, invisible on every screen an approver looks at), surrogate, private use and
#: unassigned code points. An id carrying one is refused, never compared.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})


def refused_identity(raw: str) -> str | None:
    """Why ``raw`` cannot be anyone's id (an invisible, control or unassigned character; nothing but
    blanks), or None when it can."""
    for char in raw:
        if unicodedata.category(char) in _REFUSED_CATEGORIES:
            return f"the caller id contains the character U+{ord(char):04X}"
    if not raw.strip():
        return "the caller id is blank"
    return None


def canonical_identity(raw: str) -> str:
    """The one form every "not yourself" and "distinct people" rule compares: Unicode NFKC, case-folded,
    trimmed (a full-width or upper-case spelling is the same person), and a GUID in its canonical form
    (braces, no hyphens, upper case or ``urn:uuid:`` are the same object id). Ids this service accepts
    carry no invisible characters (``refused_identity``)."""
    text = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", raw).strip().casefold()).strip()
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return text


def same_identity(a: str, b: str) -> bool:
    """Whether two caller ids name the same identity (``canonical_identity``)."""
    return canonical_identity(a) == canonical_identity(b)


@dataclass(frozen=True)
class Principal:
    id: str
    name: str | None
    roles: frozenset[str]
    auth_type: str | None
    is_app: bool

    def has(self, role: Role) -> bool:
        return role.value in self.roles


def parse_principal(header: str) -> Principal:
    """Decode an X-MS-CLIENT-PRINCIPAL header. Raises PrincipalError when it is not a usable principal."""
    if len(header) > MAX_HEADER_BYTES:
        raise PrincipalError("principal header too large")
    try:
        padded = header.strip() + "=" * (-len(header.strip()) % 4)
        document = json.loads(base64.b64decode(padded, validate=True))
    except (binascii.Error, ValueError, RecursionError) as err:  # RecursionError: deeply nested JSON
        raise PrincipalError("principal header is not base64 JSON") from err
    if not isinstance(document, dict) or not isinstance(document.get("claims"), list):
        raise PrincipalError("principal header has no claims")
    name_typ = _text(document.get("name_typ")) or "name"
    role_typ = _text(document.get("role_typ")) or "roles"
    claims: list[tuple[str, str]] = []
    for claim in document["claims"]:
        if (
            isinstance(claim, dict)
            and isinstance(claim.get("typ"), str)
            and isinstance(claim.get("val"), str)
        ):
            claims.append((claim["typ"], claim["val"]))
    by_type: dict[str, str] = {}
    for typ, val in claims:
        by_type.setdefault(typ, val)
    object_id = by_type.get(OBJECT_ID_CLAIM) or by_type.get(SHORT_OBJECT_ID_CLAIM)
    name = by_type.get(name_typ) or by_type.get("name")
    identity = object_id or name
    if not identity:
        raise PrincipalError("principal header carries neither an object id nor a name")
    refused = refused_identity(identity)
    if refused is not None:
        raise PrincipalError(refused)
    roles = frozenset(val for typ, val in claims if typ in (role_typ, "roles"))
    auth_type = _text(document.get("auth_typ"))
    return Principal(
        id=identity[:256],
        name=name[:256] if name else None,
        roles=roles,
        auth_type=auth_type,
        is_app=by_type.get(ID_TYPE_CLAIM) == "app",
    )


def _text(value: object) -> str | None:
    """A string member of the header document; anything else (a list, a number) counts as absent."""
    return value if isinstance(value, str) else None


def encode_principal(object_id: str, roles: list[str], *, name: str | None = None, app: bool = False) -> str:
    """Build a header value in Easy Auth's format (for local development tools and tests)."""
    claims = [{"typ": OBJECT_ID_CLAIM, "val": object_id}]
    if name:
        claims.append({"typ": "name", "val": name})
    if app:
        claims.append({"typ": ID_TYPE_CLAIM, "val": "app"})
    claims += [{"typ": "roles", "val": role} for role in roles]
    document = {"auth_typ": "aad", "name_typ": "name", "role_typ": "roles", "claims": claims}
    return base64.b64encode(json.dumps(document).encode()).decode()
