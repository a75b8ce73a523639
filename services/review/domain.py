"""Review rules in plain Python: chains, queues, decisions, working-day deadlines, audit.

Everything here works on a SQLAlchemy session (or a session factory, for batches that commit in
steps) and is testable without a broker.
"""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import logging
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import yaml
from sqlalchemy import and_, case, func, insert, select, tuple_, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from services.review.models import (
    APPROVED,
    PENDING,
    REJECTED,
    RETURNED,
    ReviewItem,
    audit,
    outbox,
)
from services.review.workcalendar import (
    WorkCalendar,
    local_date,
    local_day_end,
    local_day_start,
)
from swms import errors, idcard
from swms.auth import ADMIN, CITY, COUNTY, OFFICER, OFFICER_LEVELS, PROVINCE, Caller
from swms.config import Number, Numbers, required
from swms.contracts.common import ApplicationKind
from swms.contracts.events import (
    ApplicationAccepted,
    ApplicationApproved,
    ApplicationRejected,
    ApplicationReturned,
    ApplicationSubmitted,
)
from swms.contracts.review import (
    AuditEntry,
    BatchItemResult,
    DeadlineState,
    DeadlineSummary,
    Decision,
    OfficerLevel,
    QueueRequest,
    RegionCount,
    Stage,
    SubmittedContinuingEducation,
    SubmittedForm,
    SubmittedHonour,
    SubmittedOfflineCourse,
    SubmittedOnlineRecord,
    SubmittedWorkExperience,
    TrailEntry,
)
from swms.contracts.registration import IssuanceData
from swms.contracts.review import ReviewItem as ReviewItemOut
from swms.outbox import utcnow

log = logging.getLogger(__name__)

PREFIX_LENGTH = {PROVINCE: 2, CITY: 4, COUNTY: 6}
LEVEL_RANK = {COUNTY: 0, CITY: 1, PROVINCE: 2}
REVIEW_WORKING_DAYS = 30
NEAR_DUE_WORKING_DAYS = 5
NUMBERS = Numbers("review", {
    "REVIEW_DEADLINE_WORKING_DAYS": Number(REVIEW_WORKING_DAYS, 1, 365),
    "REVIEW_NEAR_DUE_WORKING_DAYS": Number(NEAR_DUE_WORKING_DAYS, 1, 365),
})
BATCH_CHUNK = 200
COUNT_LIMIT = 10_000
STATUS_OF = {Decision.APPROVE: APPROVED, Decision.REJECT: REJECTED, Decision.RETURN: RETURNED}

# GB/T 2260 province-level codes (the first two digits of every county code).
PROVINCE_CODES = frozenset({
    "11", "12", "13", "14", "15", "21", "22", "23", "31", "32", "33", "34", "35", "36", "37",
    "41", "42", "43", "44", "45", "46", "50", "51", "52", "53", "54", "61", "62", "63", "64", "65",
    "71", "81", "82"})
COUNTY_CODE = re.compile(r"^\d{6}$")


# ---- configuration: review chains ------------------------------------------------------------

class ChainsError(ValueError):
    """The chains file is broken: review refuses to start rather than route work wrongly."""


def load_chains(path: str | Path, kinds: Iterable[str] | None = None) -> dict:
    """Read and check the review chains. ``kinds``: the application kinds ``default`` must cover
    (the service passes every ApplicationKind; a partial file is fine for tools and tests)."""
    try:
        document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ChainsError(f"review chains {path}: not readable: {exc}") from None
    return check_chains(document, kinds, name=str(path))


