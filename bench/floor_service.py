"""A floor for bench/registration_burst.py: the least a durable submission can cost in this stack.

``bench_floor.submit`` takes the same request as ``registration.submit_re_registration``, validates
it with the same pydantic model, writes one transaction of five inserts and one update through
SQLAlchemy Core (application, status history, submitted version, audit row, outbox row; the proof
marked submitted), and publishes the ``application_submitted`` event after the commit. It has no
token check, no profile copy, no window, hours or proof rules and no ORM: what it costs is what any
submission here costs before registration's own rules.

``bench_floor_batched.submit`` is the same with the transactions of concurrent workers grouped into
one (group commit). ``bench_floor_guarded.submit`` adds what registration's rules cannot do without,
in the cheapest form this stack allows: the caller's token verified, and for each group, one
set-based query each (SQLAlchemy Core, registration's own tables, seeded as for the real
submissions) for the profile copies, open applications, current certificates, online hours in each
certificate's period and proofs; the rules checked on those rows in plain Python (the revision seen,
a complete form, one open application, the window, the course inside the period, the proof verified,
the person's own and unused, the hours); a submission that fails a rule is refused alone. Its event
goes through registration's outbox table and the real relay, as the design requires (the other two
floors publish straight after the commit, which is not durable). It still stores no snapshot,
builds no form view for the reply (it answers the id and status), writes no per-rule error text and
no ORM objects: a ceiling for any implementation of registration's submission path, not one.
Not services of the system.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import uuid

from nameko.events import EventDispatcher
from sqlalchemy import (Column, DateTime, Integer, MetaData, String, Table, Text, and_, bindparam, func, insert,
                        select, update)

from services.registration.models import CeRecord, HeldCertificate, ProfileCopy, ProofFileRow
from services.registration.models import outbox as registration_outbox
from swms.auth import SOCIAL_WORKER, Auth
from swms.contracts.events import ApplicationSubmitted
from swms.contracts.registration import SubmitReRegistrationRequest
from swms.db import engine_for
from swms.errors import SwmsError
from swms.outbox import OutboxRelay
from swms.rpc import rpc   # queues of the run's AMQP_QUEUE_TYPE, as the services'

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


ROW_TABLES_BUT_OUTBOX = (applications, history, submissions, audit)
ROW_TABLES = (*ROW_TABLES_BUT_OUTBOX, outbox)


def _prepared(payload: dict, person_id: str | None = None) -> tuple[dict, dict]:
    """The request validated; the rows of one submission (by table name, and the proof it uses) and
    its event body."""
    request = SubmitReRegistrationRequest.model_validate(payload)
    application_id, now = str(uuid.uuid4()), dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    person_id = person_id or application_id
    form = json.dumps(request.model_dump(mode="json"), ensure_ascii=False)
    body = ApplicationSubmitted(application_id=application_id, person_id=person_id, kind="re_registration",
                                region_code="110105", applicant_name_masked="李*",
                                submitted_at=now).model_dump(mode="json")
    rows = {
        "floor_application": dict(application_id=application_id, person_id=person_id, kind="re_registration",
                                  status="初审中", form=form, submitted_at=now),
        "floor_history": dict(application_id=application_id, status="初审中", at=now),
        "floor_submission": dict(application_id=application_id, round=1, form=form),
        "floor_audit": dict(actor=person_id, action="application.submitted", detail="{}", at=now),
        "floor_outbox": dict(event_type="application_submitted", payload=json.dumps(body), published_at=now),
        "proof_key": request.offline_courses[0].proof_key, "request": request, "event": body}
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
            _write_rows(connection, [rows])

    @rpc
    def ping(self) -> str:
        return "pong"

    @rpc
    def submit(self, payload: dict) -> dict:
        rows, body = _prepared(payload)
        self._write(rows)
        self.dispatch("application_submitted", body)
        return {"application_id": rows["floor_application"]["application_id"], "status": "初审中"}


class _GroupCommit:
    """Concurrent workers' rows written together: one transaction for every submission that arrived
    while the previous batch was being written. ``write_batch(connection, batch)`` returns, per
    submission, None (written) or the error refusing it alone; an exception fails the whole batch."""

    def __init__(self, write_batch):
        self.write_batch = write_batch
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
                        refusals = self.write_batch(connection, [rows for rows, _ in batch])
                except Exception as exc:
                    for _, done in batch:
                        done.send_exception(exc)
                else:
                    for (_, done), refusal in zip(batch, refusals):
                        if refusal is None:
                            done.send(None)
                        else:
                            done.send_exception(refusal)
        finally:
            self.flushing = False


def _write_rows(connection, batch: list[dict]) -> list:
    for table in ROW_TABLES:
        connection.execute(insert(table), [rows[table.name] for rows in batch])
    for rows in batch:
        _mark_proof(connection, rows)
    return [None] * len(batch)


_group = _GroupCommit(_write_rows)


class BatchedFloorService(FloorService):
    """The same floor, its transactions grouped across concurrent workers (group commit)."""
    name = "bench_floor_batched"

    def _write(self, rows: dict) -> None:
        _group.write(rows)


# ---- the grouped floor with the token check and the reads every rule needs ----------------------

REQUIRED_TENTHS = {"助理社会工作师": 720, "社会工作师": 900, "高级社会工作师": 900}
WINDOW_DAYS = 92          # the 3 months before expiry
copies, certificates, ce_records, proof_files = (model.__table__ for model in (
    ProfileCopy, HeldCertificate, CeRecord, ProofFileRow))


def _refused(code: str, field: str) -> SwmsError:
    return SwmsError(code, "refused by the guarded floor", field)


def _guarded_batch(connection, batch: list[dict]) -> list:
    """Every read a submission's rules need, one query per kind for the whole group; the rules on
    those rows; the accepted submissions' rows written as in the floor."""
    today = dt.date.today()
    persons = [rows["floor_application"]["person_id"] for rows in batch]
    keys = [rows["proof_key"] for rows in batch]
    copy_of = {row.person_id: row for row in connection.execute(
        select(copies.c.person_id, copies.c.revision, copies.c.complete).where(copies.c.person_id.in_(persons)))}
    already_open = set(connection.execute(
        select(applications.c.person_id).where(applications.c.person_id.in_(persons)).with_for_update()).scalars())
    certificate_of = {row.person_id: row for row in connection.execute(
        select(certificates.c.person_id, certificates.c.level, certificates.c.valid_from,
               certificates.c.valid_until, certificates.c.status)
        .where(certificates.c.person_id.in_(persons), certificates.c.status != "superseded"))}
    online_tenths = dict(connection.execute(
        select(ce_records.c.person_id, func.sum(ce_records.c.hours_tenths))
        .join(certificates, and_(certificates.c.person_id == ce_records.c.person_id,
                                 certificates.c.status != "superseded",
                                 ce_records.c.completed_on.between(certificates.c.valid_from,
                                                                   certificates.c.valid_until)))
        .where(ce_records.c.person_id.in_(persons), ce_records.c.withdrawn.is_(False))
        .group_by(ce_records.c.person_id)).all())
    proof_of = {row.proof_key: row for row in connection.execute(
        select(proof_files.c.proof_key, proof_files.c.person_id, proof_files.c.status, proof_files.c.submitted)
        .where(proof_files.c.proof_key.in_(keys)).with_for_update())}

    refusals, accepted = [], []
    for rows in batch:
        request, person = rows["request"], rows["floor_application"]["person_id"]
        copy, certificate, proof = copy_of.get(person), certificate_of.get(person), proof_of.get(rows["proof_key"])
        course = request.offline_courses[0]
        offline_tenths = sum(int(round(c.hours * 10)) for c in request.offline_courses)
        if not request.commitment:
            refusal = _refused("COMMITMENT_REQUIRED", "commitment")
        elif copy is None or copy.revision != request.profile_revision or not copy.complete:
            refusal = _refused("PROFILE_CHANGED", "profile_revision")
        elif person in already_open:     # (or accepted earlier in this group)
            refusal = _refused("APPLICATION_ALREADY_OPEN", "kind")
        elif certificate is None or certificate.valid_until < today:
            refusal = _refused("REGISTRATION_LAPSED", "kind")
        elif (certificate.valid_until - today).days > WINDOW_DAYS:
            refusal = _refused("RE_REGISTRATION_NOT_OPEN", "kind")
        elif course.end_date > today or course.start_date < certificate.valid_from:
            refusal = _refused("CE_COURSE_OUTSIDE_PERIOD", "offline_courses.0.start_date")
        elif proof is None or proof.person_id != person or proof.status != "verified" or proof.submitted:
            refusal = _refused("PROOF_NOT_FOUND", "offline_courses.0.proof_key")
        elif online_tenths.get(person, 0) + offline_tenths < REQUIRED_TENTHS[certificate.level]:
            refusal = _refused("CE_HOURS_SHORT", "offline_courses")
        else:
            refusal = None
            accepted.append(rows)
            already_open.add(person)
        refusals.append(refusal)
    if accepted:
        for table in ROW_TABLES_BUT_OUTBOX:
            connection.execute(insert(table), [rows[table.name] for rows in accepted])
        now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        connection.execute(insert(registration_outbox.table), [dict(
            event_id=rows["event"]["event_id"], event_type=ApplicationSubmitted.event_type,
            payload=json.dumps(rows["event"], ensure_ascii=False), created_at=now, next_attempt_at=now, attempts=0)
            for rows in accepted])
        connection.execute(update(proof_files).where(proof_files.c.proof_key == bindparam("key"))
                           .values(application_id=bindparam("application"), submitted=True),
                           [{"key": rows["proof_key"], "application": rows["floor_application"]["application_id"]}
                            for rows in accepted])
    return refusals


_guarded = _GroupCommit(_guarded_batch)


class GuardedBatchedFloorService(FloorService):
    """The grouped floor plus the token check, the reads and checks of every rule, and the outbox."""
    name = "bench_floor_guarded"
    auth = Auth()
    relay = OutboxRelay(registration_outbox)

    @rpc
    def submit(self, payload: dict) -> dict:
        caller = self.auth.require(SOCIAL_WORKER)
        rows, _ = _prepared(payload, person_id=caller.subject)
        _guarded.write(rows)
        registration_outbox.wake_relays()     # committed: the relay may publish it
        return {"application_id": rows["floor_application"]["application_id"], "status": "初审中"}
