"""Certificate's own database: issued certificates and the per-scope serial counters."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import Date, DateTime, Integer, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from swms.audit import AuditLog
from swms.outbox import Inbox, Outbox

metadata = MetaData()


class Base(DeclarativeBase):
    metadata = metadata


ISSUING, ISSUED = "issuing", "issued"


class Certificate(Base):
    __tablename__ = "certificates"
    certificate_number: Mapped[str] = mapped_column(String(20), primary_key=True)
    # Unique: the same approval delivered twice finds this row instead of making a second certificate.
    application_id: Mapped[str] = mapped_column(String(36), unique=True)
    person_id: Mapped[str] = mapped_column(String(36), index=True)
    status: Mapped[str] = mapped_column(String(20))
    holder_name: Mapped[str] = mapped_column(String(50))
    id_number: Mapped[str] = mapped_column(String(18))
    level: Mapped[str] = mapped_column(String(20))
    region_code: Mapped[str] = mapped_column(String(6))
    authority: Mapped[str] = mapped_column(String(100))
    valid_from: Mapped[dt.date] = mapped_column(Date)
    valid_until: Mapped[dt.date] = mapped_column(Date)
    issued_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    object_key: Mapped[str] = mapped_column(String(200))
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)


class SerialCounter(Base):
    """Last serial used per (province, year, level): numbers are never reused."""
    __tablename__ = "serial_counters"
    scope: Mapped[str] = mapped_column(String(10), primary_key=True)
    last_serial: Mapped[int] = mapped_column(Integer)


outbox = Outbox(metadata)
inbox = Inbox(metadata)
audit = AuditLog(metadata)
