"""Timers for the dev host's schedule monitor tests (``--state-dir``): each run appends a JSON line to
``DEVHOST_MARKER_DIR/<function>.jsonl`` with ``past_due`` and the ``schedule_status`` it was given."""

from __future__ import annotations

import json
import os
from pathlib import Path

import azure.functions as func

app = func.FunctionApp()

YEARLY = "0 0 0 1 1 *"


def _record(name: str, timer: func.TimerRequest) -> None:
    marker = Path(os.environ["DEVHOST_MARKER_DIR"]) / f"{name}.jsonl"
    with marker.open("a", encoding="utf-8") as file:
        file.write(json.dumps({"past_due": timer.past_due, "status": timer.schedule_status}) + "\n")


@app.timer_trigger(schedule=YEARLY, arg_name="timer")
def missed(timer: func.TimerRequest) -> None:
    _record("missed", timer)


@app.timer_trigger(schedule=YEARLY, arg_name="timer", run_on_startup=True)
def missed_on_startup(timer: func.TimerRequest) -> None:
    _record("missed_on_startup", timer)


@app.timer_trigger(schedule=YEARLY, arg_name="timer", use_monitor=False)
def unmonitored(timer: func.TimerRequest) -> None:
    _record("unmonitored", timer)


@app.timer_trigger(schedule="*/30 * * * * *", arg_name="timer")
def frequent(timer: func.TimerRequest) -> None:
    """Fires twice a minute: the runtime does not monitor it."""
    _record("frequent", timer)
