"""Headless Chromium for the tests that look at a page as a browser renders it (the compliance report).

``chromium()`` finds the browser: ``CHROMIUM`` when set, else Debian's ``chromium`` (``/usr/bin/chromium``),
``chromium-browser``, ``google-chrome`` on ``PATH``, else Google Chrome on macOS. ``render`` opens a local
file in a fresh profile with the network-free flags (no background connections, no component updates)
and writes a screenshot and a PDF of it. ``python -m devtools.browser`` prints the path, or says how to
install it and exits 1 (``make test`` installs Debian's package when it runs as root).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_MAC = Path("/Applications/Google Chrome.app/Contents/MacOS/Google Chrome")
#: Flags that keep a headless run off the network and quick to start (as root it needs --no-sandbox).
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def chromium(env: Mapping[str, str] | None = None, mac: Path = _MAC) -> Path:
    """The browser's executable. Raises RuntimeError saying how to install it."""
    env = os.environ if env is None else env
    chosen = env.get("CHROMIUM", "").strip()
    if chosen:
        if not os.access(chosen, os.X_OK):
            raise RuntimeError(f"CHROMIUM={chosen} is not an executable")
        return Path(chosen)
    for name in _NAMES:
        found = shutil.which(name, path=env.get("PATH"))
        if found:
            return Path(found)
    if mac.exists():
        return mac
    raise RuntimeError(
        "Chromium is needed by the tests that render the compliance report: install Debian's chromium "
        "package (apt-get install chromium), Homebrew's (brew install --cask chromium), or set CHROMIUM "
        "to a Chromium or Chrome executable"
    )


def render(page: Path, screenshot: Path, pdf: Path, *, width: int = 1280, height: int = 2400) -> None:
    """Render the local HTML file ``page`` into a PNG ``screenshot`` and a printed ``pdf`` (A4, as its
    print rules say). Raises RuntimeError with the browser's output when either is not written."""
    browser = chromium()
    for args in (
        [f"--screenshot={screenshot}", f"--window-size={width},{height}"],
        [f"--print-to-pdf={pdf}", "--no-pdf-header-footer"],
    ):
        with tempfile.TemporaryDirectory() as profile:
            # An argument list, no shell; the executable is the browser found above.
            done = subprocess.run(
                [str(browser), *FLAGS, f"--user-data-dir={profile}", *args, page.resolve().as_uri()],
                capture_output=True, text=True, timeout=120, check=False,
            )  # fmt: skip
        written = Path(args[0].split("=", 1)[1])
        if done.returncode != 0 or not written.exists():
            raise RuntimeError(
                f"{browser} did not write {written.name}: {(done.stderr or done.stdout)[-2000:]}"
            )


def main() -> int:
    try:
        print(chromium())
    except RuntimeError as err:
        print(err, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
