"""One identity rule everywhere a rule is about people: ids compare in one canonical form (NFKC,
case-folded, trimmed; GUIDs in their canonical spelling), ids with invisible, control or unassigned
characters are refused at parse, every refusal by such a rule is on record, and the suspicious-activity
scan counts outcomes, never the intents before them."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.domain.audit import Action, Actor, ActorType, AuditEvent, Result
from shared.domain.errors import InvalidTransition, NotPermitted
from shared.domain.findings import StoredFinding
from shared.domain.identity import (
    PrincipalError,
    canonical_identity,
    encode_principal,
    parse_principal,
    same_identity,
)
from shared.domain.revocation import Decision, Severity, Status
from shared.domain.scan_rules import ScanRules
from shared.services import revocation
from shared.services.suspicious import find_suspicious
from tests.fakes import FixedClock, InMemoryFindings
from tests.unit.test_revocation import BOB, request, revocation_world
from tests.world import World

GUID = "3f2c9a1e-4b7d-4e8a-9c1f-0a2b3c4d5e6f"


def full_width(text: str) -> str:
    """The full-width spelling of printable ASCII (NFKC maps it back)."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


names = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40)


@settings(max_examples=200, deadline=None)
@given(name=names, spaces=st.tuples(st.sampled_from(["", " ", "\u3000", "  "]), st.sampled_from(["", " "])))
def test_spellings_of_one_name_are_one_identity(name: str, spaces: tuple[str, str]) -> None:
    for variant in (name.upper(), name.lower(), full_width(name), spaces[0] + name + spaces[1]):
        assert same_identity(variant, name), variant
        parse_principal(encode_principal(variant, []))  # and each is accepted at parse


@settings(max_examples=100, deadline=None)
@given(guid=st.uuids())
def test_spellings_of_one_guid_are_one_identity(guid: uuid.UUID) -> None:
    text = str(guid)
    for variant in (text.upper(), "{" + text + "}", guid.hex, guid.hex.upper(), f"urn:uuid:{text}"):
        assert canonical_identity(variant) == text, variant


@settings(max_examples=200, deadline=None)
@given(
    name=names,
    hidden=st.sampled_from(
        ["\u200b", "\u200d", "\u2060", "\ufeff", "\u202e", "\x00", "\x1b", "\x7f", "\U000e0001", "\u0378"]
    ),
    at=st.integers(min_value=0, max_value=40),
)
def test_ids_with_invisible_or_control_characters_are_refused_at_parse(
    name: str, hidden: str, at: int
) -> None:
    at = min(at, len(name))
    with pytest.raises(PrincipalError, match="U\\+"):
        parse_principal(encode_principal(name[:at] + hidden + name[at:], []))


def test_a_blank_id_is_refused() -> None:
    with pytest.raises(PrincipalError):
        parse_principal(encode_principal("   ", []))


def test_distinct_people_stay_distinct() -> None:
    assert not same_identity("alice", "alicf")
    assert not same_identity(GUID, GUID.replace("3f", "3e", 1))


# -- the rules that use it --------------------------------------------------------------------------


def _user(raw: str) -> Actor:
    return Actor(raw, ActorType.USER)


@pytest.mark.parametrize("spelling", ["Alice", "ALICE", " alice", "alice ", "  alice ", full_width("alice")])
def test_the_requester_cannot_approve_in_another_spelling_and_the_refusal_is_on_record(spelling: str) -> None:
    world = revocation_world()
    requested = request(world, Severity.LOW)
    with pytest.raises(NotPermitted):
        revocation.approve(world.revocations, requested.id, _user(spelling), None)
    [denied] = [e for e in world.records(Action.REVOCATION_APPROVED) if e.result == Result.DENIED]
    assert denied.actor.id == spelling and denied.details["revocation_id"] == requested.id
    assert denied.details["rule"] == "NotPermitted"
    assert revocation.get(world.states, requested.id).approvals == ()


@pytest.mark.parametrize(
    ("first", "second"),
    [(GUID, GUID.upper()), (GUID, "{" + GUID + "}"), (GUID, GUID.replace("-", "")), ("bob", "BOB")],
)
def test_one_approver_in_two_spellings_counts_once_and_the_refusal_is_on_record(
    first: str, second: str
) -> None:
    world = revocation_world()
    requested = request(world, Severity.LOW)
    revocation.approve(world.revocations, requested.id, _user(first), None)
    with pytest.raises(InvalidTransition, match="approved it already"):
        revocation.approve(world.revocations, requested.id, _user(second), None)
    denied = [e for e in world.records(Action.REVOCATION_APPROVED) if e.result == Result.DENIED]
    assert [(e.actor.id, e.details["rule"]) for e in denied] == [(second, "AlreadyApproved")]
    stored = revocation.get(world.states, requested.id)
    assert (len(stored.approvals), stored.status.value) == (1, "pending")


