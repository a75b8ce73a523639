"""Submissions written as a group (services/registration/domain.submit_group, swms/grouping.py):
each submission of a group is judged by the rules alone, as if it were submitted by itself."""
from __future__ import annotations

import datetime as dt
import uuid

import eventlet
import pytest
from nameko.testing.services import worker_factory
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from services.registration import domain
from services.registration import models as m
from services.registration.service import RegistrationService
from swms import errors
from swms.contracts.common import ApplicationKind as K
from swms.contracts.common import ApplicationStatus as S
from swms.db import DatabaseAccess
from swms.grouping import GroupCommit
from tests.unit.test_registration_domain import (  # noqa: F401 (session: the same SQLite fixture)
    POLICY, TODAY, add_proof, ce, course, issue, session, snapshot)


def holder(session, number: str):
    """A person holding a 社会工作师 certificate that ends within the re-registration window, with
    60 online hours in its period and one verified proof."""
    snap = snapshot(level="社会工作师", exam_year=2024)
    first = domain.submit(session, request(snap, K.FIRST_REGISTRATION, today=dt.date(2024, 5, 1)))
    issue(session, snap, first.application_id, number, dt.date(2024, 6, 1), dt.date(2027, 5, 31))
    ce(session, snap.person_id, 60)
    return snap, add_proof(session, snap.person_id)


def request(snap, kind=K.RE_REGISTRATION, today=TODAY, **fields) -> domain.Submit:
    return domain.Submit(kind=kind, snapshot=snap, policy=POLICY.for_region(snap.region_code), today=today,
                         actor=snap.person_id, applicant_name_masked="李**", **fields)


def count(session, model, **where) -> int:
    query = select(func.count()).select_from(model)
    for name, value in where.items():
        query = query.where(getattr(model, name) == value)
    return session.execute(query).scalar_one()


def test_a_refused_submission_refuses_only_itself(session):
    (a, a_key), (b, b_key), (c, c_key) = (holder(session, f"112024200000{n}") for n in (1, 2, 3))
    short = request(b, courses=[course(b_key, hours=29.5)])      # 60 + 29.5 < 90 hours
    outcomes = domain.submit_group(session, [request(a, courses=[course(a_key)]), short,
                                             request(c, courses=[course(c_key)])])
    assert [type(o) for o in outcomes] == [m.Application, errors.SwmsError, m.Application]
    assert all(o.status == S.INITIAL_REVIEW.value for o in (outcomes[0], outcomes[2]))
    for snap, key, outcome in ((a, a_key, outcomes[0]), (c, c_key, outcomes[2])):
        assert count(session, m.Submission, application_id=outcome.application_id) == 1
        proof = session.get(m.ProofFileRow, key)
        assert (proof.application_id, proof.submitted) == (outcome.application_id, True)
    assert count(session, m.Application, person_id=b.person_id) == 1          # only its first registration
    assert session.get(m.ProofFileRow, b_key).submitted is False
    # Exactly the error the same submission gets alone.
    with pytest.raises(errors.SwmsError) as alone:
        domain.submit(session, short)
    refused = outcomes[1]
    assert (refused.code, refused.message, refused.field) == (alone.value.code, alone.value.message, alone.value.field)
    assert (refused.code, refused.field) == ("CE_HOURS_SHORT", "offline_courses")
    events = session.execute(select(m.outbox.table.c.event_type)).scalars().all()
    assert events.count("application_submitted") == 2 + 3                    # the three first registrations
    audited = session.execute(select(m.audit.table.c.entity_id).where(
        m.audit.table.c.action == "application.submitted")).scalars().all()
    assert {outcomes[0].application_id, outcomes[2].application_id} <= set(audited)
    assert len(audited) == 2 + 3


