"""What the contract test (test_contract.py) checks beside schemathesis's own checks, loaded by schemathesis
through ``SCHEMATHESIS_HOOKS``.

``valid_data_is_accepted`` stands for schemathesis's ``positive_data_acceptance``: data the document calls
valid must not be refused for its form (400, 415, 422). The one exception is a rule between parameters or
fields (or about what is stored), which the JSON Schema of each cannot state: a 400 naming that parameter
with that rule's words is the right answer, and only those below. docs/api.md lists them for callers.
"""

from __future__ import annotations

import json
from typing import Any

import schemathesis

#: What a rotator asks of its target (RotationPolicy's rules).
TARGET_RULES = (
    "needs the consumer's https URL",
    "needs the name of the admin credential's secret",
    "names one of the service's own secrets",
    "names the secret itself",
    "rotator takes no target",
)
#: (operation, the parameter the 400 names) -> words of the rule's message.
RULES_BETWEEN_FIELDS: dict[tuple[str, str], tuple[str, ...]] = {
    ("GET /audit", "until"): ("must be after since",),
    ("GET /audit", "continuation"): ("is not a valid token", "belongs to another query"),  # not issued
    ("GET /audit/verify", "vault"): ("only with secret_name",),
    ("GET /compliance/report", "to"): ("must be after from",),
    ("GET /compliance/report", "from"): ("at most 366 days", "must not be in the future"),
    ("GET /revocations", "continuation"): ("not a position in this listing",),
    ("GET /secrets", "continuation"): ("not one this listing gave", "continuation"),
    ("POST /secrets", "validity_days"): ("at least rotation-interval-days + 30",),
    ("POST /secrets", "rotation_target"): TARGET_RULES,
    ("POST /secrets", "rotation_grace_hours"): ("shorter than rotation-interval-days",),
    ("POST /secrets", "rotator"): ("PostgreSQL", "postgres"),
    ("PUT /secrets/{name}/policy", "validity_days"): ("at least rotation-interval-days + 30",),
    ("PUT /secrets/{name}/policy", "rotation_target"): TARGET_RULES,
    ("PUT /secrets/{name}/policy", "rotation_grace_hours"): ("shorter than rotation-interval-days",),
    ("PUT /secrets/{name}/policy", "kind"): ("is required",),  # an unmanaged secret needs a kind
    ("POST /revocations", "break_glass"): ("only a critical request can be break-glass",),
    ("POST /revocations", "replace"): ("no rotation policy",),
    ("POST /revocations", "versions"): ("is not a version of",),
}
#: Refusals of a request's form.
FORM_REFUSALS = frozenset({400, 415, 422})


def _problem(response: Any) -> dict[str, Any]:
    try:
        found = json.loads(response.content or b"{}")
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


@schemathesis.check
def valid_data_is_accepted(ctx: Any, response: Any, case: Any) -> bool | None:
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code not in FORM_REFUSALS:
        return None
    problem = _problem(response)
    parameter, detail = str(problem.get("parameter")), str(problem.get("detail", ""))
    message = detail.removeprefix(f"{parameter}: ")
    rule = RULES_BETWEEN_FIELDS.get((case.operation.label, parameter))
    if response.status_code == 400 and rule is not None and any(words in message for words in rule):
        return None
    raise AssertionError(f"valid data refused with {response.status_code}: {detail or response.content!r}")
