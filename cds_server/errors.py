"""Errors the HTTP layer turns into FHIR OperationOutcome responses.

One base class, a few children, one error handler (``cds_server.web.api``).
The status codes follow CRD ``hook-13``: 400 for unparseable JSON or CDS
Hooks / FHIR violations and Coverage problems, 422 for CRD-only violations,
412 when required data cannot be obtained, 404 for an unknown service, 415
for a wrong media type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# FHIR issue-type codes (http://hl7.org/fhir/issue-type) used below.
ISSUE_CODES = {
    400: "invalid",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    412: "incomplete",
    413: "too-costly",
    415: "not-supported",
    422: "business-rule",
    500: "exception",
    503: "transient",
}


@dataclass(frozen=True)
class Issue:
    """One problem: a message and, when known, where it is (a JSON path into the request)."""

    message: str
    location: str | None = None
    severity: str = "error"


class ServiceError(Exception):
    """A request the service answers with a 4xx and an OperationOutcome."""

    status = 400

    def __init__(self, message: str, issues: list[Issue] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.issues = issues or [Issue(message)]

    def outcome(self) -> dict[str, Any]:
        """Return the FHIR OperationOutcome body for this error."""
        return operation_outcome(self.issues, ISSUE_CODES.get(self.status, "processing"))


class InvalidRequest(ServiceError):
    """Not JSON, or not a valid CDS Hooks / FHIR request (400)."""

    status = 400


class CrdViolation(ServiceError):
    """Valid CDS Hooks and FHIR, but breaks a Da Vinci CRD constraint (422)."""

    status = 422


class CoverageProblem(ServiceError):
    """No usable Coverage: none, several, or a payer this endpoint does not serve (400, CRD hook-13)."""

    status = 400


class DataUnavailable(ServiceError):
    """Required data is neither prefetched nor obtainable from the FHIR server (412)."""

    status = 412


class UnknownService(ServiceError):
    """No service with this id (404)."""

    status = 404


class UnsupportedMediaType(ServiceError):
    """The request body is not JSON (415)."""

    status = 415


class PayloadTooLarge(ServiceError):
    """The request body is larger than the configured limit (413)."""

    status = 413


class TooManyOrders(ServiceError):
    """More orders than one call may carry (413, ``too-costly``): deciding them would outrun the call's budget."""

    status = 413


class TemporarilyUnavailable(ServiceError):
    """Storage the answer depends on is down: try again shortly (503 with ``Retry-After``).

    A hook answer must be recorded (CRD found-11, found-37); without the database none can be.
    """

    status = 503
    retry_after = 5


@dataclass
class Problems:
    """Collects issues while validating, so one response can list them all."""

    issues: list[Issue] = field(default_factory=list)

    def add(self, message: str, location: str | None = None) -> None:
        self.issues.append(Issue(message, location))

    def raise_if_any(self, error: type[ServiceError], summary: str) -> None:
        if self.issues:
            raise error(summary, self.issues)


def operation_outcome(issues: list[Issue], code: str) -> dict[str, Any]:
    """Build an OperationOutcome listing ``issues``; locations go to ``expression``."""
    out = []
    for issue in issues[:50]:
        item: dict[str, Any] = {"severity": issue.severity, "code": code, "diagnostics": issue.message}
        if issue.location:
            item["expression"] = [issue.location]
        out.append(item)
    return {"resourceType": "OperationOutcome", "issue": out}
