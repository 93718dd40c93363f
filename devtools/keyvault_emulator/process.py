"""Start and stop the emulator as a child process (test fixtures, ``make run``)."""

from __future__ import annotations

import json
import re
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from devtools.keyvault_emulator.rbac import parse_operations
from devtools.processes import StoppableProcess, terminate

REPO_ROOT = Path(__file__).resolve().parents[2]
_READY = re.compile(r"\bready (https://\S+)")


class EmulatorProcess(StoppableProcess):
    """A running emulator. Its stderr (the request log) is kept as a tail, and copied to ``log_file``."""

    def __init__(
        self,
        proc: subprocess.Popen[str],
        url: str,
        cert_file: Path,
        stderr_tail: deque[str],
        pumps: list[threading.Thread],
    ) -> None:
        self._proc = proc
        self._pumps = pumps
        self.url = url
        self.port = int(url.rsplit(":", 1)[1])
        self.cert_file = cert_file
        self._stderr_tail = stderr_tail

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
        emulator's stderr, if it exits or is not ready within ``timeout`` seconds.
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
        proc = subprocess.Popen(
            args,
            cwd=str(REPO_ROOT),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            # Its own session: a Ctrl-C in the terminal reaches the parent, which stops the emulator in order.
            start_new_session=True,
        )
        stderr_tail: deque[str] = deque(maxlen=200)
        found: list[str] = []
        ready = threading.Event()

        def pump_stdout(stream: IO[str]) -> None:
            for line in stream:
                match = _READY.search(line)
                if match and not found:
                    found.append(match.group(1))
                    ready.set()
            ready.set()  # EOF: the process ended

        def pump_stderr(stream: IO[str]) -> None:
            sink = log_file.open("a", encoding="utf-8") if log_file is not None else None
            try:
                for line in stream:
                    stderr_tail.append(line.rstrip("\n"))
                    if sink is not None:
                        sink.write(line)
                        sink.flush()
            finally:
                if sink is not None:
                    sink.close()

        assert proc.stdout is not None and proc.stderr is not None
        pumps = [
            threading.Thread(target=pump_stdout, args=(proc.stdout,), name="kv-emulator-out", daemon=True),
            threading.Thread(target=pump_stderr, args=(proc.stderr,), name="kv-emulator-err", daemon=True),
        ]
        for pump in pumps:
            pump.start()
        started = time.monotonic()
        try:
            ready.wait(timeout)
        except BaseException:
            terminate(proc, 5.0, pumps)  # Ctrl-C while starting: the child has its own session
            raise
        if found:
            return cls(proc, found[0], cert_file, stderr_tail, pumps)
        timed_out = time.monotonic() - started >= timeout and proc.poll() is None
        terminate(proc, 5.0, pumps)
        why = f"was not ready within {timeout:.0f}s" if timed_out else f"exited with code {proc.returncode}"
        tail = "\n".join(stderr_tail) or "(no output)"
        raise RuntimeError(f"the Key Vault emulator {why}; its last output:\n{tail}")

    # --------------------------------------------------------------------------------------------- queries

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        """None while running; the exit code afterwards (0 after a clean ``stop``)."""
        return self._proc.poll()

    def log_tail(self) -> list[str]:
        """The last lines of the emulator's stderr (its request log)."""
        return list(self._stderr_tail)

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
        terminate(self._proc, 5.0, self._pumps)


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
