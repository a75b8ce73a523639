"""Proof files (offline-course certificates): presigned upload straight to object storage, then a
check of what arrived (size, and the content really is PDF, JPEG or PNG: by its bytes, not its
name), then attachment to a form. Files never submitted and left unattached are deleted after
``REGISTRATION_PROOF_ORPHAN_HOURS`` by :class:`ProofSweeper`, object and row together; submitted
ones once ``REGISTRATION_RECORD_RETENTION_YEARS`` have passed since their application's last
submission.

The upload ticket writes to ``incoming/<proof key>``, never to the proof key itself: the checked
bytes are stored under the proof key by the service, so a second POST with a ticket that is still
valid cannot replace a proof after it was checked (its size and sha256 would no longer match)."""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
import uuid

from botocore.exceptions import ClientError
from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from services.registration.common import RECORD_RETENTION_YEARS, retention_years, years_after
from services.registration.models import (
    PROOF_DELETED,
    PROOF_PENDING,
    PROOF_VERIFIED,
    Application,
    ProofFileRow,
    audit,
)
from swms import errors, images
from swms.background import BackgroundLoop
from swms.config import Number, Numbers
from swms.contracts.registration import ProofContentType, ProofUploadTicket
from swms.db import engine_from_config
from swms.outbox import utcnow
from swms.storage import Bucket, bucket_from_config, is_missing

log = logging.getLogger(__name__)

# Registration's numeric settings, checked at start (swms.settings.CheckedNumbers in the service).
NUMBERS = Numbers("registration", {
    "PROOF_MAX_BYTES": Number(5 * 1024 * 1024, 1024, 50 * 1024 * 1024),
    "PROOF_ORPHAN_HOURS": Number(24, 1, 24 * 90, whole=False),
    "PROOF_SWEEP_SECONDS": Number(600, 1, 86400, whole=False),
    # read by domain.retention_years (docs/operations.md, 文件保留); declared here to be checked at start
    "RECORD_RETENTION_YEARS": Number(RECORD_RETENTION_YEARS, 1, 100),
})

UPLOAD_SECONDS = 900
LINK_SECONDS = 300
DELETING = "deleting"
# What each type's bytes begin with, and a marker its end must contain (catches truncated uploads).
SIGNATURES = {
    ProofContentType.PDF: (b"%PDF-", b"%%EOF"),
    ProofContentType.JPEG: (b"\xff\xd8\xff", b"\xff\xd9"),
    ProofContentType.PNG: (b"\x89PNG\r\n\x1a\n", b"IEND"),
}


def new_key(person_id: str) -> str:
    return f"proofs/{person_id}/{uuid.uuid4()}"


def upload_key(proof_key: str) -> str:
    """Where the browser's presigned POST puts the file; read once, at confirmation."""
    return f"incoming/{proof_key}"


def request_upload(session: Session, bucket: Bucket, person_id: str, filename: str, content_type: ProofContentType,
                   max_bytes: int) -> ProofUploadTicket:
    key = new_key(person_id)
    session.add(ProofFileRow(proof_key=key, person_id=person_id, filename=filename, content_type=content_type.value,
                             status=PROOF_PENDING, created_at=utcnow(), submitted=False))
    # MinIO enforces the size range, the type and the encryption in the signed policy.
    post = bucket.upload_form(upload_key(key), max_bytes, UPLOAD_SECONDS, content_type=content_type.value)
    return ProofUploadTicket(proof_key=key, url=post["url"], fields=post["fields"], max_bytes=max_bytes,
                             expires_in_seconds=UPLOAD_SECONDS)


def own_proof(session: Session, key: str, person_id: str) -> ProofFileRow:
    row = session.get(ProofFileRow, key)
    if row is None or row.status == PROOF_DELETED:
        raise errors.SwmsError(errors.UPLOAD_NOT_FOUND, "没有这份上传的证明材料（或已过期），请重新上传", "proof_key")
    if row.person_id != person_id:
        raise errors.forbidden("无权使用他人的证明材料")
    return row


def inspect(bucket: Bucket, key: str, content_type: ProofContentType, max_bytes: int) -> tuple[int, str] | errors.SwmsError:
    """(size, sha256) of a good upload, stored under ``key``; or the error that says what is wrong
    with it. The bytes checked and hashed are the bytes stored (an image without its metadata, see
    swms.images); the uploaded object under ``upload_key(key)`` is left for the caller to delete."""
    try:
        head = bucket.client.head_object(Bucket=bucket.name, Key=upload_key(key))
    except ClientError as exc:
        if is_missing(exc):
            return errors.SwmsError(errors.UPLOAD_MISSING, "未收到上传的文件，请先上传文件再确认", "proof_key")
        raise
    size = int(head["ContentLength"])
    if size > max_bytes:
        return errors.SwmsError(errors.FILE_TOO_LARGE,
                                f"证明材料不能超过{max_bytes // 1024} KB（收到{size // 1024} KB），文件已删除", "proof_key")
    body = bucket.get(upload_key(key))
    start, end = SIGNATURES[content_type]
    if not body.startswith(start):
        return errors.SwmsError(errors.FILE_TYPE_NOT_ALLOWED,
                                f"按文件内容判断，该文件不是{content_type.name}文件（不看扩展名），文件已删除；"
                                "证明材料须为PDF、JPEG或PNG", "proof_key")
    if end not in body[-1024:]:
        return errors.SwmsError(errors.FILE_DAMAGED, "文件不完整（上传中断或已损坏），文件已删除，请重新上传",
                                "proof_key")
    if content_type in (ProofContentType.JPEG, ProofContentType.PNG):
        # A scan or phone photo of a course certificate: kept without its EXIF (GPS, device, time).
        try:
            body = images.without_metadata(body, content_type.value)
        except Exception:
            return errors.SwmsError(errors.FILE_DAMAGED, "图片无法打开（已损坏或不完整），文件已删除，请重新上传",
                                    "proof_key")
    stored = _store_once(bucket, key, body, content_type.value)
    return len(stored), hashlib.sha256(stored).hexdigest()


