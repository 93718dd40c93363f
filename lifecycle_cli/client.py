"""The service's HTTP API as the command line calls it: one call, or every page of a listing.

An answer that is not a success becomes ``ServiceError`` carrying the status and the problem document
(RFC 9457) the service sent; a service that does not answer becomes ``Unreachable``. Nothing here prints.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

import requests

from lifecycle_cli.connection import Target

USER_AGENT = "secret-lifecycle-cli/0.1.0"
TIMEOUT_SECONDS = 60
JSON = "application/json"


class ServiceError(Exception):
    """The service answered ``status`` (not 2xx) with ``problem`` (its problem+json, or what it could
    read of the body)."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        super().__init__(self.describe())

    def describe(self) -> str:
        title = self.problem.get("title") or f"HTTP {self.status}"
        detail = self.problem.get("detail")
        parameter = self.problem.get("parameter")
        text = f"{self.status} {title}"
        if parameter:
            text += f" (parameter {parameter})"
        return f"{text}: {detail}" if detail else text


class Unreachable(Exception):
    """The service did not answer (refused, timed out, not HTTP)."""


def segment(value: str) -> str:
    """A path segment, percent-encoded whole (a name or an id never adds a level to the path)."""
    return quote(value, safe="")


class ServiceClient:
    """Calls of the API at ``target``, as ``target``'s caller."""

    def __init__(self, target: Target, session: requests.Session | None = None) -> None:
        self.target = target
        self._session = session or requests.Session()

    def page(self, path: str, *, params: Mapping[str, Any] | None = None) -> str:
        """The HTML page ``GET /api/<path>`` answers for a caller that prefers ``text/html``. Raises as
        ``call``."""
        return str(self.call("GET", path, params=params, accept="text/html"))

    def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Mapping[str, Any] | None = None,
        accept: str = JSON,
    ) -> Any:
        """The parsed JSON answer of ``method`` ``/api/<path>`` (None for an empty one; the text of a
        page when ``accept`` asks for HTML and gets it). ``params`` whose value is None are left out.
        Raises ServiceError, Unreachable, SignInError."""
        headers = {"User-Agent": USER_AGENT, "Accept": accept, **self.target.headers()}
        data = None
        if method != "GET":
            # The service refuses a write without this media type (415) and without a body (400).
            headers["Content-Type"] = JSON
            data = json.dumps(body if body is not None else {}).encode()
        query = {k: _text(v) for k, v in (params or {}).items() if v is not None}
        url = f"{self.target.url}/api/{path}"
        try:
            answer = self._session.request(
                method, url, params=query, data=data, headers=headers, timeout=TIMEOUT_SECONDS,
                allow_redirects=False,
            )  # fmt: skip
        except requests.RequestException as err:
            raise Unreachable(f"{self.target.url} does not answer: {type(err).__name__}") from None
        if accept != JSON and 200 <= answer.status_code < 300:
            return answer.text
        document = _document(answer)
        if not 200 <= answer.status_code < 300:
            problem = document if isinstance(document, dict) else {}
            if answer.status_code == 401 and not answer.content:
                problem = {"title": "Unauthorized", "detail": "the Functions host wants a function key"}
            raise ServiceError(answer.status_code, problem)
        return document

    def pages(
        self,
        path: str,
        params: Mapping[str, Any],
        *,
        limit: int | None,
        page_size: int,
        progress: Callable[[int], None] | None = None,
    ) -> dict[str, Any]:
        """Every page of a listing merged into one document: its ``items`` (at most ``limit`` when given),
        and ``continuation``, the token of what was left unread (null when every page was read); any other
        member as the first page had it. Each page asks for at most ``page_size`` (the endpoint's
        maximum), and the last one for what ``limit`` leaves, so no item is read and dropped.
        ``progress`` hears the count of items read after each page. Raises as ``call``."""
        merged: dict[str, Any] = {}
        items: list[Any] = []
        continuation: str | None = None
        while True:
            size = page_size if limit is None else min(page_size, limit - len(items))
            page = self.call("GET", path, params={**params, "limit": size, "continuation": continuation})
            if not isinstance(page, dict) or not isinstance(page.get("items"), list):
                raise ServiceError(200, {"title": "Unexpected answer", "detail": f"GET /api/{path}"})
            if not merged:
                merged = {k: v for k, v in page.items() if k not in ("items", "continuation")}
            items.extend(page["items"])
            continuation = page.get("continuation") or None
            if progress is not None:
                progress(len(items))
            if continuation is None or (limit is not None and len(items) >= limit):
                break
        merged.update(items=items, continuation=continuation)
        return merged


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _document(answer: requests.Response) -> Any:
    if not answer.content:
        return None
    try:
        return answer.json()
    except ValueError:
        return {"title": f"HTTP {answer.status_code}", "detail": "the answer is not JSON"}
