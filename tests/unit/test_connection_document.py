"""PostgreSQL connection documents and the alternating roles' names (shared.domain.targets)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.domain.targets import (
    MAX_ROLE_BYTES,
    ConnectionDocument,
    alternate_role,
    base_role,
)

PASSWORD = "s3cr3t-Pa55word"
FULL = {
    "host": "orders.postgres.database.azure.com",
    "port": 5432,
    "dbname": "orders",
    "username": "orders_app",
    "password": PASSWORD,
    "sslmode": "require",
}


def text(**change: Any) -> str:
    raw = {**FULL, **change}
    return json.dumps({k: v for k, v in raw.items() if v is not ...})


def test_a_full_document_is_parsed() -> None:
    doc = ConnectionDocument.parse(text())
    assert (doc.host, doc.port, doc.dbname, doc.username, doc.password, doc.sslmode) == (
        "orders.postgres.database.azure.com", 5432, "orders", "orders_app", PASSWORD, "require"
    )  # fmt: skip
    assert doc.extra == {}


def test_port_and_sslmode_have_libpq_defaults_and_a_port_may_be_a_string() -> None:
    doc = ConnectionDocument.parse(text(port=..., sslmode=...))
    assert (doc.port, doc.sslmode) == (5432, "prefer")
    assert ConnectionDocument.parse(text(port="6432")).port == 6432


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ("not json", "JSON"),
        ('["host"]', "JSON object"),
        (text(host=...), "host"),
        (text(host=""), "host"),
        (text(host="db.example.com,evil.example.com"), "host"),  # libpq would try several hosts
        (text(host="db example"), "host"),
        (text(port=0), "port"),
        (text(port=65536), "port"),
        (text(port=True), "port"),
        (text(port=5432.5), "port"),
        (text(port="54a"), "port"),
        (text(dbname=...), "dbname"),
        (text(dbname="d" * 64), "dbname"),
        (text(username=...), "username"),
        (text(username="   "), "username"),
        (text(username="u" * (MAX_ROLE_BYTES + 1)), "username"),
        (text(username="é" * 32), "username"),  # 64 bytes: PostgreSQL would truncate it
        (text(username="a\x00b"), "username"),
        (text(password=...), "password"),
        (text(password=""), "password"),
        (text(password=12345), "password"),
        (text(password="a\x00b"), "password"),
        (text(sslmode="sometimes"), "sslmode"),
    ],
)
def test_a_wrong_document_names_the_field_never_a_value(value: str, field: str) -> None:
    with pytest.raises(ValueError, match=field) as err:
        ConnectionDocument.parse(value)
    assert PASSWORD not in str(err.value)
    assert "orders_app" not in str(err.value)


def test_unknown_fields_are_kept_when_a_new_document_is_written() -> None:
    doc = ConnectionDocument.parse(text(options="-c search_path=orders", application="dispatch"))
    assert doc.extra == {"options": "-c search_path=orders", "application": "dispatch"}
    rotated = doc.with_login("orders_app_clone", "n3w-password")
    written = json.loads(rotated.to_json())
    assert written == {
        **FULL,
        "username": "orders_app_clone",
        "password": "n3w-password",
        "options": "-c search_path=orders",
        "application": "dispatch",
    }
    assert ConnectionDocument.parse(rotated.to_json()) == rotated
    assert doc.password == PASSWORD  # with_login made a new document
    rotated.extra["application"] = "changed"  # type: ignore[index]
    assert doc.extra["application"] == "dispatch"  # and its extra is a copy


def test_to_json_round_trips_and_known_fields_win() -> None:
    doc = ConnectionDocument.parse(text())
    assert ConnectionDocument.parse(doc.to_json()) == doc
    assert json.loads(doc.to_json()) == FULL


def test_the_password_stays_out_of_repr() -> None:
    doc = ConnectionDocument.parse(text(note="kept"))
    assert PASSWORD not in repr(doc)
    assert "orders_app" in repr(doc)


def test_same_server_compares_host_case_insensitively_and_port() -> None:
    doc = ConnectionDocument.parse(text())
    assert doc.same_server(ConnectionDocument.parse(text(host="ORDERS.postgres.database.azure.com")))
    assert doc.same_server(doc.with_login("someone_else", "other"))
    assert not doc.same_server(ConnectionDocument.parse(text(port=6432)))
    assert not doc.same_server(ConnectionDocument.parse(text(host="reports.postgres.database.azure.com")))


def test_alternating_roles_take_turns() -> None:
    assert alternate_role("orders_app") == "orders_app_clone"
    assert alternate_role("orders_app_clone") == "orders_app"
    assert alternate_role(alternate_role("orders_app")) == "orders_app"
    assert base_role("orders_app") == "orders_app"
    assert base_role("orders_app_clone") == "orders_app"
    assert base_role("orders_app_clone_clone") == "orders_app_clone"


def test_a_clone_name_must_fit_postgresql_identifiers() -> None:
    longest = "r" * (MAX_ROLE_BYTES - len("_clone"))
    assert alternate_role(longest) == longest + "_clone"
    assert len(alternate_role(longest).encode()) == MAX_ROLE_BYTES
    with pytest.raises(ValueError, match="clone"):
        alternate_role(longest + "r")
    with pytest.raises(ValueError, match="clone"):
        alternate_role("é" * 29)  # 58 bytes, 29 characters: bytes are what PostgreSQL counts
    assert alternate_role(longest + "_clone") == longest  # a clone's alternate is always shorter


def test_review_findings_on_documents() -> None:
    """A non-ASCII digit is no port; a clone needs a base name; the JSON error (which holds the whole text)
    is not kept on the raised error; a database name counts bytes."""
    from shared.domain.targets import ConnectionDocument as Doc
    from shared.domain.targets import alternate_role as alternate

    good = {"host": "db", "port": 5432, "dbname": "fleet", "username": "app", "password": "pw"}
    with pytest.raises(ValueError, match="field port"):
        Doc.parse(json.dumps({**good, "port": "²"}))
    with pytest.raises(ValueError, match="base name"):
        alternate("_clone")
    with pytest.raises(ValueError) as err:
        Doc.parse('{"password": "hunter2-secret", ')
    assert err.value.__context__ is None and err.value.__cause__ is None
    with pytest.raises(ValueError, match="field dbname"):
        Doc.parse(json.dumps({**good, "dbname": "é" * 40}))


def test_a_malformed_signature_or_timestamp_is_refused_not_raised() -> None:
    from shared.domain.targets import sign, verify_signature

    body, key = b'{"step":"set"}', b"k" * 32
    good = sign(key, 1000, body)
    assert verify_signature(key, "1000", body, good, now=1000.0)
    assert not verify_signature(key, "²", body, good, now=1000.0)
    assert not verify_signature(key, "1000", body, "sha256=é", now=1000.0)
    assert not verify_signature(key, "1000", body, good, now=1000.0 + 301)
