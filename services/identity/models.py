"""Identity's own database: the exam-passer registry (社工库) and accounts."""
from __future__ import annotations

from sqlalchemy import DateTime, ForeignKey, Integer, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from swms.audit import AuditLog
from swms.outbox import Inbox, Outbox

metadata = MetaData()


class Base(DeclarativeBase):
    metadata = metadata


class Passer(Base):
    """One row per person in the exam authority's lists (name, ID number, level, 管理号)."""
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


outbox = Outbox(metadata)
inbox = Inbox(metadata)
audit = AuditLog(metadata)
