"""Easy Auth principal parsing."""

from __future__ import annotations

import base64
import json

import pytest

from shared.domain.identity import (
    OBJECT_ID_CLAIM,
    PrincipalError,
    Role,
    encode_principal,
    parse_principal,
)


def header(document: object) -> str:
    return base64.b64encode(json.dumps(document).encode()).decode()


def test_object_id_and_roles() -> None:
    principal = parse_principal(encode_principal("oid-1", ["Secrets.Audit.Read"], name="ana@fleet.example"))
    assert principal.id == "oid-1"
    assert principal.name == "ana@fleet.example"
    assert principal.has(Role.AUDIT_READ)
    assert not principal.has(Role.BREAK_GLASS)
    assert not principal.is_app


def test_custom_role_and_name_claim_types() -> None:
    document = {
        "auth_typ": "aad",
        "name_typ": "preferred_username",
        "role_typ": "http://schemas.microsoft.com/ws/2008/06/identity/claims/role",
        "claims": [
            {"typ": "preferred_username", "val": "dispatch-app"},
            {
                "typ": "http://schemas.microsoft.com/ws/2008/06/identity/claims/role",
                "val": "Secrets.Audit.Read",
            },
            {"typ": "idtyp", "val": "app"},
        ],
    }
    principal = parse_principal(header(document))
    assert principal.id == "dispatch-app"  # no object id: the name claim identifies
    assert principal.has(Role.AUDIT_READ)
    assert principal.is_app


def test_object_id_wins_over_name() -> None:
    document = {"claims": [{"typ": "name", "val": "x"}, {"typ": OBJECT_ID_CLAIM, "val": "oid-9"}]}
    assert parse_principal(header(document)).id == "oid-9"


@pytest.mark.parametrize(
    "raw",
    [
        "not base64!",
        base64.b64encode(b"not json").decode(),
        header(["a list"]),
        header({"claims": "nope"}),
        header({"claims": [{"typ": "roles", "val": "Secrets.Audit.Read"}]}),  # roles but no identity
        "A" * 20000,
    ],
)
def test_malformed_headers_are_refused(raw: str) -> None:
    with pytest.raises(PrincipalError):
        parse_principal(raw)
