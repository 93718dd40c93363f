"""Start and stop the emulator as a child process (test fixtures, ``make run``)."""

from __future__ import annotations

import json
import re
import ssl
import sys
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from devtools.keyvault_emulator.rbac import parse_operations
from devtools.processes import ChildProcess, StoppableProcess, start

REPO_ROOT = Path(__file__).resolve().parents[2]
_READY = re.compile(r"\bready (https://\S+)")


class EmulatorProcess(StoppableProcess):
    """A running emulator. Its output (the request log) is kept as a tail, and copied to ``log_file``."""

    def __init__(self, child: ChildProcess, url: str, cert_file: Path) -> None:
        self._child = child
        self.url = url
        self.port = int(url.rsplit(":", 1)[1])
        self.cert_file = cert_file

    @classmethod
    def start(
        cls,
        cert_file: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        state_file: Path | None = None,
        latency_ms: int = 0,
        create_limit: int | None = None,
        tx_limit: int | None = None,
        window_seconds: float | None = None,
        throttling: bool = True,
        purge_protection: bool = False,
        delete_delay_ms: int = 0,
        empty_pages: bool = False,
        deny: Sequence[str] = (),
        log_file: Path | None = None,
        timeout: float = 30.0,
    ) -> EmulatorProcess:
        """Start ``python -m devtools.keyvault_emulator`` and wait for its ready line.

        The keyword arguments are the command line's options (see ``--help``); ``deny`` holds operation
        names as in ``stats()``, e.g. ``("set_secret", "purge_deleted_secret")``; ``throttling=False`` is
        ``--throttling-off`` (``set_throttling(True)`` switches the limits on later).

        Raises ValueError for an unknown operation in ``deny``, and RuntimeError, with the end of the
        emulator's output, if it exits or is not ready within ``timeout`` seconds.
        """
        denied = sorted(parse_operations(deny))
        args = [
            sys.executable, "-m", "devtools.keyvault_emulator",
            "--host", host, "--port", str(port), "--cert-file", str(cert_file),
        ]  # fmt: skip
        if state_file is not None:
            args += ["--state-file", str(state_file)]
        if latency_ms:
            args += ["--latency-ms", str(latency_ms)]
        if create_limit is not None:
            args += ["--create-limit", str(create_limit)]
        if tx_limit is not None:
            args += ["--tx-limit", str(tx_limit)]
        if window_seconds is not None:
            args += ["--window-seconds", str(window_seconds)]
        if not throttling:
            args.append("--throttling-off")
        if purge_protection:
            args.append("--purge-protection")
        if delete_delay_ms:
            args += ["--delete-delay-ms", str(delete_delay_ms)]
        if empty_pages:
            args.append("--empty-pages")
        if denied:
            args += ["--deny", ",".join(denied)]
        child, url = start(
            "the Key Vault emulator",
            args,
            cwd=REPO_ROOT,
            ready_line=lambda line: match.group(1) if (match := _READY.search(line)) else None,
            timeout=timeout,
            copy_to=log_file,
            stop_timeout=5.0,
        )
        return cls(child, url, cert_file)

    # --------------------------------------------------------------------------------------------- queries

    @property
    def pid(self) -> int:
        return self._child.pid

    @property
    def returncode(self) -> int | None:
        """None while running; the exit code afterwards (0 after a clean ``stop``)."""
        return self._child.returncode

    def log_tail(self) -> list[str]:
        """The last lines of the emulator's output (its request log)."""
        return self._child.lines()

    def client_kwargs(self) -> dict[str, Any]:
        """What a ``SecretClient`` for this emulator needs besides ``vault_url`` and a credential."""
        return {"verify_challenge_resource": False, "connection_verify": str(self.cert_file)}

    def stats(self) -> dict[str, Any]:
        """``GET /_emulator/stats``: ``{"requests": {operation: n}, "throttled": n, "total": n, ...}``."""
        with self._open("GET", "/_emulator/stats") as response:
            data: dict[str, Any] = json.load(response)
        return data

    def reset_stats(self) -> None:
        """``POST /_emulator/reset``: zero the counters (the secrets stay)."""
        with self._open("POST", "/_emulator/reset"):
            pass

    def create_certificate(self, name: str, content_type: str = "application/x-pkcs12") -> dict[str, Any]:
        """``POST /_emulator/certificates/{name}``: create (or renew) a self-signed certificate ``name``; its
        secret appears in the secrets API as Key Vault's does (``managed``, ``kid``, read-only). Returns the
        secret's bundle without its value. Raises ``urllib.error.HTTPError`` (409 when ``name`` is an
        ordinary or soft-deleted secret, 400 for another content type than PKCS#12 or PEM)."""
        body = json.dumps({"contentType": content_type}).encode()
        with self._open("POST", f"/_emulator/certificates/{quote(name)}", body) as response:
            data: dict[str, Any] = json.load(response)
        return data

    def set_clock_offset(self, seconds: int | float) -> dict[str, Any]:
        """``POST /_emulator/clock``: shift every timestamp the emulator stamps from now on by ``seconds``
        (negative: into the past, e.g. ``-40 * 86400`` makes secrets set now 40 days old; 0 resets it).
        Returns ``{"offset_seconds", "now", "now_utc"}``. Raises ``urllib.error.HTTPError`` (400 beyond
        ten years either way)."""
        return set_clock_offset(self.url, self.cert_file, seconds)

    def clock(self) -> dict[str, Any]:
        """``GET /_emulator/clock``: ``{"offset_seconds": n, "now": unix seconds, "now_utc": ISO 8601}``."""
        with self._open("GET", "/_emulator/clock") as response:
            data: dict[str, Any] = json.load(response)
        return data

    def set_throttling(self, enabled: bool) -> dict[str, Any]:
        """``POST /_emulator/throttling``: switch the limits on (starting from an idle vault) or off.
        Returns ``{"enabled", "create_limit", "tx_limit", "window_seconds"}``."""
        body = json.dumps({"enabled": enabled}).encode()
        with self._open("POST", "/_emulator/throttling", body) as response:
            data: dict[str, Any] = json.load(response)
        return data

    def _open(self, method: str, path: str, body: bytes | None = None) -> Any:
        return _open(self.url, self.cert_file, method, path, body)

    # ----------------------------------------------------------------------------------------- lifecycle

    def stop(self) -> None:
        """SIGTERM (the emulator saves its state and exits 0); SIGKILL if it has not exited after 5 s."""
        self._child.stop()


def set_clock_offset(url: str, cert_file: Path, seconds: int | float) -> dict[str, Any]:
    """``POST /_emulator/clock`` on the emulator at ``url`` (for callers that have its URL and certificate
    but not its process, like ``make run``'s seeding). See ``EmulatorProcess.set_clock_offset``."""
    body = json.dumps({"offset_seconds": int(seconds)}).encode()
    with _open(url, cert_file, "POST", "/_emulator/clock", body) as response:
        data: dict[str, Any] = json.load(response)
    return data


def _open(url: str, cert_file: Path, method: str, path: str, body: bytes | None = None) -> Any:
    context = ssl.create_default_context(cafile=str(cert_file))
    data = body if body is not None else b"" if method == "POST" else None
    request = urllib.request.Request(url + path, method=method, data=data)  # noqa: S310 - https
    return urllib.request.urlopen(request, context=context, timeout=10)  # noqa: S310 - our own URL
