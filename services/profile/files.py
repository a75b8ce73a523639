"""Photo and proof files in object storage (MinIO/S3 through boto3), private to the service.

How a file arrives, without its bytes crossing the message bus:

1. ``request_upload`` records a ticket and returns a presigned POST for ``incoming/<person>/<id>``:
   the policy fixes the key and bounds the size (``content-length-range``), valid for
   ``PROFILE_UPLOAD_TTL_SECONDS``. The person's browser posts the file straight to storage.
2. ``confirm_photo`` / a work-experience or honour save names the ticket. The service reads what
   arrived (refusing more than the limit before reading it), checks the content in a native thread
   (:mod:`services.profile.media`) and writes the checked bytes to a final key the person cannot
   write to (``photos/…`` or ``proofs/…``). What is stored is exactly what was checked, even if the
   person posts again with the same ticket afterwards.
3. A refused file is deleted at once, with its ticket. A file recorded in the form retires the
   incoming copy after the commit; if the transaction fails, the final copy is deleted.
4. Housekeeping (:class:`Housekeeping`) deletes whatever is left under ``incoming/`` once tickets
   have expired (confirmed or not), a checked copy whose form transaction never committed (its key
   is written on the ticket before the copy is made, so even a crash in between leaves a trace),
   and retired files nothing needs any more (the retention rule in :mod:`services.profile.domain`:
   no hold of a submitted application version or an issued certificate left, grace period over).
   Nothing outlives its ticket, its form entry or its last hold, so there are no orphan objects.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError
from sqlalchemy import delete, select
from sqlalchemy.orm import sessionmaker

from services.profile import domain
from services.profile.models import StoredFile, Upload
from swms.background import BackgroundLoop
from swms.db import engine_from_config
from swms.outbox import utcnow
from swms.storage import Bucket, bucket_from_config, is_missing

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settings:
    photo_max_bytes: int = 500 * 1024
    proof_max_bytes: int = 5 * 1024 * 1024
    photo_tolerance_percent: float = 3.0
    upload_ttl_seconds: int = 900
    link_ttl_seconds: int = 300
    max_open_uploads: int = 20
    housekeeping_seconds: float = 60.0
    # A file a snapshot named is kept this long after it leaves the form: registration may submit
    # from its copy of the form (up to a day old, registration COPY_MAX_AGE) and announce the
    # submission's hold after the commit. Longer than that copy's age plus a day of delivery delay.
    file_grace_hours: float = 48.0

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Settings:
        def number(key: str, default, kind=int):
            value = config.get(key)
            return default if value in (None, "") else kind(value)
        return cls(
            photo_max_bytes=number("PHOTO_MAX_BYTES", cls.photo_max_bytes),
            proof_max_bytes=number("PROOF_MAX_BYTES", cls.proof_max_bytes),
            photo_tolerance_percent=number("PHOTO_TOLERANCE_PERCENT", cls.photo_tolerance_percent, float),
            upload_ttl_seconds=number("UPLOAD_TTL_SECONDS", cls.upload_ttl_seconds),
            link_ttl_seconds=number("FILE_LINK_TTL_SECONDS", cls.link_ttl_seconds),
            max_open_uploads=number("MAX_OPEN_UPLOADS", cls.max_open_uploads),
            housekeeping_seconds=number("HOUSEKEEPING_SECONDS", cls.housekeeping_seconds, float),
            file_grace_hours=number("FILE_GRACE_HOURS", cls.file_grace_hours, float),
        )

    @property
    def file_grace(self) -> dt.timedelta:
        return dt.timedelta(hours=self.file_grace_hours)


class FileStore:
    def __init__(self, bucket: Bucket):
        self.bucket = bucket

    def upload_form(self, key: str, max_bytes: int, expires_seconds: int) -> dict:
        return self.bucket.upload_form(key, max_bytes, expires_seconds)

    def read(self, key: str, max_bytes: int) -> tuple[int, bytes] | None:
        """(the object's whole size, at most ``max_bytes + 1`` of its bytes) in one ranged GET, or
        None if nothing is there. A file bigger than the limit is never read in full."""
        try:
            response = self.bucket.client.get_object(Bucket=self.bucket.name, Key=key, Range=f"bytes=0-{max_bytes}")
        except ClientError as exc:
            if is_missing(exc):
                return None
            if exc.response.get("Error", {}).get("Code") == "InvalidRange":   # an empty object
                return 0, b""
            raise
        data = response["Body"].read(max_bytes + 1)
        total = response.get("ContentRange", "").rpartition("/")[2]
        return (int(total) if total.isdigit() else len(data)), data

    def put(self, key: str, body: bytes, content_type: str) -> str:
        return self.bucket.put(key, body, content_type)

    def delete(self, key: str) -> bool:
        """Delete (idempotent); False, logged, if storage did not answer."""
        try:
            self.bucket.delete(key)
            return True
        except Exception:
            log.warning("could not delete object %s; housekeeping will retry", key, exc_info=True)
            return False

    def link(self, key: str, content_type: str, expires_seconds: int, public: bool) -> str:
        client = self.bucket.link_client if public else self.bucket.client
        return client.generate_presigned_url(
            "get_object", ExpiresIn=expires_seconds,
            Params={"Bucket": self.bucket.name, "Key": key, "ResponseContentType": content_type,
                    "ResponseContentDisposition": "inline"})


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Housekeeping(BackgroundLoop):
    """Every ``PROFILE_HOUSEKEEPING_SECONDS``: deletes incoming objects of expired tickets and the
    files nothing needs any more. Also the service's way to delete retired files at once
    (:meth:`purge`, after a change commits)."""

    GRACE = dt.timedelta(seconds=60)   # clock skew between this host and object storage

    def __init__(self, bucket_key: str = "PROFILE_S3_BUCKET"):
        self.bucket_key = bucket_key

    def setup(self):
        super().setup()
        config = self.container.config
        self.settings = Settings.from_config(config)
        self.poll_seconds = self.settings.housekeeping_seconds
        self.sessions = sessionmaker(engine_from_config(config), expire_on_commit=False)
        self.store = FileStore(bucket_from_config(config, self.bucket_key))

    def get_dependency(self, worker_ctx):
        return self

    def run_once(self) -> int:
        return sweep(self.sessions, self.store, self.batch_size, grace=self.settings.file_grace)

    def purge(self, keys: list[str]) -> None:
        """Retired just now: those no snapshot ever named go at once (the rest wait for the rule)."""
        now = utcnow()
        for key in keys:
            delete_if_unneeded(self.sessions, self.store, key, now, self.settings.file_grace)


def delete_if_unneeded(sessions, store: FileStore, key: str, now: dt.datetime, grace: dt.timedelta) -> bool:
    """Claim (re-checking the rule in the claim's transaction), delete the object, then forget the
    row, audited. A failed delete leaves the row ``deleting``: the next pass finishes it."""
    with sessions() as session:
        if not domain.claim_for_deletion(session, key, now, grace):
            session.rollback()
            return False
        session.commit()
    if not store.delete(key):
        return False
    with sessions.begin() as session:
        domain.forget_file(session, key)
    return True


def sweep(sessions, store: FileStore, batch_size: int = 100, now: dt.datetime | None = None,
          grace: dt.timedelta = Settings().file_grace) -> int:
    """One pass; returns how many rows it handled. Storage first, then the row: a failed delete
    leaves the row, so the next pass tries again."""
    now = now or utcnow()
    with sessions() as session:
        tickets = session.execute(select(Upload.upload_id, Upload.object_key, Upload.staged_key, Upload.consumed_as)
                                  .where(Upload.expires_at < now - Housekeeping.GRACE)
                                  .order_by(Upload.expires_at).limit(batch_size)).all()
        unneeded = domain.unneeded_files(session, now, grace, batch_size)
    for upload_id, key, staged_key, consumed_as in tickets:
        if staged_key and staged_key != consumed_as:
            # A checked copy whose form transaction never committed (a crash between the two).
            with sessions() as session:
                recorded = session.get(StoredFile, staged_key) is not None
            if not recorded and not store.delete(staged_key):
                continue
        if store.delete(key):
            with sessions.begin() as session:
                session.execute(delete(Upload).where(Upload.upload_id == upload_id))
    for key in unneeded:
        delete_if_unneeded(sessions, store, key, now, grace)
    return len(tickets) + len(unneeded)
