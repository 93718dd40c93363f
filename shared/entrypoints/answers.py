"""The response models the entrypoints make themselves (a problem, the OpenAPI document, a few small
answers of the secrets endpoints): strict and closed. The OpenAPI document (``shared/entrypoints/openapi.py``)
is built from them and from the services' own result models (``shared/services/results.py`` and each
service package's ``results.py``), and the functions-tier conformance tests check every answer against its
model."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field

from shared.services.results import Answer
from shared.services.revocation.results import Revocation


class Problem(Answer):
    """An RFC 9457 problem (`application/problem+json`). Never carries a secret value."""

    model_config = ConfigDict(extra="allow")
    type: str = Field(
        description="`about:blank` (the status says what kind of problem it is), except "
        "`urn:secret-lifecycle:problem:state-tampered` (409): a stored state the operation needs failed its "
        "seal; `table`, `partition`, `key` and `check` name it (never its contents), a STATE_TAMPERED record "
        "and a finding are written, and nothing acts on the row until an operator deletes it."
    )
    title: str
    status: int = Field(ge=400, le=599)
    detail: str | None = None
    parameter: str | None = Field(
        None, description="400: the query parameter, route parameter or (dotted) body field at fault."
    )
    table: str | None = Field(None, description="state-tampered: the table of the row.")
    partition: str | None = Field(None, description="state-tampered: the row's partition key.")
    key: str | None = Field(None, description="state-tampered: the row's key.")
    check: str | None = Field(None, description="state-tampered: the seal check that failed.")
    changed: bool | None = Field(
        None,
        description="500: `true` when the change WAS made but its record could not be written; the "
        "problem then also carries the change's ids (e.g. `version`, `rollback_id`). Do not repeat it.",
    )


class OpenApiDocument(Answer):
    """This document (OpenAPI 3.1)."""

    model_config = ConfigDict(extra="allow")
    openapi: str = Field(pattern=r"^3\.1\.\d+$")
    info: dict[str, Any]
    paths: dict[str, Any]


class RotationQueued(Answer):
    """A rotation request, by its own id. `queued`: on the queue, or joined to the request queued for the
    secret; `in_progress`: joined to the rotation running. `joined`: the id of the request or rotation it
    joined (null: it was queued itself). The rotation's outcome record (ROTATED, ROTATION_FAILED or
    ROTATION_SKIPPED) names every id that joined it."""

    rotation_id: str
    status: Literal["queued", "in_progress"]
    joined: str | None


class RollbackDone(Answer):
    name: str
    rollback_id: str
    version: str = Field(description="The new version, carrying the restored value.")
    restored_version: str
    rolled_back_from: str


class SecretDeleted(Answer):
    name: str
    status: Literal["deleted"]
    recoverable: bool


class SecretRecovered(Answer):
    name: str
    status: Literal["recovered"]


class RevocationConflict(Problem):
    """409 of execute: with the stored request when it was executed (or failed) already."""

    revocation: Revocation | None = None
