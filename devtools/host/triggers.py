"""Background triggers: timers on their NCRONTAB schedule and queue pollers; plus the trigger payload builders
(``TimerRequest``, ``QueueMessage``, ``EventGridEvent``) shared with the admin API and the webhook."""

from __future__ import annotations

import base64
import binascii
import concurrent.futures
import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import azure.functions as func
from azure.functions.queue import QueueMessage as FunctionsQueueMessage
from azure.functions.timer import TimerRequest

from devtools.host.functions import FunctionInfo, Invoker
from devtools.host.ncrontab import CronSchedule, Schedule, monitor_disabled
from devtools.host.schedule_monitor import (
    ScheduleStatus,
    TimerStateStore,
    check_past_due,
    status_after_run,
)
from devtools.host.settings import HostConfig

if TYPE_CHECKING:
    from azure.storage.queue import QueueClient, QueueMessage

__all__ = [
    "QUEUE_API_VERSION",
    "QueuePoller",
    "TimerRunner",
    "event_grid_events",
    "queue_client_factory",
    "queue_message",
    "timer_request",
]

logger = logging.getLogger("devtools.host")

# azure-storage-queue 12.18 defaults to an API version newer than Azurite 3.35 accepts; this one both
# Azurite 3.35 and Azure Storage accept.
QUEUE_API_VERSION = "2025-11-05"

# A received message stays invisible this long and is renewed at half of it while its function runs, so a
# killed dev host hands its messages back within a minute.
_LEASE = timedelta(seconds=60)
_MIN_POLL = timedelta(milliseconds=100)
# After a stop request, in-flight queue invocations get this long before the poller gives up on them.
_STOP_GRACE = 1.5


def timer_request(
    past_due: bool = False,
    *,
    schedule: Schedule | None = None,
    status: ScheduleStatus | None = None,
) -> TimerRequest:
    """The ``func.TimerRequest`` the worker builds: ``schedule_status`` only when the timer is monitored."""
    return TimerRequest(
        past_due=past_due,
        schedule_status=status.for_function() if status is not None else None,
        schedule={"AdjustForDST": isinstance(schedule, CronSchedule)} if schedule is not None else None,
    )


def queue_message(
    body: bytes,
    *,
    message_id: str | None = None,
    dequeue_count: int = 1,
    insertion_time: datetime | None = None,
    expiration_time: datetime | None = None,
    next_visible_time: datetime | None = None,
    pop_receipt: str | None = None,
) -> FunctionsQueueMessage:
    """The ``func.QueueMessage`` the worker builds (``azure.functions.queue.QueueMessage`` has all fields)."""
    now = datetime.now(UTC)
    return FunctionsQueueMessage(  # type: ignore[no-untyped-call]  # the library's __init__ is unannotated
        id=message_id or str(uuid.uuid4()),
        body=body,
        dequeue_count=dequeue_count,
        insertion_time=insertion_time or now,
        expiration_time=expiration_time or now + timedelta(days=7),
        time_next_visible=next_visible_time or now,
        pop_receipt=pop_receipt,
    )


def event_grid_events(payload: Any) -> list[func.EventGridEvent]:
    """Event Grid schema events (or CloudEvents) from a webhook body: an array or a single object.

    Raises ValueError saying which event is malformed.
    """
    items = payload if isinstance(payload, list) else [payload]
    events: list[func.EventGridEvent] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValueError(f"event #{index} is not a JSON object")
        if "specversion" in item:
            fields = {
                "id": item.get("id"),
                "topic": item.get("source", ""),
                "subject": item.get("subject", ""),
                "event_type": item.get("type"),
                "time": item.get("time"),
                "data_version": item.get("dataversion", ""),
            }
        else:
            fields = {
                "id": item.get("id"),
                "topic": item.get("topic", ""),
                "subject": item.get("subject", ""),
                "event_type": item.get("eventType"),
                "time": item.get("eventTime"),
                "data_version": item.get("dataVersion", ""),
            }
        missing = [
            name for name in ("id", "event_type") if not isinstance(fields[name], str) or not fields[name]
        ]
        if missing:
            wanted = "id and type" if "specversion" in item else "id and eventType"
            raise ValueError(f"event #{index} lacks {wanted}")
        events.append(
            func.EventGridEvent(
                id=str(fields["id"]),
                data=item.get("data"),  # type: ignore[arg-type]  # any JSON value, as the worker passes it
                topic=str(fields["topic"] or ""),
                subject=str(fields["subject"] or ""),
                event_type=str(fields["event_type"]),
                event_time=_event_time(fields["time"], index),
                data_version=str(fields["data_version"] or ""),
            )
        )
    return events


