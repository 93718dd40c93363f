"""Where the tests find PostgreSQL's server binaries: PG_BIN, Debian's and Homebrew's directories (the
highest version), then PATH; otherwise an error saying how to install them. ``make run`` needs none."""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.postgres import server_binaries

TOOLS = ("initdb", "postgres", "pg_ctl")


def bin_dir(path: Path, tools: tuple[str, ...] = TOOLS) -> Path:
    path.mkdir(parents=True)
    for tool in tools:
        (path / tool).write_text("")
        (path / tool).chmod(0o755)
    return path


def test_pg_bin_wins_and_a_wrong_one_is_named(tmp_path: Path) -> None:
    chosen = bin_dir(tmp_path / "custom" / "bin")
    debian = tmp_path / "debian"
    bin_dir(debian / "16" / "bin")
    assert server_binaries({"PG_BIN": str(chosen)}, roots=[debian]) == chosen
    with pytest.raises(RuntimeError, match=r"PG_BIN=.*holds no initdb"):
        server_binaries({"PG_BIN": str(tmp_path / "nothing")}, roots=[debian])


def test_the_highest_version_of_debian_or_homebrew(tmp_path: Path) -> None:
    debian, homebrew = tmp_path / "lib-postgresql", tmp_path / "opt"
    bin_dir(debian / "15" / "bin")
    bin_dir(homebrew / "postgresql@17" / "bin")
    bin_dir(homebrew / "postgresql@18" / "bin", tools=("initdb",))  # incomplete: not a server
    bin_dir(homebrew / "openssl@3" / "bin")  # not PostgreSQL's
    assert server_binaries({"PATH": ""}, roots=[debian, homebrew]) == homebrew / "postgresql@17" / "bin"
    bin_dir(debian / "19" / "bin")
    assert server_binaries({"PATH": ""}, roots=[debian, homebrew]) == debian / "19" / "bin"


def test_then_path_then_an_error_saying_how(tmp_path: Path) -> None:
    on_path = bin_dir(tmp_path / "usr-local-bin")
    assert server_binaries({"PATH": str(on_path)}, roots=[tmp_path / "none"]) == on_path
    with pytest.raises(RuntimeError, match=r"brew install postgresql@17.*PG_BIN.*Only the tests"):
        server_binaries({"PATH": str(tmp_path / "empty")}, roots=[tmp_path / "none"])
