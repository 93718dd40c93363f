"""Run the dev host as a child process (for tests and launchers) and wait until it is ready."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from devtools.processes import ChildProcess, StoppableProcess, start

__all__ = ["REPO_ROOT", "HostFleet", "HostProcess"]

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

    def kill(self) -> int:
        """SIGKILL at once (a crashed or recycled instance); returns the exit code."""
        return self._child.kill()


class HostFleet(StoppableProcess):
    """``instances`` dev hosts serving one app on the same peers, as the Functions host scales an app out:
    every instance runs every trigger (its own queue listeners, timers and HTTP port) against one storage
    account and one vault. ``kill`` and ``restart`` crash an instance and bring it back on its port."""

    def __init__(self, hosts: list[HostProcess], start_one: Callable[[int, int], HostProcess]) -> None:
        self.hosts = hosts
        self._start_one = start_one
        self._dead_output: list[str] = []

    @classmethod
    def start(
        cls, instances: int, *, env: Mapping[str, str], settings: Path | str, timeout: float = 60.0
    ) -> HostFleet:
        """Start ``instances`` hosts at once (each on a free port, with ``env`` and the same ``settings``
        file) and wait until all are ready. Raises RuntimeError when one cannot start (the others stopped)."""

        def start_one(_: int, port: int) -> HostProcess:
            return HostProcess.start(env=env, settings=settings, port=port, timeout=timeout)

        with ThreadPoolExecutor(max_workers=instances) as pool:
            futures = [pool.submit(start_one, i, 0) for i in range(instances)]
        hosts = [f.result() for f in futures if f.exception() is None]
        if len(hosts) < instances:
            for host in hosts:
                host.stop()
            failed = next(f.exception() for f in futures if f.exception() is not None)
            raise RuntimeError(f"a dev host of {instances} could not start: {failed}")
        return cls(hosts, start_one)

    @property
    def urls(self) -> list[str]:
        return [host.url for host in self.hosts]

    def kill(self, index: int) -> None:
        """SIGKILL instance ``index`` (its output is kept for ``output``)."""
        self.hosts[index].kill()
        self._dead_output.append(self.hosts[index].output())

    def restart(self, index: int) -> None:
        """Start instance ``index`` again on its port (after ``kill``)."""
        self.hosts[index] = self._start_one(index, self.hosts[index].port)

    def output(self) -> str:
        """What every instance printed, killed ones included."""
        return "\n".join([*self._dead_output, *(host.output() for host in self.hosts)])

    def stop(self, timeout: float = 10.0) -> int:
        """Stop every instance; returns the first non-zero exit code (0 when all stopped cleanly)."""
        codes = [host.stop(timeout) for host in self.hosts]
        return next((code for code in codes if code), 0)
