"""Review's domain rules on a SQLite database migrated by review's own Alembic revisions (no broker)."""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import shutil
import uuid

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import sessionmaker

from services.review import domain
from services.review.models import ReviewItem, audit, outbox
from services.review.workcalendar import WorkCalendar, local_date
from swms import errors
from swms.auth import ADMIN, OFFICER, Caller
from swms.config import REPO_ROOT
from swms.contracts.common import ApplicationKind
from swms.contracts.events import ApplicationSubmitted
from swms.contracts.review import DeadlineState, Decision, OfficerLevel, QueueRequest
from swms.db import dispose_engine, engine_for
from swms.migrations import upgrade

CALENDAR = WorkCalendar.load(REPO_ROOT / "services" / "review" / "calendar.yaml")
CHAINS = domain.load_chains(REPO_ROOT / "services" / "review" / "chains.yaml")
RULES = domain.Rules(chains=CHAINS, calendar=CALENDAR)
COUNTY = Caller("county-1", OFFICER, "110105", "county")
NEIGHBOUR = Caller("county-2", OFFICER, "110106", "county")
PROVINCE = Caller("province-1", OFFICER, "110000", "province")


@pytest.fixture(scope="module")
def migrated(tmp_path_factory):
    path = tmp_path_factory.mktemp("review") / "migrated.db"
    upgrade("review", f"sqlite:///{path}")     # the real migrations, not create_all
    return path


@pytest.fixture
def factory(migrated, tmp_path):
    path = tmp_path / "review.db"
    shutil.copyfile(migrated, path)
    url = f"sqlite:///{path}"
    yield sessionmaker(engine_for(url), expire_on_commit=False)
    dispose_engine(url)


@pytest.fixture
def session(factory):
    with factory() as session:
        yield session


def submitted(region="110105", kind=ApplicationKind.FIRST_REGISTRATION, at=None, application_id=None,
              resubmission=False, round_=1) -> ApplicationSubmitted:
    return ApplicationSubmitted(application_id=application_id or str(uuid.uuid4()), person_id=str(uuid.uuid4()),
                                kind=kind, region_code=region, applicant_name_masked="王**",
                                submitted_at=at or dt.datetime(2026, 3, 2, 2, 0, tzinfo=dt.timezone.utc),
                                resubmission=resubmission, round=round_)


def accept(session, now=dt.datetime(2026, 3, 2, 2, 0), rules=RULES, **kwargs) -> ReviewItem:
    item = domain.accept_submission(session, submitted(**kwargs), rules, now=now)
    session.commit()
    return item


def events(session, event_type: str) -> list[dict]:
    rows = session.execute(select(outbox.table.c.payload).where(outbox.table.c.event_type == event_type)
                           .order_by(outbox.table.c.id)).scalars()
    return [json.loads(row) for row in rows]


def test_a_submission_opens_a_county_item_with_its_chain_and_deadline(session):
    item = accept(session, now=dt.datetime(2026, 1, 20, 3, 0))
    assert (item.level, item.step, item.round, item.chain, item.region_prefix) == ("county", 0, 1, "county,province",
                                                                                  "110105")
    assert item.due_at == dt.datetime(2026, 3, 9, 15, 59, 59)      # across 春节, as in the calendar tests
    assert item.submitted_at == dt.datetime(2026, 3, 2, 2, 0)      # stored as naive UTC
    assert [row["action"] for row in audit.for_entity(session, item.item_id)] == ["item.opened"]


def test_events_say_which_level_has_the_application_in_a_three_level_chain(session):
    """application_accepted names the first level; each approval names the next level and its stage,
    so registration can show 审核中（市级） while the status is 终审中."""
    three = domain.Rules(chains=domain.check_chains({"default": {"first_registration": ["county", "city", "province"]}}),
                         calendar=CALENDAR)
    item = accept(session, rules=three)
    [accepted] = events(session, "application_accepted")
    assert (accepted["application_id"], accepted["round"], accepted["level"], accepted["stage"]) == (
        item.application_id, 1, "county", "initial")
    assert accepted["kind"] == "first_registration" and accepted["region_code"] == "110105"
    city = Caller("city-1", OFFICER, "110100", "city")
    _, at_city = domain.decide(session, COUNTY, item.item_id, Decision.APPROVE, None, three)
    _, at_province = domain.decide(session, city, at_city.item_id, Decision.APPROVE, None, three)
    domain.decide(session, PROVINCE, at_province.item_id, Decision.APPROVE, None, three)
    session.commit()
    assert [(e["level"], e["stage"], e["next_level"], e["next_stage"], e["final"])
            for e in events(session, "application_approved")] == [
        ("county", "initial", "city", "intermediate", False), ("city", "intermediate", "province", "final", False),
        ("province", "final", None, None, True)]
    assert len(events(session, "application_accepted")) == 1      # only a submission is accepted


