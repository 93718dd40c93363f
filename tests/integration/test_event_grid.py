"""Consumer notifications through the real azure-eventgrid client to a local topic endpoint."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest

from devtools.eventgrid_sink import EventGridSink
from shared.adapters.event_grid import EventGridPublisher, LoggingPublisher
from shared.bootstrap import Container
from shared.config import Settings
from shared.domain.errors import DependencyUnavailable
from shared.domain.notifications import Notification

NOW = datetime(2026, 11, 29, 9, 30, tzinfo=UTC)


def test_cloud_events_arrive_with_the_topic_key() -> None:
    with EventGridSink(key="topic-key") as sink:
        container = Container(
            Settings({"EVENT_GRID_TOPIC_ENDPOINT": sink.endpoint, "EVENT_GRID_TOPIC_KEY": "topic-key"})
        )
        publisher = container.publisher
        assert isinstance(publisher, EventGridPublisher)
        publisher.publish(
            [Notification("SecretLifecycle.SecretRotated", "db-password", NOW, {"version": "v2"}, id="evt-1")]
        )
        [event] = sink.events
    assert event["id"] == "evt-1"
    assert event["type"] == "SecretLifecycle.SecretRotated"
    assert event["source"] == "/secret-lifecycle"
    assert event["subject"] == "db-password"
    assert event["data"] == {"version": "v2"}
    assert event["time"].startswith("2026-11-29T09:30:00")


def test_a_refused_key_is_a_dependency_failure() -> None:
    with EventGridSink(key="right") as sink:
        container = Container(
            Settings({"EVENT_GRID_TOPIC_ENDPOINT": sink.endpoint, "EVENT_GRID_TOPIC_KEY": "wrong"})
        )
        with pytest.raises(DependencyUnavailable) as err:
            container.publisher.publish([Notification("T", "s", NOW)])
        assert sink.events == []
        assert sink.rejected >= 1
    assert err.value.dependency == "event_grid"


def test_no_topic_means_logged_not_sent(caplog: pytest.LogCaptureFixture) -> None:
    publisher = Container(Settings({})).publisher
    assert isinstance(publisher, LoggingPublisher)
    with caplog.at_level(logging.INFO):
        publisher.publish([Notification("SecretLifecycle.SecretRotated", "api-key", NOW, {"version": "v3"})])
    assert "not sent" in caplog.text
    assert "api-key" in caplog.text
