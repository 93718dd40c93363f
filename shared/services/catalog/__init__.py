"""The managed secrets as operators see them: list, onboard, set a policy, ask for a rotation, status and
the rotation plan. Use cases behind the HTTP endpoints of shared/entrypoints/secrets.py.

Reads never return a value, and a listing costs one vault listing plus one read per secret on the page
(the listing has no version ids). Writes (onboarding, a policy) take the secret's lease (the rotation
progress entity), so they never interleave with a rotation or a rollback, and are audited intent-first
(fail closed); a change whose success record then fails raises OutcomeNotRecorded naming it, never
"nothing changed". The service's own secrets (``reserved``) are never listed as managed and never written
(Conflict); certificate-backed secrets are never written either (renew the certificate).

The package: ``policies.py`` onboards and sets policies, ``views.py`` lists and reports status,
``plans.py`` takes manual rotation requests and plans what is coming.
"""

from shared.services.catalog.plans import RotationTicket, plan_rotation, request_rotation, rotation_plan
from shared.services.catalog.policies import (
    FIELD_OF_TAG,
    MAX_PAGE,
    InvalidPolicy,
    PolicyConflict,
    PolicyInput,
    apply_policy,
    build_policy,
    onboard,
    policy_dict,
    properties_of,
)
from shared.services.catalog.views import InvalidContinuation, list_managed, list_vaults, secret_status

__all__ = [
    "FIELD_OF_TAG",
    "MAX_PAGE",
    "InvalidContinuation",
    "InvalidPolicy",
    "PolicyConflict",
    "PolicyInput",
    "RotationTicket",
    "apply_policy",
    "build_policy",
    "list_managed",
    "list_vaults",
    "onboard",
    "plan_rotation",
    "policy_dict",
    "properties_of",
    "request_rotation",
    "rotation_plan",
    "secret_status",
]
