"""Entity-group transactions (the Table service's ``$batch``), and the one module of shared/ that uses
azure-data-tables internals.

azure-data-tables' ``TableClient.submit_transaction`` writes its request through azure-core's multipart
support: a thread pool per multipart level (two per call) to run policies over the parts, and the
standard library's ``email`` package to write the body and to parse the answer. A two-entity
transaction cost 10-12 ms of CPU that way against 3-4 ms for a one-entity write; the audit trail writes
two per rotation, so that was about a fifth of a rotation's CPU.

The lean path here does the same request with plain bytes: the parts are built by the SDK's own request
builders (``TableBatchOperations``, what ``submit_transaction`` uses: the same URLs, headers and JSON),
the body is the multipart/mixed text the Table service documents, and it goes through the table client's
own pipeline (its credential, retries, hooks, timeouts). The answer is read the same way, and errors are
the SDK's: a failed operation is a ``TableTransactionError`` with the part's status code and error code,
a refused request the SDK's decoded error.

Private internals, all used here and nowhere else: ``azure.data.tables._table_batch.TableBatchOperations``,
``azure.data.tables._error._decode_error`` and ``_validate_tablename_error``, and the table client's
``_client`` (``_config``, ``send_request``), ``_primary_hostname`` and ``_cosmos_endpoint``. The lean
path is taken only when the installed azure-data-tables is a version this module was written for
(``WRITTEN_FOR``: what requirements.txt pins) and those internals exist; otherwise ``TableTransactions``
logs one warning and commits with the SDK's public ``TableClient.submit_transaction``.

What differs on that fallback, for callers: nothing they rely on. The public path answers per operation
too: both send the same request and return one ``{"etag": ...}`` per operation (``{}`` when the service
gave none: a delete), raise the same errors for a malformed operation and for a refused operation or
request, and send nothing for no operations. The fallback costs the SDK's CPU (7-8 ms for a two-entity
transaction against 3-4 ms on the lean path, measured against Azurite), and it trusts azure-core to read
the answer: it checks that there is one answer per operation (else the lean path's "unreadable answer"
ServiceResponseError: the transaction may have committed, so callers check what landed), but an answer
azure-core cannot split into parts (a 202 that is not multipart/mixed, which the service does not send)
is azure-core's ValueError there, not that read error: callers then fail closed without checking.

``tests/integration/test_table_batch.py`` compares both paths with the SDK against Azurite (the body part
by part, the answers, every refusal) and expects the installed SDK to take the lean path: raising the
pin fails there until the lean path is checked against the new version and ``WRITTEN_FOR`` names it.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import re
import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any

from azure.core.exceptions import ServiceResponseError
from azure.core.rest import HttpRequest
from azure.data.tables import RequestTooLargeError, TableClient, TableTransactionError

logger = logging.getLogger(__name__)

#: The azure-data-tables versions whose internals the lean path was written for and tested against.
WRITTEN_FOR = frozenset({"12.7.0"})

_CRLF = b"\r\n"
_BOUNDARY = re.compile(rb'boundary="?([^";\s]+)"?', re.IGNORECASE)
_STATUS = re.compile(rb"^HTTP/1\.[01] (\d{3})(?: (.*))?$")


@dataclass(frozen=True)
class _Internals:
    """The private parts of azure-data-tables the lean path uses (untyped in the SDK)."""

    batch_operations: Any  # _table_batch.TableBatchOperations: the per-operation request builder
    decode: Any  # _error._decode_error: the SDK's error for a refused request
    validate_name: Any  # _error._validate_tablename_error: its better error for a bad table name


def load_internals(version: str | None) -> tuple[_Internals | None, str]:
    """The internals, when ``version`` (the installed azure-data-tables', None: unknown) is one this
    module was written for and they import; else None and why not."""
    if version not in WRITTEN_FOR:
        written_for = ", ".join(sorted(WRITTEN_FOR))
        return None, f"azure-data-tables {version or '(version unknown)'} is not {written_for}"
    try:
        from azure.data.tables._error import _decode_error, _validate_tablename_error
        from azure.data.tables._table_batch import TableBatchOperations
    except ImportError as err:
        return None, f"azure-data-tables {version} lacks an internal module ({err})"
    if not callable(getattr(TableBatchOperations, "add_operation", None)):
        return None, f"azure-data-tables {version} lacks TableBatchOperations.add_operation"
    return _Internals(TableBatchOperations, _decode_error, _validate_tablename_error), ""


def _installed_version() -> str | None:
    try:
        return importlib.metadata.version("azure-data-tables")
    except importlib.metadata.PackageNotFoundError:
        return None


def _missing_on(table: TableClient) -> str | None:
    """The first private attribute of the table client the lean path needs that it lacks, or None."""
    for name in ("_primary_hostname", "_cosmos_endpoint", "_client"):
        if not hasattr(table, name):
            return name
    client = table._client
    if not hasattr(client, "_config"):
        return "_client._config"
    if not callable(getattr(client, "send_request", None)):
        return "_client.send_request"
    return None


class TableTransactions:
    """Commits entity-group transactions: on the lean path when it holds for the installed SDK and the
    table client, else with the SDK's public ``submit_transaction`` (one warning per instance). The
    choice of path is made on first use, never at import or construction."""

    def __init__(self, installed_version: str | None = None) -> None:
        """``installed_version``: judge this azure-data-tables version instead of the installed one's
        (tests pretend an upgrade to take the fallback)."""
        self._version = installed_version
        self._lock = threading.Lock()
        self._decided = False
        self._internals: _Internals | None = None
        self._warned = False

    @property
    def lean(self) -> bool:
        """Whether the installed SDK allows the lean path (a table client may still lack its internals)."""
        return self._decide() is not None

    def submit(self, table: TableClient, operations: Iterable[Any]) -> list[dict[str, Any]]:
        """What ``table.submit_transaction(operations)`` does: commit ``operations`` (the SDK's ``(kind,
        entity[, options])`` tuples) as one entity-group transaction and return each operation's metadata
        (its ``etag``). Raises what the SDK raises: TypeError for a malformed operation, ValueError for
        entities of different partitions, TableTransactionError (RequestTooLargeError) when the service
        refused an operation, the decoded HttpResponseError when it refused the request, and
        azure-core's errors when it could not be reached or its answer could not be read."""
        internals = self._decide()
        if internals is not None:
            missing = _missing_on(table)
            if missing is None:
                return _submit_lean(internals, table, operations)
            self._warn(f"the table client lacks {missing}")
        return _submit_public(table, operations)

    def _decide(self) -> _Internals | None:
        if self._decided:  # set once, after the internals: no lock on every transaction
            return self._internals
        with self._lock:
            if not self._decided:
                version = self._version if self._version is not None else _installed_version()
                self._internals, why_not = load_internals(version)
                self._decided = True
                if self._internals is None:
                    self._warn_locked(why_not)
            return self._internals

    def _warn(self, why: str) -> None:
        with self._lock:
            self._warn_locked(why)

    def _warn_locked(self, why: str) -> None:
        if not self._warned:
            self._warned = True
            logger.warning(
                "table transactions use the SDK's public submit_transaction (more CPU, same outcomes): %s",
                why,
            )


