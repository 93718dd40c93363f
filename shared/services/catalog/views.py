"""The managed secrets as operators read them: one page of them, and everything known about one
secret's rotation (its policy, its state, its last rotation and failure, a stall). Never a value."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from shared.domain.audit import Action, AuditQuery, Result
from shared.domain.errors import (
    NotFound,
    SecretDisabled,
)
from shared.domain.policy import (
    MANAGED_BY_TAG,
    PolicyError,
    RotationPolicy,
)
from shared.domain.secrets import NAME_PATTERN, SecretItem, SecretVersion, validate_name
from shared.domain.state import Versioned
from shared.domain.targets import is_reserved
from shared.ports import StateStore
from shared.services.audit import query_audit
from shared.services.audit.results import AuditRecord
from shared.services.catalog.policies import MAX_PAGE, TAMPERED, current_policy, problem_text
from shared.services.catalog.results import (
    LastFailure,
    LastRotation,
    LastWrite,
    PolicyViolation,
    RecordedRotation,
    Retirement,
    RotationState,
    SecretPage,
    SecretStatus,
    SecretSummary,
    Stalled,
)
from shared.services.peers import Peers
from shared.services.rotation import (
    IDLE,
    PARTITION,
    Progress,
    progress_rows,
    retirements,
    schedule_key,
)
from shared.services.sealed_state import get_as_found
from shared.services.stalls import STALL_AFTER, stall
from shared.services.sweep import DueSecret

# -- list ----------------------------------------------------------------------------------------------


def list_managed(peers: Peers, *, limit: int = 50, after: str | None = None) -> SecretPage:
    """One page of the managed secrets, sorted by name (case-insensitive), after the name ``after``.

    The vault is listed once and read once per secret on the page; the rotation progress of every secret
    is one read. Invalid policies are listed with the violation. ``continuation``: the last name of the
    page when more follow. Raises DependencyUnavailable, Forbidden."""
    store, reserved = peers.store, peers.reserved
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit is 1-{MAX_PAGE}")
    if after is not None:
        validate_name(after)
    managed = sorted(
        (
            item
            for item in store.list_properties()
            if RotationPolicy.is_managed(item.tags) and not is_reserved(item.name, reserved)
        ),
        key=lambda item: item.name.lower(),
    )
    if after is not None:
        managed = [item for item in managed if item.name.lower() > after.lower()]
    page, more = managed[:limit], len(managed) > limit
    progress = progress_rows(peers.states)
    now = peers.clock.now()
    items = []
    for item in page:
        try:
            current: SecretItem = store.get_properties(item.name)
        except SecretDisabled:
            current = item  # the id of a disabled current version cannot be read
        except NotFound:
            continue  # deleted since the listing
        stored = progress.get(item.name.lower())
        state = state_view(stored, now)
        items.append(
            SecretSummary(
                **_properties(current),
                vault=peers.trail.vault,
                **policy_view(current, now, reserved),
                state=state,
            )
        )
    return SecretPage(items=items, continuation=page[-1].name if more and page else None)


class InvalidContinuation(ValueError):
    """A continuation this listing did not give."""


def list_vaults(vaults: Sequence[Peers], *, limit: int = 50, after: str | None = None) -> SecretPage:
    """One page of the managed secrets of several vaults: each vault's in turn (in the order given), by
    name. ``after`` and the page's continuation are ``<vault>:<name>`` (``<vault>:`` before a vault's
    first secret). Raises InvalidContinuation for a continuation naming no vault given or no valid name,
    DependencyUnavailable, Forbidden."""
    names = [peers.trail.vault for peers in vaults]
    start, name = 0, None
    if after is not None:
        vault, colon, name = after.partition(":")
        if vault not in names or not colon or (name and not NAME_PATTERN.fullmatch(name)):
            raise InvalidContinuation("not one this listing gave")
        start, name = names.index(vault), name or None
    items: list[SecretSummary] = []
    for index in range(start, len(vaults)):
        page = list_managed(vaults[index], limit=limit - len(items), after=name if index == start else None)
        items.extend(page.items)
        if page.continuation is not None:
            return SecretPage(items=items, continuation=f"{names[index]}:{page.continuation}")
        if len(items) == limit and index + 1 < len(vaults):
            return SecretPage(items=items, continuation=f"{names[index + 1]}:")
    return SecretPage(items=items, continuation=None)


def _properties(current: SecretItem) -> dict[str, Any]:
    """A secret's properties as the list and the status show them (a disabled current version's id is
    not known)."""
    return {
        "name": current.name,
        "version": current.version if isinstance(current, SecretVersion) else None,
        "created": current.created,
        "expires": current.expires,
        "enabled": current.enabled,
    }


def policy_view(current: SecretItem, now: datetime, reserved: Collection[str]) -> dict[str, Any]:
    """policy / violation / next_due / due_now of a managed secret's current version."""
    view: dict[str, Any] = {"policy": None, "violation": None, "next_due": None, "due_now": False}
    if current.managed:
        view["violation"] = PolicyViolation(
            tag=MANAGED_BY_TAG, problem="backs a certificate: renew the certificate"
        )
        return view
    try:
        policy = RotationPolicy.from_tags(current.tags, name=current.name, reserved=reserved)
    except PolicyError as err:
        view["violation"] = PolicyViolation(tag=err.tag, problem=problem_text(err))
        return view
    due = policy.next_rotation(current.created, current.expires)
    view.update(policy=current_policy(policy), next_due=due, due_now=current.enabled and now >= due)
    return view


