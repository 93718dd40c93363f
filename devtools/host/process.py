"""Run the dev host as a child process (for tests and launchers) and wait until it is ready."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from devtools.processes import StoppableProcess, terminate

__all__ = ["REPO_ROOT", "HostProcess"]

REPO_ROOT = Path(__file__).resolve().parents[2]

_READY = re.compile(r"dev host ready on (http://(?:\[[0-9A-Fa-f:.]+\]|[\w.-]+):\d+)")


class HostProcess(StoppableProcess):
    """A running ``python -m devtools.host``; ``url`` is its base URL (``http://127.0.0.1:<port>``)."""

    def __init__(self, proc: subprocess.Popen[str], url: str, output: deque[str]) -> None:
        self._proc = proc
        self.url = url
        self._output = output

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @classmethod
    def start(
        cls,
        *,
        app: str = "function_app:app",
        port: int = 0,
        env: Mapping[str, str] | None = None,
        cwd: Path | str = REPO_ROOT,
        timeout: float = 30.0,
        settings: Path | str | None = None,
        state_dir: Path | str | None = None,
        extra_args: Sequence[str] = (),
        echo: bool = False,
    ) -> HostProcess:
        """Spawn the host and wait for its ready line.

        ``env`` is laid over this process's environment; the repository root is put on PYTHONPATH so
        ``devtools`` imports from any ``cwd``. ``settings`` is ``--settings`` and ``state_dir`` is
        ``--state-dir`` (the timer schedule monitor's state). With ``echo`` the host's output is copied to our
        stderr.
        Raises RuntimeError with the output's tail if the host exits or is not ready within ``timeout``.
        """
        child_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
        child_env["PYTHONPATH"] = os.pathsep.join(
            part for part in (str(REPO_ROOT), child_env.get("PYTHONPATH", "")) if part
        )
        args = [sys.executable, "-m", "devtools.host", "--app", app, "--port", str(port)]
        if settings is not None:
            args += ["--settings", str(settings)]
        if state_dir is not None:
            args += ["--state-dir", str(state_dir)]
        args += list(extra_args)
        proc = subprocess.Popen(
            args,
            cwd=str(cwd),
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
        output: deque[str] = deque(maxlen=5000)
        found: list[str] = []
        ready = threading.Event()

        def pump(stream: IO[str], watch: bool) -> None:
            # stdout and stderr are read separately so that their lines never interleave mid-line.
            for line in stream:
                output.append(line.rstrip("\n"))
                if echo:
                    print(f"[devhost] {line}", end="", file=sys.stderr, flush=True)
                if watch and not found and (match := _READY.search(line)):
                    found.append(match.group(1))
                    ready.set()
            if watch:
                ready.set()  # EOF: the host ended

        assert proc.stdout is not None and proc.stderr is not None
        for stream, watch in ((proc.stdout, True), (proc.stderr, False)):
            threading.Thread(
                target=pump, args=(stream, watch), name=f"devhost-output-{proc.pid}", daemon=True
            ).start()
        try:
            ready.wait(timeout)
        except BaseException:
            terminate(proc)  # Ctrl-C while starting: do not leave the host behind
            raise
        if found:
            return cls(proc, found[0], output)
        if ready.is_set():  # output ended: the host is exiting, let it finish
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        exited = proc.poll() is not None
        terminate(proc)
        why = f"exited with code {proc.returncode}" if exited else f"was not ready within {timeout:.0f}s"
        tail = "\n".join(list(output)[-60:])
        raise RuntimeError(f"dev host ({' '.join(args[1:])}) {why}; its last output:\n{tail}")

    def output(self) -> str:
        """Everything the host has printed so far (stdout and stderr lines, last 5000)."""
        return "\n".join(list(self._output))

    def wait_for_output(self, text: str, timeout: float = 10.0) -> bool:
        """Wait until ``text`` appears in the output; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return True
            time.sleep(0.05)
        return text in self.output()

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        return terminate(self._proc, timeout)
