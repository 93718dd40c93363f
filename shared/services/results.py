"""What the services answer, typed: pydantic models, strict and closed, made by the service and
serialised as they are by the entrypoints (``Answer.to_json``); the OpenAPI document describes the same
models (shared/entrypoints/answers.py, shared/entrypoints/openapi.py), so a field is defined once.

A field left unset is left out of the JSON (an idle rotation state has no lease to show), one set to None
is ``null``. Times are ``format_time``'s UTC text, as the audit records write them.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, PlainSerializer

from shared.domain.audit import format_time

Timestamp = Annotated[
    AwareDatetime,
    PlainSerializer(format_time, return_type=str),
    Field(description="RFC 3339, UTC (`...Z`)"),
]


class Answer(BaseModel):
    # Strict and closed: a result that drifts from its model fails where it is made, and the functions-tier
    # conformance tests check every answer against its model. (A comment, not a docstring: the document
    # would show it on every model.)
    model_config = ConfigDict(extra="forbid", strict=True)

    def to_json(self) -> dict[str, Any]:
        """The result as the API answers it: JSON values, the fields left unset left out."""
        return self.model_dump(mode="json", exclude_unset=True)
