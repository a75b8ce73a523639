"""Review over a real RabbitMQ, on SQLite and on PostgreSQL.

Review runs alone: submissions arrive as ``application_submitted`` events published the way
registration publishes them, and officers act with tokens signed by the test key.
"""
from __future__ import annotations

import datetime as dt
import logging
import uuid

import pytest
from sqlalchemy import func, select, update

from services.review import domain
from services.review.models import ReviewItem, audit, outbox
from services.review.service import ReviewService
from services.review.workcalendar import WorkCalendar, local_date
from swms.config import REPO_ROOT
from swms.auth import ADMIN, Caller
from swms.contracts.common import ApplicationKind
from swms.contracts.events import ApplicationSubmitted
from swms.errors import SwmsError
from tests.support import (
    EventTap,
    dispatch,
    officer_token,
    results_or_codes,
    rpc_client,
    session_for,
    token,
    wait_until,
    worker_token,
)

pytestmark = pytest.mark.integration

COUNTY, OTHER_COUNTY, PROVINCE = "110105", "110106", "110000"   # 朝阳区, 丰台区, 北京市
CALENDAR = WorkCalendar.load(REPO_ROOT / "services" / "review" / "calendar.yaml")


@pytest.fixture
def review(start_service):
    return start_service("review")


@pytest.fixture
def county(keys_dir):
    return officer_token(keys_dir, COUNTY, "county", officer_id="county-officer-1")


@pytest.fixture
def province(keys_dir):
    return officer_token(keys_dir, PROVINCE, "province", officer_id="province-officer-1")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def submission(kind: ApplicationKind = ApplicationKind.FIRST_REGISTRATION, region: str = COUNTY,
               name: str = "李**") -> ApplicationSubmitted:
    return ApplicationSubmitted(application_id=str(uuid.uuid4()), person_id=str(uuid.uuid4()), kind=kind,
                                region_code=region, applicant_name_masked=name,
                                submitted_at=dt.datetime.now(dt.UTC))


def find_item(client, application_id: str, **request) -> dict | None:
    return next((item for item in client.review.list_queue(request)["items"]
                 if item["application_id"] == application_id), None)


def wait_for_item(client, application_id: str) -> dict:
    return wait_until(lambda: find_item(client, application_id), what=f"review item of {application_id}")


def submit_and_wait(amqp_uri: str, client, **overrides) -> tuple[ApplicationSubmitted, dict]:
    event = submission(**overrides)
    dispatch(amqp_uri, event)
    return event, wait_for_item(client, event.application_id)


def item_row(config, item_id: str) -> ReviewItem | None:
    with session_for(config["DB_URL"]) as session:
        return session.get(ReviewItem, item_id)


def items_of(config, application_id: str) -> list[ReviewItem]:
    with session_for(config["DB_URL"]) as session:
        return session.execute(select(ReviewItem).where(ReviewItem.application_id == application_id)
                               .order_by(ReviewItem.round, ReviewItem.step)).scalars().all()


def outbox_count(config, event_type: str) -> int:
    with session_for(config["DB_URL"]) as session:
        return session.execute(select(func.count()).select_from(outbox.table)
                               .where(outbox.table.c.event_type == event_type)).scalar_one()


def assert_still_pending(config, item_id: str) -> None:
    row = item_row(config, item_id)
    assert (row.status, row.decided_by, row.decided_at, row.reason) == ("pending", None, None, None)




