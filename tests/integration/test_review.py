"""Review over a real RabbitMQ, on SQLite and on PostgreSQL.

Review runs alone: submissions arrive as ``application_submitted`` events published the way
registration publishes them, and officers act with tokens signed by the test key.
"""
from __future__ import annotations

import datetime as dt
import logging
import uuid

import pytest
from sqlalchemy import func, select

from services.review.models import ReviewItem, outbox
from services.review.workcalendar import WorkCalendar, local_date
from swms.config import REPO_ROOT
from swms.contracts.common import ApplicationKind
from swms.contracts.events import ApplicationSubmitted
from swms.errors import SwmsError
from tests.support import (
    EventTap,
    dispatch,
    officer_token,
    rpc_client,
    session_for,
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
                               .order_by(ReviewItem.step)).scalars().all()


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
            outcomes = []
            for reply in replies:
                try:
                    outcomes.append(reply.result())
                except SwmsError as exc:
                    outcomes.append(exc.code)
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
