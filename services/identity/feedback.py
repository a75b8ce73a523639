"""反馈 (feedback): a person whose ID number is not in the registry asks to be added.

Submitted by anyone (no account yet), at most one pending per ID number; reviewed by officers whose
jurisdiction covers the feedback's region; approval adds the person to the registry (so they can
sign up), rejection carries a reason. Both decisions publish ``identity.feedback_decided``; the
notification service emails the person (it fetches the address with ``get_feedback_contact``).

A person already in the registry may submit feedback only to claim a higher level than the
registry holds (their new list has not arrived yet): approval then raises their level.
"""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import hmac
import uuid
from dataclasses import dataclass

from sqlalchemy import func, select, true, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.identity.domain import failing
from services.identity.models import Account, Feedback, Passer, audit, outbox, throttle
from services.identity.registry import LEVEL_RANK, ImportReport, PasserRecord, merge_one
from services.identity.settings import Settings
from swms import errors, idcard, images
from swms.auth import ADMIN, CITY, COUNTY, PROVINCE, Caller
from swms.contracts.events import FeedbackDecided, FeedbackSubmitted
from swms.contracts.identity import FeedbackDecision, FeedbackRequest, FeedbackStatus, name_key

PENDING, APPROVED, REJECTED = (s.value for s in (FeedbackStatus.PENDING, FeedbackStatus.APPROVED,
                                                FeedbackStatus.REJECTED))
_MAGIC = {"application/pdf": (b"%PDF-",), "image/jpeg": (b"\xff\xd8\xff",), "image/png": (b"\x89PNG\r\n\x1a\n",)}
_EXTENSIONS = {"application/pdf": "pdf", "image/jpeg": "jpg", "image/png": "png"}


@dataclass(frozen=True)
class Proof:
    body: bytes
    filename: str
    content_type: str

    @property
    def extension(self) -> str:
        return _EXTENSIONS[self.content_type]


def decode_proof(request: FeedbackRequest, max_bytes: int) -> Proof | None:
    """The proof file, checked: strict base64, within the size limit, content matching its type."""
    if request.proof is None:
        return None
    try:
        body = base64.b64decode(request.proof.content_base64, validate=True)
    except (binascii.Error, ValueError):
        raise errors.validation_error("proof.content_base64", "证明材料内容应为 base64 编码") from None
    if len(body) > max_bytes:
        raise errors.SwmsError(errors.FILE_TOO_LARGE, f"证明材料不能超过 {max_bytes // (1024 * 1024)} MB",
                               "proof.content_base64")
    if not body.startswith(_MAGIC[request.proof.content_type]):
        raise errors.SwmsError(errors.FILE_TYPE_NOT_ALLOWED, "证明材料内容与文件类型不符（仅限 PDF、JPEG、PNG）",
                               "proof.content_type")
    if request.proof.content_type in (images.JPEG, images.PNG):
        try:   # kept without its EXIF (GPS position, device, time): swms.images
            body = images.without_metadata(body, request.proof.content_type)
        except Exception:
            raise errors.SwmsError(errors.FILE_DAMAGED, "证明材料图片无法打开（已损坏或不完整），请重新上传",
                                   "proof.content_base64") from None
    return Proof(body, request.proof.filename, request.proof.content_type)


def region_of(request: FeedbackRequest) -> str:
    return request.region_code or request.id_number[:6]


def precheck(session: Session, id_number: str, level: str) -> None:
    """Refusals that need no upload: already in the registry at this level or higher, or a
    feedback for this ID number still pending."""
    passer = session.execute(select(Passer.level).where(Passer.id_number == id_number)).first()
    if passer is not None and LEVEL_RANK[level] <= LEVEL_RANK[passer.level]:
        raise errors.SwmsError(errors.ALREADY_IN_REGISTRY, "社工库中已有您的信息，请直接注册", "id_number")
    pending = session.execute(select(Feedback.feedback_id).where(Feedback.id_number == id_number,
                                                                 Feedback.status == PENDING)).first()
    if pending is not None:
        raise _already_pending()