def test_submission_reaches_only_the_county_queue_with_a_30_working_day_deadline(review, amqp_uri, keys_dir,
                                                                                  county, province):
    event = submission()
    before = utcnow()
    with rpc_client(amqp_uri, county) as officer:
        dispatch(amqp_uri, event)
        item = wait_for_item(officer, event.application_id)
        after = utcnow()
        page = officer.review.list_queue({})
    assert item["kind"] == "first_registration"
    assert item["stage"] == "initial"
    assert item["status"] == "pending"
    assert item["applicant_name_masked"] == "李**"
    assert (item["person_id"], item["region_code"]) == (event.person_id, COUNTY)
    assert (page["total"], page["page"], page["page_size"]) == (1, 1, 20)

    # Due at the end (23:59:59 Beijing time) of the 30th working day after the day of acceptance,
    # counted in the working-day calendar: weekends and public holidays off, make-up days on.
    due = dt.datetime.fromisoformat(item["due_at"])
    assert due in {CALENDAR.due_at(before, 30), CALENDAR.due_at(after, 30)}
    due_date = dt.date.fromisoformat(item["due_date"])
    assert due_date == local_date(due) and CALENDAR.is_working_day(due_date), "a deadline falls on a working day"
    assert CALENDAR.working_days_between(local_date(before), due_date) == 30
    assert (due + dt.timedelta(hours=8)).time() == dt.time(23, 59, 59)
    assert item["deadline_state"] == "on_time" and item["working_days_left"] == 30
    assert page["next_cursor"] is None

    with rpc_client(amqp_uri, officer_token(keys_dir, OTHER_COUNTY, "county", "county-officer-2")) as neighbour:
        empty = neighbour.review.list_queue({})
        assert (empty["items"], empty["page"], empty["page_size"], empty["total"]) == ([], 1, 20, 0)
    with rpc_client(amqp_uri, province) as officer:
        # The province reviews only after the county's initial approval.
        assert officer.review.list_queue({})["total"] == 0


def test_first_registration_goes_from_county_to_province(review, amqp_uri, county, province):
    tap = EventTap(amqp_uri, "review", "application_approved")
    try:
        with rpc_client(amqp_uri, county) as officer:
            event, item = submit_and_wait(amqp_uri, officer)
            decision = officer.review.decide({"item_id": item["item_id"], "decision": "approve"})
            assert (decision["stage"], decision["decision"], decision["next_stage"]) == ("initial", "approve", "final")
            assert officer.review.list_queue({})["total"] == 0
        [initial] = tap.collect(1)
        assert initial["application_id"] == event.application_id
        assert (initial["stage"], initial["final"], initial["decided_by"]) == ("initial", False, "county-officer-1")
        assert (initial["level"], initial["next_level"], initial["round"]) == ("county", "province", 1)
        assert initial["person_id"] == event.person_id

        with rpc_client(amqp_uri, province) as officer:
            final_item = wait_for_item(officer, event.application_id)
            assert final_item["stage"] == "final"
            assert final_item["item_id"] != item["item_id"]
            decision = officer.review.decide({"item_id": final_item["item_id"], "decision": "approve"})
            assert (decision["stage"], decision["next_stage"]) == ("final", None)
            assert officer.review.list_queue({})["total"] == 0
        [final] = tap.collect(1)
        assert final["application_id"] == event.application_id
        assert (final["stage"], final["final"], final["decided_by"]) == ("final", True, "province-officer-1")
        assert (final["level"], final["next_level"]) == ("province", None)
    finally:
        tap.close()
    assert [(row.level, row.status) for row in items_of(review, event.application_id)] == [
        ("county", "approved"), ("province", "approved")]


def test_replacement_is_decided_by_the_county_alone(review, amqp_uri, county, province):
    tap = EventTap(amqp_uri, "review", "application_approved")
    try:
        with rpc_client(amqp_uri, county) as officer:
            event, item = submit_and_wait(amqp_uri, officer, kind=ApplicationKind.REPLACEMENT)
            assert item["kind"] == "replacement"
            assert officer.review.list_queue({"kind": "first_registration"})["total"] == 0
            decision = officer.review.decide({"item_id": item["item_id"], "decision": "approve"})
            assert decision["next_stage"] is None
        [approved] = tap.collect(1)
    finally:
        tap.close()
    assert approved["application_id"] == event.application_id
    assert approved["final"] is True
    with rpc_client(amqp_uri, province) as officer:
        assert officer.review.list_queue({})["total"] == 0
    assert [row.level for row in items_of(review, event.application_id)] == ["county"]


def test_rejection_needs_a_reason_which_the_event_carries(review, amqp_uri, county):
    tap = EventTap(amqp_uri, "review", "application_rejected")
    try:
        with rpc_client(amqp_uri, county) as officer:
            event, item = submit_and_wait(amqp_uri, officer)
            for request in ({"item_id": item["item_id"], "decision": "reject"},
                            {"item_id": item["item_id"], "decision": "reject", "reason": "   "}):
                with pytest.raises(SwmsError) as caught:
                    officer.review.decide(request)
                assert caught.value.code == "VALIDATION_FAILED"
                assert "理由" in caught.value.message
            assert_still_pending(review, item["item_id"])
            assert find_item(officer, event.application_id) is not None

            decision = officer.review.decide({"item_id": item["item_id"], "decision": "reject",
                                              "reason": "单位名称与营业执照不一致"})
            assert (decision["decision"], decision["next_stage"]) == ("reject", None)
            assert find_item(officer, event.application_id) is None
        [rejected] = tap.collect(1)
    finally:
        tap.close()
    assert rejected["application_id"] == event.application_id
    assert (rejected["stage"], rejected["reason"]) == ("initial", "单位名称与营业执照不一致")
    row = item_row(review, item["item_id"])
    assert (row.status, row.reason) == ("rejected", "单位名称与营业执照不一致")


