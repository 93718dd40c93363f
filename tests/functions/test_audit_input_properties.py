"""Property: no input a caller controls makes an audit endpoint answer 5xx.

Query parameters, continuation tokens, review bodies and content types are drawn by hypothesis and sent
through the registered functions with real ``func.HttpRequest`` objects; a bad input must be a 4xx
problem+json, never a 500 (a crash) or a 503 (a dependency blamed for the caller's input).
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, timedelta, timezone
from typing import Any

import azure.functions as func
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.bootstrap import set_container
from shared.domain.audit import Action, AuditQuery, Result
from shared.domain.findings import StoredFinding
from shared.domain.identity import encode_principal
from shared.services.audit import InvalidCursor, decode_cursor, encode_cursor, query_fingerprint
from tests.functions.conftest import FakeContainer

PRINCIPAL = encode_principal("oid-prop", ["Secrets.Audit.Read", "Secrets.Audit.Review"], name="prop")
FINDING = "f" * 32
FAST = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI never fails on a new draw
    suppress_health_check=[HealthCheck.too_slow],
)


class Ctx:
    invocation_id = "inv-prop"
    function_name = "prop"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# -- what callers send -----------------------------------------------------------------------------

zones = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
moments = st.one_of(
    st.datetimes(timezones=zones | st.just(UTC)).map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat()),  # no zone
    st.dates().map(lambda d: d.isoformat()),
    st.sampled_from(["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "0001-01-01", "9999-12-31"]),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
#: The query the properties' cursors are made for (the functions' fake vault, no filter).
CURSOR_QUERY = AuditQuery(vault="fleet")
cursors = st.one_of(
    st.text(max_size=80),
    st.tuples(st.text(max_size=30), st.text(max_size=30)).map(lambda p: encode_cursor(CURSOR_QUERY, p)),
    st.tuples(
        st.sampled_from([2, 1, "2", 2.0]),
        st.sampled_from([query_fingerprint(CURSOR_QUERY), "0" * 16]),
        st.text(max_size=20),
        st.text(max_size=20),
    ).map(lambda body: _b64(json.dumps(list(body)).encode())),
    json_values.map(lambda v: _b64(json.dumps(v).encode())),
    st.binary(max_size=120).map(_b64),
    st.integers(min_value=1, max_value=3000).map(lambda n: _b64(b"[" * n)),
)
texts = st.text(max_size=60)
ints = st.integers().map(str) | texts
QUERY_VALUES: dict[str, st.SearchStrategy[str]] = {
    "secret_name": st.from_regex(r"[0-9A-Za-z-]{1,10}", fullmatch=True) | texts,
    "action": st.sampled_from([a.value for a in Action]) | texts,
    "actor": texts,
    "since": moments | texts,
    "until": moments | texts,
    "limit": ints,
    "continuation": cursors,
    "days": ints,
}


def params_for(names: list[str]) -> st.SearchStrategy[dict[str, str]]:
    known = st.fixed_dictionaries({}, optional={name: QUERY_VALUES[name] for name in names})
    unknown = st.dictionaries(texts.filter(lambda k: k not in names), texts, max_size=2)
    return st.one_of(known, st.tuples(known, unknown).map(lambda pair: {**pair[0], **pair[1]}))


# -- the property ----------------------------------------------------------------------------------


def _call(
    functions: dict[str, Any],
    name: str,
    *,
    method: str = "GET",
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    route_params: dict[str, str] | None = None,
) -> tuple[FakeContainer, func.HttpResponse]:
    # Function-scoped fixtures do not reset between hypothesis examples: a fresh container per example.
    fake = FakeContainer()
    fake.audit_trail.record(Action.ROTATED, secret_name="db-password", version="v1")
    fake.audit_trail.record(Action.ROTATION_FAILED, secret_name="api-key", result=Result.FAILURE)
    fake.findings.claim(StoredFinding(FINDING, "break_glass", fake.clock.now(), details={"actors": ["x"]}))
    set_container(fake)
    try:
        request = func.HttpRequest(
            method,
            "http://localhost/api/audit",
            headers={"x-ms-client-principal": PRINCIPAL, **(headers or {})},
            params=params or {},
            route_params=route_params or {},
            body=body,
        )
        return fake, functions[name].get_user_function()(request, Ctx())
    finally:
        set_container(None)


def _assert_not_5xx(response: func.HttpResponse) -> None:
    assert response.status_code < 500, response.get_body()
    if response.status_code >= 400:
        assert response.mimetype == "application/problem+json"
        json.loads(response.get_body())


@FAST
@given(params=params_for(["secret_name", "action", "actor", "since", "until", "limit", "continuation"]))
def test_query_parameters_never_give_5xx(functions: dict[str, Any], params: dict[str, str]) -> None:
    _, response = _call(functions, "audit_query", params=params)
    _assert_not_5xx(response)
    if response.status_code == 400:
        assert json.loads(response.get_body())["parameter"]


@FAST
@given(params=params_for(["secret_name", "days"]))
def test_summary_parameters_never_give_5xx(functions: dict[str, Any], params: dict[str, str]) -> None:
    _assert_not_5xx(_call(functions, "audit_summary", params=params)[1])


@FAST
@given(params=params_for(["secret_name"]))
def test_verify_parameters_never_give_5xx(functions: dict[str, Any], params: dict[str, str]) -> None:
    _assert_not_5xx(_call(functions, "audit_verify", params=params)[1])


@FAST
@given(
    content_type=st.none()
    | st.sampled_from(["application/json", "text/plain", "APPLICATION/JSON;charset=x"])
    | texts,
    body=st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()),
    params=st.dictionaries(texts, texts, max_size=2),
    finding=st.just(FINDING) | texts,
)
def test_review_requests_never_give_5xx(
    functions: dict[str, Any], content_type: str | None, body: bytes, params: dict[str, str], finding: str
) -> None:
    headers = {} if content_type is None else {"content-type": content_type}
    fake, response = _call(
        functions,
        "audit_review_finding",
        method="POST",
        params=params,
        headers=headers,
        body=body,
        route_params={"finding_id": finding},
    )
    _assert_not_5xx(response)
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if fake.findings.get(FINDING).status == "reviewed":
        assert media_type == "application/json"
        assert not params
        assert response.status_code == 200


@settings(max_examples=200, deadline=None, derandomize=True)
@given(token=cursors | st.text())
def test_the_cursor_decoder_raises_only_invalid_cursor(token: str) -> None:
    try:
        position = decode_cursor(token, CURSOR_QUERY)
    except InvalidCursor:
        return
    assert encode_cursor(CURSOR_QUERY, position) == token
    assert all(key and "/" not in key and "#" not in key and "?" not in key for key in position)