def _already_pending() -> errors.SwmsError:
    return errors.SwmsError(errors.FEEDBACK_ALREADY_PENDING, "该身份证号已有待处理的反馈，请耐心等待处理结果",
                            "id_number")


def submit(session: Session, settings: Settings, request: FeedbackRequest, feedback_id: str,
           proof: Proof | None, proof_key: str | None, proof_sha256: str | None, now: dt.datetime) -> Feedback:
    precheck(session, request.id_number, request.level.value)
    region = region_of(request)
    name = " ".join(request.name.split())
    item = Feedback(feedback_id=feedback_id, status=PENDING, name=name, name_normalised=name_key(name),
                    id_number=request.id_number, email=request.email.lower(), level=request.level.value,
                    exam_year=request.exam_year, management_number=request.management_number,
                    note=request.note, region_code=region, submitted_at=now,
                    proof_key=proof_key, proof_filename=proof.filename if proof else None,
                    proof_content_type=proof.content_type if proof else None,
                    proof_size=len(proof.body) if proof else None, proof_sha256=proof_sha256)
    session.add(item)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:   # a concurrent feedback for the same ID number won
        raise _already_pending() from None
    outbox.add(session, FeedbackSubmitted(feedback_id=feedback_id, region_code=region,
                                          applicant_name_masked=idcard.mask_name(name), submitted_at=now))
    audit.record(session, "anonymous", "feedback.submitted", "feedback", feedback_id,
                 {"id_number": idcard.mask(request.id_number), "id_hash": settings.id_hash(request.id_number),
                  "region_code": region, "has_proof": proof is not None})
    return item


# ---- the submitter ------------------------------------------------------------------------------------

def _unknown_to_submitter() -> errors.SwmsError:
    # One answer for an unknown id and for a known id with another ID number: it tells nothing.
    return errors.SwmsError(errors.NOT_FOUND, "未找到该反馈，请核对反馈编号和身份证号", "feedback_id")


def status_for_submitter(session: Session, settings: Settings, feedback_id: str, id_number: str,
                         source: str | None, now: dt.datetime) -> Feedback:
    """The feedback whose id and ID number both match (no account: the receipt's id is not enough).
    Misses count per client address and per feedback id; a locked key answers RATE_LIMITED."""
    keys = [(throttle.key(settings, settings.feedback_status_id, feedback_id), settings.feedback_status_id)]
    if source:
        keys.append((throttle.key(settings, settings.feedback_status_source, source), settings.feedback_status_source))
    throttle.check(session, [key for key, _ in keys], now, "feedback_id")
    item = session.get(Feedback, feedback_id)
    if item is None or not hmac.compare_digest(item.id_number.encode(), id_number.upper().encode()):
        raise failing(_unknown_to_submitter(),
                      *[lambda s, key=key, limit=limit: throttle.record_failure(s, key, limit, now)
                        for key, limit in keys])
    return item


# ---- officers ---------------------------------------------------------------------------------------

_PREFIX = {PROVINCE: 2, CITY: 4, COUNTY: 6}


def _visible(caller: Caller):
    if caller.role == ADMIN:
        return true()
    if caller.level not in _PREFIX or not caller.region_code:
        raise errors.forbidden()
    prefix = caller.region_code[: _PREFIX[caller.level]]
    return func.substr(Feedback.region_code, 1, len(prefix)) == prefix


def can_see(caller: Caller, item: Feedback) -> bool:
    return caller.role == ADMIN or caller.covers_region(item.region_code)


def listing(session: Session, caller: Caller, status: str, page: int, page_size: int) -> tuple[list[Feedback], int]:
    where = [Feedback.status == status, _visible(caller)]
    total = session.execute(select(func.count()).select_from(Feedback).where(*where)).scalar_one()
    items = session.execute(select(Feedback).where(*where).order_by(Feedback.submitted_at, Feedback.feedback_id)
                            .offset((page - 1) * page_size).limit(page_size)).scalars().all()
    return list(items), total


def load_for(session: Session, caller: Caller, feedback_id: str) -> Feedback:
    item = session.get(Feedback, feedback_id)
    if item is None or not can_see(caller, item):   # another region's feedback does not exist for you
        raise errors.not_found("反馈", "feedback_id")
    return item