def test_rejection_without_reason_names_the_reason_field(review, amqp_uri, county):
    """Front ends highlight the field an error names; for a missing reason that is ``reason``."""
    with rpc_client(amqp_uri, county) as officer:
        _, item = submit_and_wait(amqp_uri, officer)
        with pytest.raises(SwmsError) as caught:
            officer.review.decide({"item_id": item["item_id"], "decision": "reject"})
    assert caught.value.code == "VALIDATION_FAILED"
    assert caught.value.field == "reason"
    assert [detail["field"] for detail in caught.value.details] == ["reason"]
    assert_still_pending(review, item["item_id"])


def test_officers_decide_only_their_own_region_and_level_and_only_once(review, amqp_uri, keys_dir, county,
                                                                       province):
    with rpc_client(amqp_uri, county) as officer:
        event, item = submit_and_wait(amqp_uri, officer)
    approve = {"item_id": item["item_id"], "decision": "approve"}
    for wrong in (officer_token(keys_dir, OTHER_COUNTY, "county", "county-officer-2"), province):
        with rpc_client(amqp_uri, wrong) as outsider, pytest.raises(SwmsError) as caught:
            outsider.review.decide(approve)
        assert caught.value.code == "FORBIDDEN"
        assert_still_pending(review, item["item_id"])
    assert outbox_count(review, "application_approved") == 0

    with rpc_client(amqp_uri, county) as officer:
        officer.review.decide(approve)
        for again in (approve, {"item_id": item["item_id"], "decision": "reject", "reason": "重复审核"}):
            with pytest.raises(SwmsError) as caught:
                officer.review.decide(again)
            assert caught.value.code == "ALREADY_DECIDED"
        with pytest.raises(SwmsError) as caught:
            officer.review.decide({"item_id": str(uuid.uuid4()), "decision": "approve"})
        assert caught.value.code == "NOT_FOUND"
    row = item_row(review, item["item_id"])
    assert (row.status, row.decided_by, row.reason) == ("approved", "county-officer-1", None)
    assert outbox_count(review, "application_approved") == 1
    assert outbox_count(review, "application_rejected") == 0
    assert len(items_of(review, event.application_id)) == 2   # the county's, and the province's next


def test_only_officers_use_the_queue(review, amqp_uri, keys_dir, county):
    with rpc_client(amqp_uri, county) as officer:
        _, item = submit_and_wait(amqp_uri, officer)
    approve = {"item_id": item["item_id"], "decision": "approve"}
    worker = worker_token(keys_dir, str(uuid.uuid4()))
    with rpc_client(amqp_uri, worker) as client:
        for call in (lambda: client.review.list_queue({}), lambda: client.review.decide(approve)):
            with pytest.raises(SwmsError) as caught:
                call()
            assert caught.value.code == "FORBIDDEN"
    with rpc_client(amqp_uri) as anonymous:
        for call in (lambda: anonymous.review.list_queue({}), lambda: anonymous.review.decide(approve)):
            with pytest.raises(SwmsError) as caught:
                call()
            assert caught.value.code == "AUTH_REQUIRED"
    assert_still_pending(review, item["item_id"])


def test_malformed_page_size_is_refused(review, amqp_uri, county):
    with rpc_client(amqp_uri, county) as officer:
        for page_size in (0, 1_000_000, "abc"):
            with pytest.raises(SwmsError) as caught:
                officer.review.list_queue({"page_size": page_size})
            assert (caught.value.code, caught.value.field) == ("VALIDATION_FAILED", "page_size"), page_size
        assert officer.review.list_queue({"page_size": 200})["page_size"] == 200


