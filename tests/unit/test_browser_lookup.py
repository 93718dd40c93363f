"""devtools.browser finds Chromium as the Makefile's ``browser`` prerequisite expects: CHROMIUM first (and
refused when it is not an executable), then the names on PATH, else an error saying how to install it."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from devtools.browser import chromium


def _executable(folder: Path, name: str) -> Path:
    path = folder / name
    path.write_text("#!/bin/sh\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def test_chromium_is_the_setting_then_the_path(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    chrome = _executable(bin_dir, "google-chrome")
    assert chromium({"PATH": str(bin_dir)}) == chrome
    debian = _executable(bin_dir, "chromium")
    assert chromium({"PATH": str(bin_dir)}) == debian  # Debian's name first
    mine = _executable(tmp_path, "my-chrome")
    assert chromium({"CHROMIUM": str(mine), "PATH": str(bin_dir)}) == mine
    with pytest.raises(RuntimeError, match="not an executable"):
        chromium({"CHROMIUM": str(tmp_path / "missing"), "PATH": str(bin_dir)})


def test_without_one_the_error_says_how_to_install_it(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="apt-get install chromium"):
        chromium({"PATH": str(tmp_path)}, mac=tmp_path / "Google Chrome")