def _event_time(value: Any, index: int) -> datetime | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise ValueError(f"event #{index}: eventTime must be an ISO 8601 string")
    try:
        return datetime.fromisoformat(value)
    except ValueError as err:
        raise ValueError(f"event #{index}: eventTime {value!r} is not ISO 8601") from err


class TimerRunner:
    """Fires one timer function on its schedule (UTC), one invocation at a time, in a daemon thread.

    With a ``state`` store and a monitored timer (see ``monitored``), it is the runtime's schedule monitor:
    at start a missed occurrence runs once with ``past_due=True`` (instead of, not besides, run_on_startup),
    and every run is recorded.
    """

    def __init__(
        self,
        function: FunctionInfo,
        schedule: Schedule,
        invoker: Invoker,
        stop: threading.Event,
        state: TimerStateStore | None = None,
    ) -> None:
        self.function = function
        self.schedule = schedule
        self._invoker = invoker
        self._stop = stop
        self._state = state if state is not None and self.monitored else None
        self._status: ScheduleStatus | None = None
        self._thread = threading.Thread(target=self._run, name=f"timer-{function.name}", daemon=True)

    @property
    def monitored(self) -> bool:
        """Whether the runtime would monitor this timer: ``use_monitor`` (default true) and a schedule that
        fires at most once a minute."""
        use_monitor = self.function.trigger.get("useMonitor", True)
        if isinstance(use_monitor, str):
            use_monitor = use_monitor.strip().lower() != "false"
        return bool(use_monitor) and not monitor_disabled(self.schedule, datetime.now(UTC))

    @property
    def monitoring(self) -> bool:
        """Whether this runner records its runs (monitored, and the host has a state directory)."""
        return self._state is not None

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        late = timedelta(0)
        if self._state is not None:
            stored = self._state.get(self.function.name)
            self._status, changed, late = check_past_due(stored, self.schedule, datetime.now(UTC))
            if changed:
                self._state.put(self.function.name, self._status)
        if late > timedelta(0) and self._status is not None:
            logger.info(
                "Function '%s' is past due on startup (its occurrence at %s was missed). Executing now.",
                self.function.name,
                self._status.next.isoformat(),
            )
            self._fire(past_due=True, reason="Timer is past due on host startup", scheduled=False)
        elif self.function.trigger.get("runOnStartup"):
            self._fire(past_due=False, reason="Timer fired on host startup (run_on_startup)", scheduled=False)
        while not self._stop.is_set():
            due = self.schedule.next_after(datetime.now(UTC))
            # Event.wait runs on the monotonic clock; re-check the wall clock so we never fire early.
            while (remaining := (due - datetime.now(UTC)).total_seconds()) > 0:
                if self._stop.wait(remaining):
                    return
            late = datetime.now(UTC) - due
            self._fire(
                past_due=late > timedelta(seconds=1),
                reason=f"Timer fired at {due.isoformat()}",
                scheduled=True,
            )

    def _fire(self, *, past_due: bool, reason: str, scheduled: bool) -> None:
        invoked_at = datetime.now(UTC)
        request = timer_request(past_due, schedule=self.schedule, status=self._status)
        # A failure is logged by the invoker; the timer keeps its schedule and, like the runtime's, records
        # the run either way.
        self._invoker.invoke_logged(self.function, request, reason)
        if self._state is not None:
            self._status = status_after_run(self.schedule, invoked_at, self._status, scheduled=scheduled)
            self._state.put(self.function.name, self._status)


QueueClientFactory = Callable[[str], "QueueClient"]