def test_two_officers_deciding_at_once_one_wins(review, amqp_uri, keys_dir):
    tokens = [officer_token(keys_dir, COUNTY, "county", f"county-officer-{n}") for n in (1, 2)]
    tap = EventTap(amqp_uri, "review", "application_approved")
    try:
        with rpc_client(amqp_uri, tokens[0]) as first, rpc_client(amqp_uri, tokens[1]) as second:
            event, item = submit_and_wait(amqp_uri, first)
            request = {"item_id": item["item_id"], "decision": "approve"}
            replies = [first.review.decide.call_async(request), second.review.decide.call_async(request)]
            outcomes = results_or_codes(replies)
        wins = [outcome for outcome in outcomes if isinstance(outcome, dict)]
        assert len(wins) == 1, outcomes
        assert [outcome for outcome in outcomes if not isinstance(outcome, dict)] == ["ALREADY_DECIDED"]
        assert outbox_count(review, "application_approved") == 1
        events = tap.collect(2, timeout=3)
    finally:
        tap.close()
    assert len(events) == 1
    winner = "county-officer-1" if isinstance(outcomes[0], dict) else "county-officer-2"
    assert (events[0]["application_id"], events[0]["decided_by"]) == (event.application_id, winner)
    assert item_row(review, item["item_id"]).decided_by == winner
    assert [row.step for row in items_of(review, event.application_id)] == [0, 1]


def test_a_redelivered_submission_opens_one_item(review, amqp_uri, county, caplog):
    caplog.set_level(logging.INFO, logger="swms.events")
    event = submission()
    dispatch(amqp_uri, event)
    dispatch(amqp_uri, event)   # same event_id: an at-least-once relay may deliver twice
    with rpc_client(amqp_uri, county) as officer:
        wait_for_item(officer, event.application_id)
        wait_until(lambda: f"event {event.event_id} already handled" in caplog.text
                   or officer.review.list_queue({})["total"] > 1, what="the second delivery to be handled")
        assert officer.review.list_queue({})["total"] == 1
    assert len(items_of(review, event.application_id)) == 1


# ---- issue 6: return for correction, filters and keyset pages, batches, audit, deadline counts ----

RULES = domain.Rules(chains=domain.load_chains(REPO_ROOT / "services" / "review" / "chains.yaml"), calendar=CALENDAR)


def seed(config, count: int, region: str = COUNTY, kind: ApplicationKind = ApplicationKind.FIRST_REGISTRATION,
         submitted_at: dt.datetime | None = None, accepted_at: dt.datetime | None = None) -> list[str]:
    """Items as the submission handler opens them, written straight into review's database (fast)."""
    ids = []
    with session_for(config["DB_URL"]) as session:
        for n in range(count):
            event = submission(kind=kind, region=region)
            if submitted_at is not None:
                event.submitted_at = submitted_at + dt.timedelta(seconds=n)
            ids.append(domain.accept_submission(session, event, RULES, now=accepted_at).item_id)
        session.commit()
    return ids


def audit_actions(config, item_id: str) -> list[str]:
    with session_for(config["DB_URL"]) as session:
        return [row["action"] for row in audit.for_entity(session, item_id)]


def test_return_for_correction_reaches_the_broker_and_a_resubmission_starts_again(review, amqp_uri, county):
    tap = EventTap(amqp_uri, "review", "application_returned")
    try:
        with rpc_client(amqp_uri, county) as officer:
            event, item = submit_and_wait(amqp_uri, officer)
            decision = officer.review.decide({"item_id": item["item_id"], "decision": "return",
                                              "reason": "请补充三区计划证明材料"})
            assert (decision["decision"], decision["next_stage"]) == ("return", None)
            [returned] = tap.collect(1)
            assert (returned["application_id"], returned["reason"], returned["stage"]) == (
                event.application_id, "请补充三区计划证明材料", "initial")
            assert (returned["decided_by"], returned["level"], returned["round"]) == ("county-officer-1", "county", 1)
            assert find_item(officer, event.application_id) is None
            history = officer.review.list_queue({"status": "returned"})["items"]
            assert [(i["item_id"], i["reason"], i["deadline_state"]) for i in history] == [
                (item["item_id"], "请补充三区计划证明材料", None)]

            repeated = event.model_copy(update={"event_id": str(uuid.uuid4())})    # round 1 again
            resubmitted = event.model_copy(update={"event_id": str(uuid.uuid4()), "resubmission": True, "round": 2,
                                                   "submitted_at": dt.datetime.now(dt.UTC)})
            dispatch(amqp_uri, repeated)
            dispatch(amqp_uri, resubmitted)
            again = wait_for_item(officer, event.application_id)
            wait_until(lambda: "submission.ignored" in audit_actions(review, event.application_id),
                       what="the repeated round 1 to be handled")
        assert (again["round"], again["stage"], again["status"]) == (2, "initial", "pending")
        assert again["item_id"] != item["item_id"]
        assert [(row.round, row.status) for row in items_of(review, event.application_id)] == [
            (1, "returned"), (2, "pending")]
    finally:
        tap.close()
    assert outbox_count(review, "application_approved") == outbox_count(review, "application_rejected") == 0


