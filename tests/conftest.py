"""Shared test configuration. Each tier has its own conftest with its fixtures; ``functions`` is here
because ``app.get_functions()`` may be called only once per app, and the tiers run in one process."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """No test may skip: a missing peer or tool is a failure with its reason (DESIGN rule 6), so a green
    run always means every test ran."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped tests are not allowed in this suite: {report.longrepr}"


@pytest.fixture(scope="session")
def functions() -> dict[str, Any]:
    """The app's registered functions by name (the functions tier; an integration test calling a trigger
    in-process)."""
    import function_app

    return {f.get_function_name(): f for f in function_app.app.get_functions()}
