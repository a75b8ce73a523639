"""The issue pipeline: approval → number → photo → render + sign → store → issued + event.

Exactly once in effect, whatever crashes where:

0. The final approval is recorded (``issue_requests``, unique per application) before any other
   work; a failure later leaves the request pending and the retry sweep takes it up again.
1. The number is reserved in one transaction (unique per application: a second approval, or a
   redelivery, finds it).
2. The PDF is rendered and signed in a worker process and stored by it under
   ``certificates/<number>.pdf`` with ``If-None-Match: *``: the first stored copy wins; a retry
   after a crash that came after the store reuses that copy (and its checksum) instead of storing
   a second, different one; the worker then stores the credential beside it (same rule). The
   photo is downloaded and checked by that same worker before the
   number is reserved; neither the photo nor the PDF passes through this (the hub's) process.
3. ``issuing → issued`` is a compare-and-set in the same transaction as the ``certificate_issued``
   outbox row: of two workers racing to finish, one announces, the other does nothing.

A request is worked on by one worker at a time: claiming it moves ``next_attempt_at`` forward by a
lease (``CERT_ISSUE_LEASE_SECONDS``); a worker killed mid-issue leaves it to whoever comes after
the lease (the redelivered approval, or the sweep).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import eventlet
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError
from sqlalchemy import update

from services.certificate import credentials, domain, files, render, tokens
from services.certificate.keys import KeyRing
from services.certificate.models import DONE, ISSUING, Certificate, IssueRequest
from services.certificate.renderer import HeldWorker, RenderError, RenderPool
from services.certificate.settings import NUMBERS
from swms import errors, idcard
from swms import rpc as swms_rpc
from swms.contracts.profile import PhotoLink
from swms.contracts.registration import IssuanceData
from swms.outbox import utcnow

log = logging.getLogger(__name__)

PAUSE_ENV = "SWMS_TEST_PAUSE_AT"          # test hook: name of a step to stop at (see pause())
PAUSE_MARKER_ENV = "SWMS_TEST_PAUSE_MARKER"
_NOT_FETCHED = object()


def pause(step: str) -> None:
    """Test hook for the crash tests: with SWMS_TEST_PAUSE_AT=<step> in the environment, write the
    marker file and wait there (cooperatively) until the process is killed. Inert otherwise.
    Steps here: after_reserve, after_store; after_render is in the render worker (it stores)."""
    if os.environ.get(PAUSE_ENV) != step:
        return
    marker = os.environ.get(PAUSE_MARKER_ENV)
    if marker:
        Path(marker).write_text(step)
    log.warning("test hook: paused at %s", step)
    eventlet.sleep(3600)


@dataclass
class Settings:
    authority: str
    validity_years: int
    verify_base_url: str
    lease_seconds: float
    retry_ceiling_seconds: float

    @classmethod
    def from_config(cls, config: dict) -> Settings:
        return cls(authority=str(config.get("CERT_AUTHORITY_NAME") or "中华人民共和国民政部"),
                   validity_years=NUMBERS.get(config, "CERT_VALIDITY_YEARS"),
                   verify_base_url=str(config.get("VERIFY_BASE_URL") or ""),
                   lease_seconds=float(NUMBERS.get(config, "CERT_ISSUE_LEASE_SECONDS")),
                   retry_ceiling_seconds=float(NUMBERS.get(config, "CERT_RETRY_MAX_SECONDS")))


def verification_url(base: str, keys: KeyRing, certificate) -> str:
    """What the QR code holds: ``<VERIFY_BASE_URL>?t=<token>``. A certificate with a status-list
    entry gets the v2 token (masked name, level, validity, status pointer: checked offline); one
    issued before the lists existed keeps its v1 token (number only)."""
    return f"{base.rstrip('/')}?t={qr_token(keys, certificate)}"


def qr_token(keys: KeyRing, certificate) -> str:
    if certificate.status_list is None:
        return tokens.make_token(keys.qr_private_pem, certificate.certificate_number)
    return credentials.make_qr_token(
        keys.qr_private_pem, certificate_number=certificate.certificate_number,
        holder_name_masked=idcard.mask_name(certificate.holder_name), level=certificate.level,
        valid_from=certificate.valid_from, valid_until=certificate.valid_until,
        list_number=certificate.status_list, index=certificate.status_index)


def credential_key(object_key: str) -> str:
    """The credential lives beside the PDF: certificates/<number>.vc.jwt."""
    return object_key.removesuffix(".pdf") + ".vc.jwt"


def credential_of(certificate, keys: KeyRing, verify_base_url: str) -> str:
    """The certificate as a signed W3C VC (VC-JOSE compact JWS). Deterministic (Ed25519 and sorted
    JSON): made again after a crash, it is the same bytes."""
    credential = credentials.certificate_credential(
        verify_base_url=verify_base_url, certificate_number=certificate.certificate_number,
        holder_name=certificate.holder_name, level=certificate.level, authority=certificate.authority,
        valid_from=certificate.valid_from, valid_until=certificate.valid_until,
        id_number_hash=tokens.id_hash(keys.id_hash_key, certificate.id_number),
        id_number_hash_key_id=tokens.id_hash_key_id(keys.id_hash_key),
        list_number=certificate.status_list, index=certificate.status_index)
    return credentials.sign_credential(keys.qr_private_pem, credentials.did_web(verify_base_url), credential)


def put_credential(bucket, certificate, keys: KeyRing, verify_base_url: str) -> bool:
    """The certificate's credential beside its PDF unless one is there (first stored copy wins);
    True if this call stored it."""
    body = credential_of(certificate, keys, verify_base_url).encode("ascii")
    return bucket.put_if_absent(credential_key(certificate.object_key), body, credentials.VC_MEDIA_TYPE,
                                {"certificate-number": certificate.certificate_number})


def face_of(certificate, keys: KeyRing, settings: Settings, photo: bytes | None,
            photo_type: str | None) -> render.CertificateFace:
    return render.CertificateFace(
        certificate_number=certificate.certificate_number, holder_name=certificate.holder_name,
        gender=certificate.gender, id_number_shown=certificate.id_number, level=certificate.level,
        unit_name=certificate.unit_name, authority=certificate.authority, valid_from=certificate.valid_from,
        valid_until=certificate.valid_until, issued_on=certificate.issued_on or certificate.valid_from,
        verify_url=verification_url(settings.verify_base_url, keys, certificate),
        original_certificate_no=certificate.original_certificate_no, supersedes=certificate.supersedes,
        photo=photo, photo_type=photo_type)


# ---- the photo ----------------------------------------------------------------------------------

def photo_link(profile, person_id: str, photo_key: str) -> str:
    """The ID photo's service-only link from profile (the photo itself is downloaded by the render
    worker); IssueDeferred while profile cannot hand it out."""
    try:
        link = PhotoLink.model_validate(swms_rpc.call(profile.get_photo_link,
                                                      {"person_id": person_id, "photo_key": photo_key}))
    except errors.SwmsError as exc:
        raise domain.IssueDeferred(domain.PHOTO_UNAVAILABLE, f"无法取得照片（{exc.code}），稍后自动重试",
                                   "photo") from None
    except Exception as exc:  # the profile service is down, or answers with an unexpected error
        raise domain.IssueDeferred(domain.PHOTO_UNAVAILABLE, f"无法取得照片（{type(exc).__name__}），稍后自动重试",
                                   "photo") from None
    return link.url


def worker_problem(exc: RenderError) -> domain.IssueRefused | domain.IssueDeferred:
    """What a render worker's refusal means for the issue: refused for good, or retried later."""
    if not exc.retryable:
        return domain.IssueRefused(exc.code, exc.message, exc.field)
    return domain.IssueDeferred(exc.code, exc.message, exc.field)


