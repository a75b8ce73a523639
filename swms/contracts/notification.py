"""Notification's RPC contracts: what a person, an operator or a service can ask about emails."""
from __future__ import annotations

import datetime as dt
from enum import Enum
from typing import Annotated

from pydantic import Field, ValidationInfo, field_validator, model_validator

from swms.contracts.common import AccessReason, Contract, Uuid
from swms.text import OneLine


class MessageStatus(str, Enum):
    PENDING = "pending"     # recorded; not yet accepted by the mail relay (being sent or retried)
    SENT = "sent"           # the mail relay accepted it
    FAILED = "failed"       # will not be sent: see error_code / last_error


class MessagesRequest(Contract):
    """Recent messages to one person: their own, for services, or for an administrator stating
    ``access_reason`` (audited)."""
    person_id: Uuid = Field(title="人员编号")
    status: MessageStatus | None = Field(default=None, title="发送状态")
    limit: int = Field(default=100, title="条数", ge=1, le=500)
    access_reason: AccessReason = None


class MessageOut(Contract):
    message_id: Uuid
    kind: str
    to_masked: str
    subject: str
    status: str
    attempts: int
    created_at: dt.datetime
    sent_at: dt.datetime | None
    last_error: str | None
    # added with issue 8 (clients ignore what they do not know)
    audience: str = "person"          # person / officer
    language: str = "zh-CN"
    reference: str | None = None      # application id, certificate number, feedback id
    error_code: str | None = None     # ADDRESS_INVALID, TEMPLATE_VARIABLE_MISSING, RECIPIENT_REFUSED, …
    error_field: str | None = None
    last_attempt_at: dt.datetime | None = None
    next_attempt_at: dt.datetime | None = None


class MessageList(Contract):
    items: list[MessageOut]


class FailuresRequest(Contract):
    """Operators: what could not be sent (and, by default, what is still being retried).

    Filter by ``person_id`` or by ``email`` (for recipients without an account, e.g. a 反馈
    submitter), or neither for the whole service; ``since`` bounds the age."""
    person_id: Uuid | None = Field(default=None, title="人员编号")
    email: str | None = Field(default=None, title="电子邮箱", min_length=3, max_length=254)
    since: dt.datetime | None = Field(default=None, title="起始时间")
    include_retrying: bool = Field(default=True, title="包括重试中的邮件")
    limit: int = Field(default=100, title="条数", ge=1, le=500)

    @field_validator("email")
    @classmethod
    def _one_filter(cls, value: str | None, info: ValidationInfo):
        if value is not None and info.data.get("person_id"):
            raise ValueError("人员编号与电子邮箱只能选择一个")
        return value


class FailureOut(Contract):
    """``source``: ``message`` (an email that failed or is being retried) or ``lookup`` (an event
    whose recipients could not be found: nothing was sent)."""
    source: str
    id: Uuid
    kind: str                          # message kind, or the job's task (e.g. application_submitted.applicant)
    person_id: str | None
    to_masked: str | None
    reference: str | None
    status: str                        # failed / pending (being retried)
    attempts: int
    error_code: str | None
    error_field: str | None
    last_error: str | None
    created_at: dt.datetime
    last_attempt_at: dt.datetime | None = None
    next_attempt_at: dt.datetime | None = None


class FailureList(Contract):
    items: list[FailureOut]


class RetryRequest(Contract):
    message_id: Uuid = Field(title="邮件编号")


class ReminderOut(Contract):
    reminder_id: Uuid
    certificate_number: str
    kind: str                          # reregistration_window_open / reregistration_reminder
    valid_until: dt.date
    due_at: dt.datetime
    status: str                        # scheduled / held / enqueued / cancelled / skipped
    note: str | None


class RemindersRequest(Contract):
    """A person's scheduled reminders: their own, for services, or for an administrator stating
    ``access_reason`` (audited)."""
    person_id: Uuid = Field(title="人员编号")
    access_reason: AccessReason = None


class ReminderList(Contract):
    items: list[ReminderOut]


