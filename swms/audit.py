"""Audit trail: who did what to which record, when, and why. One table per service database,
written in the same transaction as the change it describes (so the two cannot disagree)."""
from __future__ import annotations

import json
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    insert,
    select,
)
from sqlalchemy.orm import Session

from swms.outbox import utcnow


class AuditLog:
    def __init__(self, metadata: MetaData):
        self.table = Table(
            "audit_log", metadata,
            Column("id", Integer, primary_key=True, autoincrement=True),
            Column("at", DateTime, nullable=False),
            Column("actor", String(100), nullable=False),
            Column("action", String(100), nullable=False),
            Column("entity_type", String(50), nullable=False),
            Column("entity_id", String(64), nullable=False, index=True),
            Column("detail", Text, nullable=True),
        )
        # Built once: every state change writes a row, and building the statement costs more
        # than the database's insert.
        self._insert = insert(self.table)

    def record(self, session: Session, actor: str, action: str, entity_type: str, entity_id: str,
               detail: dict[str, Any] | None = None) -> None:
        session.execute(self._insert, _row(utcnow(), actor, action, entity_type, entity_id, detail))

    def record_many(self, session: Session,
                    entries: list[tuple[str, str, str, str, dict[str, Any] | None]]) -> None:
        """Several :meth:`record` rows (actor, action, entity type, entity id, detail) in one
        statement (executemany)."""
        if not entries:
            return
        now = utcnow()
        rows = [_row(now, *entry) for entry in entries]
        session.execute(self._insert, rows if len(rows) > 1 else rows[0])   # one: no executemany

    def read_by_admin(self, session: Session, admin: str, method: str, entity_type: str, entity_id: str,
                      reason: str, **detail: Any) -> None:
        """An administrator read a person's data (support): who, what, which method, and why."""
        self.record(session, admin, "personal_data.read_by_admin", entity_type, entity_id,
                    {"method": method, "reason": reason, **detail})

    def for_entity(self, session: Session, entity_id: str) -> list[dict[str, Any]]:
        rows = session.execute(select(self.table).where(self.table.c.entity_id == str(entity_id))
                               .order_by(self.table.c.id)).mappings().all()
        return [dict(row) | {"detail": json.loads(row["detail"]) if row["detail"] else None} for row in rows]


def _row(at, actor: str, action: str, entity_type: str, entity_id: str, detail: dict[str, Any] | None) -> dict:
    return {"at": at, "actor": actor, "action": action, "entity_type": entity_type, "entity_id": str(entity_id),
            "detail": json.dumps(detail, ensure_ascii=False, default=str) if detail else None}
