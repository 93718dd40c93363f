"""Start and stop a throwaway PostgreSQL cluster from the machine's server binaries.

Used by the integration tests of the PostgreSQL target rotators. The cluster lives in a fresh directory
under the system temp dir, listens on 127.0.0.1 only (a free port) and on a private unix socket, and takes
SCRAM logins over TCP only: the superuser ``postgres`` has a random password, and only the launcher
itself logs in without one (over the private socket). Every statement is logged to ``log_file``, so a
test can prove that no plaintext password reached the server.

initdb and postgres refuse to run as root: as root the server runs as ``nobody`` (``setpriv``).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from devtools.processes import TAIL_LINES, ChildProcess, StoppableProcess, start

SUPERUSER = "postgres"
_BIN_ROOT = Path("/usr/lib/postgresql")
_UNPRIVILEGED_USER = "nobody"
# A clean environment: PG* variables of the caller must not steer the tools or the server.
_TOOL_ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"}

# pg_hba.conf: the launcher (over the private socket) as the superuser without a password; everything
# else only over TCP on loopback, with SCRAM.
_HBA = """\
# TYPE  DATABASE  USER      ADDRESS       METHOD
local   all       {superuser}               trust
host    all       all       127.0.0.1/32  scram-sha-256
host    all       all       ::1/128       scram-sha-256
"""


#: Where PostgreSQL's server binaries are looked for after ``PG_BIN``: Debian's versioned directories, then
#: Homebrew's (Apple silicon, then Intel), each ``<root>/<version dir>/bin``.
_VERSIONED_ROOTS = (_BIN_ROOT, Path("/opt/homebrew/opt"), Path("/usr/local/opt"))
_TOOLS = ("initdb", "postgres", "pg_ctl")


def server_binaries(env: Mapping[str, str] | None = None, roots: Sequence[Path] = _VERSIONED_ROOTS) -> Path:
    """The bin directory of PostgreSQL's server binaries (``initdb``, ``postgres``, ``pg_ctl``): ``PG_BIN``
    when set, else the highest version under Debian's ``/usr/lib/postgresql/*/bin`` or Homebrew's
    ``opt/postgresql@*/bin``, else the ones on ``PATH``. Raises RuntimeError saying how to install them."""
    env = os.environ if env is None else env
    chosen = env.get("PG_BIN", "").strip()
    if chosen:
        path = Path(chosen)
        if not _has_tools(path):
            raise RuntimeError(f"PG_BIN={chosen} holds no {', '.join(_TOOLS)}: point it at PostgreSQL's bin")
        return path
    found: list[tuple[tuple[int, ...], Path]] = []
    for root in roots:
        if not root.is_dir():
            continue
        for candidate in root.iterdir():
            version = tuple(int(part) for part in re.findall(r"\d+", candidate.name))
            # Debian's directories are versions ("15"), Homebrew's formulae ("postgresql@17").
            named = candidate.name.isdigit() or candidate.name.startswith("postgresql")
            if named and version and _has_tools(candidate / "bin"):
                found.append((version, candidate / "bin"))
    if found:
        return max(found)[1]
    on_path = shutil.which("initdb", path=env.get("PATH"))
    if on_path and _has_tools(Path(on_path).parent):
        return Path(on_path).parent
    raise RuntimeError(
        "PostgreSQL's server binaries (initdb, postgres, pg_ctl) were not found (PG_BIN, "
        + ", ".join(f"{root}/*/bin" for root in roots)
        + ", PATH): install them (Debian/Ubuntu: apt-get install postgresql; macOS: brew install "
        "postgresql@17), or set PG_BIN to their directory. Only the tests need them."
    )


def _has_tools(directory: Path) -> bool:
    return all((directory / tool).is_file() for tool in _TOOLS)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _quote(value: str) -> str:
    """A postgresql.conf string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