# ---- webhooks for agencies (docs/webhooks.md) ---------------------------------------------------

class WebhookEventType(str, Enum):
    """The certificate events an agency can receive (docs/events-for-agencies.md)."""
    CERTIFICATE_ISSUED = "certificate_issued"
    CERTIFICATE_SUSPENDED = "certificate_suspended"
    CERTIFICATE_REINSTATED = "certificate_reinstated"
    CERTIFICATE_REVOKED = "certificate_revoked"
    CERTIFICATE_EXPIRED = "certificate_expired"
    CERTIFICATE_REISSUED = "certificate_reissued"


class WebhookEndpointRequest(Contract):
    """Admin: register an agency's endpoint. The signing secret is generated and shown once."""
    agency: Annotated[str, OneLine] = Field(title="机构名称", min_length=1, max_length=100)
    url: str = Field(title="回调地址", min_length=8, max_length=2048,
                     description="https:// 网址（开发环境可配置允许本机 http）")
    event_types: list[WebhookEventType] = Field(title="事件类型", min_length=1, max_length=6)
    admin_email: str = Field(title="机构管理员电子邮箱", max_length=254,
                             description="回调地址因连续失败被停用时通知此邮箱")


class WebhookEndpointOut(Contract):
    endpoint_id: Uuid
    agency: str
    url: str
    event_types: list[str]
    admin_email: str
    status: str                         # active / disabled
    failing_since: dt.datetime | None
    disabled_at: dt.datetime | None
    disabled_reason: str | None
    created_by: str
    created_at: dt.datetime


class WebhookEndpointCreated(Contract):
    """``secret`` (``whsec_`` + base64) is shown this once; SWMS keeps it encrypted, never returns it again."""
    endpoint: WebhookEndpointOut
    secret: str


class WebhookEndpointList(Contract):
    items: list[WebhookEndpointOut]


class WebhookEndpointsRequest(Contract):
    """Admin: every registered endpoint."""


class WebhookEndpointStatusRequest(Contract):
    """Admin: enable (again) or disable an endpoint, with the reason (audited)."""
    endpoint_id: Uuid = Field(title="回调地址编号")
    enabled: bool = Field(title="启用")
    reason: Annotated[str, OneLine] = Field(title="理由", min_length=2, max_length=200)


class WebhookDeliveriesRequest(Contract):
    endpoint_id: Uuid = Field(title="回调地址编号")
    status: str | None = Field(default=None, title="投递状态", pattern=r"^(pending|delivered|dead)$")
    limit: int = Field(default=100, title="条数", ge=1, le=500)


class WebhookAttemptOut(Contract):
    attempted_at: dt.datetime
    outcome: str                        # delivered / http_error / unreachable / timeout
    status_code: int | None
    latency_ms: int
    error: str | None


class WebhookDeliveryOut(Contract):
    delivery_id: Uuid
    event_id: str                       # the webhook-id header
    event_type: str
    replay_id: str | None
    status: str                         # pending / delivered / dead
    attempts: int
    next_attempt_at: dt.datetime | None
    give_up_at: dt.datetime
    created_at: dt.datetime
    delivered_at: dt.datetime | None
    last_status_code: int | None
    last_error: str | None
    attempt_log: list[WebhookAttemptOut]


class WebhookDeliveryList(Contract):
    items: list[WebhookDeliveryOut]


class WebhookReplayRequest(Contract):
    """Every event the endpoint subscribes to after ``since_event_id`` or logged since ``since``
    (one of the two), delivered again in order with the same ``webhook-id``."""
    endpoint_id: Uuid = Field(title="回调地址编号")
    since_event_id: Uuid | None = Field(default=None, title="起始事件编号（不含）")
    since: dt.datetime | None = Field(default=None, title="起始时间")

    @model_validator(mode="after")
    def _one_start(self):
        if (self.since is None) == (self.since_event_id is None):
            raise ValueError("起始事件编号与起始时间须给出且只给出一个")
        return self


class WebhookReplayOut(Contract):
    replay_id: Uuid
    count: int
    first_event_id: str | None
    last_event_id: str | None