def test_the_next_level_keeps_the_acceptance_and_deadline_and_follows_the_stored_chain(session):
    item = accept(session)
    # The operator shortens the chain after this application started: it still reaches the province.
    shortened = domain.Rules(chains=domain.check_chains({"default": {"first_registration": ["county"]}}),
                             calendar=CALENDAR)
    decided, next_item = domain.decide(session, COUNTY, item.item_id, Decision.APPROVE, None, shortened)
    session.commit()
    assert next_item.level == "province" and next_item.region_prefix == "11"
    assert (next_item.accepted_at, next_item.due_at) == (item.accepted_at, item.due_at)
    assert next_item.opened_at >= item.accepted_at
    assert [e["final"] for e in events(session, "application_approved")] == [False]
    # A new submission under the shortened chain is county-only.
    assert accept(session, rules=shortened).chain == "county"


def test_a_second_submission_while_one_is_pending_opens_nothing(session):
    first = accept(session)
    again = domain.accept_submission(session, submitted(application_id=first.application_id), RULES)
    session.commit()
    assert again.item_id == first.item_id
    assert session.execute(select(func.count()).select_from(ReviewItem)).scalar_one() == 1
    assert [row["action"] for row in audit.for_entity(session, first.item_id)] == ["item.opened", "submission.ignored"]


@pytest.mark.parametrize("region", ["99010", "990101", "1101051", "abcdef"])
def test_a_submission_naming_no_county_is_not_queued_but_recorded(session, region):
    event = submitted(region=region)
    assert domain.accept_submission(session, event, RULES) is None
    session.commit()
    assert session.execute(select(func.count()).select_from(ReviewItem)).scalar_one() == 0
    [entry] = audit.for_entity(session, event.application_id)
    assert entry["action"] == "submission.refused"


def test_the_database_allows_one_pending_item_per_application(session):
    first = accept(session)
    clone = ReviewItem(**{column.key: getattr(first, column.key) for column in ReviewItem.__table__.columns})
    clone.item_id, clone.step = str(uuid.uuid4()), 1
    session.expunge(first)
    session.add(clone)
    with pytest.raises(Exception, match="UNIQUE"):
        session.commit()


# ---- queue ---------------------------------------------------------------------------------------

