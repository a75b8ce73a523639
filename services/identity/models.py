"""Identity's own database: the exam-passer registry (社工库), accounts, tokens, 反馈, throttles.

Resident ID numbers are stored in full only where they must be shown in full (the registry, the
account, a feedback an officer reviews). Throttle keys and audit entries carry a keyed hash
(HMAC) instead, so neither a failed login with an ID number nor an audit entry spells one out.
"""
from __future__ import annotations

from sqlalchemy import DateTime, ForeignKey, Index, Integer, MetaData, String, Text, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from swms.audit import AuditLog
from swms.outbox import Inbox, Outbox
from swms.throttle import Throttle

metadata = MetaData()


class Base(DeclarativeBase):
    metadata = metadata


class Passer(Base):
    """One row per person in the exam authority's lists (name, ID number, level, 管理号).
    A person who later passes a higher level keeps the row; level, 管理号 and year move up."""
    __tablename__ = "passers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id_number: Mapped[str] = mapped_column(String(18), unique=True, index=True)
    name: Mapped[str] = mapped_column(String(50))
    name_normalised: Mapped[str] = mapped_column(String(50))
    level: Mapped[str] = mapped_column(String(20))
    management_number: Mapped[str] = mapped_column(String(32))
    exam_year: Mapped[int] = mapped_column(Integer)
    province_code: Mapped[str] = mapped_column(String(2))
    imported_at: Mapped[object] = mapped_column(DateTime)
    source: Mapped[str] = mapped_column(String(10), default="import", server_default="import")  # import / feedback
    updated_at: Mapped[object | None] = mapped_column(DateTime, nullable=True)


class Account(Base):
    __tablename__ = "accounts"
    person_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    role: Mapped[str] = mapped_column(String(20))
    passer_id: Mapped[int | None] = mapped_column(ForeignKey("passers.id"), unique=True, nullable=True)
    id_number: Mapped[str | None] = mapped_column(String(18), unique=True, nullable=True)
    name: Mapped[str] = mapped_column(String(50))
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    region_code: Mapped[str | None] = mapped_column(String(6), nullable=True)
    officer_level: Mapped[str | None] = mapped_column(String(10), nullable=True)
    created_at: Mapped[object] = mapped_column(DateTime)
    password_changed_at: Mapped[object | None] = mapped_column(DateTime, nullable=True)
    # Set when the holder typed the code mailed to ``email``; password-reset codes go only to a
    # confirmed address (a mistyped one would hand the account to whoever owns it).
    email_confirmed_at: Mapped[object | None] = mapped_column(DateTime, nullable=True)
    # Set by an administrator (cli disable-account): an officer who left, a compromised account.
    # Login, refresh and password reset are refused while it is set.
    disabled_at: Mapped[object | None] = mapped_column(DateTime, nullable=True)
    disabled_reason: Mapped[str | None] = mapped_column(String(200), nullable=True)


class RefreshToken(Base):
    """Opaque refresh tokens, stored as SHA-256 only. Each use spends the token and issues the
    next one of the same family; presenting a spent token again revokes the whole family."""
    __tablename__ = "refresh_tokens"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    person_id: Mapped[str] = mapped_column(ForeignKey("accounts.person_id"), index=True)
    family_id: Mapped[str] = mapped_column(String(36), index=True)
    issued_at: Mapped[object] = mapped_column(DateTime)
    expires_at: Mapped[object] = mapped_column(DateTime, index=True)
    used_at: Mapped[object | None] = mapped_column(DateTime, nullable=True)
    revoked_at: Mapped[object | None] = mapped_column(DateTime, nullable=True)


class OneTimeCode:
    """Columns of a mailed one-time code. The code is never stored: it is an HMAC of the row's id
    and its secret, recomputed to send it (notification asks over RPC) and to check it."""
    person_id: Mapped[str] = mapped_column(ForeignKey("accounts.person_id"), index=True)
    secret: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(10))   # pending / used / cancelled / exhausted
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[object] = mapped_column(DateTime)
    expires_at: Mapped[object] = mapped_column(DateTime, index=True)
    used_at: Mapped[object | None] = mapped_column(DateTime, nullable=True)


class PasswordReset(OneTimeCode, Base):
    """A code by email to set a new password."""
    __tablename__ = "password_resets"
    reset_id: Mapped[str] = mapped_column(String(36), primary_key=True)


class EmailConfirmation(OneTimeCode, Base):
    """A code mailed to the account's address, typed back to confirm it."""
    __tablename__ = "email_confirmations"
    confirmation_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    email: Mapped[str] = mapped_column(String(254))     # the address the code went to


class Feedback(Base):
    """反馈: a person not found in the registry asks to be added; officers of the region decide."""
    __tablename__ = "feedback"
    feedback_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    status: Mapped[str] = mapped_column(String(10), index=True)    # pending / approved / rejected
    name: Mapped[str] = mapped_column(String(50))
    name_normalised: Mapped[str] = mapped_column(String(50))
    id_number: Mapped[str] = mapped_column(String(18), index=True)
    email: Mapped[str] = mapped_column(String(254))
    level: Mapped[str] = mapped_column(String(20))
    exam_year: Mapped[int] = mapped_column(Integer)
    management_number: Mapped[str | None] = mapped_column(String(32), nullable=True)
    note: Mapped[str] = mapped_column(Text, default="")
    region_code: Mapped[str] = mapped_column(String(6), index=True)
    proof_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    proof_filename: Mapped[str | None] = mapped_column(String(100), nullable=True)
    proof_content_type: Mapped[str | None] = mapped_column(String(50), nullable=True)
    proof_size: Mapped[int | None] = mapped_column(Integer, nullable=True)
    proof_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    submitted_at: Mapped[object] = mapped_column(DateTime, index=True)
    decided_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    decided_at: Mapped[object | None] = mapped_column(DateTime, nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    passer_id: Mapped[int | None] = mapped_column(ForeignKey("passers.id"), nullable=True)

    __table_args__ = (
        # At most one pending feedback per ID number: the race guard behind FEEDBACK_ALREADY_PENDING.
        Index("uq_feedback_pending_id_number", "id_number", unique=True,
              sqlite_where=text("status = 'pending'"), postgresql_where=text("status = 'pending'")),
    )


outbox = Outbox(metadata)
inbox = Inbox(metadata)
audit = AuditLog(metadata)
# Rate-limit counters: key = '<scope>:<HMAC of the account, login or source>'.
throttle = Throttle(metadata)
