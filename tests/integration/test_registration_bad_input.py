"""Bad input and wrong order, over RabbitMQ on SQLite and PostgreSQL: each case must be refused
with a stable code naming the field at fault and a message in words, and must change nothing
(every registration table, the outbox, the audit log, and the proof bucket).

Cases are subtests, grouped by the situation they need (one person set up per group).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import uuid

import pytest

from services.profile.testing import make_pdf, make_photo, post_file, with_phone_metadata
from services.registration import ce_import, proofs
from services.registration.domain import add_months
from services.registration.models import HeldCertificate, ProofFileRow
from swms.contracts.common import ApplicationKind
from swms.contracts.events import ApplicationApproved, CertificateRevoked, CertificateSuspended
from swms.contracts.review import Stage
from swms.db import engine_for
from swms.storage import Bucket, make_s3_client
from tests.integration import test_registration as base
from tests.integration.test_registration import (
    COUNTY,
    THIS_YEAR,
    TODAY,
    Env,
    course,
    outcome,
    refused,
    submit,
)
from tests.support import dispatch, officer_token, session_for, wait_until

pytestmark = pytest.mark.integration
env = base.env     # the same module-scoped stack fixture: identity, profile, registration



def check(subtests, env: Env, name: str, call, code: str, field: str | None, ignore: tuple[str, ...] = ()):
    """One case: refused with ``code`` on ``field``, and nothing changed."""
    with subtests.test(name):
        before = {k: v for k, v in env.state().items() if k not in ignore}
        error = refused(call, code, field)
        after = {k: v for k, v in env.state().items() if k not in ignore}
        assert after == before, f"{name}: something changed"
        return error


def online_hours(env: Env, person, hours: float) -> None:
    """Platform records of this person, loaded the way an export file is."""
    with session_for(env.config["DB_URL"]) as session:
        ce_import.import_records(session, ce_import.read_file((
            "record_id,id_number,name,course,provider,hours,completed_on\n"
            f"R-{uuid.uuid4().hex[:8]},{person.id_number},{person.name},伦理,平台,{hours},"
            f"{(TODAY - dt.timedelta(days=90)).isoformat()}\n").encode("utf-8")), "learning", actor="test")
        session.commit()


def bucket_keys(env: Env) -> list[str]:
    s3 = make_s3_client(env.config)
    listing = s3.list_objects_v2(Bucket=env.config["REGISTRATION_S3_BUCKET"])
    return sorted(item["Key"] for item in listing.get("Contents", []))


# ---- first registration ------------------------------------------------------------------------

def test_first_registration_refusals(env, subtests):
    me, incomplete, late = env.person(), env.person(profile=False), env.person(exam_year=THIS_YEAR - 3)
    with env.client(me.token) as client:
        first = client.registration.submit_first_registration
        check(subtests, env, "commitment not ticked", lambda: first({"commitment": False}),
              "COMMITMENT_REQUIRED", "commitment")
        check(subtests, env, "commitment missing", lambda: first({}), "VALIDATION_FAILED", "commitment")
        check(subtests, env, "commitment as text", lambda: first({"commitment": "true"}), "VALIDATION_FAILED",
              "commitment")
        check(subtests, env, "commitment as number", lambda: first({"commitment": 1}), "VALIDATION_FAILED",
              "commitment")
        check(subtests, env, "unknown field", lambda: first({"commitment": True, "level": "高级社会工作师"}),
              "VALIDATION_FAILED", "level")
        check(subtests, env, "payload not an object", lambda: first(["commitment"]), "VALIDATION_FAILED", "payload")
        check(subtests, env, "profile revision as text", lambda: first({"commitment": True, "profile_revision": "2"}),
              "VALIDATION_FAILED", "profile_revision")
        check(subtests, env, "profile revision that was never", lambda: first({"commitment": True,
                                                                                "profile_revision": 999}),
              "PROFILE_CHANGED", "profile_revision")
        check(subtests, env, "unknown kind of draft", lambda: client.registration.open_draft({"kind": "transfer"}),
              "VALIDATION_FAILED", "kind")
    with env.client(incomplete.token) as client:
        error = check(subtests, env, "incomplete profile",
                      lambda: client.registration.submit_first_registration({"commitment": True}),
                      "PROFILE_INCOMPLETE", "profile")
        assert error.details
    with env.client(late.token) as client:
        check(subtests, env, "outside the exam window",
              lambda: client.registration.submit_first_registration({"commitment": True}),
              "FIRST_REGISTRATION_WINDOW_CLOSED", "exam_year")
    with env.client(officer_token(env.keys_dir, COUNTY, "county")) as officer:
        check(subtests, env, "an officer submitting", lambda: officer.registration.submit_first_registration(
            {"commitment": True}), "FORBIDDEN", None)
    with env.client(None) as anonymous:
        check(subtests, env, "no token", lambda: anonymous.registration.submit_first_registration(
            {"commitment": True}), "AUTH_REQUIRED", "auth_token")

    submit(env, me.token)
    with env.client(me.token) as client:
        check(subtests, env, "second open application", lambda: client.registration.submit_first_registration(
            {"commitment": True}), "APPLICATION_ALREADY_OPEN", "kind")
        check(subtests, env, "another kind while one is open", lambda: client.registration.open_draft(
            {"kind": "replacement"}), "APPLICATION_ALREADY_OPEN", "kind")
        check(subtests, env, "upgrade without a level raise", lambda: client.registration.submit_upgrade(
            {"commitment": True}), "APPLICATION_ALREADY_OPEN", "kind")
        check(subtests, env, "editing while in initial review", lambda: client.registration.submit_draft(
            {"application_id": client.registration.list_my_applications()["items"][0]["application_id"],
             "commitment": True}), "APPLICATION_LOCKED", "application_id")


# ---- re-registration ----------------------------------------------------------------------------

def test_re_registration_refusals(env, subtests):
    me, other = env.person(), env.person()
    env.holds(me, valid_until=TODAY + dt.timedelta(days=40))
    online_hours(env, me, 50)
    proof, pending = env.upload_proof(me.token), env.upload_proof(me.token, confirm=False)
    foreign = env.upload_proof(other.token)
    good = course(proof, 40)
    with env.client(me.token) as client:
        rereg = client.registration.submit_re_registration

        def send(change: dict | None = None, drop: str | None = None, **top):
            item = {**good, **(change or {})}
            if drop:
                item.pop(drop)
            return lambda: rereg({"commitment": True, "offline_courses": [item], **top})

        where = "offline_courses.0"
        check(subtests, env, "typed online hours", send(online_hours=40), "ONLINE_HOURS_NOT_TYPED", "online_hours")
        check(subtests, env, "typed online hours zero", send(online_hours=0), "ONLINE_HOURS_NOT_TYPED", "online_hours")
        for label, hours in (("negative", -5), ("zero", 0), ("text", "abc"), ("numeric text", "40"), ("boolean", True),
                             ("two decimals", 12.25), ("too many for one course", 500), ("null", None)):
            check(subtests, env, f"hours {label}", send({"hours": hours}), "VALIDATION_FAILED", f"{where}.hours")
        check(subtests, env, "hours missing", send(drop="hours"), "VALIDATION_FAILED", f"{where}.hours")
        check(subtests, env, "proof missing", send(drop="proof_key"), "VALIDATION_FAILED", f"{where}.proof_key")
        check(subtests, env, "proof empty", send({"proof_key": ""}), "VALIDATION_FAILED", f"{where}.proof_key")
        check(subtests, env, "proof of another person", send({"proof_key": foreign}), "PROOF_NOT_FOUND",
              f"{where}.proof_key")
        check(subtests, env, "proof never confirmed", send({"proof_key": pending}), "PROOF_NOT_FOUND",
              f"{where}.proof_key")
        check(subtests, env, "proof unknown", send({"proof_key": f"proofs/{me.person_id}/{uuid.uuid4()}"}),
              "PROOF_NOT_FOUND", f"{where}.proof_key")
        check(subtests, env, "end before start", send({"start_date": "2025-03-10", "end_date": "2025-03-01"}),
              "VALIDATION_FAILED", f"{where}.end_date")
        check(subtests, env, "course not finished", send({"end_date": (TODAY + dt.timedelta(days=3)).isoformat()}),
              "CE_COURSE_NOT_FINISHED", f"{where}.end_date")
        check(subtests, env, "course before the period", send({"start_date": "2019-05-01", "end_date": "2019-05-02"}),
              "CE_COURSE_OUTSIDE_PERIOD", f"{where}.start_date")
        check(subtests, env, "institution empty", send({"institution": ""}), "VALIDATION_FAILED", f"{where}.institution")
        check(subtests, env, "course name with a bidi override", send({"course": "个案\u202e管理"}),
              "TEXT_CHARACTERS_NOT_ALLOWED", f"{where}.course")
        check(subtests, env, "date malformed", send({"start_date": "2025/01/01"}), "VALIDATION_FAILED",
              f"{where}.start_date")
        error = check(subtests, env, "hours short of the requirement", send({"hours": 30}), "CE_HOURS_SHORT",
                      "offline_courses")
        assert "还差10学时" in error.message
        check(subtests, env, "no commitment", lambda: rereg({"commitment": False, "offline_courses": [good]}),
              "COMMITMENT_REQUIRED", "commitment")
        check(subtests, env, "too many courses", lambda: rereg({"commitment": True, "offline_courses": [good] * 101}),
              "VALIDATION_FAILED", "offline_courses")
        check(subtests, env, "courses not a list", lambda: rereg({"commitment": True, "offline_courses": good}),
              "VALIDATION_FAILED", "offline_courses")
        check(subtests, env, "saving a draft with a bad course",
              lambda: client.registration.save_re_registration_draft({"offline_courses": [{**good, "hours": -1}]}),
              "VALIDATION_FAILED", f"{where}.hours")
        submitted = rereg({"commitment": True, "offline_courses": [good]})   # the good form is accepted

    # Wrong order: after the initial review passes the applicant can no longer edit.
    dispatch(env.amqp_uri, outcome(ApplicationApproved, submitted, kind=ApplicationKind.RE_REGISTRATION,
                                   stage=Stage.INITIAL, final=False))
    env.wait_for_status(me.token, submitted["application_id"], "终审中")
    with env.client(me.token) as client:
        check(subtests, env, "editing after initial approval", lambda: client.registration.save_re_registration_draft(
            {"offline_courses": [good]}), "APPLICATION_LOCKED", "application_id")
        check(subtests, env, "resubmitting after initial approval", lambda: client.registration.submit_draft(
            {"application_id": submitted["application_id"], "commitment": True}), "APPLICATION_LOCKED", "application_id")
        check(subtests, env, "saving it as another kind", lambda: client.registration.save_replacement_draft(
            {"application_id": submitted["application_id"], "original_certificate_no": "12345678"}),
            "INVALID_STATE", "application_id")
    with env.client(other.token) as stranger:
        ref = {"application_id": submitted["application_id"]}
        check(subtests, env, "editing someone else's application", lambda: stranger.registration
              .save_re_registration_draft({**ref, "offline_courses": []}), "FORBIDDEN", None)
        check(subtests, env, "submitting someone else's application", lambda: stranger.registration.submit_draft(
            {**ref, "commitment": True}), "FORBIDDEN", None)
        check(subtests, env, "discarding someone else's application", lambda: stranger.registration.discard_draft(ref),
              "FORBIDDEN", None)
        check(subtests, env, "reading someone else's application", lambda: stranger.registration.get_application(ref),
              "FORBIDDEN", None)
        check(subtests, env, "someone else's proof link", lambda: stranger.registration.get_proof_link(
            {**ref, "proof_key": proof}), "FORBIDDEN", None)
        check(subtests, env, "confirming someone else's proof", lambda: stranger.registration.confirm_proof_upload(
            {"proof_key": proof}), "FORBIDDEN", None)
        check(subtests, env, "unknown application", lambda: stranger.registration.submit_draft(
            {"application_id": str(uuid.uuid4()), "commitment": True}), "NOT_FOUND", "application_id")
        check(subtests, env, "malformed application id", lambda: stranger.registration.get_application(
            {"application_id": "12345"}), "VALIDATION_FAILED", "application_id")


def test_re_registration_eligibility_answers(env, subtests):
    never, early, lapsed, revoked = env.person(), env.person(), env.person(exam_year=THIS_YEAR - 6), env.person()
    env.holds(early, valid_until=TODAY + dt.timedelta(days=400))
    lapsed_number = env.holds(lapsed, valid_until=TODAY - dt.timedelta(days=1))
    revoked_number = env.holds(revoked, valid_until=TODAY + dt.timedelta(days=20))
    for person in (early, lapsed, revoked):
        online_hours(env, person, 90)

    def rereg(person):
        def call():
            with env.client(person.token) as client:
                return client.registration.submit_re_registration({"commitment": True})
        return call

    check(subtests, env, "no certificate", rereg(never), "NOT_REGISTERED", "certificate")
    with env.client(never.token) as client:
        check(subtests, env, "upgrade without a level raise", lambda: client.registration.submit_upgrade(
            {"commitment": True}), "NOT_PENDING_UPGRADE", "kind")
    error = check(subtests, env, "before the window", rereg(early), "RE_REGISTRATION_NOT_OPEN", "certificate")
    opens = add_months(TODAY + dt.timedelta(days=400), -3)      # the default window: 3 months before expiry
    assert "3个月" in error.message and f"可于{opens.isoformat()}起" in error.message
    error = check(subtests, env, "lapsed", rereg(lapsed), "REGISTRATION_LAPSED", "certificate")
    assert lapsed_number in error.message and "重新申请登记" in error.message
    with env.client(lapsed.token) as client:
        standing = client.registration.my_registration()
    assert standing["lapsed"] and standing["can_apply_for"] == ["first_registration"]
    assert "重新申请登记" in standing["advice"]

    for event_cls, code in ((CertificateSuspended, "CERTIFICATE_SUSPENDED"), (CertificateRevoked, "CERTIFICATE_REVOKED")):
        event = event_cls(certificate_number=revoked_number, person_id=revoked.person_id, holder_name_masked="李**",
                          id_number_masked="110***********1239", level="社会工作师", region_code=COUNTY,
                          reason="违反职业道德", changed_by="province-officer", changed_at=dt.datetime.now(dt.UTC))
        dispatch(env.amqp_uri, event)
        status = code.split("_")[1].lower()

        def recorded():
            with session_for(env.config["DB_URL"]) as session:
                return session.get(HeldCertificate, revoked_number).status == status
        wait_until(recorded, timeout=60, what=f"certificate {status}")
        check(subtests, env, code.lower(), rereg(revoked), code, "certificate")

    # The lapsed registration registers again, whatever its exam year.
    assert submit(env, lapsed.token)["status"] == "初审中"


# ---- replacement e-certificate ------------------------------------------------------------------

def test_replacement_refusals(env, subtests):
    me, holder, first_user = env.person(), env.person(), env.person()
    env.holds(holder, valid_until=TODAY + dt.timedelta(days=300))
    paper = {"original_certificate_no": "31500218", "registration_type": "再登记",
             "valid_from": (TODAY - dt.timedelta(days=500)).isoformat(),
             "valid_until": (TODAY + dt.timedelta(days=500)).isoformat(), "commitment": True}
    with env.client(first_user.token) as client:
        client.registration.submit_replacement({**paper, "original_certificate_no": "31500999"})
    with env.client(me.token) as client:
        replace = client.registration.submit_replacement

        def send(**change):
            form = {**paper, **change}
            return lambda: replace({k: v for k, v in form.items() if v is not ...})

        field = "original_certificate_no"
        for label, number in (("7 digits", "3150021"), ("9 digits", "315002180"), ("with a letter", "3150021A"),
                              ("full-width digits", "３１５００２１８"), ("with a space", "3150 0218"),
                              ("empty", ""), ("a JSON number", 31500218), ("with a dash", "3150-0218")):
            check(subtests, env, f"NO {label}", send(original_certificate_no=number), "ORIGINAL_NO_INVALID", field)
        check(subtests, env, "NO missing", send(original_certificate_no=...), "VALIDATION_FAILED", field)
        check(subtests, env, "validity ends before it starts", send(valid_until=(TODAY - dt.timedelta(days=600)).isoformat()),
              "VALIDATION_FAILED", "valid_until")
        check(subtests, env, "validity ends the day it starts", send(valid_until=paper["valid_from"]),
              "VALIDATION_FAILED", "valid_until")
        check(subtests, env, "validity longer than a registration", send(
            valid_until=(TODAY + dt.timedelta(days=900)).isoformat()), "VALIDATION_FAILED", "valid_until")
        check(subtests, env, "validity starts in the future", send(
            valid_from=(TODAY + dt.timedelta(days=1)).isoformat(), valid_until=(TODAY + dt.timedelta(days=700)).isoformat()),
            "VALIDATION_FAILED", "valid_from")
        check(subtests, env, "paper certificate expired", send(
            valid_from=(TODAY - dt.timedelta(days=1000)).isoformat(), valid_until=(TODAY - dt.timedelta(days=2)).isoformat()),
            "ORIGINAL_EXPIRED", "valid_until")
        check(subtests, env, "registration type not in the list", send(registration_type="变更登记"),
              "VALIDATION_FAILED", "registration_type")
        check(subtests, env, "registration type missing", send(registration_type=...), "VALIDATION_FAILED",
              "registration_type")
        check(subtests, env, "NO already used by someone else", send(original_certificate_no="31500999"),
              "ORIGINAL_NO_IN_USE", field)
        check(subtests, env, "no commitment", send(commitment=False), "COMMITMENT_REQUIRED", "commitment")
        submitted = replace(paper)
        check(subtests, env, "editing while the county reviews", lambda: client.registration.save_replacement_draft(
            {"original_certificate_no": "31500219"}), "APPLICATION_LOCKED", "application_id")
        check(subtests, env, "discarding a submitted application", lambda: client.registration.discard_draft(
            {"application_id": submitted["application_id"]}), "INVALID_STATE", "application_id")
    with env.client(holder.token) as client:
        check(subtests, env, "an e-certificate holder", lambda: client.registration.submit_replacement(paper),
              "REPLACEMENT_NOT_NEEDED", "kind")


# ---- proofs ---------------------------------------------------------------------------------------

def test_proof_uploads_are_checked_by_content_and_size(env, subtests):
    me = env.person()
    pdf = make_pdf()
    bad_files = (
        ("text named as a PDF", b"just some text, not a PDF at all", "application/pdf", "FILE_TYPE_NOT_ALLOWED"),
        ("a PNG declared as PDF", make_photo(fmt="PNG"), "application/pdf", "FILE_TYPE_NOT_ALLOWED"),
        ("a truncated PDF", pdf[: len(pdf) // 2], "application/pdf", "FILE_DAMAGED"),
        ("a truncated JPEG", make_photo()[:2000], "image/jpeg", "FILE_DAMAGED"),
        ("a JPEG that does not decode", b"\xff\xd8\xff" + b"not a picture" * 100 + b"\xff\xd9", "image/jpeg",
         "FILE_DAMAGED"),
        ("a JPEG declared as PNG", make_photo(), "image/png", "FILE_TYPE_NOT_ALLOWED"),
        ("larger than the limit", pdf + b"\n%" + b"0" * (70 * 1024) + b"\n%%EOF\n", "application/pdf", "FILE_TOO_LARGE"),
    )
    with env.client(me.token) as client:
        for name, data, content_type, code in bad_files:
            with subtests.test(name):
                before, objects = env.state(), bucket_keys(env)
                ticket = client.registration.request_proof_upload({"filename": "证明.pdf", "content_type": content_type})
                assert post_file(ticket, data, "证明.pdf", content_type) in (200, 204)   # moto keeps any size
                refused(lambda: client.registration.confirm_proof_upload({"proof_key": ticket["proof_key"]}),
                        code, "proof_key")
                assert env.state() == before and bucket_keys(env) == objects   # object and ticket gone
                check(subtests, env, "content type not allowed", lambda: client.registration.request_proof_upload(
            {"filename": "a.txt", "content_type": "text/plain"}), "VALIDATION_FAILED", "content_type")
        check(subtests, env, "unknown proof", lambda: client.registration.confirm_proof_upload(
            {"proof_key": f"proofs/{me.person_id}/{uuid.uuid4()}"}), "UPLOAD_NOT_FOUND", "proof_key")
        ticket = client.registration.request_proof_upload({"filename": "证明.pdf", "content_type": "application/pdf"})
        check(subtests, env, "confirmed before it was uploaded", lambda: client.registration.confirm_proof_upload(
            {"proof_key": ticket["proof_key"]}), "UPLOAD_MISSING", "proof_key")
        assert post_file(ticket, pdf, "证明.pdf", "application/pdf") == 204
        confirmed = client.registration.confirm_proof_upload({"proof_key": ticket["proof_key"]})
        assert (confirmed["size"], confirmed["content_type"]) == (len(pdf), "application/pdf")
        uploaded_copy = proofs.upload_key(ticket["proof_key"])
        assert ticket["proof_key"] in bucket_keys(env) and uploaded_copy not in bucket_keys(env)
        assert make_s3_client(env.config).head_object(Bucket=env.config["REGISTRATION_S3_BUCKET"], Key=ticket[
            "proof_key"])["ServerSideEncryption"] == "AES256"       # kept encrypted at rest
        # The ticket is still valid for minutes: a second POST with it cannot replace the checked proof.
        other = make_pdf() + b"\n% another document\n%%EOF\n"
        assert post_file(ticket, other, "证明.pdf", "application/pdf") == 204
        again = client.registration.confirm_proof_upload({"proof_key": ticket["proof_key"]})
        stored_pdf = Bucket(make_s3_client(env.config), env.config["REGISTRATION_S3_BUCKET"]).get(ticket["proof_key"])
        assert stored_pdf == pdf and again["sha256"] == confirmed["sha256"] == hashlib.sha256(pdf).hexdigest()
        assert uploaded_copy not in bucket_keys(env)
        # Posted again and never confirmed: the sweeper deletes the stale uploaded copy.
        assert post_file(ticket, other, "证明.pdf", "application/pdf") == 204
        assert uploaded_copy in bucket_keys(env)
        registration_bucket = Bucket(make_s3_client(env.config), env.config["REGISTRATION_S3_BUCKET"])
        assert proofs.sweep_stale_uploads(registration_bucket, dt.timedelta(hours=1)) == 0   # not yet stale
        assert proofs.sweep_stale_uploads(registration_bucket, dt.timedelta(seconds=-60)) >= 1   # cut-off in the future: all stale
        assert ticket["proof_key"] in bucket_keys(env) and not any(key.startswith("incoming/")
                                                                   for key in bucket_keys(env))
        # A confirmation that stored the file and then died before recording it: the retry keeps
        # the stored copy (a different file posted meanwhile does not replace it).
        crashed = client.registration.request_proof_upload({"filename": "证明.pdf", "content_type": "application/pdf"})
        registration_bucket.put(crashed["proof_key"], pdf, "application/pdf")
        assert post_file(crashed, other, "证明.pdf", "application/pdf") == 204
        retried = client.registration.confirm_proof_upload({"proof_key": crashed["proof_key"]})
        assert registration_bucket.get(crashed["proof_key"]) == pdf
        assert (retried["size"], retried["sha256"]) == (len(pdf), hashlib.sha256(pdf).hexdigest())
        # A phone photo of a course certificate is kept without its EXIF (GPS position, device, time).
        image_ticket = client.registration.request_proof_upload({"filename": "结业证书.jpg", "content_type": "image/jpeg"})
        assert post_file(image_ticket, with_phone_metadata(make_photo()), "结业证书.jpg", "image/jpeg") == 204
        image = client.registration.confirm_proof_upload({"proof_key": image_ticket["proof_key"]})
    stored = Bucket(make_s3_client(env.config), env.config["REGISTRATION_S3_BUCKET"]).get(image_ticket["proof_key"])
    assert b"PhoneMaker" not in stored and b"taken at home" not in stored and stored.startswith(b"\xff\xd8\xff")
    assert (image["size"], image["sha256"]) == (len(stored), hashlib.sha256(stored).hexdigest())

    # Housekeeping: a proof on no form is deleted after the orphan limit, object and all; a
    # proof on a submitted form is kept.
    with session_for(env.config["DB_URL"]) as session:
        row = session.get(ProofFileRow, ticket["proof_key"])
        row.verified_at = row.created_at = row.verified_at - dt.timedelta(hours=30)
        session.commit()
    bucket = Bucket(make_s3_client(env.config), env.config["REGISTRATION_S3_BUCKET"])
    assert ticket["proof_key"] in bucket_keys(env)
    assert proofs.sweep_orphans(engine_for(env.config["DB_URL"]), bucket, dt.timedelta(hours=24)) >= 1
    assert ticket["proof_key"] not in bucket_keys(env)
    with session_for(env.config["DB_URL"]) as session:
        assert session.get(ProofFileRow, ticket["proof_key"]).status == "deleted"
    with session_for(env.config["DB_URL"]) as session:
        rows = {row.proof_key: row.status for row in session.query(ProofFileRow)}
    remaining = set(bucket_keys(env))
    assert all(rows.get(key) not in (None, "deleted") for key in remaining)
    assert not {key for key, status in rows.items() if status == "deleted"} & remaining