def test_a_self_review_of_a_break_glass_is_refused_on_record() -> None:
    world = revocation_world()
    done = request(world, Severity.CRITICAL, break_glass=True)
    with pytest.raises(NotPermitted):
        revocation.review(world.revocations, done.id, _user(full_width("ALICE")), "looks fine")
    [denied] = [e for e in world.records(Action.REVIEWED) if e.result == Result.DENIED]
    assert denied.details["revocation_id"] == done.id
    assert revocation.get(world.states, done.id).review_required
    revocation.review(world.revocations, done.id, BOB, "checked")  # someone else may


def test_the_audit_trail_counts_approvers_as_people() -> None:
    """Execution counts distinct approvers on record in the canonical form, so two spellings of one
    approver can never make up the second approval, whatever the stored row says."""
    world = revocation_world()
    requested = request(world, Severity.LOW)
    for spelling in (GUID, "{" + GUID.upper() + "}"):  # forged into the trail as two approvals
        world.trail.record(
            Action.REVOCATION_APPROVED,
            secret_name=requested.secret_name,
            actor=_user(spelling),
            details={"revocation_id": requested.id},
        )
    stored = world.states.get(revocation.PARTITION, requested.id)
    assert stored is not None
    approved = revocation.get(world.states, requested.id)
    forged = dataclasses.replace(
        approved,
        status=Status.APPROVED,
        approvals=(Decision(GUID, world.clock.now()), Decision("{" + GUID + "}", world.clock.now())),
    )
    world.states.replace(revocation.PARTITION, requested.id, forged.to_state(), stored.etag)
    with pytest.raises(InvalidTransition, match="holds 1 of 2 approvals"):
        revocation.execute(world.revocations, requested.id, _user("dave"))
    assert all(world.enabled().values())


@pytest.mark.parametrize("spelling", ["MALLORY", " mallory  ", full_width("mallory")])
def test_nobody_reviews_a_finding_about_themselves_in_any_spelling(spelling: str) -> None:
    world = World(findings=InMemoryFindings)
    world.findings.claim(
        StoredFinding(id="f1", rule="break_glass", time=world.clock.now(), details={"actors": ["mallory"]})
    )
    with pytest.raises(NotPermitted):
        world.review_finding("f1", reviewer=_user(spelling), note=None, correlation_id=None)
    assert [e.result for e in world.records(Action.REVIEWED)] == [Result.DENIED]
    found = world.findings.get("f1")
    assert found is not None and found.status == "open"


# -- findings count outcomes ------------------------------------------------------------------------


def _event(action: Action, result: Result, actor: str, minutes: int) -> AuditEvent:
    clock = FixedClock()
    return AuditEvent(
        action=action,
        vault="fleet",
        time=clock.now() + timedelta(minutes=minutes),
        result=result,
        actor=_user(actor),
        secret_name="dispatch-api-key",
        details={"revocation_id": f"r{minutes}"},
    )


def test_one_break_glass_is_one_finding() -> None:
    events = [
        _event(Action.BREAK_GLASS, Result.INTENT, "alice", 1),
        _event(Action.BREAK_GLASS, Result.SUCCESS, "alice", 1),
    ]
    found = find_suspicious(events, ScanRules())
    assert [f.rule for f in found] == ["break_glass"]


def test_two_requests_are_two_not_four() -> None:
    events = [
        _event(Action.REVOCATION_REQUESTED, result, "alice", minute)
        for minute in (1, 2)
        for result in (Result.INTENT, Result.SUCCESS)
    ]
    assert find_suspicious(events, ScanRules()) == []
    third = [
        _event(Action.REVOCATION_REQUESTED, Result.SUCCESS, spelling, 3)
        for spelling in ("ALICE",)  # the same person, spelled otherwise: the third request
    ]
    [burst] = find_suspicious(events + third, ScanRules())
    assert (burst.rule, burst.count, burst.actors) == ("revocation_request_burst", 3, ("alice",))
