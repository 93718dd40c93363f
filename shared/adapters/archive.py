"""The audit archive on Blob Storage: one append blob per chain, ``<vault>/<secret>.jsonl``, in a container
with a time-based retention policy (infra/modules/storage.bicep): blocks can be appended, nothing written
can be changed or deleted.

Each line is one record, ``{"fields": {...}, "position": n}`` (compact JSON, sorted keys, ASCII), with its
stored fields as the table held them, MACs included, so verify checks the export like the table. Appends
are whole lines, in blocks of at most 4 MiB, each guarded by the append position the writer read (the
blob's size): two writers cannot interleave, the loser gets Conflict. A retried block that had landed
fails its condition too, so a block is never written twice.

The container is created by the deployment, never here: a container made on the fly would hold no
retention policy, and a missing one must show.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.storage.blob import BlobClient, ContainerClient, ContentSettings

from shared.adapters.azure_errors import translate
from shared.domain.audit import ChainContents, StoredRecord, format_time
from shared.domain.errors import Conflict, DependencyUnavailable

DEPENDENCY = "storage"
#: A record chain: ``<vault>:<secret>``, the vault's service chain ``<vault>:_service``, or its digests
#: (``<vault>:_digests``: the retention export keeps a copy of the digest chain beside the records).
_CHAIN = re.compile(r"([0-9a-z-]{1,127}):([0-9a-z-]{1,127}|_service|_digests)")
#: Bytes per Append Block (the service's limit before API version 2022-11-02; later ones allow 100 MiB).
MAX_BLOCK = 4 * 1024 * 1024
#: Bytes of the blob's end read to find the newest archived position (doubled while it holds no record).
TAIL_WINDOW = 256 * 1024
#: Bytes per ranged read of ``read_chain``.
_READ_CHUNK = 4 * 1024 * 1024
#: The blob service API version the archive's client should pin (bootstrap): azure-storage-blob 12.31
#: defaults to one newer than Azurite 3.35 accepts, as with the queues (storage.QUEUE_API_VERSION).
BLOB_API_VERSION = "2025-11-05"
#: Conditions that fail when another writer appended (or our own retried block had landed). A tuple: the
#: SDK gives a str enum, which equals its value but does not hash like it.
_LOST_RACE = ("AppendPositionConditionNotMet", "ConditionNotMet")
_STRAY_CHARS = 64


@dataclass(frozen=True)
class _Tail:
    """What the end of a chain's blob says: its size, the newest record's position, and whether the blob
    ends with a newline (someone else's unterminated line must not swallow our first one)."""

    size: int
    position: int
    clean_end: bool


class BlobAuditArchive:
    """AuditArchive on append blobs in one container."""

    def __init__(self, container: ContainerClient) -> None:
        self._container = container

    def archived_through(self, chain: str) -> int:
        """The newest position of ``chain`` in the archive (0: none archived), read from the blob's end.
        Raises ValueError for a name that is no chain's, DependencyUnavailable."""
        tail = self._tail(self._blob(chain))
        return 0 if tail is None else tail.position

    def append(self, chain: str, records: Sequence[StoredRecord]) -> None:
        """Append ``records`` (strictly increasing positions, all after what the archive holds of the
        chain) to the chain's blob, creating it when missing.

        Raises ValueError for a name that is no chain's, records out of order, at or before what is
        archived, or with a field that is not str/int/float/bool/None/datetime; Conflict when another
        writer appended meanwhile (the blocks before it stay: read ``archived_through`` again);
        DependencyUnavailable.
        """
        blob = self._blob(chain)
        if not records:
            return
        lines = [_line(record) for record in records]
        for before, after in itertools.pairwise(records):
            if after.position <= before.position:
                raise ValueError(f"positions must increase: {after.position} after {before.position}")
        tail = self._tail(blob)
        if tail is None:
            self._create(blob)
            tail = self._tail(blob) or _Tail(0, 0, True)  # deleted at once: the append answers 404
        if records[0].position <= tail.position:
            raise ValueError(
                f"chain {chain} is archived through {tail.position}: cannot append {records[0].position}"
            )
        # The append position alone guards the tail read: an append blob only grows (blocks cannot be
        # rewritten), and the retention policy refuses overwrites and deletes.
        offset = tail.size
        for block in _blocks(lines, tail.clean_end):
            try:
                blob.append_block(block, length=len(block), appendpos_condition=offset)
            except AzureError as err:
                if isinstance(err, ResourceModifiedError) or getattr(err, "error_code", None) in _LOST_RACE:
                    raise Conflict(f"archive of chain {chain} was appended to meanwhile") from err
                raise _unavailable(err) from err
            offset += len(block)

    def read_chain(self, chain: str) -> ChainContents:
        """The archived records of ``chain`` in stored order (head None; a line that is not a record is a
        stray row, its first 64 characters). Empty when nothing is archived. Raises ValueError for a name
        that is no chain's, DependencyUnavailable."""
        blob = self._blob(chain)
        try:
            size = blob.get_blob_properties().size
        except AzureError as err:
            if _blob_missing(err):
                return ChainContents(records=[], head=None)
            raise _unavailable(err) from err
        records: list[StoredRecord] = []
        stray: list[str] = []
        for line in _lines(self._chunks(blob, size)):
            try:
                records.append(_record(line))
            except ValueError:
                stray.append(line.decode("utf-8", errors="replace")[:_STRAY_CHARS])
        return ChainContents(records=records, head=None, stray_rows=tuple(stray))

    def _blob(self, chain: str) -> BlobClient:
        match = _CHAIN.fullmatch(chain)
        if match is None:
            raise ValueError(f"not an archivable chain name: {chain[:64]!r}")
        return self._container.get_blob_client(f"{match.group(1)}/{match.group(2)}.jsonl")

    def _create(self, blob: BlobClient) -> None:
        try:
            blob.create_append_blob(
                content_settings=ContentSettings(content_type="application/x-ndjson"),
                match_condition=MatchConditions.IfMissing,
            )
        except (ResourceExistsError, ResourceModifiedError):
            pass  # another writer created it first: fine, the appends are guarded
        except AzureError as err:
            raise _unavailable(err) from err

    def _tail(self, blob: BlobClient) -> _Tail | None:
        """The blob's end, or None when there is no blob. Reads windows from the end, never the whole
        blob unless no earlier window holds a record line."""
        try:
            properties = blob.get_blob_properties()
        except AzureError as err:
            if _blob_missing(err):
                return None
            raise _unavailable(err) from err
        size = int(properties.size)
        data, start, window = b"", size, TAIL_WINDOW
        while start > 0:
            data = self._range(blob, max(0, start - window), start - max(0, start - window)) + data
            start, window = max(0, start - window), window * 2
            complete = data.split(b"\n")[:-1]  # after the last newline: an unterminated line
            if start > 0:
                complete = complete[1:]  # the window's first line may have begun before it
            for line in reversed(complete):
                try:
                    return _Tail(size, _record(line).position, data.endswith(b"\n"))
                except ValueError:
                    continue
        return _Tail(size, 0, not data or data.endswith(b"\n"))

    def _chunks(self, blob: BlobClient, size: int) -> Iterator[bytes]:
        # Ranged reads of the blob as it was when its size was read: appends land after it. (The SDK's
        # chunked download pins the first answer's ETag, so a concurrent append would fail the read.)
        for offset in range(0, size, _READ_CHUNK):
            yield self._range(blob, offset, min(_READ_CHUNK, size - offset))

    def _range(self, blob: BlobClient, offset: int, length: int) -> bytes:
        try:
            return blob.download_blob(offset=offset, length=length).readall()
        except AzureError as err:
            raise _unavailable(err) from err


def _line(record: StoredRecord) -> bytes:
    if record.position < 1:
        raise ValueError(f"position must be positive: {record.position}")
    fields = {str(name): _value(name, value) for name, value in record.fields.items()}
    text = json.dumps(
        {"fields": fields, "position": record.position},
        sort_keys=True,
        separators=(",", ":"),
        allow_nan=False,
    )
    line = (text + "\n").encode("ascii")
    if len(line) >= MAX_BLOCK:  # one byte spare: a block may start with a newline (_blocks)
        raise ValueError(f"record {record.position} takes {len(line)} bytes, more than a block holds")
    return line


def _value(name: str, value: Any) -> str | int | float | bool | None:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"field {name!r} is a naive datetime")
        return format_time(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise ValueError(f"field {name!r} is a {type(value).__name__}, not a JSON scalar")


def _blocks(lines: Sequence[bytes], clean_end: bool) -> Iterator[bytes]:
    """Whole lines, packed into blocks of at most MAX_BLOCK bytes."""
    block = b"" if clean_end else b"\n"  # end someone else's unterminated line first
    for line in lines:
        if block not in (b"", b"\n") and len(block) + len(line) > MAX_BLOCK:
            yield block
            block = b""
        block += line
    yield block


def _lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """The lines of a byte stream, without their newlines; an unterminated last line too."""
    rest = b""
    for chunk in chunks:
        *complete, rest = (rest + chunk).split(b"\n")
        yield from complete
    if rest:
        yield rest


def _record(line: bytes) -> StoredRecord:
    """The record a line holds. Raises ValueError when it holds none."""
    try:
        data = json.loads(line)
    except (ValueError, RecursionError) as err:  # RecursionError: a line of a million "["
        raise ValueError("not JSON") from err
    if not isinstance(data, dict) or set(data) != {"fields", "position"}:
        raise ValueError("not a record")
    position, fields = data["position"], data["fields"]
    if type(position) is not int or position < 1 or not isinstance(fields, dict):
        raise ValueError("not a record")
    if not all(v is None or isinstance(v, str | int | float | bool) for v in fields.values()):
        raise ValueError("not a record")
    return StoredRecord(position=position, fields=fields)


def _blob_missing(err: AzureError) -> bool:
    """A missing blob (nothing archived yet); a missing container is an error of the deployment."""
    return isinstance(err, ResourceNotFoundError) and getattr(err, "error_code", None) != "ContainerNotFound"


def _unavailable(err: AzureError) -> DependencyUnavailable:
    """Any other failure of the archive is unavailability to callers, whatever the status: a deleted
    container or a revoked role must not look like a caller's error."""
    if isinstance(err, ResourceNotFoundError) and getattr(err, "error_code", None) == "ContainerNotFound":
        return DependencyUnavailable(DEPENDENCY, "the audit archive container does not exist")
    error = translate(DEPENDENCY, err)
    if isinstance(error, DependencyUnavailable):
        return error
    return DependencyUnavailable(DEPENDENCY, str(error).removeprefix(f"{DEPENDENCY}: "))
