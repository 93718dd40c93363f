"""The compliance evidence report (GET /api/compliance/report): a period's rotations, revocations,
denials and integrity, from the audit read path and one listing of each vault."""

from shared.services.compliance.report import MAX_PERIOD, compliance_report
from shared.services.compliance.results import ComplianceReport

__all__ = ["MAX_PERIOD", "ComplianceReport", "compliance_report"]
