"""Profile's own database: the personal information form (个人信息表), its files, and the
directory of registered social-work service organisations."""
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
)
from sqlalchemy import true as sa_true
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from swms.audit import AuditLog
from swms.outbox import Inbox, Outbox

metadata = MetaData()


class Base(DeclarativeBase):
    metadata = metadata


class Profile(Base):
    """One per person. Created on the person's first change to any part of the form, with what
    identity knows; the basic fields stay empty until 基础信息 is saved."""
    __tablename__ = "profiles"
    person_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    # Copied from identity at first save, never typed by the person.
    name: Mapped[str] = mapped_column(String(50))
    id_number: Mapped[str] = mapped_column(String(18), unique=True)
    gender: Mapped[str] = mapped_column(String(2))
    birth_date: Mapped[dt.date] = mapped_column(Date)
    level: Mapped[str] = mapped_column(String(20))
    management_number: Mapped[str] = mapped_column(String(32))
    exam_year: Mapped[int] = mapped_column(Integer)
    # 基础信息
    ethnicity: Mapped[str | None] = mapped_column(String(20), nullable=True)
    political_status: Mapped[str | None] = mapped_column(String(20), nullable=True)
    education: Mapped[str | None] = mapped_column(String(20), nullable=True)
    major: Mapped[str | None] = mapped_column(String(50), nullable=True)
    mobile: Mapped[str | None] = mapped_column(String(11), nullable=True)
    email: Mapped[str | None] = mapped_column(String(254), nullable=True)
    address: Mapped[str | None] = mapped_column(String(200), nullable=True)
    province_code: Mapped[str | None] = mapped_column(String(6), nullable=True)
    city_code: Mapped[str | None] = mapped_column(String(6), nullable=True)
    region_code: Mapped[str | None] = mapped_column(String(6), index=True, nullable=True)
    unit_category: Mapped[str | None] = mapped_column(String(20), nullable=True)
    unit_directory_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    unit_name: Mapped[str | None] = mapped_column(String(100), nullable=True)
    position: Mapped[str | None] = mapped_column(String(50), nullable=True)
    photo_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    truth_committed_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    # Increases by one with every change of any part (the number ProfileChanged carries).
    revision: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime)


class Organisation(Base):
    """A registered social-work service organisation (社会工作服务机构), imported from the
    registration authority's list."""
    __tablename__ = "organisations"
    org_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    credit_code: Mapped[str] = mapped_column(String(18), unique=True)   # 统一社会信用代码
    name: Mapped[str] = mapped_column(String(100), index=True)
    region_code: Mapped[str] = mapped_column(String(6), index=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=sa_true())
    imported_at: Mapped[dt.datetime] = mapped_column(DateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime)


class WorkExperienceRow(Base):
    __tablename__ = "work_experiences"
    experience_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    person_id: Mapped[str] = mapped_column(ForeignKey("profiles.person_id"), index=True)
    unit_category: Mapped[str] = mapped_column(String(20))
    unit_directory_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    unit_name: Mapped[str] = mapped_column(String(100))
    position: Mapped[str] = mapped_column(String(50))
    start_date: Mapped[dt.date] = mapped_column(Date)
    end_date: Mapped[dt.date | None] = mapped_column(Date, nullable=True)
    description: Mapped[str] = mapped_column(Text, default="")
    sanqu_programme: Mapped[bool] = mapped_column(Boolean, default=False)
    qianshou_programme: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime)


class HonourRow(Base):
    __tablename__ = "honours"
    honour_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    person_id: Mapped[str] = mapped_column(ForeignKey("profiles.person_id"), index=True)
    title: Mapped[str] = mapped_column(String(100))
    level: Mapped[str] = mapped_column(String(20))
    awarding_body: Mapped[str] = mapped_column(String(100))
    awarded_on: Mapped[dt.date] = mapped_column(Date)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime)


# StoredFile.status
ACTIVE, RETIRED, DELETING = "active", "retired", "deleting"
PHOTO, PROOF = "photo", "proof"


class StoredFile(Base):
    """A checked file in object storage (photo or proof), under a key the person cannot write to.

    ``status`` active: part of the form now; retired: replaced or removed, kept only while a hold
    (:class:`FileHold`) or the grace period needs it; deleting: claimed by housekeeping, the object
    is being deleted (the row goes with it). ``referenced_at``: when a snapshot first named the
    file. From then on a registration submission in flight may name it, so once retired it is kept
    for the grace period; a file no snapshot ever named is deleted as soon as it is retired.
    """
    __tablename__ = "stored_files"
    file_key: Mapped[str] = mapped_column(String(200), primary_key=True)
    person_id: Mapped[str] = mapped_column(String(36), index=True)
    kind: Mapped[str] = mapped_column(String(10))                       # photo / proof
    owner_id: Mapped[str | None] = mapped_column(String(36), index=True, nullable=True)  # experience/honour
    content_type: Mapped[str] = mapped_column(String(40))
    size_bytes: Mapped[int] = mapped_column(Integer)
    width: Mapped[int | None] = mapped_column(Integer, nullable=True)
    height: Mapped[int | None] = mapped_column(Integer, nullable=True)
    sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(10), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    retired_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    referenced_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)


LEGACY_HOLDER = "legacy"


class FileHold(Base):
    """Something besides the form needs a file until ``held_until``: a submitted application
    version (``submission:<application_id>:<round>``, for the retention period of that record) or an
    issued certificate (``certificate:<number>``, while it is valid). Registration announces holds
    (event ``registration.files_held``). ``held_until`` NULL: until released (``legacy``: files
    snapshotted before holds existed, see docs/operations.md)."""
    __tablename__ = "file_holds"
    file_key: Mapped[str] = mapped_column(String(200), primary_key=True)
    holder: Mapped[str] = mapped_column(String(80), primary_key=True)
    person_id: Mapped[str] = mapped_column(String(36), index=True)
    held_until: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime)


class Upload(Base):
    """An upload ticket: the person may POST one file to ``object_key`` until ``expires_at``.
    Housekeeping deletes the object and the row a while after expiry, confirmed or not (a ticket
    can be reused until it expires, so nothing under ``incoming/`` outlives it)."""
    __tablename__ = "uploads"
    upload_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    person_id: Mapped[str] = mapped_column(String(36), index=True)
    purpose: Mapped[str] = mapped_column(String(10))
    object_key: Mapped[str] = mapped_column(String(200))
    max_bytes: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime, index=True)
    consumed_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    consumed_as: Mapped[str | None] = mapped_column(String(200), nullable=True)  # the stored file key
    # The final key a checked copy is written to, recorded before the write: if the process dies
    # between that write and the form's transaction, housekeeping still knows what to delete.
    staged_key: Mapped[str | None] = mapped_column(String(200), nullable=True)


outbox = Outbox(metadata)
inbox = Inbox(metadata)
audit = AuditLog(metadata)
