"""Review rules in plain Python: chains, queues, decisions, working-day deadlines."""
from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import yaml
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from services.review.models import (
    APPROVED,
    PENDING,
    REJECTED,
    ReviewItem,
    audit,
    outbox,
)
from swms import errors
from swms.auth import CITY, COUNTY, OFFICER_LEVELS, PROVINCE, Caller
from swms.contracts.events import (
    ApplicationApproved,
    ApplicationRejected,
    ApplicationSubmitted,
)
from swms.contracts.review import Decision, Stage
from swms.outbox import utcnow

PREFIX_LENGTH = {PROVINCE: 2, CITY: 4, COUNTY: 6}
REVIEW_WORKING_DAYS = 30


def load_chains(path: str | Path) -> dict:
    chains = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    for province, kinds in chains.items():
        for kind, levels in kinds.items():
            if not levels or any(level not in OFFICER_LEVELS for level in levels):
                raise ValueError(f"review chain {province}/{kind}: levels must be among {OFFICER_LEVELS}")
    return chains


def chain_for(chains: dict, kind: str, region_code: str) -> list[str]:
    return chains.get(region_code[:2], {}).get(kind) or chains["default"][kind]


def stage_of(step: int, chain_length: int) -> Stage:
    if step == 0:
        return Stage.INITIAL
    return Stage.FINAL if step == chain_length - 1 else Stage.INTERMEDIATE


def add_working_days(start: dt.datetime, days: int, holidays: frozenset[dt.date] = frozenset()) -> dt.datetime:
    """Counts Monday–Friday, skipping listed public holidays (the holiday calendar comes later)."""
    current = start
    remaining = days
    while remaining > 0:
        current += dt.timedelta(days=1)
        if current.weekday() < 5 and current.date() not in holidays:
            remaining -= 1
    return current


def open_item(session: Session, *, application_id: str, person_id: str, kind: str, region_code: str,
              applicant_name_masked: str, submitted_at: dt.datetime, round_: int, step: int,
              chain: list[str]) -> ReviewItem:
    now = utcnow()
    level = chain[step]
    item = ReviewItem(
        item_id=str(uuid.uuid4()), application_id=application_id, person_id=person_id, kind=kind,
        round=round_, step=step, chain_length=len(chain), level=level, region_code=region_code,
        region_prefix=region_code[:PREFIX_LENGTH[level]], applicant_name_masked=applicant_name_masked,
        submitted_at=submitted_at, accepted_at=now, due_at=add_working_days(now, REVIEW_WORKING_DAYS),
        status=PENDING)
    session.add(item)
    session.flush()
    audit.record(session, "review", "item.opened", "review_item", item.item_id,
                 {"application_id": application_id, "level": level, "step": step})
    return item


def accept_submission(session: Session, event: ApplicationSubmitted, chains: dict) -> ReviewItem:
    last_round = session.execute(select(func.max(ReviewItem.round))
                                 .where(ReviewItem.application_id == event.application_id)).scalar()
    return open_item(session, application_id=event.application_id, person_id=event.person_id,
                     kind=event.kind.value, region_code=event.region_code,
                     applicant_name_masked=event.applicant_name_masked, submitted_at=event.submitted_at,
                     round_=(last_round or 0) + 1, step=0,
                     chain=chain_for(chains, event.kind.value, event.region_code))


def queue(session: Session, officer: Caller, kind: str | None, page: int, page_size: int):
    prefix = officer.region_code[:PREFIX_LENGTH[officer.level]]
    where = [ReviewItem.status == PENDING, ReviewItem.level == officer.level,
             ReviewItem.region_prefix == prefix]
    if kind:
        where.append(ReviewItem.kind == kind)
    total = session.execute(select(func.count()).select_from(ReviewItem).where(*where)).scalar_one()
    items = session.execute(select(ReviewItem).where(*where)
                            .order_by(ReviewItem.submitted_at, ReviewItem.item_id)
                            .offset((page - 1) * page_size).limit(page_size)).scalars().all()
    return items, total


def decide(session: Session, officer: Caller, item_id: str, decision: Decision, reason: str | None,
           chains: dict) -> tuple[ReviewItem, ReviewItem | None]:
    item = session.get(ReviewItem, item_id)
    if item is None:
        raise errors.not_found("审核事项", "item_id")
    if officer.level != item.level or not officer.covers_region(item.region_code):
        raise errors.forbidden("该事项不属于您所在地区或审核层级")
    now = utcnow()
    status = APPROVED if decision == Decision.APPROVE else REJECTED
    # The conditional UPDATE is the race guard: of two officers deciding at once, exactly one
    # changes a pending row; the other sees rowcount 0.
    changed = session.execute(
        update(ReviewItem).where(ReviewItem.item_id == item_id, ReviewItem.status == PENDING)
        .values(status=status, decided_by=officer.subject, decided_at=now, reason=reason)
        .execution_options(synchronize_session=False)).rowcount
    if changed != 1:
        raise errors.SwmsError(errors.ALREADY_DECIDED, "该事项已被审核，请刷新后查看", "item_id")
    session.refresh(item)
    audit.record(session, officer.subject, f"item.{status}", "review_item", item.item_id,
                 {"application_id": item.application_id, "level": item.level, "reason": reason})
    stage = stage_of(item.step, item.chain_length)
    common = dict(application_id=item.application_id, person_id=item.person_id, kind=item.kind,
                  region_code=item.region_code, stage=stage, decided_by=officer.subject, decided_at=now)
    if decision == Decision.REJECT:
        outbox.add(session, ApplicationRejected(reason=reason, **common))
        return item, None
    final = item.step == item.chain_length - 1
    next_item = None
    if not final:
        chain = chain_for(chains, item.kind, item.region_code)
        next_item = open_item(session, application_id=item.application_id, person_id=item.person_id,
                              kind=item.kind, region_code=item.region_code,
                              applicant_name_masked=item.applicant_name_masked,
                              submitted_at=item.submitted_at, round_=item.round, step=item.step + 1,
                              chain=chain)
    outbox.add(session, ApplicationApproved(final=final, **common))
    return item, next_item
