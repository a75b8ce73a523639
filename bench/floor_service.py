"""A floor for bench/registration_burst.py: the least a durable submission can cost in this stack.

``bench_floor.submit`` takes the same request as ``registration.submit_re_registration``, validates
it with the same pydantic model, writes one transaction of five inserts and one update through
SQLAlchemy Core (application, status history, submitted version, audit row, outbox row; the proof
marked submitted), and publishes the ``application_submitted`` event after the commit. It has no
token check, no profile copy, no window, hours or proof rules and no ORM: what it costs is what any
submission here costs before registration's own rules. Not a service of the system.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import uuid

from nameko.events import EventDispatcher
from nameko.rpc import rpc
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, Text, insert, update

from swms.contracts.events import ApplicationSubmitted
from swms.contracts.registration import SubmitReRegistrationRequest
from swms.db import engine_for

metadata = MetaData()
applications = Table("floor_application", metadata, Column("application_id", String(36), primary_key=True),
                     Column("person_id", String(36), nullable=False), Column("kind", String(20)),
                     Column("status", String(20)), Column("form", Text), Column("submitted_at", DateTime))
history = Table("floor_history", metadata, Column("id", Integer, primary_key=True, autoincrement=True),
                Column("application_id", String(36)), Column("status", String(20)), Column("at", DateTime))
submissions = Table("floor_submission", metadata, Column("id", Integer, primary_key=True, autoincrement=True),
                    Column("application_id", String(36)), Column("round", Integer), Column("form", Text))
audit = Table("floor_audit", metadata, Column("id", Integer, primary_key=True, autoincrement=True),
              Column("actor", String(36)), Column("action", String(40)), Column("detail", Text), Column("at", DateTime))
outbox = Table("floor_outbox", metadata, Column("id", Integer, primary_key=True, autoincrement=True),
               Column("event_type", String(40)), Column("payload", Text), Column("published_at", DateTime))
proofs = Table("floor_proof", metadata, Column("proof_key", String(80), primary_key=True),
               Column("application_id", String(36)))


def create_tables(url: str) -> None:
    metadata.create_all(engine_for(url))


ROW_TABLES = (applications, history, submissions, audit, outbox)


def _prepared(payload: dict) -> tuple[dict, dict]:
    """The request validated; the rows of one submission (by table name, and the proof it uses) and
    its event body."""
    request = SubmitReRegistrationRequest.model_validate(payload)
    application_id, now = str(uuid.uuid4()), dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    form = json.dumps(request.model_dump(mode="json"), ensure_ascii=False)
    body = ApplicationSubmitted(application_id=application_id, person_id=application_id, kind="re_registration",
                                region_code="110105", applicant_name_masked="李*",
                                submitted_at=now).model_dump(mode="json")
    rows = {
        "floor_application": dict(application_id=application_id, person_id=application_id, kind="re_registration",
                                  status="初审中", form=form, submitted_at=now),
        "floor_history": dict(application_id=application_id, status="初审中", at=now),
        "floor_submission": dict(application_id=application_id, round=1, form=form),
        "floor_audit": dict(actor=application_id, action="application.submitted", detail="{}", at=now),
        "floor_outbox": dict(event_type="application_submitted", payload=json.dumps(body), published_at=now),
        "proof_key": request.offline_courses[0].proof_key}
    return rows, body


def _mark_proof(connection, rows: dict) -> None:
    connection.execute(update(proofs).where(proofs.c.proof_key == rows["proof_key"])
                       .values(application_id=rows["floor_application"]["application_id"]))


def _floor_engine():
    return engine_for(os.environ["FLOOR_DB_URL"], pool_size=34)   # as registration's


class FloorService:
    name = "bench_floor"
    dispatch = EventDispatcher()

    def _write(self, rows: dict) -> None:
        with _floor_engine().begin() as connection:
            for table in ROW_TABLES:
                connection.execute(insert(table).values(**rows[table.name]))
            _mark_proof(connection, rows)

    @rpc
    def submit(self, payload: dict) -> dict:
        rows, body = _prepared(payload)
        self._write(rows)
        self.dispatch("application_submitted", body)
        return {"application_id": rows["floor_application"]["application_id"], "status": "初审中"}


class _GroupCommit:
    """Concurrent workers' rows written together: one transaction and one executemany per table for
    every submission that arrived while the previous batch was being written."""

    def __init__(self):
        self.pending: list = []
        self.flushing = False

    def write(self, rows: dict) -> None:
        import eventlet.event

        done = eventlet.event.Event()
        self.pending.append((rows, done))
        if not self.flushing:
            self.flushing = True
            eventlet.spawn_n(self._flush)
        done.wait()

    def _flush(self) -> None:
        import eventlet

        try:
            while self.pending:
                eventlet.sleep(0)           # let the workers already running add theirs
                batch, self.pending = self.pending, []
                try:
                    with _floor_engine().begin() as connection:
                        for table in ROW_TABLES:
                            connection.execute(insert(table), [rows[table.name] for rows, _ in batch])
                        for rows, _ in batch:
                            _mark_proof(connection, rows)
                except Exception as exc:
                    for _, done in batch:
                        done.send_exception(exc)
                else:
                    for _, done in batch:
                        done.send(None)
        finally:
            self.flushing = False


_group = _GroupCommit()


class BatchedFloorService(FloorService):
    """The same floor, its transactions grouped across concurrent workers (group commit)."""
    name = "bench_floor_batched"

    def _write(self, rows: dict) -> None:
        _group.write(rows)
