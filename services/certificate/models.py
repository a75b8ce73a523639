"""Certificate's own database: certificates, issue requests, serial counters, development keys."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, Date, DateTime, Index, Integer, LargeBinary, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from swms.audit import AuditLog
from swms.outbox import Inbox, Outbox
from swms.throttle import Throttle

metadata = MetaData()


class Base(DeclarativeBase):
    metadata = metadata


# Certificate statuses. ``issuing``: number reserved, PDF not yet stored (invisible to everyone but
# the issue pipeline). ``issued`` is the current, valid state (verification answers "current").
ISSUING, ISSUED = "issuing", "issued"
SUSPENDED, REVOKED, EXPIRED, SUPERSEDED = "suspended", "revoked", "expired", "superseded"
STATUSES = (ISSUING, ISSUED, SUSPENDED, REVOKED, EXPIRED, SUPERSEDED)
# A holder "has" a certificate in these states (a new first registration is refused meanwhile).
HELD = (ISSUED, SUSPENDED)

# Issue request statuses.
PENDING, DONE, FAILED = "pending", "done", "failed"


class Certificate(Base):
    __tablename__ = "certificates"
    certificate_number: Mapped[str] = mapped_column(String(20), primary_key=True)
    # Unique: the same approval delivered twice finds this row instead of making a second certificate.
    application_id: Mapped[str] = mapped_column(String(36), unique=True)
    person_id: Mapped[str] = mapped_column(String(36), index=True)
    kind: Mapped[str] = mapped_column(String(30), default="first_registration")
    status: Mapped[str] = mapped_column(String(20))
    holder_name: Mapped[str] = mapped_column(String(50))
    id_number: Mapped[str] = mapped_column(String(18))
    gender: Mapped[str] = mapped_column(String(2), default="")
    level: Mapped[str] = mapped_column(String(20))
    region_code: Mapped[str] = mapped_column(String(6))
    unit_name: Mapped[str] = mapped_column(String(100), default="")
    photo_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    photo_missing: Mapped[bool] = mapped_column(Boolean, default=False)
    authority: Mapped[str] = mapped_column(String(100))
    valid_from: Mapped[dt.date] = mapped_column(Date)
    valid_until: Mapped[dt.date] = mapped_column(Date)
    issued_on: Mapped[dt.date | None] = mapped_column(Date, nullable=True)
    issued_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    object_key: Mapped[str] = mapped_column(String(200))
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    signer_fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    # lifecycle: the last change and why (revocation, suspension, reinstatement, expiry, reissue)
    status_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    status_changed_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    status_changed_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    # re-issue: the certificate this one replaced, and the one that replaced this
    supersedes: Mapped[str | None] = mapped_column(String(20), nullable=True)
    superseded_by: Mapped[str | None] = mapped_column(String(20), nullable=True)
    # 已出证待升级: the holder passed this higher level; a new certificate is due
    pending_upgrade_level: Mapped[str | None] = mapped_column(String(20), nullable=True)
    # replacement e-certificate (更换电子证): the paper certificate, as typed from it
    original_certificate_no: Mapped[str | None] = mapped_column(String(8), nullable=True)
    original_registration_type: Mapped[str | None] = mapped_column(String(50), nullable=True)
    original_valid_from: Mapped[dt.date | None] = mapped_column(Date, nullable=True)
    original_valid_until: Mapped[dt.date | None] = mapped_column(Date, nullable=True)
    # Its entry in the status lists (docs/trust.md): list number and a random index in it, the
    # same in the revocation and the suspension list. None: issued before the lists existed (such
    # a certificate has no credential and keeps its v1 QR token).
    status_list: Mapped[int | None] = mapped_column(Integer, nullable=True)
    status_index: Mapped[int | None] = mapped_column(Integer, nullable=True)

    __table_args__ = (Index("ix_certificates_status_valid_until", "status", "valid_until"),
                      # an entry belongs to one certificate for ever (never reused)
                      Index("ux_certificates_status_entry", "status_list", "status_index", unique=True))


class IssueRequest(Base):
    """A final approval to act on: recorded first, so that no failure after it loses the approval.

    ``next_attempt_at`` doubles as a lease: whoever works on the request moves it into the future
    first, so a duplicate delivery or the retry sweep leaves it alone until the lease ends."""
    __tablename__ = "issue_requests"
    application_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(36))
    person_id: Mapped[str] = mapped_column(String(36))
    kind: Mapped[str] = mapped_column(String(30))
    region_code: Mapped[str] = mapped_column(String(6))
    status: Mapped[str] = mapped_column(String(20), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(DateTime)
    last_error_code: Mapped[str | None] = mapped_column(String(50), nullable=True)
    last_error_field: Mapped[str | None] = mapped_column(String(100), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    certificate_number: Mapped[str | None] = mapped_column(String(20), nullable=True)
    received_at: Mapped[dt.datetime] = mapped_column(DateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime)


class SerialCounter(Base):
    """Last serial used per (province, year, level): numbers are never reused."""
    __tablename__ = "serial_counters"
    scope: Mapped[str] = mapped_column(String(10), primary_key=True)
    last_serial: Mapped[int] = mapped_column(Integer)


class StatusList(Base):
    """One W3C Bitstring Status List number: its revocation and its suspension bits (raw, 16 KB
    each), each with a version that grows with every change (the published credential's ETag
    follows it). Changed in the same transaction as the certificate's status (domain.py)."""
    __tablename__ = "status_lists"
    list_number: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    allocated: Mapped[int] = mapped_column(Integer, default=0)      # entries given to certificates
    revocation_bits: Mapped[bytes] = mapped_column(LargeBinary)
    suspension_bits: Mapped[bytes] = mapped_column(LargeBinary)
    revocation_version: Mapped[int] = mapped_column(Integer, default=1)
    suspension_version: Mapped[int] = mapped_column(Integer, default=1)
    revocation_updated_at: Mapped[dt.datetime] = mapped_column(DateTime)
    suspension_updated_at: Mapped[dt.datetime] = mapped_column(DateTime)


class DevKeyMaterial(Base):
    """Development signing CA, QR-token key and ID-hash key, generated once on first run and shared
    by every replica through the database. Never used when production key files are configured."""
    __tablename__ = "dev_key_material"
    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    pem: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)


outbox = Outbox(metadata)
inbox = Inbox(metadata)
audit = AuditLog(metadata)
# Public verification's rate limits: key = '<scope>:<HMAC of the client address>' or a global one.
throttle = Throttle(metadata)
