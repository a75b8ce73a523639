"""Profile's own database: the personal information form (个人信息表)."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import Date, DateTime, Integer, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from swms.audit import AuditLog
from swms.outbox import Inbox, Outbox

metadata = MetaData()


class Base(DeclarativeBase):
    metadata = metadata


class Profile(Base):
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
    ethnicity: Mapped[str] = mapped_column(String(20))
    education: Mapped[str] = mapped_column(String(20))
    mobile: Mapped[str] = mapped_column(String(11))
    address: Mapped[str] = mapped_column(String(200))
    region_code: Mapped[str] = mapped_column(String(6), index=True)
    unit_category: Mapped[str] = mapped_column(String(20))
    unit_name: Mapped[str] = mapped_column(String(100))
    position: Mapped[str] = mapped_column(String(50))
    photo_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    truth_committed_at: Mapped[dt.datetime] = mapped_column(DateTime)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime)


outbox = Outbox(metadata)
inbox = Inbox(metadata)
audit = AuditLog(metadata)