def opened(session: Session, settings: Settings, caller: Caller, item: Feedback) -> None:
    audit.record(session, caller.subject, "feedback.viewed", "feedback", item.feedback_id,
                 {"id_hash": settings.id_hash(item.id_number)})


def decide(session: Session, settings: Settings, caller: Caller, feedback_id: str, decision: FeedbackDecision,
           reason: str | None, management_number: str | None, now: dt.datetime) -> Feedback:
    item = load_for(session, caller, feedback_id)
    if item.status != PENDING:
        raise errors.SwmsError(errors.ALREADY_DECIDED, "该反馈已处理，请刷新后查看", "feedback_id")
    approve = decision == FeedbackDecision.APPROVE
    number = management_number or item.management_number
    if approve and not number:
        raise errors.validation_error("management_number", "通过时须填写职业水平证书管理号（向考试机构核实后填写）")
    status = APPROVED if approve else REJECTED
    reason = reason.strip() if reason else None
    # The conditional UPDATE is the race guard: of two officers deciding at once, exactly one wins.
    changed = session.execute(
        update(Feedback).where(Feedback.feedback_id == feedback_id, Feedback.status == PENDING)
        .values(status=status, decided_by=caller.subject, decided_at=now, reason=reason,
                management_number=number if approve else item.management_number)
        .execution_options(synchronize_session=False)).rowcount
    if changed != 1:
        raise errors.SwmsError(errors.ALREADY_DECIDED, "该反馈已处理，请刷新后查看", "feedback_id")
    session.refresh(item)
    detail = {"id_hash": settings.id_hash(item.id_number), "reason": reason}
    if approve:
        report = ImportReport()
        record = PasserRecord(0, item.id_number, item.name, item.name_normalised, item.level, number,
                              item.exam_year, item.region_code[:2])
        outcome, passer = merge_one(session, record, report, now, caller.subject, source="feedback",
                                    id_hash=settings.id_hash)
        if outcome == "conflict":
            raise errors.SwmsError(errors.REGISTRY_CONFLICT,
                                   "社工库中该身份证号已有不同的信息（姓名、管理号或考试年度不符），请核实后处理",
                                   "feedback_id")
        item.passer_id = passer.id
        detail["registry"] = outcome
    audit.record(session, caller.subject, f"feedback.{status}", "feedback", item.feedback_id, detail)
    outbox.add(session, FeedbackDecided(feedback_id=item.feedback_id, approved=approve, reason=reason,
                                        decided_by=caller.subject, decided_at=now))
    session.flush()
    return item


def contact(session: Session, feedback_id: str) -> tuple[Feedback, str | None]:
    item = session.get(Feedback, feedback_id)
    if item is None:
        raise errors.not_found("反馈", "feedback_id")
    person_id = session.execute(select(Account.person_id).where(Account.id_number == item.id_number)).scalar()
    return item, person_id


PROOF_PREFIX = "feedback/"


def proof_key_for(feedback_id: str, proof: Proof) -> str:
    return f"{PROOF_PREFIX}{feedback_id}/proof.{proof.extension}"


def sweep_orphan_proofs(session: Session, bucket, older_than: dt.timedelta, limit: int = 1000) -> list[str]:
    """Delete proof files no feedback refers to, once older than ``older_than``.

    A proof is stored before its feedback row commits (the file must be safe before the row names
    it). If the commit fails the file is deleted at once; if the process dies in between, or that
    delete fails, the file would stay for good. The age keeps a file whose row is still committing."""
    old = bucket.keys_older_than(PROOF_PREFIX, older_than, limit)
    if not old:
        return []
    named = set(session.execute(select(Feedback.proof_key).where(Feedback.proof_key.in_(old))).scalars())
    orphans = [key for key in old if key not in named]
    for key in orphans:
        bucket.delete(key)
    for key in orphans:
        audit.record(session, "identity", "feedback.proof_deleted", "feedback", key.split("/")[1],
                     {"reason": "orphan", "key": key})
    session.commit()
    return orphans


def new_id() -> str:
    return str(uuid.uuid4())
