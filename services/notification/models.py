"""Notification's own database.

- ``jobs``: one row per thing to notify about (an event for one audience, or a due reminder),
  written by the event handler before anything else happens. A job is *composed* into messages
  once the recipients' addresses are looked up (identity, over RPC); lookups that fail for a while
  are retried with backoff, so an event is never lost because identity was away.
- ``messages``: every email, recorded (rendered, with its address) before it is sent; the mailer
  sends pending rows and records each outcome.
- ``reminders``: re-registration reminders scheduled from ``certificate_issued``; a timer turns
  due reminders into jobs (one transaction each), so a restart neither loses nor repeats one.
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    Boolean,
    Date,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from swms.audit import AuditLog
from swms.outbox import Inbox, Outbox

metadata = MetaData()


class Base(DeclarativeBase):
    metadata = metadata


# message and job statuses
PENDING, SENT, FAILED, DONE = "pending", "sent", "failed", "done"
# reminder statuses
SCHEDULED, HELD, ENQUEUED, CANCELLED, SKIPPED = "scheduled", "held", "enqueued", "cancelled", "skipped"
PERSON, OFFICER = "person", "officer"


class Message(Base):
    __tablename__ = "messages"
    message_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    # job key + recipient: the same event delivered twice records (and sends) one message.
    idempotency_key: Mapped[str] = mapped_column(String(120), unique=True)
    job_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    person_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)  # None: no account yet
    audience: Mapped[str] = mapped_column(String(10), server_default=text("'person'"))
    reference: Mapped[str | None] = mapped_column(String(64), nullable=True)  # application / certificate / feedback
    kind: Mapped[str] = mapped_column(String(50))
    language: Mapped[str] = mapped_column(String(20), server_default=text("'zh-CN'"))
    to_address: Mapped[str] = mapped_column(String(254), index=True)
    subject: Mapped[str] = mapped_column(String(200))
    body_text: Mapped[str] = mapped_column(Text)
    body_html: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(10), index=True)
    priority: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(DateTime)
    claim_token: Mapped[str | None] = mapped_column(String(36), nullable=True)
    give_up_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)  # transient failures end here
    last_attempt_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    error_code: Mapped[str | None] = mapped_column(String(40), nullable=True)
    error_field: Mapped[str | None] = mapped_column(String(100), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # password-reset codes: the body is blanked once the message is sent or has failed for good.
    sensitive: Mapped[bool] = mapped_column(Boolean, server_default=false())
    expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)

    __table_args__ = (Index("ix_messages_due", "status", "next_attempt_at"),)


class Job(Base):
    __tablename__ = "jobs"
    job_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    key: Mapped[str] = mapped_column(String(120), unique=True)   # event id + task, or reminder id
    task: Mapped[str] = mapped_column(String(60))
    person_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    reference: Mapped[str | None] = mapped_column(String(64), nullable=True)
    payload: Mapped[str] = mapped_column(Text)                    # the event (JSON), never an address or code
    status: Mapped[str] = mapped_column(String(10))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(DateTime)
    give_up_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    error_code: Mapped[str | None] = mapped_column(String(40), nullable=True)
    error_field: Mapped[str | None] = mapped_column(String(100), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    done_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)

    __table_args__ = (Index("ix_jobs_due", "status", "next_attempt_at"),)


class Reminder(Base):
    __tablename__ = "reminders"
    reminder_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    certificate_number: Mapped[str] = mapped_column(String(64))
    person_id: Mapped[str] = mapped_column(String(36), index=True)
    kind: Mapped[str] = mapped_column(String(40))       # reregistration_window_open / reregistration_reminder
    valid_until: Mapped[dt.date] = mapped_column(Date)
    due_at: Mapped[dt.datetime] = mapped_column(DateTime)
    status: Mapped[str] = mapped_column(String(12))
    note: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    done_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)

    __table_args__ = (UniqueConstraint("certificate_number", "kind", name="uq_reminders_certificate_kind"),
                      Index("ix_reminders_due", "status", "due_at"))


outbox = Outbox(metadata)
inbox = Inbox(metadata)
audit = AuditLog(metadata)


# ---- webhooks for agencies (webhooks.py) ---------------------------------------------------------
# endpoint statuses; delivery statuses
ACTIVE, DISABLED = "active", "disabled"
DELIVERED, DEAD = "delivered", "dead"


class WebhookEndpoint(Base):
    """An agency's HTTPS endpoint. The signing secret is kept encrypted (it must be usable to sign)."""
    __tablename__ = "webhook_endpoints"
    endpoint_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    agency: Mapped[str] = mapped_column(String(100))
    url: Mapped[str] = mapped_column(String(2048))
    event_types: Mapped[str] = mapped_column(Text)              # JSON list of routing keys
    secret_encrypted: Mapped[str] = mapped_column(Text)         # Fernet token of "whsec_…"
    admin_email: Mapped[str] = mapped_column(String(254))       # the agency's administrator (disable notices)
    status: Mapped[str] = mapped_column(String(10), index=True)
    failing_since: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)  # cleared by a success
    disabled_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    disabled_reason: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease_until: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)  # one sender at a time
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)


class AgencyEvent(Base):
    """Every agency-relevant event, as received (the body agencies get), kept for the retention period.
    ``seq`` is the log order: deliveries to one endpoint follow it."""
    __tablename__ = "agency_events"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    event_type: Mapped[str] = mapped_column(String(100))
    payload: Mapped[str] = mapped_column(Text)
    occurred_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    logged_at: Mapped[dt.datetime] = mapped_column(DateTime, index=True)


class WebhookDelivery(Base):
    """One event to one endpoint (a replay adds another row for the same event: same webhook-id)."""
    __tablename__ = "webhook_deliveries"
    delivery_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    endpoint_id: Mapped[str] = mapped_column(String(36))
    event_seq: Mapped[int] = mapped_column(Integer)
    event_id: Mapped[str] = mapped_column(String(36), index=True)
    event_type: Mapped[str] = mapped_column(String(100))
    replay_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    status: Mapped[str] = mapped_column(String(10))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(DateTime)
    give_up_at: Mapped[dt.datetime] = mapped_column(DateTime)
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(300), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)

    __table_args__ = (Index("ix_webhook_deliveries_queue", "endpoint_id", "status", "event_seq"),)


class WebhookAttempt(Base):
    """Every HTTP attempt: outcome, status code, latency. Never the body (it carries personal data)."""
    __tablename__ = "webhook_attempts"
    attempt_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(String(36), index=True)
    endpoint_id: Mapped[str] = mapped_column(String(36))
    attempted_at: Mapped[dt.datetime] = mapped_column(DateTime, index=True)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    latency_ms: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(20))     # delivered / http_error / unreachable / timeout
    error: Mapped[str | None] = mapped_column(String(300), nullable=True)
