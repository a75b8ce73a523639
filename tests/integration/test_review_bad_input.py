"""Bad input to review, over the real broker, on SQLite and PostgreSQL.

Each case is one call that must be refused with a stable code and the field at fault, and must
change nothing: review's items, outbox, inbox and audit log are compared before and after every
case. One review service per backend runs all the cases (starting one per case would take minutes).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from sqlalchemy import select

from services.review.models import ReviewItem, audit, inbox, outbox
from swms.auth import ADMIN, OFFICER, SERVICE, Caller, generate_keypair, issue_token
from swms.errors import SwmsError
from tests.integration.test_review import COUNTY, OTHER_COUNTY, PROVINCE, seed
from tests.support import officer_token, rpc_client, session_for, token, worker_token

pytestmark = pytest.mark.integration

UNKNOWN = "00000000-0000-4000-8000-000000000000"


@dataclass
class Case:
    name: str
    method: str
    payload: Any
    code: str
    field: str | None
    who: str = "county"          # key into the tokens of the test


def db_state(config) -> tuple:
    with session_for(config["DB_URL"]) as session:
        items = [tuple(getattr(row, c.key) for c in ReviewItem.__table__.columns)
                 for row in session.execute(select(ReviewItem).order_by(ReviewItem.item_id)).scalars()]
        counts = tuple(len(session.execute(select(table.table)).all()) for table in (outbox, inbox, audit))
    return items, counts


@pytest.fixture
def world(start_service, keys_dir):
    config = start_service("review")
    pending, decided = seed(config, 2)
    [neighbours] = seed(config, 1, region=OTHER_COUNTY)
    county = officer_token(keys_dir, COUNTY, "county", "county-officer-1")
    with rpc_client(config["AMQP_URI"], county) as officer:
        officer.review.decide({"item_id": decided, "decision": "approve"})
    other_key = generate_keypair()[0]
    now = dt.datetime.now(dt.timezone.utc)
    tokens = {
        "county": county,
        "neighbour": officer_token(keys_dir, OTHER_COUNTY, "county", "county-officer-2"),
        "province": officer_token(keys_dir, PROVINCE, "province", "province-officer-1"),
        "worker": worker_token(keys_dir, str(uuid.uuid4())),
        "service": token(keys_dir, Caller("registration", SERVICE)),
        "admin": token(keys_dir, Caller("admin-1", ADMIN)),
        "no-region": token(keys_dir, Caller("officer-x", OFFICER, None, "county")),
        "bad-level": token(keys_dir, Caller("officer-x", OFFICER, COUNTY, "village")),
        "forged": issue_token(other_key, Caller("county-officer-1", OFFICER, COUNTY, "county"),
                              dt.timedelta(minutes=30))[0],
        "expired": token(keys_dir, Caller("county-officer-1", OFFICER, COUNTY, "county"), dt.timedelta(minutes=-5)),
        "alg-none": jwt.encode({"iss": "swms-identity", "aud": "swms", "sub": "county-officer-1", "role": OFFICER,
                                "region": COUNTY, "lvl": "county", "exp": now + dt.timedelta(minutes=5)},
                               None, algorithm="none"),
        "garbage": "not-a-token",
        "anonymous": None,
    }
    return config, tokens, {"pending": pending, "decided": decided, "neighbours": neighbours}


def cases(items: dict[str, str]) -> list[Case]:
    pending, decided = items["pending"], items["decided"]
    approve = {"item_id": pending, "decision": "approve"}
    return [
        # decide: the reason rule
        Case("reject without reason", "decide", {"item_id": pending, "decision": "reject"},
             "VALIDATION_FAILED", "reason"),
        Case("reject with a blank reason", "decide", {"item_id": pending, "decision": "reject", "reason": " \u3000 "},
             "VALIDATION_FAILED", "reason"),
        # decide: the text policy (swms/text.py) on the reason the applicant reads
        Case("reject with a right-to-left override", "decide",
             {"item_id": pending, "decision": "reject", "reason": "材料不全\u202e请补充"}, "TEXT_CHARACTERS_NOT_ALLOWED", "reason"),
        Case("return with an emoji", "decide", {"item_id": pending, "decision": "return", "reason": "请补充材料🙏"},
             "TEXT_CHARACTERS_NOT_ALLOWED", "reason"),
        Case("return with a tab", "decide", {"item_id": pending, "decision": "return", "reason": "照片\t模糊"},
             "TEXT_CHARACTERS_NOT_ALLOWED", "reason"),
        Case("batch opinion with a NUL", "approve_batch", {"item_ids": [pending], "reason": "同意\x00"},
             "TEXT_CHARACTERS_NOT_ALLOWED", "reason"),
        Case("return without reason", "decide", {"item_id": pending, "decision": "return"},
             "VALIDATION_FAILED", "reason"),
        Case("reason of 501 characters", "decide", {"item_id": pending, "decision": "reject", "reason": "理" * 501},
             "VALIDATION_FAILED", "reason"),
        Case("reason not text", "decide", {"item_id": pending, "decision": "reject", "reason": 42},
             "VALIDATION_FAILED", "reason"),
        # decide: which item, which decision
        Case("unknown item", "decide", {"item_id": UNKNOWN, "decision": "approve"}, "NOT_FOUND", "item_id"),
        Case("malformed item id", "decide", {"item_id": "item-1", "decision": "approve"},
             "VALIDATION_FAILED", "item_id"),
        Case("item id missing", "decide", {"decision": "approve"}, "VALIDATION_FAILED", "item_id"),
        Case("unknown decision", "decide", {"item_id": pending, "decision": "maybe"}, "VALIDATION_FAILED", "decision"),
        Case("decision missing", "decide", {"item_id": pending}, "VALIDATION_FAILED", "decision"),
        Case("unknown field", "decide", {**approve, "level": "province"}, "VALIDATION_FAILED", "level"),
        Case("payload not an object", "decide", [pending, "approve"], "VALIDATION_FAILED", "payload"),
        # decide: region, level, twice
        Case("wrong region", "decide", approve, "FORBIDDEN", "item_id", who="neighbour"),
        Case("wrong level", "decide", approve, "FORBIDDEN", "item_id", who="province"),
        Case("approve twice", "decide", {"item_id": decided, "decision": "approve"}, "ALREADY_DECIDED", "item_id"),
        Case("reject after approval", "decide", {"item_id": decided, "decision": "reject", "reason": "改判"},
             "ALREADY_DECIDED", "item_id"),
        Case("return after approval", "decide", {"item_id": decided, "decision": "return", "reason": "改判"},
             "ALREADY_DECIDED", "item_id"),
        # who may call
        Case("forged token (another signing key)", "decide", approve, "TOKEN_INVALID", "auth_token", who="forged"),
        Case("token with alg none", "decide", approve, "TOKEN_INVALID", "auth_token", who="alg-none"),
        Case("token that is no JWT", "list_queue", {}, "TOKEN_INVALID", "auth_token", who="garbage"),
        Case("expired token", "decide", approve, "TOKEN_EXPIRED", "auth_token", who="expired"),
        Case("no token", "decide", approve, "AUTH_REQUIRED", "auth_token", who="anonymous"),
        Case("social worker deciding", "decide", approve, "FORBIDDEN", "auth_token", who="worker"),
        Case("service token deciding", "decide", approve, "FORBIDDEN", "auth_token", who="service"),
        Case("admin deciding", "decide", approve, "FORBIDDEN", "auth_token", who="admin"),
        Case("officer token without region", "decide", approve, "FORBIDDEN", "auth_token", who="no-region"),
        Case("officer token with an unknown level", "list_queue", {}, "FORBIDDEN", "auth_token", who="bad-level"),
        Case("social worker listing", "list_queue", {}, "FORBIDDEN", "auth_token", who="worker"),
        # list_queue: malformed filters and paging
        Case("page size 0", "list_queue", {"page_size": 0}, "VALIDATION_FAILED", "page_size"),
        Case("page size 1,000,000", "list_queue", {"page_size": 1_000_000}, "VALIDATION_FAILED", "page_size"),
        Case("page size not a number", "list_queue", {"page_size": "abc"}, "VALIDATION_FAILED", "page_size"),
        Case("page 0", "list_queue", {"page": 0}, "VALIDATION_FAILED", "page"),
        Case("page beyond the offset limit", "list_queue", {"page": 501, "page_size": 20},
             "VALIDATION_FAILED", "page"),
        Case("unknown kind", "list_queue", {"kind": "feedback"}, "VALIDATION_FAILED", "kind"),
        Case("unknown status", "list_queue", {"status": "done"}, "VALIDATION_FAILED", "status"),
        Case("impossible date", "list_queue", {"submitted_from": "2026-02-30"}, "VALIDATION_FAILED",
             "submitted_from"),
        Case("date range backwards", "list_queue", {"submitted_from": "2026-11-02", "submitted_to": "2026-11-01"},
             "VALIDATION_FAILED", "submitted_to"),
        Case("unknown deadline filter", "list_queue", {"deadline": "late"}, "VALIDATION_FAILED", "deadline"),
        Case("deadline filter on decided items", "list_queue", {"status": "approved", "deadline": "overdue"},
             "VALIDATION_FAILED", "deadline"),
        Case("cursor that is not base64", "list_queue", {"cursor": "%%%"}, "VALIDATION_FAILED", "cursor"),
        Case("cursor with a page number", "list_queue", {"cursor": "eyJzIjoxfQ", "page": 2},
             "VALIDATION_FAILED", "cursor"),
        Case("cursor too long", "list_queue", {"cursor": "A" * 301}, "VALIDATION_FAILED", "cursor"),
        Case("unknown filter", "list_queue", {"region_code": OTHER_COUNTY}, "VALIDATION_FAILED", "region_code"),
        # approve_batch
        Case("batch without items", "approve_batch", {"item_ids": []}, "VALIDATION_FAILED", "item_ids"),
        Case("batch of 1,001 items", "approve_batch", {"item_ids": [str(uuid.uuid4()) for _ in range(1001)]},
             "VALIDATION_FAILED", "item_ids"),
        Case("batch naming an item twice", "approve_batch", {"item_ids": [pending, pending]},
             "VALIDATION_FAILED", "item_ids"),
        Case("batch with a malformed id", "approve_batch", {"item_ids": [pending, "x"]},
             "VALIDATION_FAILED", "item_ids.1"),
        Case("batch ids not a list", "approve_batch", {"item_ids": pending}, "VALIDATION_FAILED", "item_ids"),
        Case("batch by a social worker", "approve_batch", {"item_ids": [pending]}, "FORBIDDEN", "auth_token", who="worker"),
        Case("batch with a forged token", "approve_batch", {"item_ids": [pending]}, "TOKEN_INVALID", "auth_token",
             who="forged"),
        # one item, its audit, the deadline counts
        Case("open an unknown item", "get_item", {"item_id": UNKNOWN}, "NOT_FOUND", "item_id"),
        Case("open another region's item", "get_item", {"item_id": pending}, "FORBIDDEN", "item_id",
             who="neighbour"),
        Case("open an item with a malformed id", "get_item", {"item_id": "1 OR 1=1"}, "VALIDATION_FAILED", "item_id"),
        Case("audit of another level's item", "get_item_audit", {"item_id": pending}, "FORBIDDEN", "item_id",
             who="province"),
        Case("audit by a social worker", "get_item_audit", {"item_id": pending}, "FORBIDDEN", "auth_token", who="worker"),
        Case("summary grouped by village", "deadline_summary", {"group_by": "village"}, "VALIDATION_FAILED",
             "group_by"),
        Case("summary by a social worker", "deadline_summary", {}, "FORBIDDEN", "auth_token", who="worker"),
    ]


def test_bad_input_is_refused_with_its_code_and_field_and_changes_nothing(world):
    config, tokens, items = world
    table = cases(items)
    assert len(table) >= 30
    assert len({case.name for case in table}) == len(table)
    before = db_state(config)
    with contextlib.ExitStack() as stack:
        clients = {who: stack.enter_context(rpc_client(config["AMQP_URI"], tokens[who]))
                   for who in {case.who for case in table}}
        for case in table:
            method = getattr(clients[case.who].review, case.method)
            with pytest.raises(SwmsError) as caught:
                method(case.payload)
            assert (caught.value.code, caught.value.field) == (case.code, case.field), case.name
            assert caught.value.message and not caught.value.message.isascii(), f"{case.name}: a Chinese message"
            assert db_state(config) == before, f"{case.name} changed something"


def test_a_reason_may_run_over_several_lines(world):
    """Reasons are multi-line text: line feeds are kept as typed, and the applicant reads them so."""
    config, tokens, items = world
    reason = "请修改以下内容：\n1. 照片模糊\n2. 缺少工作证明"
    with rpc_client(config["AMQP_URI"], tokens["county"]) as officer:
        officer.review.decide({"item_id": items["pending"], "decision": "return", "reason": reason})
    with session_for(config["DB_URL"]) as session:
        assert session.get(ReviewItem, items["pending"]).reason == reason


def test_a_batch_with_refused_items_changes_only_the_approved_ones(world):
    """Per-item failures in a batch are results, not exceptions: the others go through."""
    config, tokens, items = world
    with rpc_client(config["AMQP_URI"], tokens["county"]) as officer:
        result = officer.review.approve_batch({"item_ids": [items["decided"], items["neighbours"], UNKNOWN,
                                                            items["pending"]]})
    assert [(r["ok"], r["error_code"]) for r in result["results"]] == [
        (False, "ALREADY_DECIDED"), (False, "FORBIDDEN"), (False, "NOT_FOUND"), (True, None)]
    assert all(r["error_message"] for r in result["results"] if not r["ok"])
    with session_for(config["DB_URL"]) as session:
        assert session.get(ReviewItem, items["neighbours"]).status == "pending"
        assert session.get(ReviewItem, items["pending"]).status == "approved"
