"""Registration's own database: applications, each with the snapshot submitted, and their history."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import DateTime, ForeignKey, Integer, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from swms.audit import AuditLog
from swms.outbox import Inbox, Outbox

metadata = MetaData()


class Base(DeclarativeBase):
    metadata = metadata


class Application(Base):
    __tablename__ = "applications"
    application_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    person_id: Mapped[str] = mapped_column(String(36), index=True)
    kind: Mapped[str] = mapped_column(String(30))
    status: Mapped[str] = mapped_column(String(20))
    region_code: Mapped[str] = mapped_column(String(6))
    # The profile exactly as submitted (JSON): what the reviewer saw is what is stored.
    snapshot: Mapped[str] = mapped_column(Text)
    committed_at: Mapped[dt.datetime] = mapped_column(DateTime)
    submitted_at: Mapped[dt.datetime] = mapped_column(DateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime)
    rejection_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    certificate_number: Mapped[str | None] = mapped_column(String(20), nullable=True)
    history: Mapped[list["StatusChange"]] = relationship(order_by="StatusChange.id", lazy="selectin")


class StatusChange(Base):
    __tablename__ = "status_changes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    application_id: Mapped[str] = mapped_column(ForeignKey("applications.application_id"), index=True)
    status: Mapped[str] = mapped_column(String(20))
    at: Mapped[dt.datetime] = mapped_column(DateTime)
    actor: Mapped[str] = mapped_column(String(100))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)


outbox = Outbox(metadata)
inbox = Inbox(metadata)
audit = AuditLog(metadata)