def test_filters_and_keyset_pages(review, amqp_uri, county, keys_dir, monkeypatch):
    start = dt.datetime(2026, 11, 2, 1, 0)            # Monday 2 November 2026, 09:00 Beijing
    first = seed(review, 45, submitted_at=start)
    replacements = seed(review, 3, kind=ApplicationKind.REPLACEMENT, submitted_at=start + dt.timedelta(days=3))
    seed(review, 4, region=OTHER_COUNTY)
    with session_for(review["DB_URL"]) as session:     # two of the oldest are overdue
        session.execute(update(ReviewItem).where(ReviewItem.item_id.in_(first[:2]))
                        .values(due_at=utcnow() - dt.timedelta(hours=1)))
        session.commit()
    with rpc_client(amqp_uri, county) as officer:
        seen, cursor, pages = [], None, 0
        while True:
            page = officer.review.list_queue({"page_size": 20, **({"cursor": cursor} if cursor else {})})
            pages += 1
            assert page["total"] == (48 if pages == 1 else None)
            seen.extend(page["items"])
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert pages == 3 and [i["item_id"] for i in seen] == first + replacements
        assert [i["deadline_state"] for i in seen[:3]] == ["overdue", "overdue", "on_time"]

        kind = officer.review.list_queue({"kind": "replacement"})
        assert [i["item_id"] for i in kind["items"]] == replacements and kind["total"] == 3
        dates = officer.review.list_queue({"submitted_from": "2026-11-05", "submitted_to": "2026-11-05"})
        assert [i["item_id"] for i in dates["items"]] == replacements
        assert officer.review.list_queue({"submitted_to": "2026-11-01"})["total"] == 0
        overdue = officer.review.list_queue({"deadline": "overdue"})
        assert [i["item_id"] for i in overdue["items"]] == first[:2]
        assert officer.review.list_queue({"deadline": "on_time"})["total"] == 46
        assert officer.review.list_queue({"status": "approved"})["total"] == 0
        offset_page = officer.review.list_queue({"page": 3, "page_size": 20})
        assert [i["item_id"] for i in offset_page["items"]] == [i["item_id"] for i in seen[40:]]
        assert (offset_page["total"], offset_page["total_capped"]) == (48, False)
        monkeypatch.setattr(domain, "COUNT_LIMIT", 40)     # the service runs in this process
        capped = officer.review.list_queue({})
        assert (capped["total"], capped["total_capped"], len(capped["items"])) == (40, True, 20)

    with rpc_client(amqp_uri, county) as officer:
        summary = officer.review.deadline_summary({})
    assert [(r["region"], r["level"], r["pending"], r["overdue"]) for r in summary["rows"]] == [
        (COUNTY, "county", 48, 2)]
    with rpc_client(amqp_uri, officer_token(keys_dir, PROVINCE, "province", "province-officer-1")) as officer:
        rows = officer.review.deadline_summary({"group_by": "county"})["rows"]
        assert [(r["region"], r["pending"], r["overdue"]) for r in rows] == [(COUNTY, 48, 2), (OTHER_COUNTY, 4, 0)]
        city = officer.review.deadline_summary({"group_by": "city"})
        assert ([(r["region"], r["pending"]) for r in city["rows"]], city["overdue"]) == ([("1101", 52)], 2)
    with rpc_client(amqp_uri, token(keys_dir, Caller("admin-1", ADMIN))) as admin:
        national = admin.review.deadline_summary({"group_by": "province"})
        assert [(r["region"], r["pending"]) for r in national["rows"]] == [("11", 52)]


