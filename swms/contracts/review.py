from __future__ import annotations

import datetime as dt
from enum import Enum

from pydantic import Field, ValidationInfo, field_validator

from swms.contracts.common import ApplicationKind, Contract, Uuid


class Stage(str, Enum):
    INITIAL = "initial"             # 初审
    INTERMEDIATE = "intermediate"   # a middle level, in provinces with three-level chains
    FINAL = "final"                 # 终审


class Decision(str, Enum):
    APPROVE = "approve"
    REJECT = "reject"


class QueueRequest(Contract):
    kind: ApplicationKind | None = Field(default=None, title="申请类型")
    page: int = Field(default=1, title="页码", ge=1, le=100000)
    page_size: int = Field(default=20, title="每页条数", ge=1, le=200)


class ReviewItem(Contract):
    item_id: Uuid
    application_id: Uuid
    person_id: Uuid
    kind: ApplicationKind
    stage: Stage
    region_code: str
    applicant_name_masked: str
    submitted_at: dt.datetime
    status: str
    due_at: dt.datetime


class QueuePage(Contract):
    items: list[ReviewItem]
    page: int
    page_size: int
    total: int


class DecideRequest(Contract):
    item_id: Uuid = Field(title="审核事项编号")
    decision: Decision = Field(title="审核结论")
    # validate_default: the rule must run when the reason is left out, and name this field.
    reason: str | None = Field(default=None, title="理由", max_length=500, validate_default=True)

    @field_validator("reason")
    @classmethod
    def _reason_for_rejection(cls, value: str | None, info: ValidationInfo):
        if info.data.get("decision") == Decision.REJECT and not (value or "").strip():
            raise ValueError("不通过时须填写理由")
        return value


class DecisionResponse(Contract):
    item_id: Uuid
    application_id: Uuid
    stage: Stage
    decision: Decision
    decided_at: dt.datetime
    next_stage: Stage | None
