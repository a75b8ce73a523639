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

import eventlet
import pytest
from nameko.testing.services import worker_factory
from sqlalchemy import func, insert, select
from sqlalchemy.orm import sessionmaker

from services.profile import domain
from services.profile.models import ACTIVE, DELETING, PHOTO, PROOF, RETIRED, FileHold, StoredFile, audit, inbox
from services.profile.service import ProfileService
from swms.contracts.events import ApplicationSubmitted, FilesHeld, FileHold as Hold
from swms.db import DatabaseAccess, engine_for
from swms.grouping import GroupCommit

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

    groups = {"held_groups": GroupCommit(), "submitted_groups": GroupCommit()}   # per container, as Grouped

    def deliver(event: FilesHeld | ApplicationSubmitted) -> None:
        service = worker_factory(ProfileService, db=DatabaseAccess(sessions), **groups)
        handle = service.on_files_held if isinstance(event, FilesHeld) else service.on_application_submitted
        try:
            handle(event.model_dump(mode="json"))
        finally:
            service.db.close()

    def deliver_together(events: list[FilesHeld]) -> None:
        """Each event in a worker of its own, all at once: they run as one group."""
        for thread in [eventlet.spawn(deliver, event) for event in events]:
            thread.wait()

    deliver.sessions, deliver.together = sessions, deliver_together
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


@pytest.fixture
def group_sizes(monkeypatch) -> list[int]:
    """How many holds each call of the handler's domain function wrote together."""
    sizes, hold_files_many = [], domain.hold_files_many

    def counting(session, holds, actor):
        sizes.append(len(holds))
        return hold_files_many(session, holds, actor)

    monkeypatch.setattr(domain, "hold_files_many", counting)
    return sizes


def test_holds_delivered_together_are_written_together_each_audited_and_a_redelivery_once(profile, group_sizes,
                                                                                           caplog):
    until = dt.datetime(2031, 1, 1, tzinfo=dt.timezone.utc)
    first = FilesHeld(person_id=ME, holder="submission:a:1", file_keys=[PHOTO_KEY, PROOF_KEYS[0]], held_until=until)
    second = FilesHeld(person_id=ME, holder="submission:a:2", file_keys=[PHOTO_KEY, DELETING_KEY], held_until=until)
    others = FilesHeld(person_id=SOMEONE_ELSE, holder="submission:b:1", file_keys=[OTHERS_KEY], held_until=until)
    profile.together([first, second, first, others])       # `first` twice: a redelivery within the group
    assert group_sizes == [3]
    with profile.sessions() as session:
        assert sorted(session.execute(select(FileHold.holder).where(FileHold.file_key == PHOTO_KEY)).scalars()) == [
            "submission:a:1", "submission:a:2"]
        assert session.execute(select(func.count()).select_from(FileHold)).scalar_one() == 4
        assert session.execute(select(func.count()).select_from(inbox.table)).scalar_one() == 3
    assert sorted((row["detail"]["holder"], row["detail"]["file_keys"], row["detail"]["missing"])
                  for row in held_audit(profile.sessions)) == [
        ("submission:a:1", sorted([PHOTO_KEY, PROOF_KEYS[0]]), []),
        ("submission:a:2", [PHOTO_KEY], [DELETING_KEY])]
    assert f"files_held {second.event_id} (submission:a:2): 1 file(s) already deleted" in caplog.text
    assert f"files_held {first.event_id}" not in caplog.text

    profile.together([second, others])                     # redelivered in a later group: nothing written
    assert group_sizes == [3]
    assert len(held_audit(profile.sessions)) == 2


def test_in_one_group_a_later_end_extends_a_hold_and_an_earlier_one_never_shortens_it(profile, group_sizes):
    def hold(key: str, until: dt.datetime) -> FilesHeld:
        return FilesHeld(person_id=ME, holder="certificate:1", file_keys=[key], held_until=until)

    profile(hold(PHOTO_KEY, dt.datetime(2030, 1, 1)))                    # held before the group
    profile.together([
        hold(PHOTO_KEY, dt.datetime(2029, 1, 1)),       # earlier than held: kept
        hold(PHOTO_KEY, dt.datetime(2032, 1, 1)),       # later: extends
        hold(PHOTO_KEY, dt.datetime(2031, 1, 1)),       # earlier than the group's later one: kept
        hold(PROOF_KEYS[0], dt.datetime(2033, 1, 1)),   # later first ...
        hold(PROOF_KEYS[0], dt.datetime(2030, 1, 1)),   # ... an earlier one does not shorten it
    ])
    assert group_sizes == [1, 5]
    assert {key: held_until for key, (held_until, _) in holds(profile.sessions, "certificate:1").items()} == {
        PHOTO_KEY: dt.datetime(2032, 1, 1), PROOF_KEYS[0]: dt.datetime(2033, 1, 1)}
    assert len(held_audit(profile.sessions)) == 6                       # every hold audited

    with profile.sessions.begin() as session:   # "until released" (not an event's) in one call, either order
        assert domain.hold_files_many(session, [
            domain.Hold(ME, "certificate:1", [PROOF_KEYS[1]], None),
            domain.Hold(ME, "certificate:1", [PROOF_KEYS[1], PROOF_KEYS[2]], dt.datetime(2040, 1, 1)),
            domain.Hold(ME, "certificate:1", [PROOF_KEYS[2], DELETING_KEY], None),
        ], "registration") == [[], [], [DELETING_KEY]]
    after = holds(profile.sessions, "certificate:1")
    assert after[PROOF_KEYS[1]][0] is None and after[PROOF_KEYS[2]][0] is None


def test_submissions_delivered_together_hold_their_files_together(profile, group_sizes):
    until = dt.datetime(2031, 1, 1, tzinfo=dt.timezone.utc)

    def submitted(application: str, keys: list[str] | None) -> ApplicationSubmitted:
        return ApplicationSubmitted(
            application_id=application, person_id=ME, kind="re_registration", region_code="110105",
            applicant_name_masked="李*", submitted_at=CREATED,
            files_held=None if keys is None else Hold(holder=f"submission:{application}:1", file_keys=keys,
                                                      held_until=until))

    first, second = submitted("a", [PHOTO_KEY]), submitted("b", [PHOTO_KEY, PROOF_KEYS[0]])
    profile.together([first, second, submitted("c", None), first])     # one without a hold; `first` twice
    assert group_sizes == [2]
    assert sorted(holds(profile.sessions, "submission:a:1")) == [PHOTO_KEY]
    assert sorted(holds(profile.sessions, "submission:b:1")) == sorted([PHOTO_KEY, PROOF_KEYS[0]])
    assert len(held_audit(profile.sessions)) == 2
    with profile.sessions() as session:
        assert session.execute(select(func.count()).select_from(inbox.table)).scalar_one() == 3
