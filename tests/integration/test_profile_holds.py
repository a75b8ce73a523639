"""Profile's ``files_held`` handler on SQLite and PostgreSQL: each registration submission sends one.

The handler runs as its entrypoint runs it (payload → inbox → holds → audit, one transaction), in
this process (nameko's ``worker_factory``), on a fresh database of each backend. Its writes are
INSERT ... ON CONFLICT statements (the inbox row, every hold of the event in one upsert): a
redelivered event must still change nothing, and a later hold of the same holder must extend the
hold, never shorten it.
"""
from __future__ import annotations

import datetime as dt
import logging

import pytest
from nameko.testing.services import worker_factory
from sqlalchemy import func, insert, select
from sqlalchemy.orm import sessionmaker

from services.profile import domain
from services.profile.models import ACTIVE, DELETING, PHOTO, PROOF, RETIRED, FileHold, StoredFile, audit, inbox
from services.profile.service import ProfileService
from swms.contracts.events import FilesHeld
from swms.db import DatabaseAccess, engine_for

ME, SOMEONE_ELSE = "00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002"
CREATED = dt.datetime(2026, 1, 1)
PHOTO_KEY = f"photos/{ME}/a.jpg"
PROOF_KEYS = [f"proofs/{ME}/{n}.pdf" for n in range(3)]
RETIRED_KEY, DELETING_KEY = f"proofs/{ME}/old.pdf", f"proofs/{ME}/going.pdf"
OTHERS_KEY = f"photos/{SOMEONE_ELSE}/b.jpg"


def stored(key: str, person: str, kind: str, status: str) -> dict:
    return {"file_key": key, "person_id": person, "kind": kind, "owner_id": None, "content_type": "image/jpeg",
            "size_bytes": 1000, "width": None, "height": None, "sha256": "0" * 64, "status": status,
            "created_at": CREATED, "retired_at": CREATED if status != ACTIVE else None, "referenced_at": CREATED}


@pytest.fixture
def profile(make_database):
    """The profile service's handler on a database holding a person's files: a photo, three
    proofs, a retired proof, one being deleted; and another person's photo."""
    url = make_database("profile")
    sessions = sessionmaker(engine_for(url), expire_on_commit=False)
    with sessions.begin() as session:
        session.execute(insert(StoredFile.__table__), [
            stored(PHOTO_KEY, ME, PHOTO, ACTIVE), *(stored(key, ME, PROOF, ACTIVE) for key in PROOF_KEYS),
            stored(RETIRED_KEY, ME, PROOF, RETIRED), stored(DELETING_KEY, ME, PROOF, DELETING),
            stored(OTHERS_KEY, SOMEONE_ELSE, PHOTO, ACTIVE)])

    def deliver(event: FilesHeld) -> None:
        service = worker_factory(ProfileService, db=DatabaseAccess(sessions))
        try:
            service.on_files_held(event.model_dump(mode="json"))
        finally:
            service.db.close()

    deliver.sessions = sessions
    return deliver


def holds(sessions, holder: str) -> dict[str, tuple[dt.datetime | None, dt.datetime]]:
    with sessions() as session:
        return {row.file_key: (row.held_until, row.updated_at)
                for row in session.execute(select(FileHold).where(FileHold.holder == holder)).scalars()}


def held_audit(sessions) -> list[dict]:
    with sessions() as session:
        return [row for row in audit.for_entity(session, ME) if row["action"] == "profile.files_held"]


def test_a_hold_names_what_it_held_and_what_was_gone_and_a_redelivery_changes_nothing(profile, caplog):
    caplog.set_level(logging.INFO)
    until = dt.datetime(2031, 1, 1, tzinfo=dt.timezone.utc)
    event = FilesHeld(person_id=ME, holder="submission:a:1", held_until=until,
                      file_keys=[*PROOF_KEYS, PHOTO_KEY, PHOTO_KEY, RETIRED_KEY, DELETING_KEY, OTHERS_KEY,
                                 f"proofs/{ME}/never.pdf"])
    profile(event)
    wanted = sorted([PHOTO_KEY, *PROOF_KEYS, RETIRED_KEY])
    gone = sorted([DELETING_KEY, OTHERS_KEY, f"proofs/{ME}/never.pdf"])
    first = holds(profile.sessions, "submission:a:1")
    assert sorted(first) == wanted
    assert {held_until for held_until, _ in first.values()} == {dt.datetime(2031, 1, 1)}
    [row] = held_audit(profile.sessions)
    assert (row["actor"], row["detail"]["holder"], row["detail"]["file_keys"], row["detail"]["missing"]) == (
        "registration", "submission:a:1", wanted, gone)
    assert f"files_held {event.event_id} (submission:a:1): 3 file(s) already deleted" in caplog.text

    profile(event)   # the same event again (at-least-once delivery)
    assert holds(profile.sessions, "submission:a:1") == first
    assert len(held_audit(profile.sessions)) == 1
    assert f"event {event.event_id} already handled by on_files_held" in caplog.text
    with profile.sessions() as session:
        assert session.execute(select(func.count()).select_from(inbox.table)).scalar_one() == 1
        assert session.execute(select(func.count()).select_from(FileHold)).scalar_one() == len(wanted)


def test_a_later_hold_of_the_same_holder_extends_it_and_an_earlier_one_never_shortens_it(profile):
    def hold(keys: list[str], until: dt.datetime | None) -> None:
        with profile.sessions.begin() as session:
            assert domain.hold_files(session, ME, "certificate:1", keys, until, "registration") == []

    hold([PHOTO_KEY, PROOF_KEYS[0]], dt.datetime(2030, 1, 1))
    before = holds(profile.sessions, "certificate:1")
    hold([PHOTO_KEY, PROOF_KEYS[0]], dt.datetime(2029, 1, 1))          # earlier: nothing changes
    assert holds(profile.sessions, "certificate:1") == before
    hold([PHOTO_KEY, PROOF_KEYS[1]], dt.datetime(2032, 1, 1))          # later: extended; a new file: held
    after = holds(profile.sessions, "certificate:1")
    assert after[PHOTO_KEY][0] == dt.datetime(2032, 1, 1) and after[PHOTO_KEY][1] > before[PHOTO_KEY][1]
    assert after[PROOF_KEYS[0]] == before[PROOF_KEYS[0]]
    assert after[PROOF_KEYS[1]][0] == dt.datetime(2032, 1, 1)
    hold([PROOF_KEYS[0]], None)                                         # until released
    hold([PROOF_KEYS[0]], dt.datetime(2040, 1, 1))                      # an end never ends "until released"
    assert holds(profile.sessions, "certificate:1")[PROOF_KEYS[0]][0] is None
    assert len(held_audit(profile.sessions)) == 5                       # every hold audited


def test_two_holders_of_one_file_are_two_holds(profile):
    until = dt.datetime(2031, 1, 1, tzinfo=dt.timezone.utc)
    profile(FilesHeld(person_id=ME, holder="submission:a:1", file_keys=[PHOTO_KEY], held_until=until))
    profile(FilesHeld(person_id=ME, holder="submission:a:2", file_keys=[PHOTO_KEY], held_until=until))
    with profile.sessions() as session:
        assert sorted(session.execute(select(FileHold.holder).where(FileHold.file_key == PHOTO_KEY)).scalars()) == [
            "submission:a:1", "submission:a:2"]
    assert len(held_audit(profile.sessions)) == 2
