"""Start and stop Azurite (Blob, Queue, Table) from the project's own npm install.

Used by the test fixtures and by `make run`. Azurite 3.35.x is the last release that runs on Node 20; the
version is pinned in package-lock.json. It always runs with telemetry disabled and on loopback.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from devtools.processes import ChildProcess, StoppableProcess, start

REPO_ROOT = Path(__file__).resolve().parent.parent

# The well-known development account every Azurite instance serves (public, documented by Microsoft).
ACCOUNT_NAME = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

_LISTENING = re.compile(
    r"Azurite (Blob|Queue|Table) service is successfully listening at https?://[^:]+:(\d+)"
)


def azurite_executable() -> Path:
    """The project's Azurite launcher, or a clear error telling how to install it."""
    candidate = REPO_ROOT / "node_modules" / ".bin" / "azurite"
    if candidate.exists():
        return candidate
    on_path = shutil.which("azurite")
    if on_path:
        return Path(on_path)
    raise RuntimeError(
        "Azurite is not installed: run `npm ci` in the repository root (or `make install`). "
        "Node.js 20+ is required."
    )


def connection_string(host: str, blob_port: int, queue_port: int, table_port: int) -> str:
    """The storage connection string for an Azurite instance on the given ports."""
    return (
        "DefaultEndpointsProtocol=http;"
        f"AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint=http://{host}:{blob_port}/{ACCOUNT_NAME};"
        f"QueueEndpoint=http://{host}:{queue_port}/{ACCOUNT_NAME};"
        f"TableEndpoint=http://{host}:{table_port}/{ACCOUNT_NAME};"
    )


class AzuriteProcess(StoppableProcess):
    """A running Azurite. Ports 0 let Azurite pick free ports; the real ones are read from its output."""

    def __init__(self, child: ChildProcess, host: str, ports: dict[str, int]) -> None:
        self._child = child
        self.host = host
        self.blob_port = ports["Blob"]
        self.queue_port = ports["Queue"]
        self.table_port = ports["Table"]

    @property
    def connection_string(self) -> str:
        return connection_string(self.host, self.blob_port, self.queue_port, self.table_port)

    @property
    def pid(self) -> int:
        return self._child.pid

    @classmethod
    def start(
        cls,
        workdir: Path | None = None,
        *,
        host: str = "127.0.0.1",
        blob_port: int = 0,
        queue_port: int = 0,
        table_port: int = 0,
        timeout: float = 60.0,
        silent: bool = True,
        skip_api_version_check: bool = True,
    ) -> AzuriteProcess:
        """Start Azurite and wait until all three services listen.

        With ``workdir`` data persists there; without it Azurite keeps everything in memory
        (the two options cannot be combined). ``skip_api_version_check`` lets SDKs that send an API version
        newer than Azurite knows through (azure-storage-queue 12.18 does; the service pins its own).
        Raises RuntimeError with Azurite's output on failure.
        """
        args = [
            str(azurite_executable()),
            "--disableTelemetry",
            "--loose",
            "--blobHost", host, "--blobPort", str(blob_port),
            "--queueHost", host, "--queuePort", str(queue_port),
            "--tableHost", host, "--tablePort", str(table_port),
        ]  # fmt: skip
        if skip_api_version_check:
            args.append("--skipApiVersionCheck")
        if silent:
            args.append("--silent")
        if workdir is None:
            args.append("--inMemoryPersistence")
        else:
            workdir.mkdir(parents=True, exist_ok=True)
            args += ["--location", str(workdir)]
        ports: dict[str, int] = {}

        def listening(line: str) -> dict[str, int] | None:
            if match := _LISTENING.search(line):
                ports[match.group(1)] = int(match.group(2))
            return ports if len(ports) == 3 else None

        child, ports = start("Azurite", args, cwd=workdir or REPO_ROOT, ready_line=listening, timeout=timeout)
        return cls(child, host, ports)

    def stop(self) -> int:
        return self._child.stop()
