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
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from swms.audit import AuditLog
from swms.outbox import Inbox, Outbox

metadata = MetaData()


class Base(DeclarativeBase):
    metadata = metadata


PENDING, APPROVED, REJECTED, RETURNED = "pending", "approved", "rejected", "returned"


class ReviewItem(Base):
    __tablename__ = "review_items"
    __table_args__ = (
        # One item per application, submission round and step of the chain.
        UniqueConstraint("application_id", "round", "step"),
        # The officers' queue: items of one level in one jurisdiction and one status, oldest first,
        # read by keyset (submitted_at, item_id); the same with a kind filter; deadline filters.
        Index("ix_review_queue_submitted", "level", "region_prefix", "status", "submitted_at", "item_id"),
        Index("ix_review_queue_kind", "level", "region_prefix", "status", "kind", "submitted_at", "item_id"),
        Index("ix_review_queue_due", "level", "region_prefix", "status", "due_at"),
        # Deadline counts per region (all levels) within a jurisdiction.
        Index("ix_review_region_deadline", "status", "region_code", "level", "due_at"),
        # At most one pending item per application: a duplicate submission cannot open a second one.
        Index("ux_review_one_pending", "application_id", unique=True,
              sqlite_where=text("status = 'pending'"), postgresql_where=text("status = 'pending'")),
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
    # 受理: when review received this submission round; the 30-working-day deadline runs from it
    # for the whole chain (every level's item of one round carries the same accepted_at and due_at).
    accepted_at: Mapped[dt.datetime] = mapped_column(DateTime)
    due_at: Mapped[dt.datetime] = mapped_column(DateTime)
    opened_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)  # entered this level's queue
    # The chain this round follows (e.g. "county,province"), fixed when the round starts, so that a
    # chain changed in configuration does not re-route items already under way.
    chain: Mapped[str | None] = mapped_column(String(40), nullable=True)
    status: Mapped[str] = mapped_column(String(10))
    decided_by: Mapped[str | None] = mapped_column(String(36), nullable=True)
    decided_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)


outbox = Outbox(metadata)
inbox = Inbox(metadata)
audit = AuditLog(metadata)
