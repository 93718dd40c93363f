"""Integration tier: real SDK clients against real peers, started here on free ports.

A peer that cannot start is a test failure with its output, never a skip.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.azurite import AzuriteProcess


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def azurite() -> Iterator[AzuriteProcess]:
    try:
        proc = AzuriteProcess.start()
    except RuntimeError as err:
        pytest.fail(f"Azurite could not start (run `make install`?): {err}", pytrace=False)
    yield proc
    proc.stop()
