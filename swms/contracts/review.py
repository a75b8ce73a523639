from __future__ import annotations

import datetime as dt
from enum import Enum
from typing import Annotated

from pydantic import Field, ValidationInfo, field_validator

from swms.contracts.common import ApplicationKind, Contract, Level, UnitCategory, Uuid
from swms.text import MultiLine

MAX_PAGE_SIZE = 200
MAX_OFFSET = 10_000        # page × page_size beyond this: use the cursor (keyset pagination)
MAX_BATCH = 1000


class Stage(str, Enum):
    INITIAL = "initial"             # 初审
    INTERMEDIATE = "intermediate"   # a middle level, in provinces with three-level chains
    FINAL = "final"                 # 终审


class Decision(str, Enum):
    APPROVE = "approve"             # 通过
    REJECT = "reject"               # 不通过 (reason required, the applicant sees it)
    RETURN = "return"               # 退回修改 (reason required: what to correct)


class ItemStatus(str, Enum):
    PENDING = "pending"             # 待审核
    APPROVED = "approved"
    REJECTED = "rejected"
    RETURNED = "returned"


class DeadlineState(str, Enum):
    ON_TIME = "on_time"
    NEAR_DUE = "near_due"           # 临近期限: at most REVIEW_NEAR_DUE_WORKING_DAYS working days left
    OVERDUE = "overdue"             # 已超期


class OfficerLevel(str, Enum):
    COUNTY = "county"
    CITY = "city"
    PROVINCE = "province"


class QueueRequest(Contract):
    """An officer's queue: items of the caller's level in the caller's jurisdiction, oldest first."""
    kind: ApplicationKind | None = Field(default=None, title="申请类型")
    status: ItemStatus = Field(default=ItemStatus.PENDING, title="审核状态")
    submitted_from: dt.date | None = Field(default=None, title="提交日期（起）")
    submitted_to: dt.date | None = Field(default=None, title="提交日期（止）")
    deadline: DeadlineState | None = Field(default=None, title="办理期限")
    page_size: int = Field(default=20, title="每页条数", ge=1, le=MAX_PAGE_SIZE)
    page: int = Field(default=1, title="页码", ge=1, le=MAX_OFFSET)
    cursor: str | None = Field(default=None, title="翻页标记", min_length=1, max_length=300)

    @field_validator("submitted_to")
    @classmethod
    def _range_in_order(cls, value: dt.date | None, info: ValidationInfo):
        start = info.data.get("submitted_from")
        if value is not None and start is not None and value < start:
            raise ValueError("截止日期不能早于起始日期")
        return value

    @field_validator("deadline")
    @classmethod
    def _deadline_only_for_pending(cls, value: DeadlineState | None, info: ValidationInfo):
        if value is not None and info.data.get("status", ItemStatus.PENDING) != ItemStatus.PENDING:
            raise ValueError("仅待审核事项可按办理期限筛选")
        return value

    @field_validator("page")
    @classmethod
    def _page_within_reach(cls, value: int, info: ValidationInfo):
        page_size = info.data.get("page_size")
        if page_size is not None and value * page_size > MAX_OFFSET:
            raise ValueError(f"页码过大（按页码只能翻到前 {MAX_OFFSET} 条），请使用翻页标记（cursor）继续")
        return value

    @field_validator("cursor")
    @classmethod
    def _cursor_or_page(cls, value: str | None, info: ValidationInfo):
        if value is not None and info.data.get("page", 1) != 1:
            raise ValueError("使用翻页标记时不能同时指定页码")
        return value


class ReviewItem(Contract):
    item_id: Uuid
    application_id: Uuid
    person_id: Uuid
    kind: ApplicationKind
    stage: Stage
    level: OfficerLevel
    round: int = Field(title="提交轮次")
    region_code: str
    applicant_name_masked: str
    submitted_at: dt.datetime
    accepted_at: dt.datetime = Field(title="受理时间")
    status: ItemStatus
    due_at: dt.datetime = Field(title="办理期限（UTC）")
    due_date: dt.date = Field(title="办理期限（北京时间日期）")
    deadline_state: DeadlineState | None = Field(default=None, title="期限状态（仅待审核）")
    working_days_left: int | None = Field(default=None, title="剩余工作日（仅待审核，负数为超期）")
    decided_by: str | None = None
    decided_at: dt.datetime | None = None
    reason: str | None = None


class QueuePage(Contract):
    items: list[ReviewItem]
    page: int
    page_size: int
    total: int | None = Field(title="符合条件的事项数（至多 10000；按翻页标记取的页不重新计数，为空）")
    total_capped: bool = Field(default=False, title="是否超过 10000 条（超过时 total 为 10000）")
    next_cursor: str | None = Field(default=None, title="下一页翻页标记（无则已到末页）")


class DecideRequest(Contract):
    item_id: Uuid = Field(title="审核事项编号")
    decision: Decision = Field(title="审核结论")
    # validate_default: the rule must run when the reason is left out, and name this field.
    reason: Annotated[str, Field(max_length=500), MultiLine] | None = Field(default=None, title="理由",
                                                                             validate_default=True)

    @field_validator("reason")
    @classmethod
    def _reason_for_rejection(cls, value: str | None, info: ValidationInfo):
        decision = info.data.get("decision")
        if decision in (Decision.REJECT, Decision.RETURN) and not (value or "").strip():
            raise ValueError("不通过时须填写理由（申请人可见）" if decision == Decision.REJECT
                             else "退回修改时须填写理由（申请人可见，说明需修改之处）")
        return value


