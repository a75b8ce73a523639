"""Registration's own database: applications (drafts included) with the snapshot submitted and
every submitted version, their status history, the certificates people hold (from certificate
events), level raises awaiting an upgrade, continuing-education records, and proof files."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from swms.audit import AuditLog
from swms.outbox import Inbox, Outbox

metadata = MetaData()


class Base(DeclarativeBase):
    metadata = metadata


class Application(Base):
    __tablename__ = "applications"
    __table_args__ = (UniqueConstraint("open_person_id", name="uq_applications_open_person_id"),)
    application_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    person_id: Mapped[str] = mapped_column(String(36), index=True)
    kind: Mapped[str] = mapped_column(String(30))
    status: Mapped[str] = mapped_column(String(20))
    region_code: Mapped[str] = mapped_column(String(6))
    # The profile copy (JSON). A draft (未登记) follows the profile; once submitted it is exactly
    # what was submitted: what the reviewer saw is what is stored.
    snapshot: Mapped[str] = mapped_column(Text)
    committed_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    submitted_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime)
    rejection_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    certificate_number: Mapped[str | None] = mapped_column(String(20), nullable=True)
    created_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    level: Mapped[str | None] = mapped_column(String(20), nullable=True)
    # Kind-specific part of the form (JSON): offline courses and the continuing-education
    # summary, or the paper certificate's details.
    form: Mapped[str | None] = mapped_column(Text, nullable=True)
    snapshot_revision: Mapped[int] = mapped_column(Integer, default=0)
    # The newest profile revision announced by profile_changed: above snapshot_revision = stale.
    profile_revision_seen: Mapped[int] = mapped_column(Integer, default=0)
    round: Mapped[int] = mapped_column(Integer, default=0)
    # person_id while the application is open (draft, in review, rejected), NULL once issued:
    # the unique constraint makes "one open application per person" hold under concurrency.
    open_person_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    previous_certificate_number: Mapped[str | None] = mapped_column(String(20), nullable=True)
    # replacement: province (2 digits) + the paper certificate's 8-digit NO
    original_no_key: Mapped[str | None] = mapped_column(String(10), nullable=True, index=True)
    # Where review has it (from review's events; services/registration/progress.py): the round,
    # the officer level (county/city/province), that level's stage and what it decided so far.
    review_round: Mapped[int | None] = mapped_column(Integer, nullable=True)
    review_level: Mapped[str | None] = mapped_column(String(10), nullable=True)
    review_stage: Mapped[str | None] = mapped_column(String(16), nullable=True)
    review_outcome: Mapped[str | None] = mapped_column(String(10), nullable=True)
    history: Mapped[list["StatusChange"]] = relationship(order_by="StatusChange.id", lazy="selectin")


class StatusChange(Base):
    __tablename__ = "status_changes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    application_id: Mapped[str] = mapped_column(ForeignKey("applications.application_id"), index=True)
    status: Mapped[str] = mapped_column(String(20))
    at: Mapped[dt.datetime] = mapped_column(DateTime)
    actor: Mapped[str] = mapped_column(String(100))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class Submission(Base):
    """Every submitted version, kept: round N is what the reviewers of round N saw."""
    __tablename__ = "submissions"
    __table_args__ = (UniqueConstraint("application_id", "round"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    application_id: Mapped[str] = mapped_column(ForeignKey("applications.application_id"), index=True)
    round: Mapped[int] = mapped_column(Integer)
    submitted_at: Mapped[dt.datetime] = mapped_column(DateTime)
    actor: Mapped[str] = mapped_column(String(100))
    snapshot: Mapped[str] = mapped_column(Text)
    form: Mapped[str | None] = mapped_column(Text, nullable=True)


# Held certificate statuses (from the certificate service's events).
VALID, SUSPENDED, REVOKED, EXPIRED, SUPERSEDED = "valid", "suspended", "revoked", "expired", "superseded"


class HeldCertificate(Base):
    """A registration certificate as the certificate service announced it."""
    __tablename__ = "certificates"
    certificate_number: Mapped[str] = mapped_column(String(20), primary_key=True)
    person_id: Mapped[str] = mapped_column(String(36), index=True)
    application_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    level: Mapped[str] = mapped_column(String(20))
    region_code: Mapped[str] = mapped_column(String(6))
    valid_from: Mapped[dt.date] = mapped_column(Date)
    valid_until: Mapped[dt.date] = mapped_column(Date)
    issued_at: Mapped[dt.datetime] = mapped_column(DateTime)
    status: Mapped[str] = mapped_column(String(20))
    superseded_by: Mapped[str | None] = mapped_column(String(20), nullable=True)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime)


class LevelRaise(Base):
    """The registry raised a person's level (identity.passer_level_raised): 已出证待升级."""
    __tablename__ = "level_raises"
    person_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    previous_level: Mapped[str] = mapped_column(String(20))
    new_level: Mapped[str] = mapped_column(String(20))
    management_number: Mapped[str] = mapped_column(String(40))
    exam_year: Mapped[int] = mapped_column(Integer)
    raised_at: Mapped[dt.datetime] = mapped_column(DateTime)
    resolved_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    resolved_by_certificate: Mapped[str | None] = mapped_column(String(20), nullable=True)


