"""Decommission and recovery over in-memory fakes: a soft delete of a managed secret (never of the
service's own, an unmanaged one, or one whose rotation or revocation is in flight), on record and notified,
and its recovery with every version."""

from __future__ import annotations

from datetime import timedelta

import pytest

from shared.domain.audit import Action, Actor, ActorType, Result
from shared.domain.errors import Conflict, NotFound
from shared.domain.policy import RotationPolicy, SecretKind
from shared.domain.revocation import Reason, Severity
from shared.services import revocation, rotation
from shared.services.audit import AuditUnavailable
from shared.services.revocation import NewRequest
from tests.world import World

NAME = "retired-partner-key"
OPERATOR = Actor("olga", ActorType.USER)


@pytest.fixture
def world() -> World:
    world = World(name=NAME)
    tags = RotationPolicy(SecretKind.API_KEY, timedelta(days=30)).to_tags()
    world.secret(value="v1", tags=tags, content_type=None)
    world.secret(value="v2", tags=tags, content_type=None)
    return world


def delete(world: World, name: str = NAME) -> None:
    world.delete_secret(name, justification="partner offboarded", actor=OPERATOR)


def recover(world: World, name: str = NAME) -> None:
    world.recover_secret(name, actor=OPERATOR)


def test_delete_is_soft_recorded_and_notified_and_recover_brings_it_back(world: World) -> None:
    delete(world)
    assert NAME not in world.store.secrets and NAME in world.store.deleted
    records = [(e.action, e.result) for e in world.log.events]
    assert records == [(Action.SECRET_DELETED, Result.INTENT), (Action.SECRET_DELETED, Result.SUCCESS)]
    assert world.log.events[0].details["justification"] == "partner offboarded"
    assert [n.type for n in world.publisher.sent] == ["SecretLifecycle.SecretDeleted"]
    with pytest.raises(NotFound):
        delete(world)
    recover(world)
    assert world.store.get_value(NAME).value == "v2" and len(world.store.list_versions(NAME)) == 2
    assert world.publisher.sent[-1].type == "SecretLifecycle.SecretRecovered"
    with pytest.raises(NotFound):  # not deleted any more
        recover(world)


def test_never_the_services_own_nor_an_unmanaged_secret(world: World) -> None:
    world.store.set_value("audit-hmac-key", "k", content_type=None, tags={})
    world.store.set_value("someone-elses", "x", content_type=None, tags={})
    with pytest.raises(Conflict):
        delete(world, "audit-hmac-key")
    with pytest.raises(rotation.NotManaged):
        delete(world, "someone-elses")
    with pytest.raises(Conflict):
        recover(world, "audit-hmac-key")
    assert world.store.deleted == {}


def test_refused_while_a_rotation_or_a_revocation_is_in_flight(world: World) -> None:
    stored = world.states.get(rotation.PARTITION, NAME)
    progress, etag = world.acquire(rotation.PROMOTING, NAME, stored)
    with pytest.raises(rotation.Busy):
        delete(world)
    world.release(progress, etag, name=NAME, new_version=None)

    peers = world.revocations
    made = revocation.request(
        peers, NewRequest(NAME, Reason.MANUAL_REQUEST, Severity.HIGH, "why"), Actor("alice", ActorType.USER)
    )
    revocation.approve(peers, made.id, Actor("bob", ActorType.USER), None)
    crashed = world.store.update_properties

    def dies(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # the execution's process dies mid-way: the request stays executing

    world.store.update_properties = dies  # type: ignore[assignment,method-assign]
    with pytest.raises(KeyboardInterrupt):
        revocation.execute(peers, made.id, Actor("dave", ActorType.USER))
    world.store.update_properties = crashed  # type: ignore[method-assign]
    world.clock.advance(rotation.LEASE + timedelta(seconds=1))  # the secret's lease ran out, not the request
    with pytest.raises(Conflict, match="being executed"):
        delete(world)
    assert world.store.deleted == {}


def test_nothing_is_deleted_when_the_audit_is_down(world: World) -> None:
    world.log.fails = lambda event: True  # type: ignore[assignment,misc]
    with pytest.raises(AuditUnavailable):
        delete(world)
    assert world.store.deleted == {} and world.store.get_value(NAME).value == "v2"


def test_a_vault_refusal_is_recorded_as_a_failure(world: World) -> None:
    world.store.denied.add("delete")
    with pytest.raises(Exception, match="forbidden"):
        delete(world)
    assert [e.result for e in world.log.events] == [Result.INTENT, Result.FAILURE]
    assert world.states.get(rotation.PARTITION, NAME).state["step"] == "idle"  # type: ignore[union-attr]


def test_a_deletion_whose_success_record_failed_says_it_was_made(world: World) -> None:
    from shared.domain.audit import Result as R
    from shared.domain.errors import OutcomeNotRecorded

    world.log.fails = lambda event: event.result == R.SUCCESS  # type: ignore[assignment,misc]
    with pytest.raises(OutcomeNotRecorded, match="was deleted"):
        delete(world)
    assert NAME in world.store.deleted
    with pytest.raises(OutcomeNotRecorded, match="was recovered"):
        recover(world)
