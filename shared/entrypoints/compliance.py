"""GET /api/compliance/report: the compliance evidence report of a period (``Secrets.Audit.Read``), as JSON,
or as a self-contained HTML page when the caller prefers ``text/html`` (a browser does).

``from`` and ``to`` are ISO 8601 with a zone or dates (midnight UTC); without them the report covers the 90
days before now. ``vault`` narrows it to one vault. docs/compliance.md maps each section to the controls it
evidences.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import azure.functions as func
from pydantic import BaseModel, ConfigDict, Field

from shared.entrypoints.audit import Moment
from shared.entrypoints.compliance_html import render
from shared.entrypoints.http import BadRequest, Call, json_response
from shared.services.compliance import MAX_PERIOD, compliance_report

DEFAULT_PERIOD = timedelta(days=90)
HTML = "text/html"
#: The page runs nothing and loads nothing: its style is inline, it has no script, no image, no font.
HTML_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
}


class ReportParams(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    start: Moment | None = Field(None, alias="from")
    end: Moment | None = Field(None, alias="to")


def compliance_report_http(call: Call[ReportParams]) -> func.HttpResponse:
    c, params = call.container, call.input
    now = c.audit_peers.clock.now()
    end = params.end or now
    start = params.start or end - DEFAULT_PERIOD
    _check_period(start, end, now)
    report = compliance_report(
        c.audit_peers, [s.peers for s in call.scopes], start=start, end=end,
        stall_after=c.settings.rotation_stall_after,
    )  # fmt: skip
    if prefers_html(call.req.headers.get("accept")):
        return func.HttpResponse(
            render(report), status_code=200, mimetype=HTML, charset="utf-8", headers=HTML_HEADERS
        )
    return json_response(report.to_json())


def _check_period(start: datetime, end: datetime, now: datetime) -> None:
    if start >= end:
        raise BadRequest("to", "must be after from")
    if end - start > MAX_PERIOD:
        raise BadRequest("from", f"the period is at most {MAX_PERIOD.days} days")
    if start > now:
        raise BadRequest("from", "must not be in the future")


def prefers_html(accept: str | None) -> bool:
    """Whether the Accept header ranks ``text/html`` above ``application/json`` (a browser's does; curl's
    ``*/*`` and a script's ``application/json`` do not)."""
    ranks: dict[str, float] = {}
    for part in (accept or "").split(","):
        media, *options = (piece.strip() for piece in part.split(";"))
        quality = 1.0
        for option in options:
            name, _, value = option.partition("=")
            if name.strip() == "q":
                quality = _quality(value)
        ranks[media.lower()] = max(quality, ranks.get(media.lower(), 0.0))
    html = ranks.get(HTML, 0.0)
    return html > 0 and html > ranks.get("application/json", 0.0)


def _quality(value: Any) -> float:
    try:
        return min(max(float(value), 0.0), 1.0)
    except ValueError:
        return 0.0
