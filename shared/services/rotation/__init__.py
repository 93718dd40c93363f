"""Rotation of one managed secret: create pending → set in target → test → promote → retire the previous
version after its grace period.

This is the ``key-vault`` rotator, for which set and test are no-ops and promote is the one new version;
the target rotators (PostgreSQL, webhook) add their steps on the same stored progress. Each secret's
progress is a compare-and-swap entity (``StateStore``, partition ``rotation``) that every step reads
first, and it doubles as the one-rotation-at-a-time lease (with an expiry, so a crashed holder does not
block forever). The new version carries the rotation id in a tag, so a rotation that crashed after
promoting sees its own version on retry instead of making another. A timer, a queue message, an Event
Grid event and a manual call for the same secret at the same moment produce exactly one new version.

Audit: a promotion is an ``intent`` record before the new version is written and a ``success`` record
after (fail closed: no intent on record, no new version); a failure is ``ROTATION_FAILED`` with the step,
the error class and the attempt, and a ``RotationFailed`` notification — never silent.

The same progress entity is the lease of every write this service makes to a secret's versions: a
rotation (step ``promoting``), a rollback (``rolling_back``, shared/services/rollback.py), onboarding and
policy changes (shared/services/catalog/). One at a time per secret; ``acquire`` takes it.

Every version this service writes carries ``rotated-by: secret-lifecycle`` and a ``rotation-id``
(``made_by_service`` tells them from out-of-band versions).

The package, by step: ``rotate.py`` decides and runs one rotation (and ``replace``, ``rotate_requested``);
``promote.py`` is the protocol under the lease; ``lease.py`` the lease itself; ``rows.py`` the partition's
rows (progress, retirement schedule); ``retirement.py`` retires replaced versions; ``requests.py``
coalesces manual requests, records poisoned ones and resumes dead holders' rotations; ``outcomes.py``
the outcome records and events. The progress row's rules are pure, in ``shared/domain/progress.py``.
"""

from shared.domain.progress import (
    IDLE,
    MAX_JOINED,
    PREVIOUS_VERSION_TAG,
    PROMOTING,
    RESTORED_VERSION_TAG,
    RETIRED_BY_TAG,
    ROTATED_BY,
    ROTATED_BY_TAG,
    ROTATION_ID_TAG,
    Busy,
    Progress,
    made_by_service,
    retired_tags,
    service_tags,
)
from shared.domain.state import LEASE
from shared.services.rotation.lease import acquire, release, written_by_service
from shared.services.rotation.outcomes import NotManaged, RotationOutcome, record_violations
from shared.services.rotation.requests import gave_up, register_request, resume_stale, unregister_request
from shared.services.rotation.retirement import retire_all, retire_due
from shared.services.rotation.rotate import replace, rotate, rotate_requested
from shared.services.rotation.rows import (
    PARTITION,
    progress_rows,
    retirements,
    schedule_key,
    schedule_retirement,
    write_progress,
)

__all__ = [
    "IDLE",
    "LEASE",
    "MAX_JOINED",
    "PARTITION",
    "PREVIOUS_VERSION_TAG",
    "PROMOTING",
    "RESTORED_VERSION_TAG",
    "RETIRED_BY_TAG",
    "ROTATED_BY",
    "ROTATED_BY_TAG",
    "ROTATION_ID_TAG",
    "Busy",
    "NotManaged",
    "Progress",
    "RotationOutcome",
    "acquire",
    "gave_up",
    "made_by_service",
    "progress_rows",
    "record_violations",
    "register_request",
    "release",
    "replace",
    "resume_stale",
    "retire_all",
    "retire_due",
    "retired_tags",
    "retirements",
    "rotate",
    "rotate_requested",
    "schedule_key",
    "schedule_retirement",
    "service_tags",
    "unregister_request",
    "write_progress",
    "written_by_service",
]