def check_chains(document, kinds: Iterable[str] | None = None, name: str = "review chains") -> dict:
    if not isinstance(document, dict) or "default" not in document:
        raise ChainsError(f"{name}: expected a mapping with a `default` entry")
    known_kinds = {kind.value for kind in ApplicationKind}
    chains: dict[str, dict[str, list[str]]] = {}
    for key, entries in document.items():
        province = "default" if key == "default" else str(key)
        if province != "default" and province not in PROVINCE_CODES:
            raise ChainsError(f"{name}: {key!r} is neither `default` nor a 2-digit province code (GB/T 2260)")
        if province in chains:
            raise ChainsError(f"{name}: province {province} appears twice")
        if not isinstance(entries, dict) or not entries:
            raise ChainsError(f"{name}: {province}: expected application kinds mapped to review levels")
        chains[province] = {}
        for kind, levels in entries.items():
            where = f"review chain {province}/{kind}"
            if kind == "feedback":
                raise ChainsError(f"{where}: 反馈 (feedback) is reviewed in identity, not in review; remove it")
            if kind not in known_kinds:
                raise ChainsError(f"{where}: unknown application kind (known: {sorted(known_kinds)})")
            if not isinstance(levels, list) or not levels or any(level not in OFFICER_LEVELS for level in levels):
                raise ChainsError(f"{where}: levels must be a non-empty list among {OFFICER_LEVELS}")
            ranks = [LEVEL_RANK[level] for level in levels]
            if ranks != sorted(set(ranks)):
                raise ChainsError(f"{where}: levels must go upwards (county → city → province), each once")
            chains[province][kind] = list(levels)
    missing = set(kinds or ()) - set(chains["default"])
    if missing:
        raise ChainsError(f"{name}: `default` has no chain for {sorted(missing)}")
    return chains


def chain_for(chains: dict, kind: str, region_code: str) -> list[str]:
    chain = chains.get(region_code[:2], {}).get(kind) or chains["default"].get(kind)
    if not chain:
        raise ChainsError(f"no review chain for {kind}")
    return chain


def stage_of(step: int, chain_length: int) -> Stage:
    if step == 0:
        return Stage.INITIAL
    return Stage.FINAL if step == chain_length - 1 else Stage.INTERMEDIATE


def add_working_days(start: dt.datetime, days: int, holidays: frozenset[dt.date] = frozenset()) -> dt.datetime:
    """Monday–Friday minus ``holidays`` (kept for simple uses; the service counts with WorkCalendar,
    which knows make-up working days and counts in Beijing time)."""
    current = start
    remaining = days
    while remaining > 0:
        current += dt.timedelta(days=1)
        if current.weekday() < 5 and current.date() not in holidays:
            remaining -= 1
    return current


@dataclass(frozen=True)
class Rules:
    """What review is configured with; loaded and checked once at start."""
    chains: dict
    calendar: WorkCalendar
    working_days: int = REVIEW_WORKING_DAYS
    near_due_working_days: int = NEAR_DUE_WORKING_DAYS

    @classmethod
    def from_config(cls, config: dict, chains: str | None = None, calendar: str | None = None) -> Rules:
        """The service's rules (the CLI may name other files to check): a broken file or setting
        raises, naming it, so that the service stops instead of misrouting work."""
        return cls(chains=load_chains(chains or required(config, "REVIEW_CHAINS_FILE"),
                                      kinds=[kind.value for kind in ApplicationKind]),
                   calendar=WorkCalendar.load(calendar or required(config, "REVIEW_CALENDAR_FILE")),
                   working_days=NUMBERS.get(config, "REVIEW_DEADLINE_WORKING_DAYS"),
                   near_due_working_days=NUMBERS.get(config, "REVIEW_NEAR_DUE_WORKING_DAYS"))

    def due_at(self, accepted_at: dt.datetime) -> dt.datetime:
        return self.calendar.due_at(accepted_at, self.working_days)

    def near_due_cutoff(self, now: dt.datetime) -> dt.datetime:
        """Items due at or before this instant (and not yet overdue) are near due."""
        return local_day_end(self.calendar.add_working_days(local_date(now), self.near_due_working_days))


