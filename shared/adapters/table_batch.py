"""Entity-group transactions (the Table service's ``$batch``) without the SDK's multipart machinery.

azure-data-tables' ``TableClient.submit_transaction`` writes its request through azure-core's multipart
support: a thread pool per multipart level (two per call) to run policies over the parts, and the
standard library's ``email`` package to write the body and to parse the answer. A two-entity
transaction cost 10-12 ms of CPU that way against 3-4 ms for a one-entity write; the audit trail writes
two per rotation, so that was about a fifth of a rotation's CPU.

``submit_transaction`` here does the same request with plain bytes: the parts are built by the SDK's own
request builders (``TableBatchOperations``, what ``submit_transaction`` uses: the same URLs, headers and
JSON), the body is the multipart/mixed text the Table service documents, and it goes through the table
client's own pipeline (its credential, retries, hooks, timeouts). The answer is read the same way, and
errors are the SDK's: a failed operation is a ``TableTransactionError`` with the part's status code and
error code, a refused request the SDK's decoded error.

It reaches into azure-data-tables internals (the batch builder, the client's pipeline, its error decoder),
pinned in requirements.txt; ``tests/integration/test_table_batch.py`` compares the body with the SDK's
part by part and the outcomes with ``submit_transaction``'s against Azurite, so an upgrade that changes
them fails there.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any

from azure.core.exceptions import ServiceResponseError
from azure.core.rest import HttpRequest
from azure.data.tables import RequestTooLargeError, TableClient, TableTransactionError
from azure.data.tables._error import _decode_error, _validate_tablename_error
from azure.data.tables._table_batch import TableBatchOperations

#: The SDK's own (untyped) error decoding, so that errors are the ones ``submit_transaction`` raises.
_decode: Any = _decode_error
_validate_name: Any = _validate_tablename_error

_CRLF = b"\r\n"
_BOUNDARY = re.compile(rb'boundary="?([^";\s]+)"?', re.IGNORECASE)
_STATUS = re.compile(rb"^HTTP/1\.[01] (\d{3})(?: (.*))?$")


@dataclass(frozen=True)
class _Part:
    """One operation's answer inside the batch response."""

    status: int
    reason: str
    headers: Mapping[str, str]  # names lower-cased
    body: bytes


def submit_transaction(table: TableClient, operations: Iterable[Any]) -> list[dict[str, Any]]:
    """What ``table.submit_transaction(operations)`` does, in a fraction of its CPU: commit ``operations``
    (the SDK's ``(kind, entity[, options])`` tuples) as one entity-group transaction and return each
    operation's metadata (its ``etag``). Raises what the SDK raises: TypeError for a malformed operation,
    ValueError for entities of different partitions, TableTransactionError (RequestTooLargeError) when
    the service refused an operation, the decoded HttpResponseError when it refused the request, and
    azure-core's errors when it could not be reached."""
    builder = TableBatchOperations(
        config=table._client._config,
        endpoint=f"{table.scheme}://{table._primary_hostname}",
        table_name=table.table_name,
        is_cosmos_endpoint=table._cosmos_endpoint,
    )
    try:
        for operation in operations:
            builder.add_operation(operation)
    except TypeError as exc:
        raise TypeError(
            "The value of 'operations' must be an iterator of Tuples. Please check documentation for "
            "correct Tuple format."
        ) from exc
    if not builder.requests:
        return []
    batch, changeset = f"batch_{uuid.uuid4()}", f"changeset_{uuid.uuid4()}"
    request = HttpRequest(
        "POST",
        f"{table.scheme}://{table._primary_hostname}/$batch",
        headers={
            "x-ms-version": table.api_version,
            "DataServiceVersion": "3.0",
            "MaxDataServiceVersion": "3.0;NetFx",
            "Content-Type": f"multipart/mixed; boundary={batch}",
            "Accept": "application/json",
        },
        content=_body(builder.requests, batch, changeset),
    )
    response = table._client.send_request(request, stream=True)
    response.read()
    if response.status_code == 413:
        too_large = "The transaction request was too large"
        raise _decode(response, error_message=too_large, error_type=RequestTooLargeError)
    if response.status_code != 202:
        decoded = _decode(response)
        _validate_name(decoded, table.table_name)
        raise decoded
    parts = _parts(response.content, response.headers.get("Content-Type", ""))
    for part in parts:
        if not 200 <= part.status < 300:
            raise _part_error(table.table_name, part)
    if len(parts) != len(builder.requests):
        raise _unreadable(f"{len(parts)} part(s) for {len(builder.requests)} operation(s)")
    return [{"etag": part.headers["etag"]} if "etag" in part.headers else {} for part in parts]


