"""Event deliveries handled as a group (swms.events.on_events_grouped, Inbox.first_deliveries): one
transaction for the deliveries that arrive together, each event handled once, and a group that fails
as a whole run again one delivery at a time, so that only the bad event's delivery fails."""
from __future__ import annotations

import datetime as dt
import logging

import eventlet
import pytest
from sqlalchemy import Column, MetaData, String, Table, event, func, insert, select
from sqlalchemy.orm import Session, sessionmaker

from swms.contracts.events import FilesHeld
from swms.db import DatabaseAccess, dispose_engine, engine_for
from swms.events import on_events_grouped
from swms.grouping import GroupCommit
from swms.outbox import Inbox

PERSON = "00000000-0000-4000-8000-000000000001"
metadata = MetaData()
inbox = Inbox(metadata)
work = Table("work", metadata, Column("holder", String(100), primary_key=True))


class Handler:
    """A service's worker, as nameko builds it: its own database access, the container's group."""

    groups_run: list[list[str]] = []

    def __init__(self, sessions: sessionmaker, groups: GroupCommit):
        self.db, self.groups = DatabaseAccess(sessions), groups

    @on_events_grouped(FilesHeld, inbox, "groups")
    def on_held(self, session, events: list[FilesHeld]):
        Handler.groups_run.append([event.holder for event in events])
        session.execute(insert(work), [{"holder": event.holder} for event in events])
        if any(event.holder.startswith("bad") for event in events):
            raise RuntimeError("a bad event")


def held(holder: str) -> FilesHeld:
    return FilesHeld(person_id=PERSON, holder=holder, file_keys=["photos/a.jpg"],
                     held_until=dt.datetime(2031, 1, 1, tzinfo=dt.timezone.utc))


@pytest.fixture
def deliver(tmp_path):
    """``deliver(events)``: each event in a worker of its own, all at once (one group); answers
    each delivery's outcome (None, or what it raised) and whether its work was committed when the
    delivery returned (when nameko acks it)."""
    url = f"sqlite:///{tmp_path / 'events.db'}"
    engine = engine_for(url)
    metadata.create_all(engine)
    sessions = sessionmaker(engine, expire_on_commit=False)
    groups = GroupCommit()
    Handler.groups_run = []

    def one(event: FilesHeld):
        handler = Handler(sessions, groups)
        try:
            Handler.on_held(handler, event.model_dump(mode="json"))
            outcome = None
        except Exception as exc:
            outcome = exc
        finally:
            handler.db.close()
        with Session(engine) as session:
            committed = session.execute(select(work.c.holder).where(work.c.holder == event.holder)).first()
        return outcome, committed is not None

    def deliver_together(events: list[FilesHeld]) -> list:
        return [thread.wait() for thread in [eventlet.spawn(one, event) for event in events]]

    def rows(table: Table) -> int:
        with Session(engine) as session:
            return session.execute(select(func.count()).select_from(table)).scalar_one()

    deliver_together.rows = rows
    yield deliver_together
    dispose_engine(url)


def test_a_group_is_one_call_each_event_once_and_acked_after_its_commit(deliver, caplog):
    caplog.set_level(logging.INFO)
    a, b, c = held("a"), held("b"), held("c")
    assert deliver([a, b, a]) == [(None, True)] * 3          # `a` redelivered within the group
    assert Handler.groups_run == [["a", "b"]]
    assert deliver.rows(work) == 2 and deliver.rows(inbox.table) == 2
    assert f"event {a.event_id} already handled by on_held; skipped" in caplog.text

    assert deliver([b, c]) == [(None, True)] * 2             # `b` redelivered in a later group
    assert Handler.groups_run == [["a", "b"], ["c"]]
    assert deliver([a]) == [(None, True)]                    # and alone: nothing to do, no call
    assert Handler.groups_run == [["a", "b"], ["c"]]
    assert deliver.rows(work) == 3 and deliver.rows(inbox.table) == 3


def test_a_group_that_fails_runs_again_one_by_one_and_only_the_bad_delivery_fails(deliver, caplog):
    caplog.set_level(logging.INFO)
    d, bad, e = held("d"), held("bad"), held("e")
    outcomes = deliver([d, bad, e])
    assert Handler.groups_run == [["d", "bad", "e"], ["d"], ["bad"], ["e"]]
    assert outcomes[0] == (None, True) and outcomes[2] == (None, True)
    error, committed = outcomes[1]
    assert isinstance(error, RuntimeError) and not committed   # nameko retries this delivery later
    assert deliver.rows(work) == 2 and deliver.rows(inbox.table) == 2   # nothing of the bad event stays
    assert "a group of 3 on_held deliveries failed (a bad event); running them one by one" in caplog.text

    assert deliver([d, e]) == [(None, True)] * 2   # redelivered: written once only
    assert Handler.groups_run[4:] == [] and deliver.rows(work) == 2
    assert isinstance(deliver([bad])[0][0], RuntimeError)   # the bad one fails again, alone
    assert Handler.groups_run[4:] == [["bad"]]


def test_first_deliveries_answers_each_new_id_once_in_one_statement(tmp_path):
    url = f"sqlite:///{tmp_path / 'inbox.db'}"
    engine = engine_for(url)
    metadata.create_all(engine)
    statements = []
    with Session(engine) as session:
        event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
        assert inbox.first_deliveries(session, ["x", "y", "x"], "on_held") == {"x", "y"}
        assert len(statements) == 1
        assert inbox.first_deliveries(session, ["y", "z"], "on_held") == {"z"}
        assert inbox.first_deliveries(session, ["y"], "another_handler") == {"y"}
        assert inbox.first_deliveries(session, [], "on_held") == set()
        session.commit()
    assert not inbox.first_delivery(Session(engine), "z", "on_held")
    dispose_engine(url)
