"""The issue pipeline (services/certificate/issuing.py) on a database, with the render worker, the
other services and S3 stood in for in memory: who stores the credential, and what a retry after a
crash between the PDF and the credential does."""
from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import uuid

import pytest
from botocore.exceptions import ClientError
from sqlalchemy import select, update
from sqlalchemy.orm import sessionmaker

from services.certificate import credentials, domain, issuing, signing, tokens
from services.certificate.keys import KeyRing
from services.certificate.models import DONE, ISSUED, Certificate, IssueRequest
from services.certificate.models import outbox as certificate_outbox
from services.certificate.renderer import RenderError, RenderResult
from swms import idcard
from swms.contracts.common import ApplicationKind, Level, UnitCategory
from swms.contracts.events import ApplicationApproved
from swms.contracts.profile import ProfileSnapshot
from swms.contracts.registration import IssuanceData
from swms.contracts.review import Stage
from swms.db import DatabaseAccess, engine_for
from swms.migrations import upgrade
from swms.outbox import utcnow
from tests.support import valid_id

HOLDER_ID = valid_id("11010519900307123")
VERIFY = "https://swms.example.gov.cn/verify"


class Reply:
    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value


class Method:
    def __init__(self, answer):
        self.answer = answer

    def call_async(self, payload):
        return Reply(self.answer(payload))


class MemoryBucket:
    """put_if_absent and get_object as swms.storage.Bucket and files.stored_digest use them."""

    def __init__(self):
        self.name, self.objects, self.client = "certificates", {}, self

    def put_if_absent(self, key, body, content_type, metadata=None):
        if key in self.objects:
            return False
        self.objects[key] = (body, dict(metadata or {}))
        return True

    def get_object(self, Bucket, Key):  # noqa: N803 (boto3's spelling)
        if Key not in self.objects:
            raise ClientError({"Error": {"Code": "NoSuchKey"}}, "GetObject")
        body, metadata = self.objects[Key]
        return {"Body": io.BytesIO(body), "Metadata": metadata}


class Worker:
    """A render worker: stores a stand-in PDF (and the credential it is given) like the real one;
    ``fail_after_pdf``: dies between the PDF and the credential, as a crash there would."""

    def __init__(self, bucket: MemoryBucket, fail_after_pdf=False):
        self.bucket, self.fail_after_pdf, self.jobs = bucket, fail_after_pdf, []

    def check_photo(self, url):
        return "image/jpeg"

    def issue(self, face, photo_url, key, number, sign=True, credential=None):
        self.jobs.append((face, key, number, credential))
        pdf = b"%PDF-1.7 " + number.encode()
        digest = hashlib.sha256(pdf).hexdigest()
        self.bucket.put_if_absent(key, pdf, "application/pdf", {"sha256": digest, "certificate-number": number})
        if self.fail_after_pdf:
            raise RenderError("RENDER_UNAVAILABLE", "证书生成进程异常，稍后自动重试")
        if credential is not None:
            credential_key, body, media_type = credential
            self.bucket.put_if_absent(credential_key, body, media_type, {"certificate-number": number})
        return RenderResult(None, digest, 0.0, 0.0)


class Pool:
    def __init__(self, worker):
        self.worker = worker

    @contextlib.contextmanager
    def held(self):
        yield self.worker


@pytest.fixture
def db(tmp_path):
    url = f"sqlite:///{tmp_path / 'certificate.db'}"
    upgrade("certificate", url)
    access = DatabaseAccess(sessionmaker(engine_for(url), expire_on_commit=False))
    yield access
    access.close()


@pytest.fixture(scope="module")
def ring():
    return KeyRing(signing.generate_dev_ca("中华人民共和国民政部"), tokens.generate_token_key(), b"k" * 32, ())


def approve(db) -> tuple[str, dict]:
    person_id, application_id = str(uuid.uuid4()), str(uuid.uuid4())
    resident = idcard.parse(HOLDER_ID)
    snap = ProfileSnapshot(person_id=person_id, name="李明华", id_number=HOLDER_ID, gender=resident.gender,
                           birth_date=resident.birth_date, level=Level.SOCIAL_WORKER, management_number="1",
                           exam_year=2026, region_code="110105", unit_category=UnitCategory.OTHER, unit_name="单位",
                           position="社工", photo_key="photo.jpg")
    data = IssuanceData(application_id=application_id, kind=ApplicationKind.FIRST_REGISTRATION, snapshot=snap)
    event = ApplicationApproved(application_id=application_id, person_id=person_id,
                                kind=ApplicationKind.FIRST_REGISTRATION, region_code="110105", stage=Stage.FINAL,
                                final=True, decided_by="o", decided_at=dt.datetime.now(dt.timezone.utc))
    with db.transaction() as session:
        domain.record_approval(session, event, utcnow())
    return application_id, data.model_dump(mode="json")


def issuer(db, ring, worker, data) -> issuing.Issuer:
    registration = type("Registration", (), {"get_issuance_data": Method(lambda payload: data)})()
    profile = type("Profile", (), {"get_photo_link": Method(
        lambda payload: {"url": "http://photos.invalid/p.jpg", "content_type": "image/jpeg",
                         "expires_in_seconds": 120})})()
    settings = issuing.Settings("中华人民共和国民政部", 3, VERIFY, 60, 600)
    return issuing.Issuer(db, worker.bucket, Pool(worker), ring, registration, profile, settings,
                          lambda: dt.date(2026, 11, 26))


