"""Small helpers the local peers share: stopping a child process, context-manager use, atomic files."""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self


def terminate(
    proc: subprocess.Popen[str], timeout: float = 10.0, pumps: Sequence[threading.Thread] = ()
) -> int:
    """SIGTERM, SIGKILL after ``timeout``; then wait for the output pumps (they end at EOF, right after the
    process) and close the pipes. Returns the exit code."""
    if proc.poll() is None:
        proc.terminate()
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
