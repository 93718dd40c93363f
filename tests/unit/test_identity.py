"""Easy Auth principal parsing."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


def test_review_is_its_own_role() -> None:
    assert Role.AUDIT_REVIEW.value == "Secrets.Audit.Review"
    reader = parse_principal(encode_principal("oid-1", ["Secrets.Audit.Read"]))
    assert not reader.has(Role.AUDIT_REVIEW)


@pytest.mark.parametrize(
    ("raw", "identity"),
    [
        (base64.b64encode(b"[" * 10_000).decode(), None),  # RecursionError escaped: a 500
        (base64.b64encode(b'{"claims":' + b"[" * 10_000).decode(), None),
        # A claim type that is not a string was used as a dict key (unhashable: a 500); it counts as absent.
        (header({"name_typ": ["x"], "claims": [{"typ": "name", "val": "ana"}]}), "ana"),
        (header({"role_typ": {"a": 1}, "auth_typ": 7, "claims": [{"typ": "name", "val": "ana"}]}), "ana"),
    ],
)
def test_odd_headers_raise_only_principal_error(raw: str, identity: str | None) -> None:
    if identity is None:
        with pytest.raises(PrincipalError):
            parse_principal(raw)
    else:
        principal = parse_principal(raw)
        assert (principal.id, principal.auth_type) == (identity, None)


KEYS = st.sampled_from(["typ", "val", "claims", "name", "roles", ""])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=6,
)
documents = st.fixed_dictionaries(
    {},
    optional={
        "auth_typ": json_values,
        "name_typ": json_values,
        "role_typ": json_values,
        "claims": st.lists(
            st.fixed_dictionaries({}, optional={"typ": json_values, "val": json_values}) | json_values,
            max_size=5,
        ),
    },
)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    st.one_of(
        st.text(max_size=200),
        documents.map(header),
        json_values.map(header),
        st.binary(max_size=200).map(lambda b: base64.b64encode(b).decode()),
    )
)
def test_any_header_parses_or_raises_principal_error(raw: str) -> None:
    try:
        principal = parse_principal(raw)
    except PrincipalError:
        return
    assert principal.id
    assert len(principal.id) <= 256