def test_the_worker_stores_the_credential_after_the_pdf_and_the_hub_does_not(db, ring):
    bucket = MemoryBucket()
    worker = Worker(bucket)
    application_id, data = approve(db)
    number = issuer(db, ring, worker, data).process(application_id)
    assert number is not None
    [(face, key, job_number, credential)] = worker.jobs
    assert (key, job_number) == (f"certificates/{number}.pdf", number)
    credential_key, body, media_type = credential
    assert (credential_key, media_type) == (f"certificates/{number}.vc.jwt", credentials.VC_MEDIA_TYPE)
    certificate = db.session.get(Certificate, number)
    assert body == issuing.credential_of(certificate, ring, VERIFY).encode("ascii")   # the same bytes on a retry
    assert sorted(bucket.objects) == [f"certificates/{number}.pdf", f"certificates/{number}.vc.jwt"]


def test_a_retry_after_a_crash_between_the_pdf_and_the_credential_stores_the_credential_once(db, ring):
    bucket = MemoryBucket()
    application_id, data = approve(db)
    assert issuer(db, ring, Worker(bucket, fail_after_pdf=True), data).process(application_id) is None
    [number] = db.session.execute(select(Certificate.certificate_number)).scalars()
    assert sorted(bucket.objects) == [f"certificates/{number}.pdf"]     # the PDF without its credential
    pdf_before = bucket.objects[f"certificates/{number}.pdf"]
    with db.transaction() as session:   # the lease and the back-off over: the sweep takes it up
        session.execute(update(IssueRequest).values(next_attempt_at=utcnow() - dt.timedelta(seconds=1)))

    again = Worker(bucket)
    assert issuer(db, ring, again, data).process(application_id) == number
    assert again.jobs == []   # the stored copy counts: nothing rendered again
    assert sorted(bucket.objects) == [f"certificates/{number}.pdf", f"certificates/{number}.vc.jwt"]
    assert bucket.objects[f"certificates/{number}.pdf"] == pdf_before
    certificate = db.session.get(Certificate, number, populate_existing=True)
    assert certificate.status == ISSUED
    assert bucket.objects[f"certificates/{number}.vc.jwt"][0] == issuing.credential_of(
        certificate, ring, VERIFY).encode("ascii")
    request = db.session.get(IssueRequest, application_id, populate_existing=True)
    assert (request.status, request.certificate_number) == (DONE, number)
    events = db.session.execute(select(certificate_outbox.table.c.event_type)).scalars().all()
    assert events == ["certificate_issued"]


def test_a_render_worker_downloads_the_photo_once_per_certificate_even_when_the_link_repeats(ring):
    """A presigned link is the same for a whole second: the worker must not print the photo it kept
    from the certificate before (one download per certificate, each checked)."""
    import http.server
    import threading

    from bench.certificate_issue import bench_face, bench_photo
    from services.certificate.renderer import RenderPool

    photo, downloads = bench_photo(), []

    class Photos(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            downloads.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(photo)))
            self.end_headers()
            self.wfile.write(photo)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Photos)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/photo.jpg"
    pool = RenderPool(1, ring, "中华人民共和国民政部")
    try:
        pool.start()
        for number in ("1120262000001", "1120262000002"):
            with pool.held() as worker:
                assert worker.check_photo(url) == "image/jpeg"
                result = worker.issue(bench_face(number), url, None, number, sign=False)
                assert result.pdf.startswith(b"%PDF")
        assert len(downloads) == 2   # checked before the number, printed with it: once each
    finally:
        pool.close()
        server.shutdown()


def approval_event(application_id: str, person_id: str) -> ApplicationApproved:
    return ApplicationApproved(application_id=application_id, person_id=person_id,
                               kind=ApplicationKind.FIRST_REGISTRATION, region_code="110105", stage=Stage.FINAL,
                               final=True, decided_by="o", decided_at=dt.datetime.now(dt.timezone.utc))


def test_an_approval_is_recorded_claimed_once_and_issued_from_the_request_as_written(db, ring):
    """record_and_claim inserts the request already claimed (no read): a redelivery within the lease
    neither records nor claims it again, one after the lease claims it again, and the request it
    handed out is the session's own object (the reservation's number reaches the row)."""
    application_id, data = approve(db)   # only to build the issuance data; recorded with its own id below
    application_id = data["application_id"] = str(uuid.uuid4())
    event = approval_event(application_id, data["snapshot"]["person_id"])
    now = utcnow()
    with db.transaction() as session:
        request = domain.record_and_claim(session, event, now, 60)
    assert request is not None and (request.attempts, request.status) == (1, "pending")
    with db.transaction() as session:   # redelivered while the first holds the lease
        assert domain.record_and_claim(session, event, now + dt.timedelta(seconds=1), 60) is None
    received = [row for row in domain.audit.for_entity(db.session, application_id)
                if row["action"] == "certificate.approval_received"]
    assert len(received) == 1 and received[0]["detail"]["event_id"] == event.event_id

    number = issuer(db, ring, Worker(MemoryBucket()), data).process(application_id, claimed=True, request=request)
    assert number is not None
    row = db.session.execute(select(IssueRequest).where(IssueRequest.application_id == application_id)
                             .execution_options(populate_existing=True)).scalar_one()
    assert (row.status, row.certificate_number, row.attempts) == (DONE, number, 1)

    with db.transaction() as session:   # once done, a late redelivery after the lease claims nothing
        assert domain.record_and_claim(session, event, now + dt.timedelta(seconds=120), 60) is None


def test_a_redelivered_approval_after_the_lease_claims_the_pending_request_again(db):
    application_id, person_id = str(uuid.uuid4()), str(uuid.uuid4())
    event = approval_event(application_id, person_id)
    now = utcnow()
    with db.transaction() as session:
        assert domain.record_and_claim(session, event, now, 60) is not None
    with db.transaction() as session:
        again = domain.record_and_claim(session, event, now + dt.timedelta(seconds=61), 60)
    assert again is not None and again.attempts == 2
