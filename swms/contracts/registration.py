"""Registration's contracts: the three registration forms (首次登记, 再登记, 更换电子证) and upgrade,
drafts, proofs, what the certificate service needs to issue, and the continuing-education event
a learning platform sends.

Requests refuse unknown fields and values of the wrong JSON type (hours are numbers, never strings;
the commitment is a JSON boolean): a client bug is an error, not silently coerced data.
"""
from __future__ import annotations

import datetime as dt
import math
import re
from enum import Enum
from typing import Annotated, Any, ClassVar

from pydantic import BeforeValidator, Field, StrictBool, field_validator

from swms.contracts.common import (
    AccessReason,
    ApplicationKind,
    ApplicationStatus,
    Contract,
    Level,
    UnitCategory,
    Uuid,
)
from swms.contracts.events import Event
from swms.contracts.profile import Honour, ProfileSnapshot, WorkExperience
from swms.contracts.review import OfficerLevel
from swms.text import OneLine

# ---- field types ------------------------------------------------------------------------------

MAX_COURSE_HOURS = 200.0     # one course (线下课程) or one platform record
MAX_COURSES = 100


def _hours(value: Any) -> float:
    """学时: a JSON number > 0, at most one decimal place (0.5 h steps and tenths both occur)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("学时应为数字")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError("学时应为数字")
    if value <= 0:
        raise ValueError("学时须大于0")
    if value > MAX_COURSE_HOURS:
        raise ValueError(f"单项学时不能超过{MAX_COURSE_HOURS:g}")
    if abs(value * 10 - round(value * 10)) > 1e-6:
        raise ValueError("学时最多保留一位小数")
    return round(value, 1)


Hours = Annotated[float, Field(gt=0, le=MAX_COURSE_HOURS, description="学时：大于0，最多一位小数（JSON数字，不接受文本）"),
                  BeforeValidator(_hours)]

_ORIGINAL_NO = re.compile(r"^[0-9]{8}$")   # not \d: that also matches full-width and other digits


def _original_no(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("原证书编号（NO）应为文本，按证书第一页底部的8位数字填写")
    value = value.strip()
    if not _ORIGINAL_NO.match(value):
        raise ValueError("原证书编号（NO）应为证书第一页底部的8位数字")
    return value


OriginalNo = Annotated[str, Field(pattern=r"^[0-9]{8}$", description="证书第一页底部的8位数字"),
                       BeforeValidator(_original_no)]


class RegistrationType(str, Enum):
    """登记类型, as printed on a paper registration certificate."""
    FIRST = "首次登记"
    RENEWAL = "再登记"


# ---- requests ---------------------------------------------------------------------------------

# Optional on every submission: the 个人信息表 revision the applicant saw (``form.profile_revision``
# of the opened form). Given, exactly that revision is submitted (``PROFILE_CHANGED`` if the profile
# has moved on since); left out, the profile as it is now.
ProfileRevision = Annotated[int | None, Field(default=None, title="个人信息表版本", ge=0, le=2_000_000_000,
                                              strict=True)]


class SubmitFirstRegistrationRequest(Contract):
    """《社会工作者首次登记信息表》: the applicant only ticks the 承诺声明."""
    commitment: StrictBool = Field(title="承诺声明")
    profile_revision: ProfileRevision = None


class ApplicationRef(Contract):
    application_id: Uuid = Field(title="申请编号")


class ApplicationReadRequest(ApplicationRef):
    """Reading an application: the applicant, officers of its region, or an administrator with
    ``access_reason`` (audited)."""
    access_reason: AccessReason = None


class OpenDraftRequest(Contract):
    """Opens (or returns) the caller's unsubmitted form of this kind, filled from the profile."""
    kind: ApplicationKind = Field(title="申请类型")


class OfflineCourse(Contract):
    """线下学时: one course at a recognised college or training body, with its proof."""
    institution: str = Field(title="培训机构", min_length=1, max_length=100)
    course: str = Field(title="课程名称", min_length=1, max_length=100)
    start_date: dt.date = Field(title="开始日期")
    end_date: dt.date = Field(title="结束日期")
    hours: Hours = Field(title="学时")
    proof_key: str = Field(title="证明材料", min_length=1, max_length=200)

    @field_validator("end_date")
    @classmethod
    def _dates_in_order(cls, value, info):
        start = info.data.get("start_date")
        if start is not None and value < start:
            raise ValueError("结束日期不能早于开始日期")
        return value