class PostgresProcess(StoppableProcess):
    """A running throwaway cluster. ``admin_execute`` runs SQL as the superuser over TCP (SCRAM)."""

    def __init__(
        self,
        *,
        bin_dir: Path,
        root: Path,
        host: str,
        port: int,
        superuser_password: str,
        demote: Sequence[str],
    ) -> None:
        self._bin_dir = bin_dir
        self._root = root
        self._demote = list(demote)
        self._server: ChildProcess | None = None
        self.host = host
        self.port = port
        self.superuser = SUPERUSER
        self.superuser_password = superuser_password

    @property
    def data_dir(self) -> Path:
        return self._root / "data"

    @property
    def socket_dir(self) -> Path:
        return self._root / "socket"

    @property
    def log_file(self) -> Path:
        """The server's log: every statement it ran (``log_statement = all``)."""
        return self._root / "server.log"

    @classmethod
    def start(cls, *, host: str = "127.0.0.1", port: int = 0, timeout: float = 60.0) -> PostgresProcess:
        """initdb a new cluster in a fresh temp directory and start it; return when it takes logins.

        ``port`` 0 picks a free one. Raises RuntimeError (with the end of the tool's output or of the
        server log) when the binaries are missing, initdb fails or the server does not start in time.
        """
        bin_dir = server_binaries()
        demote: list[str] = []
        owner: tuple[int, int] | None = None
        if os.geteuid() == 0:
            user = pwd.getpwnam(_UNPRIVILEGED_USER)
            owner = (user.pw_uid, user.pw_gid)
            setpriv = shutil.which("setpriv")
            if setpriv is None:
                raise RuntimeError("running as root needs `setpriv` (util-linux) to start PostgreSQL")
            demote = [setpriv, f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"]
        # Not pytest's tmp_path: its directories are 0700 root, and the server runs as another user.
        root = Path(tempfile.mkdtemp(prefix="slc-postgres-"))
        password = secrets.token_urlsafe(24)
        process = cls(
            bin_dir=bin_dir,
            root=root,
            host=host,
            port=port or _free_port(host),
            superuser_password=password,
            demote=demote,
        )
        try:
            process.socket_dir.mkdir(mode=0o700)
            pwfile = root / "pwfile"
            pwfile.write_text(password + "\n", encoding="utf-8")
            pwfile.chmod(0o600)
            if owner is not None:
                for path in (root, process.socket_dir, pwfile):
                    os.chown(path, *owner)
            try:
                process._run(
                    "initdb",
                    "-D", str(process.data_dir),
                    "-U", SUPERUSER,
                    f"--pwfile={pwfile}",
                    "--auth-host=scram-sha-256",
                    "--auth-local=trust",
                    "-E", "UTF8",
                    "--no-locale",
                    "--no-sync",
                    "--no-instructions",
                    timeout=timeout,
                )  # fmt: skip
            except RuntimeError as err:
                raise RuntimeError(f"PostgreSQL did not start: {err}") from err
            pwfile.unlink()
            process._configure()
            process._server, _ = start(
                "PostgreSQL",
                [*demote, str(bin_dir / "postgres"), "-D", str(process.data_dir)],
                cwd=root,
                env=_TOOL_ENV,
                output=process.log_file,
                ready=process._takes_logins,
                timeout=timeout,
                stop_signal=signal.SIGINT,  # fast shutdown
                stop_timeout=60.0,
            )
        except BaseException as err:
            process.stop()
            if isinstance(err, OSError):
                raise RuntimeError(f"PostgreSQL did not start: {err}") from err
            raise
        return process

    def _takes_logins(self) -> bool | None:
        """None until the server says it is ready, as ``pg_ctl -w`` reads it (the status line of
        postmaster.pid); then True once the launcher logs in. Raises RuntimeError when it cannot."""
        try:
            status = (self.data_dir / "postmaster.pid").read_text(encoding="utf-8").splitlines()[7:8]
        except OSError:
            return None
        if [line.strip() for line in status] != ["ready"]:
            return None
        try:
            self.admin_execute(sql.SQL("SELECT 1"))
        except psycopg.Error as err:
            raise RuntimeError(f"PostgreSQL is up but the launcher cannot log in: {err}") from err
        return True

    def _configure(self) -> None:
        hba = self.data_dir / "pg_hba.conf"
        hba.write_text(_HBA.format(superuser=SUPERUSER), encoding="utf-8")
        settings = {
            "listen_addresses": _quote(self.host),
            "port": str(self.port),
            "unix_socket_directories": _quote(str(self.socket_dir)),
            "password_encryption": "'scram-sha-256'",
            "log_statement": "'all'",
            # A throwaway cluster: durability is not worth the time.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
        }
        with (self.data_dir / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write("\n# devtools.postgres\n")
            conf.writelines(f"{name} = {value}\n" for name, value in settings.items())

    def _run(self, tool: str, *args: str, timeout: float) -> None:
        command = [*self._demote, str(self._bin_dir / tool), *args]
        try:
            done = subprocess.run(
                command,
                cwd=self._root,
                env=_TOOL_ENV,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as err:
            raise RuntimeError(f"{tool} did not finish within {timeout:.0f}s") from err
        if done.returncode != 0:
            output = "\n".join((done.stdout + done.stderr).strip().splitlines()[-TAIL_LINES:])
            raise RuntimeError(f"{tool} exited with {done.returncode}:\n{output}")

    def connect(
        self, *, dbname: str = "postgres", user: str | None = None, password: str | None = None
    ) -> psycopg.Connection[Any]:
        """An autocommit connection over TCP (as the superuser unless ``user`` is given)."""
        return psycopg.connect(
            host=self.host,
            port=self.port,
            dbname=dbname,
            user=user or self.superuser,
            password=self.superuser_password if user is None else password,
            connect_timeout=10,
            autocommit=True,
        )

    def admin_execute(
        self, query: sql.SQL | sql.Composed, params: Sequence[Any] | None = None, *, dbname: str = "postgres"
    ) -> list[tuple[Any, ...]]:
        """Run one statement as the superuser; return its rows (none for a statement without)."""
        with self.connect(dbname=dbname) as conn:
            cursor = conn.execute(query, params)
            return cursor.fetchall() if cursor.description is not None else []

    def can_login(self, user: str, password: str, *, dbname: str = "postgres") -> bool:
        """Whether ``user`` logs in over TCP with ``password`` (False on any connection error)."""
        try:
            with self.connect(dbname=dbname, user=user, password=password):
                return True
        except psycopg.OperationalError:
            return False

    def stop(self) -> int:
        """Stop the server (fast shutdown) and remove its directory. Returns the server's exit code (0 when
        it was not running)."""
        code = 0 if self._server is None else self._server.stop()
        with contextlib.suppress(OSError):
            shutil.rmtree(self._root)
        return code


if __name__ == "__main__":  # make postgres-server: where the binaries are, or how to get them
    import sys

    try:
        print(server_binaries())
    except RuntimeError as err:
        print(err, file=sys.stderr)
        sys.exit(1)