def _body(requests: list[HttpRequest], batch: str, changeset: str) -> bytes:
    """The multipart/mixed body: one changeset holding one ``application/http`` part per operation, with
    the date headers the SDK's policy gives each part."""
    now = formatdate(usegmt=True)
    out = [f"--{batch}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n".encode()]
    for index, request in enumerate(requests):
        request.headers["x-ms-date"] = request.headers["Date"] = now
        content = request.content
        payload = content.encode() if isinstance(content, str) else bytes(content or b"")
        lines = [f"{request.method} {request.url} HTTP/1.1"]
        lines += [f"{name}: {value}" for name, value in request.headers.items()]
        out += [
            f"--{changeset}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
            f"Content-ID: {index}\r\n\r\n".encode(),
            "\r\n".join(lines).encode() + _CRLF * 2 + payload + _CRLF,
        ]
    out.append(f"--{changeset}--\r\n\r\n--{batch}--\r\n".encode())
    return b"".join(out)


def _parts(body: bytes, content_type: str) -> list[_Part]:
    """The ``application/http`` answers in a multipart/mixed body, nested changesets included, in order."""
    found = _BOUNDARY.search(content_type.encode())
    if found is None:
        raise _unreadable(f"not multipart: {content_type[:80]!r}")
    delimiter = b"--" + found.group(1)
    parts: list[_Part] = []
    for section in body.split(delimiter)[1:]:
        if section.startswith(b"--"):
            break  # the closing delimiter
        head, _, inner = section.lstrip(_CRLF).partition(_CRLF * 2)
        headers = _headers(head)
        kind = headers.get("content-type", "")
        if kind.lower().startswith("multipart/mixed"):
            parts += _parts(inner, kind)
        elif kind.lower().startswith("application/http"):
            parts.append(_http_message(inner))
    return parts


def _http_message(message: bytes) -> _Part:
    head, _, body = message.partition(_CRLF * 2)
    status_line, _, header_lines = head.partition(_CRLF)
    matched = _STATUS.match(status_line.strip())
    if matched is None:
        raise _unreadable(f"a part without a status line: {status_line[:80]!r}")
    reason = (matched.group(2) or b"").decode("latin-1")
    return _Part(int(matched.group(1)), reason, _headers(header_lines), body.rstrip(_CRLF))


def _unreadable(detail: str) -> ServiceResponseError:
    """An answer that does not say what happened: the transaction may have committed or not. A read
    error, as when the connection drops before the answer (azure-core's ServiceResponseError), so callers
    check what landed instead of taking it for a refusal."""
    return ServiceResponseError(f"unreadable $batch answer: {detail}")


def _headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.decode("latin-1").split("\r\n"):
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return headers


def _part_error(table_name: str, part: _Part) -> TableTransactionError:
    """The SDK's error for a refused operation: its message starts with the operation's index."""
    code = part.headers.get("x-ms-error-code")
    message = part.reason
    try:
        error = json.loads(part.body.decode("utf-8")).get("odata.error", {})
        code = error.get("code", code)
        message = error.get("message", {}).get("value", message)
    except (ValueError, AttributeError, UnicodeDecodeError):
        pass
    kind = RequestTooLargeError if part.status == 413 else TableTransactionError
    text = f"{message}\nErrorCode:{code}" if code else str(message)
    err = kind(message=text)
    fields: Any = err  # error_code: the attribute the SDK's decoder sets too
    fields.status_code, fields.reason, fields.error_code = part.status, part.reason, code
    _validate_name(err, table_name)
    return err
