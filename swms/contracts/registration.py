from __future__ import annotations

import datetime as dt

from pydantic import Field

from swms.contracts.common import ApplicationKind, ApplicationStatus, Contract, Uuid
from swms.contracts.profile import ProfileSnapshot


class SubmitFirstRegistrationRequest(Contract):
    """《社会工作者首次登记信息表》: the applicant only ticks the 承诺声明."""
    commitment: bool = Field(title="承诺声明")


class ApplicationRef(Contract):
    application_id: Uuid = Field(title="申请编号")


class StatusChange(Contract):
    status: ApplicationStatus
    at: dt.datetime
    actor: str
    reason: str | None = None


class ApplicationResponse(Contract):
    application_id: Uuid
    person_id: Uuid
    kind: ApplicationKind
    status: ApplicationStatus
    submitted_at: dt.datetime
    rejection_reason: str | None = None
    certificate_number: str | None = None
    history: list[StatusChange] = []


class ApplicationList(Contract):
    items: list[ApplicationResponse]


class IssuanceData(Contract):
    """What the certificate service needs to issue: the snapshot exactly as submitted."""
    application_id: Uuid
    kind: ApplicationKind
    snapshot: ProfileSnapshot
    # re-registration and upgrade: the certificate this one continues or replaces
    previous_certificate_number: str | None = None
    # replacement e-certificate (更换电子证): the paper certificate, typed as printed on it
    original_certificate_no: str | None = None
    original_registration_type: str | None = None
    original_valid_from: dt.date | None = None
    original_valid_until: dt.date | None = None