def queue_client_factory(connection: str, environ: Mapping[str, str] | None = None) -> QueueClientFactory:
    """Build QueueClients for the binding's ``connection`` the way the runtime resolves it.

    The setting ``<connection>`` (or ``AzureWebJobs<connection>``) holds a connection string; otherwise
    ``<connection>__queueServiceUri`` (or ``__accountName``) selects identity-based access through
    DefaultAzureCredential (``<connection>__clientId`` for a user-assigned identity). Raises LookupError.
    """
    env = os.environ if environ is None else environ
    name = connection or "AzureWebJobsStorage"
    from azure.storage.queue import QueueClient

    # Every poll is an HTTP request; azure-core would log each at INFO. Log the pollers' at DEBUG instead,
    # leaving the app's own SDK logging as it is.
    options: dict[str, Any] = {"api_version": QUEUE_API_VERSION, "http_logging_level": logging.DEBUG}
    conn_str = env.get(name) or env.get(f"AzureWebJobs{name}")
    if conn_str:
        # The client's default message policies do no encoding: we decode base64 ourselves, so that a
        # malformed message is seen (and fails like in the runtime) instead of breaking the receive.
        return lambda queue: QueueClient.from_connection_string(conn_str, queue, **options)
    account = env.get(f"{name}__accountName")
    service_uri = env.get(f"{name}__queueServiceUri") or (
        f"https://{account}.queue.core.windows.net" if account else None
    )
    if not service_uri:
        raise LookupError(
            f"storage connection {name!r} is not configured: set app setting {name!r} to a connection string "
            f"or {name}__queueServiceUri for identity-based access"
        )
    from azure.identity import DefaultAzureCredential

    client_id = env.get(f"{name}__clientId")
    credential = (
        DefaultAzureCredential(managed_identity_client_id=client_id)
        if client_id
        else DefaultAzureCredential()
    )
    return lambda queue: QueueClient(service_uri, queue, credential=credential, **options)