class TypedOfflineCourse(OfflineCourse):
    """An offline course as the applicant types it: the text policy on its free text (courses
    already stored are read back as OfflineCourse, without it)."""
    institution: Annotated[str, Field(title="培训机构", min_length=1, max_length=100), OneLine]
    course: Annotated[str, Field(title="课程名称", min_length=1, max_length=100), OneLine]


# Saving a draft changes only what the request names (PATCH): a field left out keeps what the
# draft holds, ``null`` empties it, a value replaces it (a list as a whole). A form is filled over
# several visits, one part at a time. Submitting (``submit_*``) sends the whole form instead.


class ReRegistrationDraftRequest(Contract):
    """《社会工作者再登记信息表》, the applicant's part: offline courses. Registration information,
    work experience and honours are copied from the profile; online hours come from the
    continuing-education records and cannot be typed. Saving: ``offline_courses`` left out keeps
    the saved courses; ``[]`` or ``null`` removes them all; a list replaces them."""
    application_id: Uuid | None = Field(default=None, title="申请编号")
    offline_courses: list[TypedOfflineCourse] | None = Field(default=None, title="线下学时", max_length=MAX_COURSES)
    # Declared only to refuse it with its own code: online hours are filled in by the system.
    online_hours: Any = Field(default=None, title="线上学时",
                              json_schema_extra={"error_code": "ONLINE_HOURS_NOT_TYPED"})

    @field_validator("online_hours")
    @classmethod
    def _no_typed_online_hours(cls, value):
        if value is not None:
            raise ValueError("线上学时由系统根据继续教育平台的学习记录自动填入，不能手工填写")
        return value


class SubmitReRegistrationRequest(ReRegistrationDraftRequest):
    """The whole form: the courses sent are the courses submitted (none if left out)."""
    offline_courses: list[TypedOfflineCourse] = Field(default=[], title="线下学时", max_length=MAX_COURSES)
    commitment: StrictBool = Field(title="承诺声明")
    profile_revision: ProfileRevision = None


class ReplacementDraftRequest(Contract):
    """《社会工作者更换电子证书信息表》, typed exactly as on the paper certificate. Every field may be
    left empty in a draft; all are required to submit. Saving a draft changes only the fields sent
    (a field left out keeps its saved value, ``null`` empties it)."""
    application_id: Uuid | None = Field(default=None, title="申请编号")
    original_certificate_no: OriginalNo | None = Field(
        default=None, title="原证书编号（NO）", json_schema_extra={"error_code": "ORIGINAL_NO_INVALID"})
    registration_type: RegistrationType | None = Field(default=None, title="登记类型")
    valid_from: dt.date | None = Field(default=None, title="登记有效期起")
    valid_until: dt.date | None = Field(default=None, title="登记有效期止")

    @field_validator("valid_until")
    @classmethod
    def _period_in_order(cls, value, info):
        start = info.data.get("valid_from")
        if value is not None and start is not None and value <= start:
            raise ValueError("有效期止须晚于有效期起")
        return value


class SubmitReplacementRequest(ReplacementDraftRequest):
    """The whole form: every field of the paper certificate is required (a saved draft is not
    merged in; ``submit_draft`` submits the draft as saved)."""
    commitment: StrictBool = Field(title="承诺声明")
    profile_revision: ProfileRevision = None


class SubmitUpgradeRequest(Contract):
    """Re-issue at the new level for a holder marked 已出证待升级."""
    application_id: Uuid | None = Field(default=None, title="申请编号")
    commitment: StrictBool = Field(title="承诺声明")
    profile_revision: ProfileRevision = None


class SubmitDraftRequest(Contract):
    """Submits a saved draft as it stands (any kind), or resubmits a rejected application."""
    application_id: Uuid = Field(title="申请编号")
    commitment: StrictBool = Field(title="承诺声明")
    profile_revision: ProfileRevision = None


# ---- proofs -----------------------------------------------------------------------------------

class ProofContentType(str, Enum):
    PDF = "application/pdf"
    JPEG = "image/jpeg"
    PNG = "image/png"


class ProofUploadRequest(Contract):
    filename: Annotated[str, Field(title="文件名", min_length=1, max_length=200), OneLine]
    content_type: ProofContentType = Field(title="文件类型")


class ProofUploadTicket(Contract):
    """POST the file to ``url`` as multipart/form-data with ``fields`` and then the file (field
    name ``file``); then call ``confirm_proof_upload``."""
    proof_key: str
    url: str
    fields: dict[str, str]
    max_bytes: int
    expires_in_seconds: int


class ProofRef(Contract):
    proof_key: str = Field(title="证明材料", min_length=1, max_length=200)


class ProofFile(Contract):
    proof_key: str
    filename: str
    content_type: ProofContentType
    size: int
    sha256: str