def test_keyset_pages_walk_every_item_once_in_order_even_with_equal_times(session):
    base = dt.datetime(2026, 3, 2, 1, 0, tzinfo=dt.timezone.utc)
    for n in range(45):
        domain.accept_submission(session, submitted(at=base + dt.timedelta(minutes=n // 3)), RULES)
    accept(session, region="110106")                      # the neighbour's: never in this queue
    session.commit()
    seen, cursor, pages = [], None, 0
    while True:
        rows, total, cursor_after = domain.queue(session, COUNTY, QueueRequest(page_size=20, cursor=cursor), RULES)
        assert total == (45 if cursor is None else None)     # counted on the first page only
        cursor = cursor_after
        pages += 1
        seen.extend(rows)
        if cursor is None:
            break
    assert pages == 3 and len(seen) == 45 and len({row.item_id for row in seen}) == 45
    keys = [(row.submitted_at, row.item_id) for row in seen]
    assert keys == sorted(keys)
    second, _, _ = domain.queue(session, COUNTY, QueueRequest(page_size=20, page=2), RULES)
    assert [row.item_id for row in second] == [row.item_id for row in seen[20:40]]


def test_counting_stops_after_the_limit(session, monkeypatch):
    for _ in range(8):
        accept(session)
    monkeypatch.setattr(domain, "COUNT_LIMIT", 5)
    rows, total, cursor = domain.queue(session, COUNTY, QueueRequest(page_size=2), RULES)
    assert (len(rows), total, cursor is not None) == (2, 6, True)     # "more than 5"


def test_filters_kind_status_dates_and_deadline(session):
    now = dt.datetime(2026, 3, 2, 2, 0)
    # Beijing dates: 15:59 UTC on 1 March is still 1 March in Beijing; 16:00 UTC is 2 March.
    early = accept(session, at=dt.datetime(2026, 3, 1, 15, 59, tzinfo=dt.timezone.utc))
    late = accept(session, at=dt.datetime(2026, 3, 1, 16, 0, tzinfo=dt.timezone.utc),
                  kind=ApplicationKind.REPLACEMENT)
    overdue = accept(session, at=dt.datetime(2026, 1, 5, 2, 0, tzinfo=dt.timezone.utc))
    near = accept(session, at=dt.datetime(2026, 1, 6, 2, 0, tzinfo=dt.timezone.utc))
    session.execute(update(ReviewItem).where(ReviewItem.item_id == overdue.item_id)
                    .values(due_at=now - dt.timedelta(minutes=1)))
    session.execute(update(ReviewItem).where(ReviewItem.item_id == near.item_id)
                    .values(due_at=CALENDAR.due_at(now, 5)))
    session.commit()

    def ids(**request):
        rows, total, _ = domain.queue(session, COUNTY, QueueRequest(**request), RULES, now=now)
        assert total == len(rows)
        return {row.item_id for row in rows}

    assert ids() == {early.item_id, late.item_id, overdue.item_id, near.item_id}
    assert ids(kind="replacement") == {late.item_id}
    assert ids(submitted_from="2026-03-01", submitted_to="2026-03-01") == {early.item_id}
    assert ids(submitted_from="2026-03-02") == {late.item_id}
    assert ids(deadline="overdue") == {overdue.item_id}
    assert ids(deadline="near_due") == {near.item_id}
    assert ids(deadline="on_time") == {early.item_id, late.item_id}
    assert ids(status="approved") == set()
    domain.decide(session, COUNTY, early.item_id, Decision.APPROVE, "材料齐全", RULES)
    session.commit()
    assert ids(status="approved") == {early.item_id}

    flags = {row.item_id: domain.item_out(row, RULES, now) for row in
             domain.queue(session, COUNTY, QueueRequest(), RULES, now=now)[0]}
    assert flags[overdue.item_id].deadline_state == DeadlineState.OVERDUE
    assert flags[overdue.item_id].working_days_left == 0
    assert (flags[near.item_id].deadline_state, flags[near.item_id].working_days_left) == (DeadlineState.NEAR_DUE, 5)
    assert flags[late.item_id].deadline_state == DeadlineState.ON_TIME
    assert flags[late.item_id].working_days_left == 30
    approved = domain.item_out(session.get(ReviewItem, early.item_id), RULES, now)
    assert (approved.deadline_state, approved.working_days_left, approved.reason) == (None, None, "材料齐全")


@pytest.mark.parametrize("cursor, message", [
    ("%%%", "翻页标记无效"),
    ("bm90IGpzb24", "翻页标记无效"),                                  # "not json"
    ("eyJzIjogMX0", "翻页标记无效"),                                  # {"s": 1}
    ("eyJzIjoiMjAyNi0wMy0wMlQwMjowMDowMCswMDowMCIsImkiOiIxIiwiZiI6IngifQ", "翻页标记无效"),   # aware time, bad id
])
def test_broken_cursors_are_refused(session, cursor, message):
    with pytest.raises(errors.SwmsError) as caught:
        domain.queue(session, COUNTY, QueueRequest(cursor=cursor), RULES)
    assert (caught.value.code, caught.value.field) == ("VALIDATION_FAILED", "cursor")
    assert message in caught.value.message


def test_a_cursor_belongs_to_its_filters(session):
    for _ in range(3):
        accept(session)
    _, _, cursor = domain.queue(session, COUNTY, QueueRequest(page_size=1), RULES)
    assert domain.queue(session, COUNTY, QueueRequest(page_size=1, cursor=cursor), RULES)[0]
    with pytest.raises(errors.SwmsError) as caught:
        domain.queue(session, COUNTY, QueueRequest(page_size=1, cursor=cursor, kind="replacement"), RULES)
    assert caught.value.field == "cursor" and "筛选条件" in caught.value.message


@pytest.mark.parametrize("officer", [Caller("x", OFFICER, None, "county"), Caller("x", OFFICER, "1101", "county"),
                                     Caller("x", OFFICER, "110105", "village"), Caller("x", OFFICER, "110105", None),
                                     Caller("x", ADMIN, "110105", "county")])
def test_officer_tokens_without_a_usable_jurisdiction_see_nothing(session, officer):
    with pytest.raises(errors.SwmsError) as caught:
        domain.queue(session, officer, QueueRequest(), RULES)
    assert (caught.value.code, caught.value.field) == ("FORBIDDEN", "auth_token")


# ---- decisions -----------------------------------------------------------------------------------

def test_return_for_correction_then_resubmission_starts_a_new_round(session):
    item = accept(session)
    decided, next_item = domain.decide(session, COUNTY, item.item_id, Decision.RETURN, "工作经历缺少证明材料", RULES)
    session.commit()
    assert next_item is None and decided.status == "returned"
    [returned] = events(session, "application_returned")
    assert (returned["reason"], returned["stage"], returned["decided_by"]) == ("工作经历缺少证明材料", "initial", "county-1")
    assert events(session, "application_approved") == []
    # The first round announced again (another event id) reopens nothing.
    assert domain.accept_submission(session, submitted(application_id=item.application_id), RULES) is None
    session.commit()
    assert audit.for_entity(session, item.application_id)[-1]["action"] == "submission.ignored"
    later = dt.datetime(2026, 3, 20, 2, 0)
    again = domain.accept_submission(session, submitted(application_id=item.application_id, resubmission=True,
                                                        round_=2), RULES, now=later)
    session.commit()
    assert (again.round, again.step, again.level, again.accepted_at) == (2, 0, "county", later)
    assert again.due_at == CALENDAR.due_at(later, 30) != item.due_at
    trail = domain.trail(session, item.application_id)
    assert [(t.round, t.status.value, t.reason) for t in trail] == [(1, "returned", "工作经历缺少证明材料"),
                                                                   (2, "pending", None)]


def test_decisions_are_refused_out_of_jurisdiction_or_twice(session):
    item = accept(session)
    for officer, code in ((NEIGHBOUR, "FORBIDDEN"), (PROVINCE, "FORBIDDEN")):
        with pytest.raises(errors.SwmsError) as caught:
            domain.decide(session, officer, item.item_id, Decision.APPROVE, None, RULES)
        assert (caught.value.code, caught.value.field) == (code, "item_id")
    with pytest.raises(errors.SwmsError) as caught:
        domain.decide(session, COUNTY, str(uuid.uuid4()), Decision.APPROVE, None, RULES)
    assert (caught.value.code, caught.value.field) == ("NOT_FOUND", "item_id")
    domain.decide(session, COUNTY, item.item_id, Decision.REJECT, "不符合条件", RULES)
    session.commit()
    with pytest.raises(errors.SwmsError) as caught:
        domain.decide(session, COUNTY, item.item_id, Decision.APPROVE, None, RULES)
    assert caught.value.code == "ALREADY_DECIDED"
    session.rollback()
    assert len(events(session, "application_rejected")) == 1 and events(session, "application_approved") == []


def test_batch_approval_reports_each_item_and_keeps_going_past_a_failed_chunk(factory):
    with factory() as session:
        mine = [accept(session).item_id for _ in range(5)]
        theirs = accept(session, region="110106").item_id
        decided = accept(session).item_id
        domain.decide(session, COUNTY, decided, Decision.APPROVE, None, RULES)
        session.commit()
    unknown = str(uuid.uuid4())
    calls = {"n": 0}

    @contextlib.contextmanager
    def transaction():
        calls["n"] += 1
        with factory() as session:
            if calls["n"] == 2:
                raise OperationalError("UPDATE", {}, Exception("database is away"))
            yield session
            session.commit()

    request = [mine[0], unknown, mine[1], theirs, decided, mine[2], mine[3], mine[4]]
    results = domain.approve_batch(transaction, COUNTY, request, "批量通过", RULES, "batch-1", chunk_size=4)
    assert [r.item_id for r in results] == request
    assert [(r.ok, r.error_code) for r in results] == [
        (True, None), (False, "NOT_FOUND"), (True, None), (False, "FORBIDDEN"),
        (False, "NOT_PROCESSED"), (False, "NOT_PROCESSED"), (False, "NOT_PROCESSED"), (False, "NOT_PROCESSED")]
    assert results[0].next_stage.value == "final" and results[0].stage.value == "initial"
    with factory() as session:
        statuses = {row.item_id: row.status for row in session.execute(select(ReviewItem)).scalars()}
        assert [statuses[i] for i in mine] == ["approved", "approved", "pending", "pending", "pending"]
        assert statuses[theirs] == "pending"
        assert len(events(session, "application_approved")) == 3       # two from the batch, one single
        entry = audit.for_entity(session, mine[0])[-1]
        assert (entry["action"], entry["actor"], entry["detail"]["batch_id"], entry["detail"]["reason"]) == (
            "item.approved", "county-1", "batch-1", "批量通过")


# ---- deadlines -----------------------------------------------------------------------------------

def test_summary_counts_per_region_and_level_within_the_jurisdiction(session):
    now = dt.datetime(2026, 3, 2, 2, 0)
    a = accept(session, region="110105")
    accept(session, region="110105")
    b = accept(session, region="110106")
    accept(session, region="440305")
    domain.decide(session, COUNTY, a.item_id, Decision.APPROVE, None, RULES)     # now at the province
    session.execute(update(ReviewItem).where(ReviewItem.item_id == b.item_id).values(due_at=now - dt.timedelta(days=1)))
    session.commit()
    province = domain.summary(session, PROVINCE, OfficerLevel.COUNTY, RULES, now=now)
    assert [(r.region, r.level.value, r.pending, r.overdue) for r in province.rows] == [
        ("110105", "county", 1, 0), ("110105", "province", 1, 0), ("110106", "county", 1, 1)]
    assert (province.pending, province.overdue, province.near_due) == (3, 1, 0)
    county = domain.summary(session, COUNTY, OfficerLevel.PROVINCE, RULES, now=now)   # never wider than the caller
    assert [(r.region, r.pending) for r in county.rows] == [("110105", 1), ("110105", 1)]
    national = domain.summary(session, Caller("admin", ADMIN), OfficerLevel.PROVINCE, RULES, now=now)
    assert [(r.region, r.level.value, r.pending) for r in national.rows] == [
        ("11", "county", 2), ("11", "province", 1), ("44", "county", 1)]
    assert national.calendar_years[:2] == [2025, 2026]


def test_deadlines_follow_an_updated_calendar(factory):
    with factory() as session:
        pending = accept(session, now=dt.datetime(2026, 11, 26, 2, 0))
        decided = accept(session, now=dt.datetime(2026, 11, 26, 2, 0))
        domain.decide(session, COUNTY, decided.item_id, Decision.APPROVE, None, RULES)
        session.commit()
    transaction = factory.begin
    assert domain.recompute_deadlines(transaction, RULES) == 0
    # The 2027 notice arrives with (say) 4–8 January off: pending deadlines move, decided ones do not.
    document = {"fixed_holidays": ["01-01"], "years": {
        2026: {"holidays": sorted(CALENDAR.holidays)},
        2027: {"holidays": ["2027-01-01", "2027-01-04..2027-01-08"]}}}
    document["years"][2026]["workdays"] = sorted(CALENDAR.workdays)
    updated = domain.Rules(chains=CHAINS, calendar=WorkCalendar.from_document(document))
    assert domain.recompute_deadlines(transaction, updated, batch=1) == 2    # the county item and the province one
    with factory() as session:
        rows = {row.item_id: row for row in session.execute(select(ReviewItem)).scalars()}
        assert local_date(rows[pending.item_id].due_at) == dt.date(2027, 1, 15)
        assert rows[decided.item_id].due_at == decided.due_at
    assert domain.recompute_deadlines(transaction, updated) == 0