class DecisionResponse(Contract):
    item_id: Uuid
    application_id: Uuid
    stage: Stage
    decision: Decision
    decided_at: dt.datetime
    next_stage: Stage | None


class BatchApproveRequest(Contract):
    """批量审核通过: each item is decided, audited and announced on its own."""
    item_ids: list[Uuid] = Field(title="审核事项编号列表", min_length=1, max_length=MAX_BATCH)
    reason: Annotated[str, Field(max_length=500), MultiLine] | None = Field(default=None, title="审核意见")

    @field_validator("item_ids")
    @classmethod
    def _no_duplicates(cls, value: list[str]):
        seen = set()
        for item_id in value:
            if item_id in seen:
                raise ValueError(f"编号 {item_id} 重复")
            seen.add(item_id)
        return value


class BatchItemResult(Contract):
    item_id: Uuid
    ok: bool
    application_id: Uuid | None = None
    stage: Stage | None = None
    next_stage: Stage | None = None
    decided_at: dt.datetime | None = None
    error_code: str | None = None       # NOT_FOUND / FORBIDDEN / ALREADY_DECIDED / UPSTREAM_UNAVAILABLE
    error_message: str | None = None


class BatchDecisionResponse(Contract):
    batch_id: Uuid
    approved: int
    failed: int
    results: list[BatchItemResult]   # in the order of the request


class ItemRef(Contract):
    item_id: Uuid = Field(title="审核事项编号")


class TrailEntry(Contract):
    """One review step of the application, across rounds (resubmissions) and levels."""
    item_id: Uuid
    round: int
    level: OfficerLevel
    stage: Stage
    status: ItemStatus
    opened_at: dt.datetime
    decided_by: str | None = None
    decided_at: dt.datetime | None = None
    reason: str | None = None


class SubmittedWorkExperience(Contract):
    unit_name: str
    position: str
    start_date: dt.date
    end_date: dt.date | None = None
    description: str = ""
    sanqu_programme: bool = False
    qianshou_programme: bool = False
    proof_files: list[int] = []        # indexes into ItemDetail.files


class SubmittedHonour(Contract):
    title: str
    level: str
    awarding_body: str
    awarded_on: dt.date
    proof_file: int | None = None      # index into ItemDetail.files


class SubmittedOnlineRecord(Contract):
    """线上学时: a record of the continuing-education platform, as submitted."""
    source: str
    record_id: str
    course: str
    provider: str
    hours: float
    completed_on: dt.date


class SubmittedOfflineCourse(Contract):
    """线下学时 as submitted; the proof is an entry of ItemDetail.files."""
    institution: str
    course: str
    start_date: dt.date
    end_date: dt.date
    hours: float
    proof_file: int | None = None      # index into ItemDetail.files


class SubmittedContinuingEducation(Contract):
    """继续教育 of a re-registration as submitted: hours against the requirement of the period."""
    period_from: dt.date
    period_until: dt.date
    required_hours: float
    online_hours: float
    offline_hours: float
    total_hours: float
    online_records: list[SubmittedOnlineRecord] = []
    offline_courses: list[SubmittedOfflineCourse] = []


class SubmittedForm(Contract):
    """The application exactly as submitted, reduced to what a reviewer needs: the ID number masked."""
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
    work_experiences: list[SubmittedWorkExperience] = []
    honours: list[SubmittedHonour] = []
    profile_revision: int = 0
    previous_certificate_number: str | None = None
    original_certificate_no: str | None = None
    original_registration_type: str | None = None
    original_valid_from: dt.date | None = None
    original_valid_until: dt.date | None = None
    continuing_education: SubmittedContinuingEducation | None = None


class ItemFile(Contract):
    kind: str        # photo / work_experience_proof / honour_proof / continuing_education_proof
    label: str
    url: str | None = None             # short-lived; None while no link could be made (see note)
    content_type: str | None = None
    expires_in_seconds: int | None = None
    note: str | None = None


class ItemDetail(Contract):
    item: ReviewItem
    form: SubmittedForm
    files: list[ItemFile]
    trail: list[TrailEntry]


class AuditEntry(Contract):
    at: dt.datetime
    actor: str
    action: str                        # item.opened / item.viewed / item.approved / item.rejected / item.returned
    level: str | None = None
    stage: str | None = None
    decision: str | None = None
    reason: str | None = None
    batch_id: str | None = None


class ItemAudit(Contract):
    item_id: Uuid
    entries: list[AuditEntry]


class SummaryRequest(Contract):
    group_by: OfficerLevel = Field(default=OfficerLevel.COUNTY, title="统计单位（区县/地市/省）")


class RegionCount(Contract):
    region: str                        # 6-, 4- or 2-digit prefix of the applicants' county codes
    level: OfficerLevel                # the level the items wait at
    pending: int
    near_due: int
    overdue: int


class DeadlineSummary(Contract):
    """Pending items per region within the caller's jurisdiction (all levels), with deadline counts."""
    as_of: dt.datetime
    near_due_working_days: int
    rows: list[RegionCount]
    pending: int
    near_due: int
    overdue: int
    calendar_years: list[int]          # years the holiday calendar covers
