"""Continuing-education records from a file (a learning platform's or training body's export).

CSV, UTF-8 (with or without BOM) or GB18030, header row, columns:

  record_id,id_number,name,course,provider,hours,completed_on

``record_id`` is the platform's own identifier (unique within ``--source``); the person is named by
resident ID number (checked, GB 11643-1999); ``hours`` a number > 0 with at most one decimal;
``completed_on`` YYYY-MM-DD, not in the future. Importing the same file again changes nothing;
a row with a known record_id and new values corrects the record. Each bad row is reported with its
line number and reason, and stored nowhere.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from services.registration import domain
from swms import idcard, text
from swms.contracts.registration import _hours

COLUMNS = ("record_id", "id_number", "name", "course", "provider", "hours", "completed_on")


@dataclass
class ImportReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)

    def __str__(self) -> str:
        return (f"{self.added} added, {self.updated} updated, {self.unchanged} unchanged, "
                f"{len(self.rejected)} rejected")


def read_file(data: bytes) -> list[dict[str, str]]:
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            text = data.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        raise ValueError("file is neither UTF-8 nor GB18030")
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(f"missing columns: {', '.join(missing)} (expected {','.join(COLUMNS)})")
    return list(reader)


def _row_problem(row: dict[str, str], today: dt.date) -> tuple[str | None, dict]:
    values = {k: (row.get(k) or "").strip(text.SPACES) for k in COLUMNS}   # spaces only: see below
    if not values["record_id"] or len(values["record_id"]) > 64:
        return "record_id is required (at most 64 characters)", {}
    try:
        number = idcard.parse(values["id_number"]).number
    except idcard.InvalidIdNumber as exc:
        return f"id_number invalid: {exc}", {}
    for name in ("course", "provider"):
        if not values[name] or len(values[name]) > 200:
            return f"{name} is required (at most 200 characters)", {}
        found = text.problem(values[name])     # shown to reviewers: refused, never cleaned
        if found is not None:
            return f"{name} invalid: {found.english()}", {}
    try:
        hours = _hours(float(values["hours"]))
    except ValueError as exc:
        return f"hours invalid: {values['hours']!r} ({exc})", {}
    try:
        completed = dt.date.fromisoformat(values["completed_on"])
    except ValueError:
        return f"completed_on is not a date YYYY-MM-DD: {values['completed_on']!r}", {}
    if completed > today:
        return "completed_on is in the future", {}
    return None, dict(record_id=values["record_id"], id_number=number, course=values["course"],
                      provider=values["provider"], hours=hours, completed_on=completed)


def import_records(session: Session, rows: list[dict[str, str]], source: str, actor: str,
                   today: dt.date | None = None) -> ImportReport:
    """Validate every row first; store the good ones in the caller's transaction."""
    report = ImportReport()
    today = today or dt.date.today()
    seen: set[str] = set()
    for line, row in enumerate(rows, start=2):   # line 1 is the header
        problem, values = _row_problem(row, today)
        if problem is None and values["record_id"] in seen:
            problem = f"record_id {values['record_id']} appears twice in this file"
        if problem is not None:
            report.rejected.append((line, problem))
            continue
        seen.add(values["record_id"])
        outcome = domain.record_ce(session, source=source, actor=actor, **values)
        setattr(report, "unchanged" if outcome == "stale" else outcome,
                getattr(report, "unchanged" if outcome == "stale" else outcome) + 1)
    return report
