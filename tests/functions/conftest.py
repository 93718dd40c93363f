"""Functions tier: the registered functions of the real app, called with real azure.functions objects.

``app.get_functions()`` may be called only once per FunctionApp, so the session fixture calls it once and
every test looks functions up by name.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from shared.bootstrap import Container, set_container


@pytest.fixture(scope="session")
def functions() -> dict[str, Any]:
    import function_app

    return {f.get_function_name(): f for f in function_app.app.get_functions()}


@pytest.fixture
def use_container() -> Iterator[Any]:
    """Install a container for one test and restore the default afterwards."""

    def install(container: Container) -> Container:
        set_container(container)
        return container

    yield install
    set_container(None)