def test_batch_approval_gives_per_item_results_and_one_event_per_item(review, amqp_uri, keys_dir, county):
    mine = seed(review, 25)
    neighbours = seed(review, 1, region=OTHER_COUNTY)
    unknown = str(uuid.uuid4())
    tap = EventTap(amqp_uri, "review", "application_approved")
    try:
        with rpc_client(amqp_uri, county) as officer:
            officer.review.decide({"item_id": mine[0], "decision": "reject", "reason": "照片不合格"})
            request = mine + neighbours + [unknown]
            result = officer.review.approve_batch({"item_ids": request, "reason": "材料齐全，同意"})
            events = tap.collect(24, timeout=20)
            assert officer.review.list_queue({})["total"] == 0
    finally:
        tap.close()
    assert (result["approved"], result["failed"]) == (24, 3)
    assert [r["item_id"] for r in result["results"]] == request
    outcome = {r["item_id"]: (r["ok"], r["error_code"]) for r in result["results"]}
    assert outcome[mine[0]] == (False, "ALREADY_DECIDED")
    assert outcome[neighbours[0]] == (False, "FORBIDDEN")
    assert outcome[unknown] == (False, "NOT_FOUND")
    assert all(outcome[i] == (True, None) for i in mine[1:])
    assert all(r["next_stage"] == "final" for r in result["results"] if r["ok"])
    assert sorted(e["application_id"] for e in events) == sorted(
        row.application_id for i in mine[1:] for row in [item_row(review, i)])
    assert {(e["stage"], e["final"], e["decided_by"]) for e in events} == {("initial", False, "county-officer-1")}
    assert audit_actions(review, mine[5]) == ["item.opened", "item.approved"]
    assert item_row(review, neighbours[0]).status == "pending"
    with rpc_client(amqp_uri, officer_token(keys_dir, PROVINCE, "province", "province-officer-1")) as province:
        assert province.review.list_queue({})["total"] == 24
        entries = province.review.get_item_audit  # the province cannot read the county's item audit
        with pytest.raises(SwmsError) as caught:
            entries({"item_id": mine[5]})
        assert caught.value.code == "FORBIDDEN"
    with rpc_client(amqp_uri, county) as officer:
        trail = officer.review.get_item_audit({"item_id": mine[5]})["entries"]
    assert [(e["action"], e["actor"], e["decision"], e["reason"], e["level"]) for e in trail] == [
        ("item.opened", "review", None, None, "county"),
        ("item.approved", "county-officer-1", "approve", "材料齐全，同意", "county")]
    assert trail[1]["batch_id"] == result["batch_id"]
    with rpc_client(amqp_uri, token(keys_dir, Caller("admin-1", ADMIN))) as admin:
        assert len(admin.review.get_item_audit({"item_id": mine[5]})["entries"]) == 2


def test_a_batch_and_single_decisions_on_the_same_items_decide_each_once(review, amqp_uri, keys_dir):
    items = seed(review, 40)
    batch_officer = officer_token(keys_dir, COUNTY, "county", "county-officer-1")
    single_officer = officer_token(keys_dir, COUNTY, "county", "county-officer-2")
    with rpc_client(amqp_uri, batch_officer) as first, rpc_client(amqp_uri, single_officer) as second:
        batch = first.review.approve_batch.call_async({"item_ids": items})
        singles = [second.review.decide.call_async({"item_id": i, "decision": "reject", "reason": "并发测试"})
                   for i in reversed(items)]
        batch_result = batch.result()
        single_wins = 0
        for reply in singles:
            try:
                reply.result()
                single_wins += 1
            except SwmsError as exc:
                assert exc.code == "ALREADY_DECIDED"
    batch_wins = batch_result["approved"]
    assert batch_wins + single_wins == 40
    assert {r["error_code"] for r in batch_result["results"] if not r["ok"]} <= {"ALREADY_DECIDED"}
    assert outbox_count(review, "application_approved") == batch_wins
    assert outbox_count(review, "application_rejected") == single_wins
    for item_id in items:
        decided = [a for a in audit_actions(review, item_id) if a in ("item.approved", "item.rejected")]
        assert len(decided) == 1, (item_id, decided)