def test_the_same_person_twice_in_one_group(session):
    snap, key = holder(session, "1120242000001")
    first, second = domain.submit_group(session, [request(snap, courses=[course(key)]),
                                                  request(snap, courses=[course(key)])])
    assert first.status == S.INITIAL_REVIEW.value
    assert isinstance(second, errors.SwmsError) and second.code == "APPLICATION_ALREADY_OPEN"
    # The error a submission gets when the first one was committed before it.
    with pytest.raises(errors.SwmsError) as later:
        domain.submit(session, request(snap, courses=[course(key)]))
    assert (second.message, second.field) == (later.value.message, later.value.field) == (second.message, "kind")
    assert count(session, m.Application, kind=K.RE_REGISTRATION.value) == 1
    assert count(session, m.Submission, application_id=first.application_id) == 1


def test_a_conflict_in_a_group_refuses_only_the_submission_that_conflicts(tmp_path, monkeypatch):
    """Another process opened an application for one person after the group read (the group does
    not see it): the group's insert hits the unique constraint; its submissions run again alone."""
    engine = create_engine(f"sqlite:///{tmp_path / 'registration.db'}")
    m.metadata.create_all(engine)
    with Session(engine) as setup:
        (a, a_key), (b, b_key) = holder(setup, "1120242000001"), holder(setup, "1120242000002")
        setup.add(m.Application(application_id=str(uuid.uuid4()), person_id=b.person_id, kind=K.REPLACEMENT.value,
                                status=S.NOT_REGISTERED.value, region_code="110105", snapshot=b.model_dump_json(),
                                updated_at=dt.datetime(2027, 3, 1), open_person_id=b.person_id))
        setup.commit()
    monkeypatch.setattr(domain, "open_applications", lambda session, person_ids: {})
    groups = []
    real = domain.submit_group
    monkeypatch.setattr(domain, "submit_group",
                        lambda session, works: groups.append(len(works)) or real(session, works))
    service = worker_factory(RegistrationService, db=DatabaseAccess(sessionmaker(engine, expire_on_commit=False)))

    ok, conflict = service._submit_group([request(a, courses=[course(a_key)]), request(b, courses=[course(b_key)])])

    assert groups == [2, 1, 1]                 # the group, then each submission alone
    assert ok.status == S.INITIAL_REVIEW.value
    assert (conflict.code, conflict.field) == ("APPLICATION_ALREADY_OPEN", "kind")
    with Session(engine) as check:
        assert count(check, m.Submission, application_id=ok.application_id) == 1
        assert count(check, m.Application, person_id=b.person_id, kind=K.RE_REGISTRATION.value) == 0
        assert check.get(m.ProofFileRow, b_key).submitted is False


def test_group_commit_groups_concurrent_calls_and_answers_each_its_own():
    grouping = GroupCommit(max_size=3)
    groups = []

    def run_group(items):
        groups.append(list(items))
        eventlet.sleep(0.01)     # the database's time: calls arriving now wait for the next group
        return [ValueError(item) if item % 5 == 0 else item * 10 for item in items]

    def call(item):
        try:
            return grouping.run(item, run_group)
        except ValueError as exc:
            return f"refused {exc}"

    threads = [eventlet.spawn(call, item) for item in range(1, 8)]
    answers = [thread.wait() for thread in threads]
    assert answers == [10, 20, 30, 40, "refused 5", 60, 70]
    assert sorted(item for group in groups for item in group) == list(range(1, 8))
    assert max(len(group) for group in groups) == 3 and len(groups) < 7
    assert grouping.run(9, run_group) == 90        # alone: a group of one, at once
    assert groups[-1] == [9]


def test_group_commit_gives_a_group_failure_to_every_call_and_goes_on():
    grouping = GroupCommit()

    def failing(items):
        eventlet.sleep(0.01)
        raise RuntimeError("database gone")

    threads = [eventlet.spawn(grouping.run, item, failing) for item in range(3)]
    for thread in threads:
        with pytest.raises(RuntimeError, match="database gone"):
            thread.wait()
    assert grouping.run(4, lambda items: [item + 1 for item in items]) == 5
