"""Consumer notifications as CloudEvents on an Event Grid topic; or, with no topic configured, in the log."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from azure.core.exceptions import AzureError
from azure.core.messaging import CloudEvent
from azure.eventgrid import EventGridPublisherClient

from shared.adapters.azure_errors import translate
from shared.domain.notifications import EVENT_SOURCE, Notification

logger = logging.getLogger(__name__)

DEPENDENCY = "event_grid"


def to_cloud_event(notification: Notification) -> CloudEvent[dict[str, Any]]:
    return CloudEvent(
        source=EVENT_SOURCE,
        type=notification.type,
        subject=notification.subject,
        id=notification.id,
        time=notification.time,
        data=dict(notification.data),
        datacontenttype="application/json",
    )


class EventGridPublisher:
    """Publisher on an Event Grid topic (CloudEvents 1.0 schema)."""

    def __init__(self, client: EventGridPublisherClient) -> None:
        self._client = client

    def publish(self, notifications: Sequence[Notification]) -> None:
        if not notifications:
            return
        try:
            self._client.send([to_cloud_event(n) for n in notifications])
        except AzureError as err:
            raise translate(DEPENDENCY, err) from err
        for notification in notifications:
            logger.info(
                "notified %s about %s (event %s)", notification.type, notification.subject, notification.id
            )


class LoggingPublisher:
    """EVENT_GRID_TOPIC_ENDPOINT unset (local development): log what would be sent, send nothing."""

    def publish(self, notifications: Sequence[Notification]) -> None:
        for notification in notifications:
            logger.info(
                "notification (no topic configured, not sent): %s subject=%s id=%s",
                notification.type,
                notification.subject,
                notification.id,
            )
