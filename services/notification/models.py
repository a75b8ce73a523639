"""Notification's own database: every message is recorded before it is sent."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import DateTime, Integer, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from swms.audit import AuditLog
from swms.outbox import Inbox, Outbox

metadata = MetaData()


class Base(DeclarativeBase):
    metadata = metadata


PENDING, SENT, FAILED = "pending", "sent", "failed"


class Message(Base):
    __tablename__ = "messages"
    message_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    # event id + message kind: the same event delivered twice records (and sends) one message.
    idempotency_key: Mapped[str] = mapped_column(String(120), unique=True)
    person_id: Mapped[str] = mapped_column(String(36), index=True)
    kind: Mapped[str] = mapped_column(String(50))
    to_address: Mapped[str] = mapped_column(String(254))
    subject: Mapped[str] = mapped_column(String(200))
    body_text: Mapped[str] = mapped_column(Text)
    body_html: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(10), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(DateTime)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)


outbox = Outbox(metadata)
inbox = Inbox(metadata)
audit = AuditLog(metadata)