class ProofLinkRequest(Contract):
    application_id: Uuid = Field(title="申请编号")
    proof_key: str = Field(title="证明材料", min_length=1, max_length=200)
    access_reason: AccessReason = None


class ProofLink(Contract):
    url: str
    expires_in_seconds: int


# ---- responses --------------------------------------------------------------------------------

class StatusChange(Contract):
    status: ApplicationStatus
    at: dt.datetime
    actor: str
    reason: str | None = None


class OnlineRecord(Contract):
    """线上学时: one record from the continuing-education platform."""
    source: str
    record_id: str
    course: str
    provider: str
    hours: float
    completed_on: dt.date


class ContinuingEducation(Contract):
    """继续教育 within the current registration period."""
    period_from: dt.date
    period_until: dt.date
    required_hours: float
    online_hours: float
    offline_hours: float
    total_hours: float
    online_records: list[OnlineRecord] = []
    offline_courses: list[OfflineCourse] = []


class ReplacementDetails(Contract):
    original_certificate_no: str | None = None
    registration_type: RegistrationType | None = None
    valid_from: dt.date | None = None
    valid_until: dt.date | None = None


class FormView(Contract):
    """The form as the applicant and the reviewer see it (ID number masked). For a submitted
    application: exactly what was submitted. For a draft (未登记): the profile as it is now."""
    name: str
    id_number_masked: str
    gender: str
    birth_date: dt.date
    level: Level
    management_number: str
    exam_year: int
    region_code: str
    unit_category: UnitCategory
    unit_name: str
    position: str
    photo_key: str | None = None
    work_experiences: list[WorkExperience] = []
    honours: list[Honour] = []
    profile_revision: int = 0
    previous_certificate_number: str | None = None
    continuing_education: ContinuingEducation | None = None
    replacement: ReplacementDetails | None = None


class ApplicationResponse(Contract):
    application_id: Uuid
    person_id: Uuid
    kind: ApplicationKind
    status: ApplicationStatus
    submitted_at: dt.datetime | None = None      # None while a draft (未登记)
    rejection_reason: str | None = None
    certificate_number: str | None = None
    history: list[StatusChange] = []
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None
    level: Level | None = None
    round: int = 0                               # how many times it was submitted
    form: FormView | None = None
    # Where review has it: the officer level reviewing it now (in review) or that decided it (not
    # passed, returned for correction); None for drafts and issued applications, and until review
    # has accepted the submission. The status stays the seed's; ``status_text`` words both.
    review_level: OfficerLevel | None = None
    status_text: str = Field(description="状态说明：状态及当前审核层级，如“审核中（市级）”“终审中（省级）”“退回修改（区县级）”")


class ApplicationList(Contract):
    items: list[ApplicationResponse]


class DraftDiscarded(Contract):
    application_id: Uuid
    discarded: bool = True


class HeldCertificate(Contract):
    certificate_number: str
    level: Level
    valid_from: dt.date
    valid_until: dt.date
    status: str                                  # valid / suspended / revoked / expired / superseded


class RegistrationStanding(Contract):
    """The caller's registration as registration knows it, and what they can apply for now."""
    certificate: HeldCertificate | None = None
    lapsed: bool = False
    re_registration_opens_on: dt.date | None = None
    re_registration_closes_on: dt.date | None = None
    pending_upgrade_level: Level | None = None
    can_apply_for: list[ApplicationKind] = []
    advice: str


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
    # re-registration: the continuing education as submitted (online records, offline courses with
    # their proof keys: links through ``get_proof_link``), for the reviewers
    continuing_education: ContinuingEducation | None = None


# ---- inbound event: the continuing-education platform -----------------------------------------

class ContinuingEducationRecorded(Event):
    """A learning platform reports an online course a person completed (线上学时).

    Published by the platform on the topic exchange ``learning.events`` with routing key
    ``course_completed`` (JSON body, ``message_id`` = ``event_id``). The person is identified by
    their SWMS ``person_id`` (the platform signs people in through SWMS), never by ID number.
    The same ``record_id`` sent again replaces the earlier record (a correction); ``withdrawn``
    true removes it from the count.
    """
    source: ClassVar[str] = "learning"
    event_type: ClassVar[str] = "course_completed"
    record_id: str = Field(min_length=1, max_length=64)
    person_id: Uuid
    course: Annotated[str, Field(min_length=1, max_length=200), OneLine]      # shown to reviewers
    provider: Annotated[str, Field(min_length=1, max_length=200), OneLine]
    hours: Hours
    completed_on: dt.date
    withdrawn: bool = False