class QueuePoller:
    """Polls one queue for one function, like the runtime's queue listener.

    Raises ValueError at construction when the connection string is malformed.

    Messages are received in batches (``batchSize``) with a renewed lease and run concurrently. Success
    deletes the message; failure makes it visible again after ``visibilityTimeout``; a message whose
    ``dequeue_count`` has reached ``maxDequeueCount`` is moved to ``<queue>-poison``. Idle polling backs off
    from 100 ms to the (locally capped) ``maxPollingInterval``.
    """

    def __init__(
        self,
        function: FunctionInfo,
        queue_name: str,
        client_factory: QueueClientFactory,
        invoker: Invoker,
        config: HostConfig,
        stop: threading.Event,
    ) -> None:
        self.function = function
        self.queue_name = queue_name
        self.poison_queue_name = f"{queue_name}-poison"
        # Built here so that a malformed connection string fails at host start, naming the function.
        self._queue = client_factory(queue_name)
        self._poison = client_factory(self.poison_queue_name)
        self._invoker = invoker
        self._config = config
        self._stop = stop
        self._thread = threading.Thread(target=self._run, name=f"queue-{function.name}", daemon=True)
        self._last_error: str | None = None

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        logger.info("Queue listener for '%s' polls queue '%s'", self.function.name, self.queue_name)
        queue, poison = self._queue, self._poison
        delay = _MIN_POLL
        created = False
        while not self._stop.is_set():
            try:
                if not created:
                    _create_if_missing(queue)
                    created = True
                messages = list(
                    queue.receive_messages(
                        messages_per_page=self._config.queue_batch_size,
                        max_messages=self._config.queue_batch_size,
                        visibility_timeout=int(_LEASE.total_seconds()),
                    )
                )
                self._recovered()
            except Exception as err:
                self._failed(err)
                messages = []
                delay = self._config.queue_max_polling_interval
            if messages:
                delay = _MIN_POLL
                self._process(queue, poison, messages)
                continue
            if self._stop.wait(delay.total_seconds()):
                return
            delay = min(delay * 2, self._config.queue_max_polling_interval)

    def _recovered(self) -> None:
        if self._last_error is not None:
            logger.info("Queue listener for '%s' is polling '%s' again", self.function.name, self.queue_name)
            self._last_error = None

    def _failed(self, err: Exception) -> None:
        summary = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        if summary != self._last_error:
            logger.warning(
                "Queue listener for '%s' cannot poll '%s' (will retry): %s",
                self.function.name,
                self.queue_name,
                summary,
            )
            self._last_error = summary

    def _process(self, queue: QueueClient, poison: QueueClient, messages: list[QueueMessage]) -> None:
        receipts: dict[str, str] = {}
        running: dict[concurrent.futures.Future[bool], QueueMessage] = {}
        for message in messages:
            receipts[message.id] = str(message.pop_receipt)
            if (message.dequeue_count or 1) > self._config.queue_max_dequeue_count:
                # Dequeued too often already (e.g. a host died while running it): straight to poison.
                self._settle(queue, poison, message, receipts, succeeded=False)
                continue
            running[self._start_invocation(message)] = message
        last_renewal = time.monotonic()
        stop_deadline: float | None = None
        while running:
            done, _ = concurrent.futures.wait(
                running, timeout=0.25, return_when=concurrent.futures.FIRST_COMPLETED
            )
            for future in done:
                self._settle(queue, poison, running.pop(future), receipts, succeeded=future.result())
            now = time.monotonic()
            if self._stop.is_set():
                stop_deadline = stop_deadline or now + _STOP_GRACE
                if running and now >= stop_deadline:
                    logger.warning(
                        "Stopping with %d '%s' invocation(s) still running; "
                        "their messages reappear when the lease ends",
                        len(running),
                        self.function.name,
                    )
                    return
            elif running and now - last_renewal >= _LEASE.total_seconds() / 2:
                self._renew(queue, list(running.values()), receipts)
                last_renewal = now

    def _start_invocation(self, message: QueueMessage) -> concurrent.futures.Future[bool]:
        future: concurrent.futures.Future[bool] = concurrent.futures.Future()

        def run() -> None:
            future.set_result(self._invoke(message))

        threading.Thread(target=run, name=f"queue-{self.function.name}-{message.id}", daemon=True).start()
        return future

    def _invoke(self, message: QueueMessage) -> bool:
        try:
            body = _decode(str(message.content or ""), self._config.queue_message_encoding)
        except ValueError:
            logger.error(
                "Message %s on queue '%s' is not valid base64 (host.json queues.messageEncoding is "
                "'base64'); failing it like the runtime does",
                message.id,
                self.queue_name,
            )
            return False
        value = queue_message(
            body,
            message_id=message.id,
            dequeue_count=message.dequeue_count or 1,
            insertion_time=message.inserted_on,
            expiration_time=message.expires_on,
            next_visible_time=message.next_visible_on,
            pop_receipt=message.pop_receipt,
        )
        reason = f"New queue message detected on '{self.queue_name}'."
        return self._invoker.invoke_logged(self.function, value, reason)

    def _renew(self, queue: QueueClient, pending: list[QueueMessage], receipts: dict[str, str]) -> None:
        for message in pending:
            try:
                updated = queue.update_message(
                    message.id, receipts[message.id], visibility_timeout=int(_LEASE.total_seconds())
                )
                receipts[message.id] = str(updated.pop_receipt)
            except Exception as err:
                logger.warning("Could not renew the lease of message %s: %s", message.id, err)

    def _settle(
        self,
        queue: QueueClient,
        poison: QueueClient,
        message: QueueMessage,
        receipts: dict[str, str],
        *,
        succeeded: bool,
    ) -> None:
        receipt = receipts.pop(message.id)
        try:
            if succeeded:
                queue.delete_message(message.id, receipt)
            elif (message.dequeue_count or 1) >= self._config.queue_max_dequeue_count:
                logger.warning(
                    "Message %s has reached MaxDequeueCount of %d; moving it to queue '%s'",
                    message.id,
                    self._config.queue_max_dequeue_count,
                    self.poison_queue_name,
                )
                _create_if_missing(poison)
                poison.send_message(message.content)
                queue.delete_message(message.id, receipt)
            else:
                queue.update_message(
                    message.id,
                    receipt,
                    visibility_timeout=int(self._config.queue_visibility_timeout.total_seconds()),
                )
        except Exception as err:
            logger.warning("Could not settle message %s on '%s': %s", message.id, self.queue_name, err)


def _decode(content: str, encoding: str) -> bytes:
    if encoding == "none":
        return content.encode("utf-8")
    try:
        return base64.b64decode(content.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as err:
        raise ValueError("not base64") from err


def _create_if_missing(queue: QueueClient) -> None:
    from azure.core.exceptions import ResourceExistsError

    with contextlib.suppress(ResourceExistsError):
        queue.create_queue()
