"""A local Event Grid topic endpoint that keeps what it receives (development and tests only).

The real ``EventGridPublisherClient`` publishes CloudEvents to it over loopback HTTP with a topic key
(``aeg-sas-key``) or a bearer token. ``GET /_sink/events`` lists what arrived; ``DELETE /_sink/events``
clears it. Run standalone with ``python -m devtools.eventgrid_sink --port 8790 --key local-key``, then set
``EVENT_GRID_TOPIC_ENDPOINT=http://127.0.0.1:8790/api/events`` and ``EVENT_GRID_TOPIC_KEY=local-key``.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from shared.config import is_loopback_host

CLOUDEVENTS_BATCH = "application/cloudevents-batch+json"


class EventGridSink:
    """An in-process topic endpoint on a free loopback port."""

    def __init__(self, key: str | None = "local-topic-key", host: str = "127.0.0.1", port: int = 0) -> None:
        if not is_loopback_host(host):
            raise ValueError("the Event Grid sink binds loopback only")
        self.key = key
        self.events: list[dict[str, Any]] = []
        self.raw: list[bytes] = []
        self.rejected = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, name="eventgrid-sink", daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        name = host.decode() if isinstance(host, bytes) else host  # typeshed allows bytes here
        return f"http://{name}:{port}/api/events"

    def start(self) -> EventGridSink:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> EventGridSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _reply(self, status: int, document: Any = None) -> None:
                body = b"" if document is None else json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/_sink/events":
                    return self._reply(404, {"error": "not found"})
                with sink._lock:
                    return self._reply(200, list(sink.events))

            def do_DELETE(self) -> None:
                with sink._lock:
                    sink.events.clear()
                    sink.raw.clear()
                self._reply(204)

            def do_POST(self) -> None:
                if self.path.split("?")[0] != "/api/events":
                    return self._reply(404, {"error": {"code": "NotFound"}})
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                key_ok = sink.key is None or self.headers.get("aeg-sas-key") == sink.key
                bearer = (self.headers.get("Authorization") or "").startswith("Bearer ")
                if not (key_ok or bearer):
                    with sink._lock:
                        sink.rejected += 1
                    return self._reply(401, {"error": {"code": "Unauthorized", "message": "bad topic key"}})
                if (self.headers.get("Content-Type") or "").split(";")[0] != CLOUDEVENTS_BATCH:
                    return self._reply(
                        400, {"error": {"code": "BadRequest", "message": "expected CloudEvents"}}
                    )
                try:
                    events = json.loads(body)
                except ValueError:
                    return self._reply(400, {"error": {"code": "BadRequest", "message": "invalid JSON"}})
                if not isinstance(events, list) or not all(
                    isinstance(e, dict) and {"id", "source", "type", "specversion"} <= e.keys()
                    for e in events
                ):
                    return self._reply(400, {"error": {"code": "BadRequest", "message": "not CloudEvents"}})
                with sink._lock:
                    sink.raw.append(body)
                    sink.events.extend(events)
                return self._reply(200)

        return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.eventgrid_sink",
        description="Local Event Grid topic endpoint that keeps the CloudEvents it receives. "
        "Development only.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind")
    parser.add_argument("--port", type=int, default=8790, help="port of the topic endpoint")
    parser.add_argument("--key", default="local-topic-key", help="expected aeg-sas-key")
    args = parser.parse_args(argv)
    try:
        sink = EventGridSink(args.key, args.host, args.port).start()
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"eventgrid-sink ready {sink.endpoint}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        sink.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
