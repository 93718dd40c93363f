"""Reading a ``$batch`` answer (shared/adapters/tables/batch.py): the shapes the Table service documents,
beyond the ones Azurite produced in tests/integration/test_table_batch.py."""

from __future__ import annotations

import pytest
from azure.core.exceptions import HttpResponseError, ServiceResponseError
from azure.data.tables import RequestTooLargeError, TableTransactionError

from shared.adapters.tables.batch import WRITTEN_FOR, _Internals, _part_error, _parts, load_internals


def _internals() -> _Internals:
    """The SDK internals the lean path reads answers with (the installed SDK is the one it was written
    for: requirements.txt pins it)."""
    internals, why_not = load_internals(max(WRITTEN_FOR))
    assert internals is not None, why_not
    return internals


def _answer(*parts: str, changeset: bool = True) -> tuple[bytes, str]:
    head = "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
    inner = "".join(f"--changesetresponse_1\r\n{head}{p}\r\n" for p in parts)
    if changeset:
        body = (
            "--batchresponse_1\r\nContent-Type: multipart/mixed; boundary=changesetresponse_1\r\n\r\n"
            f"{inner}--changesetresponse_1--\r\n--batchresponse_1--\r\n"
        )
    else:
        body = (
            "".join(f"--batchresponse_1\r\nContent-Type: application/http\r\n\r\n{p}\r\n" for p in parts)
            + "--batchresponse_1--\r\n"
        )
    return body.encode(), 'multipart/mixed; boundary="batchresponse_1"'


OK = "HTTP/1.1 204 No Content\r\nETag: W/\"datetime'1'\"\r\nDataServiceVersion: 3.0;\r\n\r\n"
CREATED = 'HTTP/1.1 201 Created\r\nETag: W/"datetime\'2\'"\r\n\r\n{"PartitionKey":"p"}'
REFUSED = (
    "HTTP/1.1 412 Precondition Failed\r\nContent-Type: application/json\r\n\r\n"
    '{"odata.error":{"code":"UpdateConditionNotSatisfied","message":{"lang":"en-US",'
    '"value":"0:The update condition specified in the request was not satisfied."}}}'
)


def test_each_operation_s_answer_in_order_with_its_etag() -> None:
    parts = _parts(*_answer(OK, CREATED))
    assert [(p.status, p.headers.get("etag")) for p in parts] == [
        (204, "W/\"datetime'1'\""),
        (201, "W/\"datetime'2'\""),
    ]
    assert parts[1].body == b'{"PartitionKey":"p"}'


def test_an_answer_outside_a_changeset_is_read_too() -> None:
    [part] = _parts(*_answer(REFUSED, changeset=False))
    assert part.status == 412


def test_a_refused_operation_is_the_sdk_s_transaction_error() -> None:
    [part] = _parts(*_answer(REFUSED))
    err = _part_error(_internals(), "t", part)
    assert isinstance(err, TableTransactionError)
    assert (err.status_code, err.error_code, err.index) == (412, "UpdateConditionNotSatisfied", 0)


def test_a_too_large_part_is_request_too_large() -> None:
    [part] = _parts(*_answer("HTTP/1.1 413 Request Entity Too Large\r\n\r\n"))
    err = _part_error(_internals(), "t", part)
    assert isinstance(err, RequestTooLargeError) and err.status_code == 413


@pytest.mark.parametrize(
    "answer",
    [(b"{}", "application/json"), _answer("SPDY/3 200 OK\r\n\r\n")],
    ids=["not multipart", "no status line"],
)
def test_an_unreadable_answer_is_a_read_error_not_a_refusal(answer: tuple[bytes, str]) -> None:
    """It may have committed: a read error makes the audit log check what landed (``_landed``) instead of
    reporting the records as not written."""
    with pytest.raises(ServiceResponseError) as caught:
        _parts(*answer)
    assert not isinstance(caught.value, HttpResponseError)


@pytest.mark.parametrize("version", [None, "12.6.0", "12.7.1", "13.0.0"])
def test_an_sdk_it_was_not_written_for_has_no_internals_to_use(version: str | None) -> None:
    internals, why_not = load_internals(version)
    assert internals is None
    assert "12.7.0" in why_not
