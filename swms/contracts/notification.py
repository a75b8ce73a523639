"""Notification's RPC contracts: what a person, an operator or a service can ask about emails."""
from __future__ import annotations

import datetime as dt
from enum import Enum

from pydantic import Field, ValidationInfo, field_validator

from swms.contracts.common import AccessReason, Contract, Uuid


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
