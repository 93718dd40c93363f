"""Run the dev host as a child process (for tests and launchers) and wait until it is ready."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from devtools.processes import ChildProcess, StoppableProcess, start

__all__ = ["REPO_ROOT", "HostProcess"]

REPO_ROOT = Path(__file__).resolve().parents[2]

_READY = re.compile(r"dev host ready on (http://(?:\[[0-9A-Fa-f:.]+\]|[\w.-]+):\d+)")


class HostProcess(StoppableProcess):
    """A running ``python -m devtools.host``; ``url`` is its base URL (``http://127.0.0.1:<port>``)."""

    def __init__(self, child: ChildProcess, url: str) -> None:
        self._child = child
        self.url = url

    @property
    def pid(self) -> int:
        return self._child.pid

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
        child, url = start(
            f"dev host ({' '.join(args[1:])})",
            args,
            cwd=cwd,
            env=child_env,
            ready_line=lambda line: match.group(1) if (match := _READY.search(line)) else None,
            timeout=timeout,
            keep_lines=5000,
            echo="[devhost] " if echo else None,
            new_session=False,
        )
        return cls(child, url)

    def output(self) -> str:
        """Everything the host has printed so far (stdout and stderr lines, last 5000)."""
        return self._child.output()

    def wait_for_output(self, text: str, timeout: float = 10.0) -> bool:
        """Wait until ``text`` appears in the output; False on timeout."""
        return self._child.wait_for_output(text, timeout)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        return self._child.stop(timeout)