def _store_once(bucket: Bucket, key: str, body: bytes, content_type: str) -> bytes:
    """The bytes under ``key``: ``body``, or what a concurrent confirmation, or one that crashed
    before recording it, stored there first (the first stored copy is the proof)."""
    if bucket.put_if_absent(key, body, content_type, {"sha256": hashlib.sha256(body).hexdigest()}):
        return body
    return bucket.get(key)


def mark_verified(session: Session, key: str, size: int, sha256: str) -> ProofFileRow:
    row = session.get(ProofFileRow, key, with_for_update=True)
    if row.status == PROOF_PENDING:
        row.status, row.size, row.sha256, row.verified_at = PROOF_VERIFIED, size, sha256, utcnow()
        audit.record(session, row.person_id, "proof.verified", "proof", key[-36:], {"size": size, "sha256": sha256})
    return row


def forget(session: Session, key: str, reason: str) -> None:
    """A refused upload leaves nothing: its object is deleted (by the caller) and its row here."""
    row = session.get(ProofFileRow, key, with_for_update=True)
    if row is not None and row.status == PROOF_PENDING:
        session.delete(row)
        log.warning("proof upload %s refused: %s", key[-36:], reason)


def delete_upload(bucket: Bucket, key: str) -> None:
    """The uploaded copy, once checked (or refused). Not fatal: the sweeper deletes it again."""
    try:
        bucket.delete(upload_key(key))
    except Exception:
        log.warning("could not delete the uploaded copy of proof %s; the sweeper will", key[-36:], exc_info=True)


def sweep_orphans(engine, bucket: Bucket, older_than: dt.timedelta, batch_size: int = 100,
                  retention_years: int = RECORD_RETENTION_YEARS, now: dt.datetime | None = None) -> int:
    """Delete proofs never submitted that no form holds, and uploads never confirmed, once older
    than ``older_than``; and submitted proofs whose application was last submitted more than
    ``retention_years`` ago (the record's retention period is over). Rows are claimed first
    (``deleting``), objects deleted outside any transaction, then rows marked ``deleted``, audited
    with the reason; a crash in between is picked up on the next pass."""
    now = now or utcnow()
    cutoff = now - older_than
    ended = select(Application.application_id).where(Application.submitted_at < years_after(now, -retention_years))
    orphan = or_(
        and_(ProofFileRow.status == PROOF_PENDING, ProofFileRow.created_at < cutoff),
        and_(ProofFileRow.status == PROOF_VERIFIED, ProofFileRow.application_id.is_(None),
             ProofFileRow.submitted.is_(False),
             or_(ProofFileRow.released_at < cutoff,
                 and_(ProofFileRow.released_at.is_(None), ProofFileRow.verified_at < cutoff))),
        and_(ProofFileRow.status == PROOF_VERIFIED, ProofFileRow.submitted.is_(True),
             ProofFileRow.application_id.in_(ended)),
        and_(ProofFileRow.status == DELETING, ProofFileRow.created_at < cutoff),
    )
    with Session(engine) as session, session.begin():
        claimed = dict(session.execute(select(ProofFileRow.proof_key, ProofFileRow.submitted).where(orphan)
                                       .limit(batch_size).with_for_update(skip_locked=True)).all())
        if claimed:
            session.execute(update(ProofFileRow).where(ProofFileRow.proof_key.in_(list(claimed))).values(status=DELETING))
    deleted = []
    for key in claimed:
        try:
            bucket.delete(upload_key(key))
            bucket.delete(key)
            deleted.append(key)
        except Exception:
            log.exception("could not delete proof %s; will retry", key)
    if deleted:
        with Session(engine) as session, session.begin():
            session.execute(update(ProofFileRow).where(ProofFileRow.proof_key.in_(deleted))
                            .values(status=PROOF_DELETED))
            for key in deleted:
                audit.record(session, "registration", "proof.deleted", "proof", key[-36:],
                             {"reason": "retention_ended" if claimed[key] else "orphan"})
    return len(claimed)


def sweep_stale_uploads(bucket: Bucket, older_than: dt.timedelta, limit: int = 1000) -> int:
    """Delete uploaded copies under ``incoming/proofs/`` older than ``older_than``: one posted again
    with a ticket after its proof was checked, or one whose confirmation never came."""
    stale = bucket.keys_older_than(upload_key("proofs/"), older_than, limit)
    for key in stale:
        bucket.delete(key)
    return len(stale)


class ProofSweeper(BackgroundLoop):
    """Runs :func:`sweep_orphans` every ``REGISTRATION_PROOF_SWEEP_SECONDS``."""

    def setup(self):
        super().setup()
        config = self.container.config
        self.engine = engine_from_config(config)
        self.bucket = bucket_from_config(config, "REGISTRATION_S3_BUCKET")
        self.poll_seconds = float(NUMBERS.get(config, "PROOF_SWEEP_SECONDS"))
        self.older_than = dt.timedelta(hours=NUMBERS.get(config, "PROOF_ORPHAN_HOURS"))
        self.retention_years = retention_years(config)

    def run_once(self) -> int:
        return (sweep_orphans(self.engine, self.bucket, self.older_than, self.batch_size, self.retention_years)
                + sweep_stale_uploads(self.bucket, self.older_than))