class CeRecord(Base):
    """线上学时: a continuing-education record from a platform (event) or an imported file."""
    __tablename__ = "ce_records"
    __table_args__ = (UniqueConstraint("source", "record_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(40))
    record_id: Mapped[str] = mapped_column(String(64))
    # Events name the person; files name the ID number. One of the two is set.
    person_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    id_number: Mapped[str | None] = mapped_column(String(18), nullable=True, index=True)
    course: Mapped[str] = mapped_column(String(200))
    provider: Mapped[str] = mapped_column(String(200))
    hours_tenths: Mapped[int] = mapped_column(Integer)
    completed_on: Mapped[dt.date] = mapped_column(Date)
    withdrawn: Mapped[bool] = mapped_column(Boolean, default=False)
    recorded_at: Mapped[dt.datetime] = mapped_column(DateTime)
    # When the source made this version (an event's occurred_at; the import time for a file): an
    # older version arriving late (events are consumed in parallel) never overwrites a newer one.
    source_time: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)


class ProfileCopy(Base):
    """The newest 个人信息表 registration has fetched for a person (snapshot and 系统校验 result, as
    profile answered them), refreshed on every profile_changed. A submission that names the
    revision the applicant saw uses it without asking profile again."""
    __tablename__ = "profile_copies"
    person_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    revision: Mapped[int] = mapped_column(Integer)
    snapshot: Mapped[str] = mapped_column(Text)
    complete: Mapped[bool] = mapped_column(Boolean)
    completeness: Mapped[str] = mapped_column(Text)    # JSON: profile's CompletenessResponse
    fetched_at: Mapped[dt.datetime] = mapped_column(DateTime)


PROOF_PENDING, PROOF_VERIFIED, PROOF_REJECTED, PROOF_DELETED = "pending", "verified", "rejected", "deleted"


class ProofFileRow(Base):
    """An uploaded proof (offline-course certificate). Kept forever once part of a submission;
    otherwise deleted (object and all) when left unattached longer than the orphan limit."""
    __tablename__ = "proof_files"
    proof_key: Mapped[str] = mapped_column(String(200), primary_key=True)
    person_id: Mapped[str] = mapped_column(String(36), index=True)
    filename: Mapped[str] = mapped_column(String(200))
    content_type: Mapped[str] = mapped_column(String(50))
    status: Mapped[str] = mapped_column(String(20))
    size: Mapped[int | None] = mapped_column(Integer, nullable=True)
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    verified_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    application_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    released_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    submitted: Mapped[bool] = mapped_column(Boolean, default=False)


outbox = Outbox(metadata)
inbox = Inbox(metadata)
audit = AuditLog(metadata)
