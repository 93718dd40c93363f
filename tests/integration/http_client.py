"""A tiny HTTP client for tests that talk to the dev host, keeping every response for leak scans."""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
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


def send_key_vault_event(base: str, vault_name: str, kind: str, name: str, version: str) -> None:
    """A Key Vault event (``kind``: ``SecretNearExpiry``, ...) as Event Grid delivers it to the webhook of
    the host at ``base``."""
    data = {"Id": f"https://{vault_name}.vault.azure.net/secrets/{name}/{version}", "VaultName": vault_name,
            "ObjectType": "Secret", "ObjectName": name, "Version": version}  # fmt: skip
    sent = datetime.now(UTC).isoformat()
    body = [{"id": secrets.token_hex(8), "topic": "/kv", "subject": name, "data": data, "dataVersion": "1",
             "eventType": f"Microsoft.KeyVault.{kind}", "eventTime": sent}]  # fmt: skip
    request = urllib.request.Request(
        f"{base}/runtime/webhooks/eventgrid?functionName=key_vault_events",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", "aeg-event-type": "Notification"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert answer.status in (200, 202)