# ---- the pipeline -------------------------------------------------------------------------------

class Issuer:
    def __init__(self, db, bucket, pool: RenderPool, keys: KeyRing, registration, profile, settings: Settings,
                 today):
        self.db, self.bucket, self.pool, self.keys = db, bucket, pool, keys
        self.registration, self.profile, self.settings, self.today = registration, profile, settings, today

    def process(self, application_id: str, claimed: bool = False, request: IssueRequest | None = None) -> str | None:
        """Work on one recorded approval (``claimed``: the caller already holds its lease; ``request``:
        the request as read in the transaction that claimed it, in this Issuer's session, which
        spares reading it again). Returns the certificate number once issued."""
        if not claimed:
            with self.db.transaction() as session:
                if not domain.claim(session, application_id, utcnow(), self.settings.lease_seconds):
                    request = session.get(IssueRequest, application_id)
                    return request.certificate_number if request is not None and request.status == DONE else None
        try:
            return self._issue(application_id, request if claimed else None)
        except domain.IssueRefused as problem:
            log.warning("application %s: certificate refused: %s %s", application_id, problem.code, problem.field)
            with self.db.transaction() as session:
                domain.refuse(session, application_id, problem, utcnow())
        except domain.IssueDeferred as problem:
            log.warning("application %s: certificate deferred: %s", application_id, problem.code)
            with self.db.transaction() as session:
                domain.defer(session, application_id, problem, utcnow(), self.settings.retry_ceiling_seconds)
        except Exception as exc:
            log.exception("application %s: issue failed; will retry", application_id)
            problem = domain.IssueDeferred("ISSUE_FAILED", f"签发暂时失败（{type(exc).__name__}），稍后自动重试")
            with self.db.transaction() as session:
                domain.defer(session, application_id, problem, utcnow(), self.settings.retry_ceiling_seconds)
        return None

    def _issuance_data(self, application_id: str) -> IssuanceData:
        try:
            payload = swms_rpc.call(self.registration.get_issuance_data, {"application_id": application_id})
        except errors.SwmsError as exc:
            if exc.code == errors.NOT_FOUND:
                raise domain.IssueRefused(domain.APPLICATION_NOT_FOUND, "登记服务中查无此申请", "application_id") from None
            raise domain.IssueDeferred(exc.code, f"登记服务暂不可用（{exc.code}），稍后自动重试") from None
        try:
            return IssuanceData.model_validate(payload)
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False)[0]
            field = ".".join(str(part) for part in first.get("loc", ())) or None
            raise domain.IssueRefused(domain.ISSUANCE_DATA_INVALID, f"签发数据不完整或格式不正确（{first['type']}）",
                                      field) from None

    def _issue(self, application_id: str, request: IssueRequest | None) -> str | None:
        session = self.db.session
        if request is None:
            request = session.get(IssueRequest, application_id, populate_existing=True)
            if request is None:
                return None
        # The reservation sets the request's certificate_number in its own transaction, so a request
        # without one has no certificate yet (and reserve() checks again, under its write lock).
        certificate = (None if request.certificate_number is None else
                       session.get(Certificate, request.certificate_number, populate_existing=True))
        session.commit()  # end the read: no transaction stays open across calls to other services
        # One render worker from the photo check to the stored PDF: the photo it checked before the
        # number was reserved is the one it prints, and its bytes never come through this process.
        with self.pool.held() as worker:
            photo_url = _NOT_FETCHED
            if certificate is None:
                data = self._issuance_data(application_id)
                domain.check_issuance_data(data, request)   # bad data is refused before anything is fetched
                photo_url = self._photo(worker, data.snapshot.person_id, data.snapshot.photo_key)
                with self.db.transaction() as session:   # request: this session's object, read above
                    certificate = domain.reserve(session, request, data, authority=self.settings.authority,
                                                 validity_years=self.settings.validity_years, today=self.today(),
                                                 photo_missing=photo_url is None)
            number, key = certificate.certificate_number, certificate.object_key
            fresh = photo_url is not _NOT_FETCHED  # reserved just now: nothing can have been stored for it yet
            if certificate.status != ISSUING:  # finished earlier; only the request was left behind
                with self.db.transaction() as session:
                    session.execute(update(IssueRequest).where(IssueRequest.application_id == application_id)
                                    .values(status=DONE, certificate_number=number, updated_at=utcnow()))
                return number
            pause("after_reserve")
            digest = None if fresh else self._stored(key, number)
            if digest is None:
                if photo_url is _NOT_FETCHED:   # the worker downloads and checks it with the render
                    photo_url = (photo_link(self.profile, certificate.person_id, certificate.photo_key)
                                 if certificate.photo_key else None)
                # The worker stores the credential after the PDF (its S3 client, not this process's).
                digest = self._render_and_store(worker, certificate, photo_url, key)
            else:   # the PDF was stored before a crash: the credential may not have been
                self._store_credential(certificate)
        pause("after_store")
        with self.db.transaction() as session:
            domain.finish(session, number, digest, self.keys.signing.fingerprint, self.keys.id_hash_key, utcnow(),
                          certificate)
        return number

    def _store_credential(self, certificate) -> None:
        """The VC beside the PDF, before the certificate is announced (first stored copy wins; a
        retry makes the same bytes). Certificates reserved before the status lists have none."""
        if certificate.status_list is None:
            return
        try:
            put_credential(self.bucket, certificate, self.keys, self.settings.verify_base_url)
        except (ClientError, BotoCoreError) as exc:
            raise domain.IssueDeferred(domain.STORAGE_UNAVAILABLE,
                                       f"证书凭证存储失败（{type(exc).__name__}），稍后自动重试", "object_key") from None

    def _photo(self, worker: HeldWorker, person_id: str, photo_key: str | None) -> str | None:
        # Decision (docs/contracts.md): no photo in the submitted snapshot → the certificate is
        # issued with "照片未提供" in the photo box and photo_missing recorded; a photo that exists
        # but cannot be fetched now → retried later; one that can never be used → refused.
        if not photo_key:
            return None
        url = photo_link(self.profile, person_id, photo_key)
        try:
            worker.check_photo(url)
        except RenderError as exc:
            raise worker_problem(exc) from None
        return url

    def _stored(self, key: str, number: str) -> str | None:
        try:
            return files.stored_digest(self.bucket, key, number)
        except files.StoreFailed as exc:
            raise domain.IssueDeferred(domain.STORAGE_UNAVAILABLE, str(exc), "object_key") from None
        except (ClientError, BotoCoreError) as exc:
            raise domain.IssueDeferred(domain.STORAGE_UNAVAILABLE, f"对象存储不可用（{type(exc).__name__}），稍后自动重试",
                                       "object_key") from None

    def _render_and_store(self, worker: HeldWorker, certificate, photo_url: str | None, key: str) -> str:
        """The PDF rendered, signed and stored by the worker; the SHA-256 of the stored copy."""
        face = face_of(certificate, self.keys, self.settings, None, None)
        credential = None
        if certificate.status_list is not None:   # reserved before the status lists: none
            credential = (credential_key(key), credential_of(certificate, self.keys, self.settings.verify_base_url)
                          .encode("ascii"), credentials.VC_MEDIA_TYPE)
        try:
            return worker.issue(face, photo_url, key, certificate.certificate_number, credential=credential).sha256
        except RenderError as exc:
            raise worker_problem(exc) from None
