"""Where review has an application, for the applicant and the help desk.

The statuses stay the seed's (初审中 → 终审中 → 已出证 …), but a province may review at three levels
(county → city → province): once the county approves, the status is 终审中 while the city reviews.
Review's events say which level has the application: ``application_accepted`` the first level,
``application_approved`` the next level (and its stage) or the final approval,
``application_rejected`` / ``application_returned`` the level that decided. This module keeps that
position on the application and words it with the level, e.g. 审核中（市级）. The status machine in
domain.py is not touched by any of it.
"""
from __future__ import annotations

from sqlalchemy.orm import Session

from services.registration.models import Application, audit
from swms.contracts.common import ApplicationStatus as S
from swms.contracts.review import Stage

LEVEL_LABELS = {"county": "区县级", "city": "市级", "province": "省级"}
_RANK = {"county": 0, "city": 1, "province": 2}      # chains only go upwards
PENDING, APPROVED, REJECTED, RETURNED = "pending", "approved", "rejected", "returned"

_IN_REVIEW = {Stage.INITIAL.value: "初审中", Stage.INTERMEDIATE.value: "审核中", Stage.FINAL.value: "终审中"}
_REFUSED = {Stage.INITIAL.value: "初审不通过", Stage.INTERMEDIATE.value: "审核不通过", Stage.FINAL.value: "终审不通过"}


def restart(application: Application) -> None:
    """A (re)submission: a new round, at a level not known until review accepts it."""
    application.review_round = application.round
    application.review_level = application.review_stage = application.review_outcome = None


def record(session: Session, application: Application, round_: int | None, level: str | None,
           stage: Stage | None, outcome: str, actor: str) -> bool:
    """Moves the position forward (round, then level, then pending → decided). Events arrive late,
    twice or out of order: one that would move it back changes nothing. Audited when it moves."""
    if level not in _RANK:
        return False
    round_ = round_ or application.round
    new = (round_, _RANK[level], outcome != PENDING)
    old = (application.review_round or 0, _RANK.get(application.review_level, -1),
           application.review_outcome not in (None, PENDING))
    if new <= old:
        return False
    application.review_round, application.review_level, application.review_outcome = round_, level, outcome
    application.review_stage = stage.value if stage else None
    audit.record(session, actor, "application.review_position", "application", application.application_id,
                 {"round": round_, "level": level, "stage": application.review_stage, "outcome": outcome})
    return True


def view(application: Application) -> tuple[str | None, str]:
    """(``review_level``, ``status_text``): the level that has the application (in review) or
    decided it (not passed, returned), and the status in words with that level. Without a known
    level (a draft, issued, review not heard from yet) the text is the status itself."""
    status = S(application.status)
    level = application.review_level
    if level is None or application.review_round != application.round:
        return None, status.value
    label, stage, outcome = LEVEL_LABELS[level], application.review_stage, application.review_outcome
    if status in (S.INITIAL_REVIEW, S.FINAL_REVIEW):
        if outcome == APPROVED:     # the last level approved: the certificate is being made
            return level, f"{'终审通过' if stage == Stage.FINAL.value else '审核通过'}（{label}），正在制发证书"
        return level, f"{_IN_REVIEW.get(stage, '审核中')}（{label}）"
    if status in (S.INITIAL_REJECTED, S.FINAL_REJECTED, S.REJECTED):
        if outcome == RETURNED:
            return level, f"退回修改（{label}）"
        word = "审核不通过" if status == S.REJECTED else _REFUSED.get(stage, "审核不通过")
        return level, f"{word}（{label}）"
    return None, status.value
