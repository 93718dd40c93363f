"""The service's app roles (the Entra app registration's; ``identity.ROLE_GRANTS`` says what each is for).

A module of its own: the function index (shared/entrypoints/index.py) names each HTTP function's roles, and
a cold start imports it; the principal header's parsing (``identity``) waits for the first call.
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    AUDIT_READ = "Secrets.Audit.Read"
    #: Mark suspicious-activity findings reviewed: a write, so not part of AUDIT_READ.
    AUDIT_REVIEW = "Secrets.Audit.Review"
    #: Open an incident over the trail's breaks, or acknowledge another person's (a new baseline).
    AUDIT_INCIDENT = "Secrets.Audit.Incident"
    REVOCATION_REQUEST = "Secrets.Revocation.Request"
    REVOCATION_APPROVE = "Secrets.Revocation.Approve"
    REVOCATION_EXECUTE = "Secrets.Revocation.Execute"
    BREAK_GLASS = "Secrets.BreakGlass"
    ROTATION_OPERATE = "Secrets.Rotation.Operate"
