"""The function index as the Functions host reads it at a cold start, and what that costs in imports.

``function_index.json`` is the whole index (each function's name in registration order, its function.json,
its raw bindings, its parameters and their resolved types): what ``shared/entrypoints/index.py`` declares.
A change to it is a change to the deployed app, so it is made on purpose: regenerate the file with the
snippet in ``bench.cold_start.INDEX`` and read the diff.

Importing the app and indexing it imports azure.functions and the index's own few modules, nothing else:
each function's handler, its model, pydantic, the services, the SDKs and telemetry are imported by its first
call (issue 21: a cold start at most 1.3x a bare ``import azure.functions``; bench/cold_start.py measures it).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.cold_start import INDEX

ROOT = Path(__file__).resolve().parents[2]
SNAPSHOT = Path(__file__).with_name("function_index.json")

#: The app's own modules importing the app and indexing it may import: the index and what it needs.
INDEX_MODULES = {
    "shared",
    "shared.domain",
    "shared.domain.roles",
    "shared.entrypoints",
    "shared.entrypoints.index",
    "shared.entrypoints.routes",
}
#: Third-party packages imported by a function's first call, never by the index.
LAZY_PACKAGES = ("pydantic", "pydantic_core", "opentelemetry", "azure.core", "azure.identity",
                 "azure.keyvault", "azure.data", "azure.storage", "azure.eventgrid", "psycopg")  # fmt: skip

PROBE = (
    INDEX
    + """
import sys
print(json.dumps({"index": [{"name": name, **entry} for name, entry in INDEX.items()],
                  "modules": sorted(sys.modules)}))
"""
)


@pytest.fixture(scope="module")
def cold() -> dict[str, Any]:
    """A fresh interpreter without a setting imports the app and indexes it as the host does."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"},  # nothing cached in the tree
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_the_index_is_the_one_the_app_declares(cold: dict[str, Any]) -> None:
    expected = json.loads(SNAPSHOT.read_text())
    assert [f["name"] for f in cold["index"]] == [f["name"] for f in expected]
    for got, want in zip(cold["index"], expected, strict=True):
        assert got == want, got["name"]


def test_indexing_imports_none_of_what_a_first_call_imports(cold: dict[str, Any]) -> None:
    modules = set(cold["modules"])
    own = {m for m in modules if m == "shared" or m.startswith("shared.")}
    assert own == INDEX_MODULES, "imported at index time: move it behind the function's first call"
    lazy = sorted(m for m in modules if m.startswith(LAZY_PACKAGES))
    assert lazy == [], "imported at index time: move it behind the function's first call"


def test_every_http_function_names_a_handler_and_a_model_that_exist(functions: dict[str, Any]) -> None:
    from pydantic import BaseModel

    from shared.entrypoints.routes import ROUTES

    for name in functions:
        route = ROUTES.get(name)
        if route is None:
            continue
        assert callable(route.handler()), name
        accepts = route.accepts
        assert (accepts is None) == (not route.roles), name
        assert accepts is None or issubclass(accepts, BaseModel), name


def test_the_index_names_what_the_code_names() -> None:
    from shared.adapters.storage import ROTATION_QUEUE
    from shared.entrypoints import index, rotation
    from shared.entrypoints.http import ROUTE_PARAMETERS
    from shared.entrypoints.routes import ROUTE_PARAMETER_NAMES

    assert set(ROUTE_PARAMETERS) == ROUTE_PARAMETER_NAMES
    assert index.ROTATION_QUEUE == rotation.QUEUE == ROTATION_QUEUE


def test_the_cold_start_benchmark_runs_in_a_short_form() -> None:
    """Two pairs, no trigger: the program's figures, whatever they are (no timing is asserted; the goal is
    set out of reach of any machine's noise)."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.cold_start", "--pairs", "2", "--no-triggers", "--goal", "1000"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"| app + index ({len(json.loads(SNAPSHOT.read_text()))} functions) |" in done.stdout
    assert "ratio of medians:" in done.stdout and "goal at most 1000.0x: met" in done.stdout
    assert "pair 2/2" in done.stderr
