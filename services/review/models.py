"""Review's own database: one review item per application per review level."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from swms.audit import AuditLog
from swms.outbox import Inbox, Outbox

metadata = MetaData()


class Base(DeclarativeBase):
    metadata = metadata


PENDING, APPROVED, REJECTED = "pending", "approved", "rejected"


class ReviewItem(Base):
    __tablename__ = "review_items"
    __table_args__ = (
        # One item per application, submission round and step of the chain.
        UniqueConstraint("application_id", "round", "step"),
        # The officers' queue: pending items of one level in one jurisdiction, oldest first.
        Index("ix_review_queue", "status", "level", "region_prefix", "submitted_at"),
    )
    item_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    application_id: Mapped[str] = mapped_column(String(36), index=True)
    person_id: Mapped[str] = mapped_column(String(36))
    kind: Mapped[str] = mapped_column(String(30))
    round: Mapped[int] = mapped_column(Integer)    # 1 for the first submission, +1 per resubmission
    step: Mapped[int] = mapped_column(Integer)     # position in the review chain, 0 = initial
    chain_length: Mapped[int] = mapped_column(Integer)
    level: Mapped[str] = mapped_column(String(10))  # county / city / province
    region_code: Mapped[str] = mapped_column(String(6))     # the applicant's county code
    region_prefix: Mapped[str] = mapped_column(String(6))   # the part that names the jurisdiction
    applicant_name_masked: Mapped[str] = mapped_column(String(50))
    submitted_at: Mapped[dt.datetime] = mapped_column(DateTime)
    accepted_at: Mapped[dt.datetime] = mapped_column(DateTime)
    due_at: Mapped[dt.datetime] = mapped_column(DateTime)
    status: Mapped[str] = mapped_column(String(10))
    decided_by: Mapped[str | None] = mapped_column(String(36), nullable=True)
    decided_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)


outbox = Outbox(metadata)
inbox = Inbox(metadata)
audit = AuditLog(metadata)
