"""Emergency revocation: request → approve → execute (shared.domain.revocation), stored as one
compare-and-swap entity per request (``StateStore`` partition ``revocation``).

Every state change is read → transition (the domain machine) → ``intent`` record → conditional write →
``success`` record. Of racing writers exactly one wins the write; the others get Conflict (409), never a
500 and never a record of a success that did not happen (the loser's intent is followed by a
``failure``).

Execution stores ``executing`` before it touches the vault, so a process that dies mid-way leaves the
request ``executing``: calling execute again (or the ``revocation_expiry`` timer) finishes it once the
holder's lease (``LEASE``) has run out. It first replaces the value when asked (through the
secret's rotator, ``shared.services.rotation.replace``, with the request's id as the rotation id, so a
retry finds the replacement made), then disables the chosen versions under the secret's write lease —
stripping the ``retired-by`` mark, so a rollback never restores a revoked version — and records what it
could not disable (``result.errors``, status ``failed``), never silently.

The package: ``stored.py`` (the peers, the row and the records of a change), ``reads.py``,
``decisions.py`` (request, approve, reject, cancel, review, and the expiry timer), ``execution.py``,
``results.py`` (what the endpoints answer).
"""

from shared.domain.revocation import DEFAULT_TTL
from shared.services.revocation.decisions import approve, cancel, expire_pending, reject, request, review
from shared.services.revocation.execution import execute
from shared.services.revocation.reads import Listing, get, list_all, list_requests, page
from shared.services.revocation.stored import (
    PARTITION,
    InvalidRequest,
    NewRequest,
    RevocationSettings,
    Services,
)

__all__ = [
    "DEFAULT_TTL",
    "PARTITION",
    "InvalidRequest",
    "Listing",
    "NewRequest",
    "RevocationSettings",
    "Services",
    "approve",
    "cancel",
    "execute",
    "expire_pending",
    "get",
    "list_all",
    "list_requests",
    "page",
    "reject",
    "request",
    "review",
]