_DEFAULT = TableTransactions()


def default_transactions() -> TableTransactions:
    """The process's transactions: the installed SDK judged once, one warning at most."""
    return _DEFAULT


def submit_transaction(table: TableClient, operations: Iterable[Any]) -> list[dict[str, Any]]:
    """``default_transactions().submit(table, operations)``."""
    return _DEFAULT.submit(table, operations)


def _submit_public(table: TableClient, operations: Iterable[Any]) -> list[dict[str, Any]]:
    """The SDK's public path, held to the lean path's promises: no request for no operations, and one
    answer per operation or a read error."""
    operations = list(operations)
    if not operations:
        return []
    answers = table.submit_transaction(operations)
    if len(answers) != len(operations):
        raise _unreadable(f"{len(answers)} answer(s) for {len(operations)} operation(s)")
    return [dict(answer) for answer in answers]


def _submit_lean(
    internals: _Internals, table: TableClient, operations: Iterable[Any]
) -> list[dict[str, Any]]:
    """The same request through the table client's pipeline, its body and answer handled as bytes."""
    builder = internals.batch_operations(
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
        raise internals.decode(response, error_message=too_large, error_type=RequestTooLargeError)
    if response.status_code != 202:
        decoded = internals.decode(response)
        internals.validate_name(decoded, table.table_name)
        raise decoded
    parts = _parts(response.content, response.headers.get("Content-Type", ""))
    for part in parts:
        if not 200 <= part.status < 300:
            raise _part_error(internals, table.table_name, part)
    if len(parts) != len(builder.requests):
        raise _unreadable(f"{len(parts)} part(s) for {len(builder.requests)} operation(s)")
    return [{"etag": part.headers["etag"]} if "etag" in part.headers else {} for part in parts]


@dataclass(frozen=True)
class _Part:
    """One operation's answer inside the batch response."""

    status: int
    reason: str
    headers: Mapping[str, str]  # names lower-cased
    body: bytes


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


def _part_error(internals: _Internals, table_name: str, part: _Part) -> TableTransactionError:
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
    internals.validate_name(err, table_name)
    return err
