"""A small Functions app the dev host tests serve (tests/integration/test_dev_host.py). Not product code.

Non-HTTP functions append one JSON line per invocation to a file in ``DEVHOST_MARKER_DIR`` named after the
function, so a test can observe what ran and with which input.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


def _record(name: str, **fields: Any) -> None:
    marker = Path(os.environ["DEVHOST_MARKER_DIR"]) / f"{name}.jsonl"
    with marker.open("a", encoding="utf-8") as file:
        file.write(json.dumps(fields, default=str) + "\n")


@app.route(route="greet/{name}/{count:int}/{*rest}")
def greet(req: func.HttpRequest) -> func.HttpResponse:
    document = {
        "method": req.method,
        "url": req.url,
        "route_params": dict(req.route_params),
        "params": dict(req.params),
        "header": req.headers.get("x-sample"),
        "body": req.get_body().decode("utf-8"),
        "greeting": os.environ.get("DEVHOST_GREETING"),
        "empty_in_environment": os.environ.get("DEVHOST_EMPTY_IN_ENVIRONMENT"),
        "environment": os.environ.get("AZURE_FUNCTIONS_ENVIRONMENT"),
    }
    return func.HttpResponse(
        json.dumps(document), mimetype="application/json", headers={"X-Handled-By": "greet"}
    )


@app.route(route="items/{id:int}", methods=["GET"])
def get_item(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(f"item {int(req.route_params['id'])}", status_code=200)


@app.route(route="items/new", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def create_item(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(req.get_body(), status_code=201, mimetype="application/octet-stream")


@app.route(route="echo", methods=["POST"])
async def echo(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    document = {
        "body": req.get_json(),
        "function_name": context.function_name,
        "invocation_id": context.invocation_id,
    }
    return func.HttpResponse(json.dumps(document), mimetype="application/json")


@app.route(route="boom")
def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("the sample function failed on purpose")


@app.function_name("DefaultRoute")
@app.route()
def default_route(req: func.HttpRequest) -> str:
    return "default route"


@app.timer_trigger(schedule="*/2 * * * * *", arg_name="timer", run_on_startup=True)
def tick(timer: func.TimerRequest) -> None:
    _record("tick", past_due=timer.past_due)


@app.timer_trigger(schedule="%DEVHOST_YEARLY_SCHEDULE%", arg_name="timer")
def yearly(timer: func.TimerRequest, context: func.Context) -> None:
    _record("yearly", past_due=timer.past_due, function_name=context.function_name)


@app.queue_trigger(arg_name="msg", queue_name="%DEVHOST_QUEUE%", connection="DEVHOST_STORAGE")
def record_message(msg: func.QueueMessage) -> None:
    _record("record_message", body=msg.get_body().decode("utf-8"), dequeue_count=msg.dequeue_count, id=msg.id)


@app.queue_trigger(arg_name="msg", queue_name="%DEVHOST_FAILING_QUEUE%", connection="DEVHOST_STORAGE")
async def always_fails(msg: func.QueueMessage) -> None:
    _record("always_fails", body=msg.get_body().decode("utf-8"), dequeue_count=msg.dequeue_count)
    raise ValueError("this message can never be processed")


@app.event_grid_trigger(arg_name="event")
def on_event(event: func.EventGridEvent) -> None:
    _record(
        "on_event",
        id=event.id,
        subject=event.subject,
        event_type=event.event_type,
        event_time=event.event_time.isoformat() if event.event_time else None,
        data=event.get_json(),
    )
    if event.subject == "fail":
        raise RuntimeError("the sample event handler failed on purpose")


@app.blob_trigger(arg_name="blob", path="samples/{name}", connection="DEVHOST_STORAGE")
def unsupported_blob(blob: func.InputStream) -> None:
    """Not supported by the dev host: it must be skipped with a warning."""


@app.route(route="with-output")
@app.queue_output(arg_name="out", queue_name="outbox", connection="DEVHOST_STORAGE")
def with_output(req: func.HttpRequest, out: func.Out[str]) -> str:
    """An output binding: not supported by the dev host, skipped with a warning."""
    out.set("hello")
    return "sent"