def state_view(stored: Versioned | None, now: datetime) -> RotationState:
    """idle / the write in flight (step, id, attempt, lease) and the last error of the rotation progress;
    ``tampered`` with the failed check when its row's seal is missing or wrong (nothing acts on it)."""
    if stored is None:
        return RotationState(status=IDLE, last_error=None)
    if stored.tampered is not None:
        return RotationState(status=TAMPERED, last_error=f"the stored state is tampered: {stored.tampered}")
    progress = Progress.of(stored.state)
    if progress.step == IDLE:
        return RotationState(status=progress.step, last_error=progress.last_error)
    return RotationState(
        status=progress.step,
        last_error=progress.last_error,
        rotation_id=progress.rotation_id,
        attempt=progress.attempt,
        lease_until=progress.lease_until,
        lease_live=progress.leased_by_other("", now),
    )


# -- status --------------------------------------------------------------------------------------------


def secret_status(peers: Peers, name: str, *, stall_after: timedelta = STALL_AFTER) -> SecretStatus:
    """Everything known about one secret's rotation: policy (or violation), current version, next due,
    whether (and why) its rotation stalled, the write in flight, the last rotation and failure, and the
    scheduled retirements. Never a value. Raises InvalidSecret, NotFound, DependencyUnavailable."""
    store, states, reserved = peers.store, peers.states, peers.reserved
    validate_name(name)
    stored = progress_row(states, name)
    now = peers.clock.now()
    try:
        current: SecretItem = store.get_properties(name)
    except SecretDisabled:
        # The vault does not say which version is current then: the newest stands for its properties,
        # without claiming its id.
        newest = max(store.list_versions(name), key=lambda v: v.created)  # NotFound when gone
        current = SecretItem(**{k: getattr(newest, k) for k in SecretItem.__dataclass_fields__})
    properties = _properties(current)
    managed = RotationPolicy.is_managed(current.tags) and not is_reserved(name, reserved)
    if managed:
        view = policy_view(current, now, reserved)
    else:
        view = {"policy": None, "violation": None, "next_due": None, "due_now": False}
    progress = Progress.of(stored.state) if stored and stored.tampered is None else None
    retire = read_row(states, schedule_key(name.lower()))
    planned = retirements(retire.state) if retire else []
    return SecretStatus(
        **properties,
        vault=peers.trail.vault,
        managed=managed,
        reserved=is_reserved(name, reserved),
        **view,
        state=state_view(stored, now),
        last_rotation=_last_rotation(peers, name, progress),
        last_failure=_last_failure(peers, name, progress),
        retirements=[
            Retirement(version=version, after=after)
            for version, after in planned
            if version != properties["version"]  # planned by a rotation in flight (or one that failed)
        ],
        stalled=_stalled(current, view, stored, now, stall_after),
    )


def _stalled(
    current: SecretItem, view: Mapping[str, Any], stored: Versioned | None, now: datetime, after: timedelta
) -> Stalled | None:
    """Why a due secret's rotation stalled (``shared.services.stalls``), or None."""
    if not view["due_now"] or view["next_due"] is None:
        return None
    found = stall(DueSecret(current.name, current.created, view["next_due"]), stored, now, after)
    return None if found is None else Stalled(since=found.since, reason=found.reason)


def progress_row(states: StateStore, name: str) -> Versioned | None:
    return read_row(states, name.lower())


def read_row(states: StateStore, key: str) -> Versioned | None:
    """A row of the rotation partition for a read-only view: a tampered one with its check (reported by
    the store) instead of an error, so status and plan say why nothing acts on it."""
    return get_as_found(states, PARTITION, key)


def _newest(peers: Peers, name: str, action: Action, result: Result) -> AuditRecord | None:
    query = AuditQuery(vault=peers.trail.vault, secret_name=name, action=action, limit=500)
    page = query_audit(peers.reader, peers.keys, query)
    return next((item for item in page.items if item.result == result), None)


def _last_rotation(peers: Peers, name: str, progress: Progress | None) -> LastRotation:
    record = _newest(peers, name, Action.ROTATED, Result.SUCCESS)
    rotated = None
    if record is not None:
        details = record.details
        rotated = RecordedRotation(
            time=record.time,
            version=record.version,
            previous_version=details.get("previous_version"),
            rotation_id=details.get("rotation_id"),
        )
    last_write = None
    if progress is not None and progress.step == IDLE and progress.new_version:
        made_by = progress.made_by(progress.new_version)
        last_write = LastWrite(rotation_id=made_by, new_version=progress.new_version)
    return LastRotation(recorded=rotated, last_write=last_write)


def _last_failure(peers: Peers, name: str, progress: Progress | None) -> LastFailure | None:
    record = _newest(peers, name, Action.ROTATION_FAILED, Result.FAILURE)
    if record is None and (progress is None or not progress.last_error):
        return None
    error_class = progress.last_error if progress else None
    if record is None:
        return LastFailure(error_class=error_class)
    details = record.details
    return LastFailure(
        error_class=error_class or details.get("error_class"),
        time=record.time,
        version=record.version,
        rotation_id=details.get("rotation_id"),
        step=details.get("step"),
        error=record.error,
    )
