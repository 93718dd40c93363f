"""Small helpers the local peers share: starting a child process and waiting until it is ready, stopping it,
context-manager use, atomic files."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Literal, Self, TypeVar

T = TypeVar("T")

#: How many lines of output a failure message quotes.
TAIL_LINES = 60


def terminate(
    proc: subprocess.Popen[str],
    timeout: float = 10.0,
    pumps: Sequence[threading.Thread] = (),
    sig: signal.Signals = signal.SIGTERM,
) -> int:
    """``sig`` (SIGTERM unless told), SIGKILL after ``timeout``; then wait for the output pumps (they end at
    EOF, right after the process) and close the pipes. Returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
    for pump in pumps:
        pump.join(timeout=2)
    if pumps and not any(pump.is_alive() for pump in pumps):
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    return int(proc.returncode)


class ChildProcess:
    """A peer started by :func:`start`. With ``output="capture"`` its stdout and stderr lines (read
    separately, so they never interleave mid-line) are kept as a tail; with a path they go to that file; with
    ``"inherit"`` they go where ours go."""

    def __init__(
        self,
        name: str,
        proc: subprocess.Popen[str],
        *,
        log_file: Path | None,
        keep_lines: int,
        stop_signal: signal.Signals,
        stop_timeout: float,
    ) -> None:
        self.name = name
        self._proc = proc
        self._log_file = log_file
        self._lines: deque[str] = deque(maxlen=keep_lines)
        self._stop_signal = stop_signal
        self._stop_timeout = stop_timeout
        self._pumps: list[threading.Thread] = []
        self._news = threading.Condition()
        self._generation = 0  # bumped on every line and at the end of each stream

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        """None while running; the exit code afterwards."""
        return self._proc.poll()

    def lines(self) -> list[str]:
        """The kept lines of output, oldest first."""
        with self._news:
            return list(self._lines)

    def output(self) -> str:
        return "\n".join(self.lines())

    def wait_for_output(self, text: str, timeout: float = 10.0) -> bool:
        """Wait until ``text`` appears in the kept output; False on timeout."""
        return self._wait(lambda: text in self.output() or None, timeout, interval=timeout) is not None

    def tail(self) -> str:
        """The end of the output, for an error message."""
        if self._log_file is not None:
            try:
                text = self._log_file.read_text(encoding="utf-8", errors="replace")
            except OSError:
                text = ""
            lines = text.splitlines()
        elif self._proc.stdout is None:
            return "see its output above"
        else:
            lines = self.lines()
        return "its last output:\n" + ("\n".join(lines[-TAIL_LINES:]) or "(no output)")

    def stop(self, timeout: float | None = None) -> int:
        """The stop signal, SIGKILL after ``timeout`` (the one given to ``start`` unless told); returns the
        exit code."""
        return terminate(
            self._proc, self._stop_timeout if timeout is None else timeout, self._pumps, self._stop_signal
        )

    def kill(self) -> int:
        """SIGKILL at once, as a crash or a platform recycling an instance does: no handler runs, nothing
        is flushed. Returns the exit code (-9)."""
        return terminate(self._proc, 10.0, self._pumps, signal.SIGKILL)

    # -------------------------------------------------------------------------------------------- internals

    def _pump(
        self,
        stream: IO[str],
        handle: Callable[[str], None],
        copy: IO[str] | None,
        echo: str | None,
        done: list[int],
    ) -> None:
        try:
            for raw in stream:
                line = raw.rstrip("\n")
                with self._news:
                    self._lines.append(line)
                    handle(line)
                    if copy is not None:
                        copy.write(raw)
                        copy.flush()
                    self._generation += 1
                    self._news.notify_all()
                if echo is not None:
                    print(f"{echo}{line}", file=sys.stderr, flush=True)
        finally:
            with self._news:
                done.append(1)
                if copy is not None and len(done) == 2:  # the last stream closes the copy
                    copy.close()
                self._generation += 1
                self._news.notify_all()

    def _output_ended(self) -> bool:
        return bool(self._pumps) and not any(pump.is_alive() for pump in self._pumps)

    def _wait(self, probe: Callable[[], T | None], timeout: float, interval: float) -> T | None:
        """Call ``probe`` on every line of output and every ``interval`` seconds until it returns a value,
        the process ends or ``timeout`` passes (None then)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._news:
                seen = self._generation
            value = probe()
            if value is not None:
                return value
            remaining = deadline - time.monotonic()
            if self._proc.poll() is not None or self._output_ended():
                for pump in self._pumps:  # the last lines may still be on their way
                    pump.join(timeout=2)
                return probe()
            if remaining <= 0:
                return None
            self._wait_for_news(seen, min(interval, remaining))

    def _wait_for_news(self, seen: int, timeout: float) -> None:
        with self._news:
            self._news.wait_for(lambda: self._generation != seen, timeout)

    def _fail(self, timeout: float) -> RuntimeError:
        """Stop the process and say why it is not ready: it exited, or it ran out of time."""
        if self._proc.poll() is None and self._output_ended():  # output ended: it is exiting, let it finish
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5)
        code = self._proc.poll()
        self.stop()
        why = f"exited with code {code}" if code is not None else f"was not ready within {timeout:.0f}s"
        return RuntimeError(f"{self.name} {why}; {self.tail()}")


def start(
    name: str,
    argv: Sequence[str],
    *,
    timeout: float,
    ready_line: Callable[[str], T | None] | None = None,
    ready: Callable[[], T | None] | None = None,
    poll_interval: float = 0.1,
    cwd: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    output: Literal["capture", "inherit"] | Path = "capture",
    keep_lines: int = 200,
    copy_to: Path | None = None,
    echo: str | None = None,
    new_session: bool = True,
    stop_signal: signal.Signals = signal.SIGTERM,
    stop_timeout: float = 10.0,
) -> tuple[ChildProcess, T]:
    """Spawn ``argv`` and wait until it is ready; return the process and what the readiness check returned.

    Ready is the first value other than None from ``ready_line`` (called with each line of captured output)
    or ``ready`` (called every ``poll_interval`` seconds, and on each line). ``env`` is the whole environment
    (ours when None). ``output``: ``"capture"`` keeps the last ``keep_lines`` lines (``copy_to`` appends them
    to a file, ``echo`` prints them to our stderr behind that prefix); a path gets the output appended by the
    child itself; ``"inherit"`` shares our stdin, stdout and stderr. ``new_session`` keeps a terminal's
    Ctrl-C from reaching the child, so the parent stops it in order. ``stop`` sends ``stop_signal``, then
    SIGKILL after ``stop_timeout`` seconds.

    Raises RuntimeError naming the peer, why (it could not be spawned, exited with code N, was not ready
    within ``timeout`` seconds) and the end of its output; the child is stopped first. Interrupted while
    waiting (Ctrl-C), it stops the child and re-raises.
    """
    capture = output == "capture"
    if ready is None and (ready_line is None or not capture):
        raise ValueError("start needs ready, or ready_line with captured output")
    log_file = output if isinstance(output, Path) else None
    stdin: int | None = None if output == "inherit" else subprocess.DEVNULL
    stdout: int | IO[str] | None = subprocess.PIPE if capture else None
    stderr: int | None = subprocess.PIPE if capture else None
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        stdout, stderr = log_file.open("a", encoding="utf-8"), subprocess.STDOUT
    try:
        proc = subprocess.Popen(
            list(argv),
            cwd=None if cwd is None else str(cwd),
            env=None if env is None else dict(env),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            text=True,
            encoding="utf-8",
            errors="replace",
            start_new_session=new_session,
        )
    except OSError as err:
        raise RuntimeError(f"{name} could not be started: {err}") from err
    finally:
        if not isinstance(stdout, int | None):
            stdout.close()  # the child has its own descriptor
    child = ChildProcess(
        name,
        proc,
        log_file=log_file,
        keep_lines=keep_lines,
        stop_signal=stop_signal,
        stop_timeout=stop_timeout,
    )
    found: list[T] = []

    def handle(line: str) -> None:
        if ready_line is not None and not found and (value := ready_line(line)) is not None:
            found.append(value)

    def probe() -> T | None:
        if found:
            return found[0]
        return ready() if ready is not None else None

    try:
        if capture:
            copy = copy_to.open("a", encoding="utf-8") if copy_to is not None else None
            done: list[int] = []
            for label, stream in (("out", proc.stdout), ("err", proc.stderr)):
                assert stream is not None
                pump = threading.Thread(
                    target=child._pump,
                    args=(stream, handle, copy, echo, done),
                    name=f"{name}-{label}-{proc.pid}",
                    daemon=True,
                )
                child._pumps.append(pump)
                pump.start()
        value = child._wait(probe, timeout, poll_interval)
    except BaseException:
        child.stop()  # Ctrl-C while starting: do not leave the child behind
        raise
    if value is None:
        raise child._fail(timeout)
    return child, value


class StoppableProcess:
    """``with Peer.start(...) as peer:`` stops the peer on the way out."""

    def stop(self) -> object:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def write_atomically(path: Path, text: str) -> None:
    """Write a file so that a reader (or a crash) sees the old content or the new, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