def to_utc_naive(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value


# ---- who may see what ------------------------------------------------------------------------

def jurisdiction(officer: Caller) -> str:
    """The region prefix an officer's queue covers; refuses officer tokens without region or level."""
    if officer.role != OFFICER or officer.level not in OFFICER_LEVELS or not COUNTY_CODE.match(officer.region_code or ""):
        raise errors.SwmsError(errors.FORBIDDEN, "登录凭证缺少有效的辖区或审核层级，请联系管理员", "auth_token")
    return officer.region_code[:PREFIX_LENGTH[officer.level]]


def item_for_officer(session: Session, officer: Caller, item_id: str) -> ReviewItem:
    prefix = jurisdiction(officer)
    query = select(ReviewItem).where(ReviewItem.item_id == item_id).execution_options(populate_existing=True)
    item = session.execute(query).scalar_one_or_none()
    if item is None:
        raise errors.not_found("审核事项", "item_id")
    if officer.level != item.level or item.region_prefix != prefix:
        raise errors.SwmsError(errors.FORBIDDEN, "该事项不属于您所在地区或审核层级", "item_id")
    return item


# ---- submissions arrive ----------------------------------------------------------------------

class Writes:
    """Rows a decision produces (audit entries, events, next-level items), written together: one
    multi-row INSERT per table instead of a round trip per row, which is what makes a batch of a
    thousand approvals fast. Same transaction as the decision, so all or nothing."""

    def __init__(self):
        self.items: list[ReviewItem] = []
        self.audit: list[dict] = []
        self.events: list = []

    def record(self, actor: str, action: str, entity_type: str, entity_id: str, detail: dict) -> None:
        # The same row AuditLog.record writes.
        self.audit.append({"at": utcnow(), "actor": actor, "action": action, "entity_type": entity_type,
                           "entity_id": str(entity_id),
                           "detail": json.dumps(detail, ensure_ascii=False, default=str) if detail else None})

    def flush(self, session: Session) -> None:
        if self.items:
            session.add_all(self.items)
            session.flush()
        if self.audit:
            session.execute(insert(audit.table), self.audit)
        if self.events:
            *many, last = self.events
            if many:
                now = utcnow()
                session.execute(insert(outbox.table), [
                    {"event_id": str(e.event_id), "event_type": e.event_type, "created_at": now,
                     "payload": json.dumps(e.model_dump(mode="json"), ensure_ascii=False),
                     "next_attempt_at": now, "attempts": 0} for e in many])
            outbox.add(session, last)   # also wakes the relay once the transaction commits
        self.items, self.audit, self.events = [], [], []


def open_item(writes: Writes, *, application_id: str, person_id: str, kind: str, region_code: str,
              applicant_name_masked: str, submitted_at: dt.datetime, round_: int, step: int,
              chain: list[str], accepted_at: dt.datetime, due_at: dt.datetime, now: dt.datetime,
              actor: str = "review") -> ReviewItem:
    level = chain[step]
    item = ReviewItem(
        item_id=str(uuid.uuid4()), application_id=application_id, person_id=person_id, kind=kind,
        round=round_, step=step, chain_length=len(chain), chain=",".join(chain), level=level,
        region_code=region_code, region_prefix=region_code[:PREFIX_LENGTH[level]],
        applicant_name_masked=applicant_name_masked, submitted_at=submitted_at, accepted_at=accepted_at,
        due_at=due_at, opened_at=now, status=PENDING)
    writes.items.append(item)
    writes.record(actor, "item.opened", "review_item", item.item_id,
                  {"application_id": application_id, "level": level, "step": step, "round": round_,
                   "stage": stage_of(step, len(chain)).value, "due_at": due_at.isoformat()})
    return item


def accept_submission(session: Session, event: ApplicationSubmitted, rules: Rules,
                      now: dt.datetime | None = None) -> ReviewItem | None:
    now = now or utcnow()
    if not COUNTY_CODE.match(event.region_code or "") or event.region_code[:2] not in PROVINCE_CODES:
        log.error("submission %s of application %s has region code %r, which names no county: not queued",
                  event.event_id, event.application_id, event.region_code)
        audit.record(session, "review", "submission.refused", "application", event.application_id,
                     {"event_id": event.event_id, "region_code": event.region_code, "why": "invalid region code"})
        return None
    open_now = session.execute(select(ReviewItem).where(ReviewItem.application_id == event.application_id,
                                                        ReviewItem.status == PENDING)).scalar_one_or_none()
    if open_now is not None:
        # A second submission while one is under review: registration allows none; keep the open one.
        log.warning("submission %s of application %s arrived while item %s is pending: ignored",
                    event.event_id, event.application_id, open_now.item_id)
        audit.record(session, "review", "submission.ignored", "review_item", open_now.item_id,
                     {"event_id": event.event_id, "why": "an item of this application is pending"})
        return open_now
    last_round = session.execute(select(func.max(ReviewItem.round))
                                 .where(ReviewItem.application_id == event.application_id)).scalar() or 0
    # Registration numbers the submission rounds. A round review has already seen (the same
    # submission announced again under another event id) must not reopen a decided review.
    round_ = getattr(event, "round", None) or last_round + 1
    if round_ <= last_round:
        log.warning("submission %s of application %s repeats round %s (review is at round %s): ignored",
                    event.event_id, event.application_id, round_, last_round)
        audit.record(session, "review", "submission.ignored", "application", event.application_id,
                     {"event_id": event.event_id, "round": round_, "why": "round already reviewed"})
        return None
    writes = Writes()
    item = open_item(writes, application_id=event.application_id, person_id=event.person_id,
                     kind=event.kind.value, region_code=event.region_code,
                     applicant_name_masked=event.applicant_name_masked,
                     submitted_at=to_utc_naive(event.submitted_at), round_=round_, step=0,
                     chain=chain_for(rules.chains, event.kind.value, event.region_code),
                     accepted_at=now, due_at=rules.due_at(now), now=now)
    writes.events.append(ApplicationAccepted(
        application_id=item.application_id, person_id=item.person_id, kind=event.kind, region_code=item.region_code,
        round=round_, level=item.level, stage=stage_of(item.step, item.chain_length), accepted_at=now))
    writes.flush(session)
    return item


# ---- lists -----------------------------------------------------------------------------------

def item_out(item: ReviewItem, rules: Rules, now: dt.datetime) -> ReviewItemOut:
    state = left = None
    if item.status == PENDING:
        left = rules.calendar.working_days_between(local_date(now), local_date(item.due_at))
        if now > item.due_at:
            state = DeadlineState.OVERDUE
        elif left <= rules.near_due_working_days:
            state = DeadlineState.NEAR_DUE
        else:
            state = DeadlineState.ON_TIME
    return ReviewItemOut(
        item_id=item.item_id, application_id=item.application_id, person_id=item.person_id, kind=item.kind,
        stage=stage_of(item.step, item.chain_length), level=item.level, round=item.round,
        region_code=item.region_code, applicant_name_masked=item.applicant_name_masked,
        submitted_at=item.submitted_at, accepted_at=item.accepted_at, status=item.status, due_at=item.due_at,
        due_date=local_date(item.due_at), deadline_state=state, working_days_left=left,
        decided_by=item.decided_by, decided_at=item.decided_at, reason=item.reason)


def _filter_fingerprint(request: QueueRequest) -> str:
    key = json.dumps([request.kind and request.kind.value, request.status.value,
                      request.submitted_from and request.submitted_from.isoformat(),
                      request.submitted_to and request.submitted_to.isoformat(),
                      request.deadline and request.deadline.value])
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def encode_cursor(item: ReviewItem, request: QueueRequest) -> str:
    body = json.dumps({"s": item.submitted_at.isoformat(), "i": item.item_id, "f": _filter_fingerprint(request)},
                      separators=(",", ":"))
    return base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, request: QueueRequest) -> tuple[dt.datetime, str]:
    bad = errors.validation_error("cursor", "翻页标记无效，请从第一页重新查询")
    try:
        body = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode())
        submitted_at = dt.datetime.fromisoformat(body["s"])
        item_id = str(uuid.UUID(body["i"]))
        fingerprint = body["f"]
    except (binascii.Error, ValueError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
        raise bad from None
    if submitted_at.tzinfo is not None or not isinstance(fingerprint, str):
        raise bad
    if fingerprint != _filter_fingerprint(request):
        raise errors.validation_error("cursor", "翻页标记与当前筛选条件不一致，请从第一页重新查询")
    return submitted_at, item_id


def _queue_filters(officer: Caller, request: QueueRequest, rules: Rules, now: dt.datetime) -> list:
    prefix = jurisdiction(officer)
    where = [ReviewItem.level == officer.level, ReviewItem.region_prefix == prefix,
             ReviewItem.status == request.status.value]
    if request.kind:
        where.append(ReviewItem.kind == request.kind.value)
    if request.submitted_from:
        where.append(ReviewItem.submitted_at >= local_day_start(request.submitted_from))
    if request.submitted_to:
        where.append(ReviewItem.submitted_at < local_day_start(request.submitted_to + dt.timedelta(days=1)))
    if request.deadline == DeadlineState.OVERDUE:
        where.append(ReviewItem.due_at < now)
    elif request.deadline == DeadlineState.NEAR_DUE:
        where.extend([ReviewItem.due_at >= now, ReviewItem.due_at <= rules.near_due_cutoff(now)])
    elif request.deadline == DeadlineState.ON_TIME:
        where.append(ReviewItem.due_at > rules.near_due_cutoff(now))
    return where


def queue(session: Session, officer: Caller, request: QueueRequest, rules: Rules,
          now: dt.datetime | None = None) -> tuple[list[ReviewItem], int | None, str | None]:
    """One page of the officer's queue, oldest submission first; keyset paging with ``cursor``.
    Returns the rows, the number of matches (at most COUNT_LIMIT + 1; None on cursor pages) and
    the next page's cursor."""
    now = now or utcnow()
    where = _queue_filters(officer, request, rules, now)
    # Counting 100,000 matches costs more than the page itself: count up to COUNT_LIMIT + 1 (the
    # index alone answers) and report "more than COUNT_LIMIT" beyond; deadline_summary counts exactly.
    # Pages reached with a cursor are not recounted: the client has the count from the first page.
    total = None
    if not request.cursor:
        total = session.execute(select(func.count()).select_from(
            select(ReviewItem.item_id).where(*where).limit(COUNT_LIMIT + 1).subquery())).scalar_one()
    query = select(ReviewItem).where(*where)
    if request.cursor:
        after = decode_cursor(request.cursor, request)
        query = query.where(tuple_(ReviewItem.submitted_at, ReviewItem.item_id) > tuple_(*after))
    else:
        query = query.offset((request.page - 1) * request.page_size)
    rows = session.execute(query.order_by(ReviewItem.submitted_at, ReviewItem.item_id)
                           .limit(request.page_size + 1)).scalars().all()
    more = len(rows) > request.page_size
    rows = rows[:request.page_size]
    return rows, total, encode_cursor(rows[-1], request) if more else None


# ---- decisions -------------------------------------------------------------------------------

def _chain_of(item: ReviewItem, rules: Rules) -> list[str]:
    if item.chain:
        return item.chain.split(",")
    return chain_for(rules.chains, item.kind, item.region_code)   # items opened before chains were stored


def _after_decided(writes: Writes, officer: Caller, item: ReviewItem, decision: Decision,
                   reason: str | None, now: dt.datetime, rules: Rules,
                   batch_id: str | None = None) -> ReviewItem | None:
    """Audit, event and (on approval below the top of the chain) the next level's item."""
    stage = stage_of(item.step, item.chain_length)
    detail = {"application_id": item.application_id, "level": item.level, "stage": stage.value,
              "round": item.round, "decision": decision.value, "reason": reason,
              "officer_region": officer.region_code}
    if batch_id:
        detail["batch_id"] = batch_id
    writes.record(officer.subject, f"item.{STATUS_OF[decision]}", "review_item", item.item_id, detail)
    common = dict(application_id=item.application_id, person_id=item.person_id, kind=item.kind,
                  region_code=item.region_code, stage=stage, decided_by=officer.subject, decided_at=now,
                  level=item.level, round=item.round)
    if decision == Decision.REJECT:
        writes.events.append(ApplicationRejected(reason=reason, **common))
        return None
    if decision == Decision.RETURN:
        writes.events.append(ApplicationReturned(reason=reason, **common))
        return None
    final = item.step == item.chain_length - 1
    next_item = None
    if not final:
        next_item = open_item(writes, application_id=item.application_id, person_id=item.person_id,
                              kind=item.kind, region_code=item.region_code,
                              applicant_name_masked=item.applicant_name_masked,
                              submitted_at=item.submitted_at, round_=item.round, step=item.step + 1,
                              chain=_chain_of(item, rules), accepted_at=item.accepted_at, due_at=item.due_at,
                              now=now, actor=officer.subject)
    writes.events.append(ApplicationApproved(
        final=final, next_level=next_item.level if next_item else None,
        next_stage=stage_of(next_item.step, next_item.chain_length) if next_item else None, **common))
    return next_item


def decide(session: Session, officer: Caller, item_id: str, decision: Decision, reason: str | None,
           rules: Rules, now: dt.datetime | None = None) -> tuple[ReviewItem, ReviewItem | None]:
    now = now or utcnow()
    item = item_for_officer(session, officer, item_id)
    # The conditional UPDATE is the race guard: of two officers deciding at once, exactly one
    # changes a pending row; the other sees rowcount 0.
    changed = session.execute(
        update(ReviewItem).where(ReviewItem.item_id == item_id, ReviewItem.status == PENDING)
        .values(status=STATUS_OF[decision], decided_by=officer.subject, decided_at=now, reason=reason)
        .execution_options(synchronize_session=False)).rowcount
    if changed != 1:
        raise errors.SwmsError(errors.ALREADY_DECIDED, "该事项已被审核，请刷新后查看", "item_id")
    session.refresh(item)
    writes = Writes()
    next_item = _after_decided(writes, officer, item, decision, reason, now, rules)
    writes.flush(session)
    return item, next_item


def approve_batch(transaction: Callable, officer: Caller, item_ids: list[str], reason: str | None,
                  rules: Rules, batch_id: str, chunk_size: int = BATCH_CHUNK) -> list[BatchItemResult]:
    """Approve many items: each is decided, audited and announced on its own, as ``decide`` does.

    ``transaction()`` is a context manager yielding a session and committing at the end (one per
    chunk, so a long batch does not hold one huge transaction). Results come back in request order.
    """
    prefix = jurisdiction(officer)
    table = ReviewItem.__table__
    results: dict[str, BatchItemResult] = {}
    for start in range(0, len(item_ids), chunk_size):
        chunk = item_ids[start:start + chunk_size]
        now = utcnow()
        try:
            with transaction() as session:
                # Lock the rows in one order (item_id) before changing them, so that two batches over
                # overlapping items wait for each other instead of deadlocking. A row another officer
                # decided meanwhile is no longer pending once its lock is released: it drops out here.
                mine = session.execute(
                    select(table.c.item_id).where(table.c.item_id.in_(chunk), table.c.status == PENDING,
                                                  table.c.level == officer.level, table.c.region_prefix == prefix)
                    .order_by(table.c.item_id).with_for_update()).scalars().all()
                claimed = set(session.execute(
                    update(table).where(table.c.item_id.in_(mine), table.c.status == PENDING)
                    .values(status=APPROVED, decided_by=officer.subject, decided_at=now, reason=reason)
                    .returning(table.c.item_id)).scalars())
                chunk_results = {}
                items = session.execute(select(ReviewItem).where(ReviewItem.item_id.in_(claimed))
                                        .execution_options(populate_existing=True)).scalars().all()
                position = {item_id: n for n, item_id in enumerate(chunk)}
                writes = Writes()
                for item in sorted(items, key=lambda row: position[row.item_id]):
                    next_item = _after_decided(writes, officer, item, Decision.APPROVE, reason, now, rules,
                                               batch_id)
                    chunk_results[item.item_id] = BatchItemResult(
                        item_id=item.item_id, ok=True, application_id=item.application_id,
                        stage=stage_of(item.step, item.chain_length), decided_at=now,
                        next_stage=stage_of(next_item.step, next_item.chain_length) if next_item else None)
                writes.flush(session)
                others = [item_id for item_id in chunk if item_id not in claimed]
                found = {row.item_id: row for row in session.execute(
                    select(table.c.item_id, table.c.status, table.c.level, table.c.region_prefix)
                    .where(table.c.item_id.in_(others)))} if others else {}
                for item_id in others:
                    row = found.get(item_id)
                    if row is None:
                        code, message = errors.NOT_FOUND, "审核事项不存在"
                    elif row.level != officer.level or row.region_prefix != prefix:
                        code, message = errors.FORBIDDEN, "该事项不属于您所在地区或审核层级"
                    else:
                        code, message = errors.ALREADY_DECIDED, "该事项已被审核，请刷新后查看"
                    chunk_results[item_id] = BatchItemResult(item_id=item_id, ok=False, error_code=code,
                                                             error_message=message)
        except SQLAlchemyError:
            log.exception("batch %s: a chunk of %d items could not be saved; none of them changed",
                          batch_id, len(chunk))
            chunk_results = {item_id: BatchItemResult(item_id=item_id, ok=False, error_code=errors.NOT_PROCESSED,
                                                      error_message="系统繁忙，该事项未处理，请稍后重试")
                             for item_id in chunk}
        results.update(chunk_results)
    return [results[item_id] for item_id in item_ids]


# ---- one item, its trail and its audit -------------------------------------------------------

def trail(session: Session, application_id: str) -> list[TrailEntry]:
    rows = session.execute(select(ReviewItem).where(ReviewItem.application_id == application_id)
                           .order_by(ReviewItem.round, ReviewItem.step)).scalars().all()
    return [TrailEntry(item_id=row.item_id, round=row.round, level=row.level,
                       stage=stage_of(row.step, row.chain_length), status=row.status,
                       opened_at=row.opened_at or row.accepted_at, decided_by=row.decided_by,
                       decided_at=row.decided_at, reason=row.reason) for row in rows]


def audit_entries(session: Session, caller: Caller, item_id: str) -> list[AuditEntry]:
    if caller.role == ADMIN:
        if session.get(ReviewItem, item_id) is None:
            raise errors.not_found("审核事项", "item_id")
    else:
        item_for_officer(session, caller, item_id)
    entries = []
    for row in audit.for_entity(session, item_id):
        detail = row["detail"] or {}
        entries.append(AuditEntry(at=row["at"], actor=row["actor"], action=row["action"],
                                  level=detail.get("level"), stage=detail.get("stage"),
                                  decision=detail.get("decision"), reason=detail.get("reason"),
                                  batch_id=detail.get("batch_id")))
    return entries


# ---- deadlines -------------------------------------------------------------------------------

def summary(session: Session, caller: Caller, group_by: OfficerLevel, rules: Rules,
            now: dt.datetime | None = None) -> DeadlineSummary:
    """Pending items per region and level inside the caller's jurisdiction (admins: the country)."""
    now = now or utcnow()
    cutoff = rules.near_due_cutoff(now)
    width = PREFIX_LENGTH[group_by.value]
    where = [ReviewItem.status == PENDING]
    if caller.role != ADMIN:
        prefix = jurisdiction(caller)
        where.append(ReviewItem.region_code.between(prefix.ljust(6, "0"), prefix.ljust(6, "9")))
        width = max(width, len(prefix))
    region = func.substr(ReviewItem.region_code, 1, width).label("region")
    overdue = func.sum(case((ReviewItem.due_at < now, 1), else_=0))
    near = func.sum(case((and_(ReviewItem.due_at >= now, ReviewItem.due_at <= cutoff), 1), else_=0))
    rows = session.execute(select(region, ReviewItem.level, func.count(), near, overdue).where(*where)
                           .group_by(region, ReviewItem.level).order_by(region, ReviewItem.level)).all()
    counts = [RegionCount(region=row[0], level=row[1], pending=row[2], near_due=row[3] or 0, overdue=row[4] or 0)
              for row in rows]
    return DeadlineSummary(as_of=now, near_due_working_days=rules.near_due_working_days, rows=counts,
                           pending=sum(c.pending for c in counts), near_due=sum(c.near_due for c in counts),
                           overdue=sum(c.overdue for c in counts), calendar_years=sorted(rules.calendar.years))


def recompute_deadlines(transaction: Callable, rules: Rules, batch: int = 1000) -> int:
    """Bring the deadlines of pending items in line with the calendar (after it was updated).
    Deterministic and idempotent: replicas may run it at the same time. Returns rows changed."""
    table = ReviewItem.__table__
    changed = 0
    after = ""
    while True:
        with transaction() as session:
            rows = session.execute(select(table.c.item_id, table.c.accepted_at, table.c.due_at)
                                   .where(table.c.status == PENDING, table.c.item_id > after)
                                   .order_by(table.c.item_id).limit(batch)).all()
            for row in rows:
                due = rules.due_at(row.accepted_at)
                if due != row.due_at:
                    session.execute(update(table).where(table.c.item_id == row.item_id, table.c.status == PENDING)
                                    .values(due_at=due))
                    changed += 1
        if len(rows) < batch:
            return changed
        after = rows[-1].item_id


# ---- the submitted form, as a reviewer sees it ------------------------------------------------

@dataclass(frozen=True)
class StoredFile:
    kind: str      # photo / work_experience_proof / honour_proof / continuing_education_proof
    label: str
    key: str       # object key (never shown: links are made by the service that owns the file)
    owner: str     # profile (photo, proofs of the 个人信息表) or registration (continuing-education proofs)


def submitted_form(data: IssuanceData) -> tuple[SubmittedForm, list[StoredFile]]:
    """What the officer needs from the snapshot as submitted: the ID number masked, file keys
    replaced by references to the item's file list."""
    snapshot = data.snapshot
    files: list[StoredFile] = []

    def add(kind: str, label: str, key: str, owner: str = "profile") -> int:
        files.append(StoredFile(kind, label, key, owner))
        return len(files) - 1

    if snapshot.photo_key:
        add("photo", "照片", snapshot.photo_key)
    experiences = []
    for n, experience in enumerate(snapshot.work_experiences, start=1):
        proofs = [add("work_experience_proof", f"工作经历{n}（{experience.unit_name}）证明材料{m}", key)
                  for m, key in enumerate(experience.proof_keys, start=1)]
        experiences.append(SubmittedWorkExperience(
            unit_name=experience.unit_name, position=experience.position, start_date=experience.start_date,
            end_date=experience.end_date, description=experience.description,
            sanqu_programme=experience.sanqu_programme, qianshou_programme=experience.qianshou_programme,
            proof_files=proofs))
    honours = [SubmittedHonour(title=honour.title, level=honour.level.value, awarding_body=honour.awarding_body,
                               awarded_on=honour.awarded_on,
                               proof_file=add("honour_proof", f"荣誉“{honour.title}”证明材料", honour.proof_key)
                               if honour.proof_key else None)
               for honour in snapshot.honours]
    education = None
    submitted_education = getattr(data, "continuing_education", None)   # re-registration only
    if submitted_education is not None:
        education = SubmittedContinuingEducation(
            period_from=submitted_education.period_from, period_until=submitted_education.period_until,
            required_hours=submitted_education.required_hours, online_hours=submitted_education.online_hours,
            offline_hours=submitted_education.offline_hours, total_hours=submitted_education.total_hours,
            online_records=[SubmittedOnlineRecord(source=r.source, record_id=r.record_id, course=r.course,
                                                  provider=r.provider, hours=r.hours, completed_on=r.completed_on)
                            for r in submitted_education.online_records],
            offline_courses=[SubmittedOfflineCourse(
                institution=course.institution, course=course.course, start_date=course.start_date,
                end_date=course.end_date, hours=course.hours,
                proof_file=add("continuing_education_proof", f"线下学时“{course.course}”证明材料",
                               course.proof_key, owner="registration"))
                for course in submitted_education.offline_courses])
    form = SubmittedForm(
        name=snapshot.name, id_number_masked=idcard.mask(snapshot.id_number), gender=snapshot.gender,
        birth_date=snapshot.birth_date, level=snapshot.level, management_number=snapshot.management_number,
        exam_year=snapshot.exam_year, region_code=snapshot.region_code, unit_category=snapshot.unit_category,
        unit_name=snapshot.unit_name, position=snapshot.position, work_experiences=experiences, honours=honours,
        profile_revision=snapshot.revision, previous_certificate_number=data.previous_certificate_number,
        original_certificate_no=data.original_certificate_no,
        original_registration_type=data.original_registration_type,
        original_valid_from=data.original_valid_from, original_valid_until=data.original_valid_until,
        continuing_education=education)
    return form, files
