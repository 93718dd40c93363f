"""A tiny HTTP client for tests that talk to the dev host, keeping every response for leak scans."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from shared.domain.identity import encode_principal

AUDITOR = encode_principal("oid-auditor", ["Secrets.Audit.Read", "Secrets.Audit.Review"], name="auditor")


@dataclass
class Client:
    base: str
    seen: list[str] = field(default_factory=list)

    def request(
        self, method: str, path: str, *, principal: str | None = AUDITOR, body: Any = None
    ) -> tuple[int, dict[str, Any]]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"content-type": "application/json", "user-agent": "integration-test"}
        if principal is not None:
            headers["x-ms-client-principal"] = principal
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status, raw, head = response.status, response.read(), str(response.headers)
        except urllib.error.HTTPError as err:
            status, raw, head = err.code, err.read(), str(err.headers)
        self.seen.append(head + raw.decode(errors="replace"))
        return status, (json.loads(raw) if raw else {})

    def get(self, path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        return self.request("POST", path, body=body, **kwargs)

    def put(self, path: str, body: Any = None, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        return self.request("PUT", path, body=body, **kwargs)