def test_two_overlapping_batches_at_once_decide_each_item_once_without_failures(review, amqp_uri, keys_dir):
    items = seed(review, 250)   # more than a chunk of 200: the two batches' chunks overlap in opposite orders
    tokens = [officer_token(keys_dir, COUNTY, "county", f"county-officer-{n}") for n in (1, 2)]
    with rpc_client(amqp_uri, tokens[0], timeout=60) as first, rpc_client(amqp_uri, tokens[1], timeout=60) as second:
        replies = [first.review.approve_batch.call_async({"item_ids": items}),
                   second.review.approve_batch.call_async({"item_ids": list(reversed(items))})]
        results = [reply.result() for reply in replies]
    assert results[0]["approved"] + results[1]["approved"] == 250
    codes = {r["error_code"] for result in results for r in result["results"] if not r["ok"]}
    assert codes <= {"ALREADY_DECIDED"}, codes          # no deadlock, nothing left unprocessed
    assert outbox_count(review, "application_approved") == 250
    with session_for(review["DB_URL"]) as session:
        decided = session.execute(select(func.count()).select_from(audit.table)
                                  .where(audit.table.c.action == "item.approved")).scalar_one()
        opened = session.execute(select(func.count()).select_from(ReviewItem).where(ReviewItem.level == "province")
                                 ).scalar_one()
    assert (decided, opened) == (250, 250)


def test_a_province_override_routes_to_the_city_and_in_flight_items_keep_their_chain(start_service, amqp_uri,
                                                                                    keys_dir, tmp_path):
    chains = tmp_path / "chains.yaml"
    chains.write_text((REPO_ROOT / "services" / "review" / "chains.yaml").read_text(encoding="utf-8")
                      + '"44":\n  first_registration: [county, city, province]\n', encoding="utf-8")
    config = start_service("review", REVIEW_CHAINS_FILE=str(chains))
    shenzhen = officer_token(keys_dir, "440305", "county", "sz-county")
    with rpc_client(amqp_uri, shenzhen) as officer:
        event, item = submit_and_wait(amqp_uri, officer, region="440305")
        assert officer.review.decide({"item_id": item["item_id"], "decision": "approve"})["next_stage"] == "intermediate"
    with rpc_client(amqp_uri, officer_token(keys_dir, "440300", "city", "sz-city")) as city:
        middle = wait_for_item(city, event.application_id)
        assert (middle["level"], middle["stage"]) == ("city", "intermediate")
        assert middle["due_at"] == item["due_at"]       # one deadline for the whole review
        assert city.review.decide({"item_id": middle["item_id"], "decision": "approve"})["next_stage"] == "final"
    with rpc_client(amqp_uri, officer_token(keys_dir, "440000", "province", "gd")) as province:
        assert wait_for_item(province, event.application_id)["stage"] == "final"
    assert [row.chain for row in items_of(config, event.application_id)] == ["county,city,province"] * 3


def test_pending_deadlines_follow_the_calendar_at_start(service_config, container_factory, tmp_path):
    config = service_config("review")
    [item_id] = seed(config, 1, accepted_at=dt.datetime(2026, 11, 26, 2, 0))
    calendar = tmp_path / "calendar.yaml"
    calendar.write_text((REPO_ROOT / "services" / "review" / "calendar.yaml").read_text(encoding="utf-8")
                        + "  2027:\n    holidays: [2027-01-01, 2027-01-04..2027-01-08]\n", encoding="utf-8")
    config["REVIEW_CALENDAR_FILE"] = str(calendar)
    container_factory(ReviewService, config).start()
    due = wait_until(lambda: item_row(config, item_id).due_at.date() == dt.date(2027, 1, 15),
                     what="the deadline recomputed with the 2027 holidays")
    assert due


@pytest.mark.parametrize("setting, content, message", [
    ("REVIEW_CHAINS_FILE", "default:\n  first_registration: [county, province]\n  feedback: [county]\n", "identity"),
    ("REVIEW_CHAINS_FILE", "default:\n  first_registration: [county, province]\n", "no chain for"),
    ("REVIEW_CALENDAR_FILE", "years:\n  2026:\n    holidays: [2026-01-01]\n    workdays: [2026-01-05]\n",
     "is a weekday"),
])
def test_a_broken_configuration_file_stops_the_service_at_start(service_config, container_factory, tmp_path,
                                                                setting, content, message):
    path = tmp_path / "broken.yaml"
    path.write_text(content, encoding="utf-8")
    container = container_factory(ReviewService, service_config("review", **{setting: str(path)}))
    with pytest.raises(ValueError, match=message):
        container.start()
