"""Waiting for something another process or thread does: poll until it holds, or fail saying what was
awaited and what was seen last. No test waits a fixed time instead (a guess that is slow when right and
racy when wrong); to show that something did *not* happen, wait for a marker that comes after it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")


def eventually(
    probe: Callable[[], T],
    what: str,
    *,
    timeout: float = 30,
    interval: float = 0.05,
    until: Callable[[T], object] = bool,
) -> T:
    """Call ``probe`` until ``until`` holds for what it returns (by default: until it is truthy), and
    return that value. After ``timeout`` seconds the test fails naming ``what`` and the last value seen.
    An exception from ``probe`` is not caught: a probe that cannot answer yet must say so by its value."""
    deadline = time.monotonic() + timeout
    while True:
        seen = probe()
        if until(seen):
            return seen
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}; last seen: {seen!r:.2000}")
        time.sleep(interval)
