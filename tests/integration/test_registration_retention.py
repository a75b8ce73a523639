"""The retention rule across registration and profile (docs/operations.md, 文件保留), over a real
RabbitMQ, the moto S3 server and SQLite / PostgreSQL: a submitted application version holds the
photo and proofs its copy of the 个人信息表 names (registration.files_held → profile), an issued
certificate holds its photo, everything else the person replaced is deleted by housekeeping; the
bucket is listed to prove it. Housekeeping is run directly with a clock moved forward (the grace
period, the retention period, the end of the certificate's validity).

Its own module (own databases): the sweeps here, years ahead, would delete other tests' files.
"""
from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import delete, select
from sqlalchemy.orm import sessionmaker

from services.profile import cli as profile_cli
from services.profile.files import FileStore, sweep
from services.profile.models import FileHold
from services.profile.models import audit as profile_audit
from services.profile.testing import SUNSHINE, make_pdf, make_photo, upload
from services.registration import cli as registration_cli
from services.registration import proofs
from services.registration.models import ProofFileRow
from swms.db import engine_for
from swms.outbox import utcnow
from swms.storage import Bucket, make_s3_client
from tests.integration.test_registration import (  # noqa: F401  (env: the module's services)
    TODAY,
    Env,
    course,
    env,
    refused,
    submit,
)
from tests.support import officer_token, session_for, wait_until

pytestmark = pytest.mark.integration

RETENTION_YEARS = 5      # REGISTRATION_RECORD_RETENTION_YEARS's default, as the services run here
GRACE = dt.timedelta(hours=48)   # PROFILE_FILE_GRACE_HOURS's default


def profile_sweep(env: Env, now: dt.datetime) -> None:
    store = FileStore(Bucket(make_s3_client(env.profile), env.profile["PROFILE_S3_BUCKET"]))
    sweep(sessionmaker(engine_for(env.profile["DB_URL"]), expire_on_commit=False), store, now=now)


def profile_objects(env: Env, person_id: str) -> set[str]:
    """The person's objects in profile's bucket (photos and proofs)."""
    s3 = make_s3_client(env.profile)
    found = set()
    for prefix in (f"photos/{person_id}/", f"proofs/{person_id}/"):
        listing = s3.list_objects_v2(Bucket=env.profile["PROFILE_S3_BUCKET"], Prefix=prefix)
        found |= {item["Key"] for item in listing.get("Contents", [])}
    return found


def held_by(env: Env, holder: str, count: int) -> set[str]:
    """The files profile holds for ``holder``, once registration's event has been taken."""
    with session_for(env.profile["DB_URL"]) as session:
        def recorded():
            session.rollback()  # a new snapshot each poll
            keys = set(session.execute(select(FileHold.file_key).where(FileHold.holder == holder)).scalars())
            return keys if len(keys) >= count else None
        return wait_until(recorded, timeout=60, what=f"profile holds files for {holder}")


def job(env: Env, client, **fields) -> dict:
    request = {"unit_category": "社会工作服务机构", "unit_directory_id": env.orgs[SUNSHINE["credit_code"]],
               "position": "项目主管", "start_date": "2019-03-01", "sanqu_programme": True}
    request.update(fields)
    return client.profile.save_work_experience(request)["experience"]


def test_a_submitted_version_keeps_its_files_and_replaced_ones_are_deleted(env):
    me = env.person()       # a complete form with photo X, copied by registration after each change
    with env.client(me.token) as client:
        photo_x = client.profile.get_profile({"person_id": me.person_id})["photo"]["photo_key"]
        # X is replaced before anything is submitted: registration's copies named it, nothing holds it.
        photo_a = client.profile.confirm_photo({"upload_id": upload(client, "photo", make_photo())})["photo"]["photo_key"]
        experience = job(env, client, proof_upload_ids=[upload(client, "proof", make_pdf(), "三区.pdf")])
        [proof_1] = experience["proof_keys"]
    env.wait_profile_changes_handled(me.person_id)
    application = submit(env, me.token)
    submission = f"submission:{application['application_id']}:1"
    assert held_by(env, submission, 2) == {photo_a, proof_1}

    # After submitting, the person changes the form: a new photo, the job's proof replaced.
    with env.client(me.token) as client:
        photo_b = client.profile.confirm_photo({"upload_id": upload(client, "photo", make_photo(413, 579, "PNG"))})[
            "photo"]["photo_key"]
        [proof_2] = job(env, client, experience_id=experience["experience_id"],
                        proof_upload_ids=[upload(client, "proof", make_pdf(2))])["proof_keys"]
    # The certificate issued from the version is valid beyond the version's retention period.
    valid_until = TODAY.replace(year=TODAY.year + RETENTION_YEARS + 2)
    number = env.holds(me, valid_until=valid_until, application_id=application["application_id"])
    assert held_by(env, f"certificate:{number}", 1) == {photo_a}
    assert profile_objects(env, me.person_id) == {photo_x, photo_a, proof_1, photo_b, proof_2}

    now = utcnow()
    profile_sweep(env, now)                                    # within the grace period: nothing goes
    assert profile_objects(env, me.person_id) == {photo_x, photo_a, proof_1, photo_b, proof_2}

    profile_sweep(env, now + GRACE + dt.timedelta(minutes=5))
    assert profile_objects(env, me.person_id) == {photo_a, proof_1, photo_b, proof_2}    # X is gone
    with env.client(me.token) as client:
        refused(lambda: client.profile.get_file_link({"person_id": me.person_id, "file_key": photo_x}),
                "NOT_FOUND", "file_key")
    with env.client(officer_token(env.keys_dir, me.region_code, "county")) as officer:
        for key in (photo_a, proof_1):    # reviewers still open the submitted version's files
            assert officer.profile.get_file_link({"person_id": me.person_id, "file_key": key})["url"]

    # The version's retention period is over: its proof goes; the photo stays for the certificate.
    after_retention = now.replace(year=now.year + RETENTION_YEARS) + dt.timedelta(days=2)
    profile_sweep(env, after_retention)
    assert profile_objects(env, me.person_id) == {photo_a, photo_b, proof_2}
    # The certificate's validity ends: its photo goes too. The current form's files stay.
    profile_sweep(env, dt.datetime.combine(valid_until, dt.time()) + dt.timedelta(days=2))
    assert profile_objects(env, me.person_id) == {photo_b, proof_2}
    with env.client(me.token) as client:
        for gone in (photo_a, proof_1):
            refused(lambda: client.profile.get_file_link({"person_id": me.person_id, "file_key": gone}),
                    "NOT_FOUND", "file_key")

    with session_for(env.profile["DB_URL"]) as session:
        trail = [row for row in profile_audit.for_entity(session, me.person_id)
                 if row["action"] == "profile.file_deleted"]
    assert {row["detail"]["file_key"]: row["detail"]["holds_ended"] for row in trail} == {
        photo_x: [], proof_1: [submission], photo_a: sorted([f"certificate:{number}", submission])}


def test_submitted_course_proofs_are_deleted_when_their_retention_ends(env):
    me = env.person()
    env.holds(me, valid_until=TODAY + dt.timedelta(days=30))
    proof = env.upload_proof(me.token)
    with env.client(me.token) as client:
        client.registration.submit_re_registration({"commitment": True, "offline_courses": [course(proof, 90)]})
    bucket = Bucket(make_s3_client(env.config), env.config["REGISTRATION_S3_BUCKET"])
    engine = engine_for(env.config["DB_URL"])
    now = utcnow()
    day = dt.timedelta(hours=24)

    proofs.sweep_orphans(engine, bucket, day, now=now.replace(year=now.year + RETENTION_YEARS) - dt.timedelta(days=2))
    assert bucket.exists(proof)            # the submitted version is still within its retention period
    proofs.sweep_orphans(engine, bucket, day, now=now.replace(year=now.year + RETENTION_YEARS) + dt.timedelta(days=2))
    assert not bucket.exists(proof)
    with session_for(env.config["DB_URL"]) as session:
        assert session.get(ProofFileRow, proof).status == "deleted"
    [deleted] = [row for row in env.audit_for(proof[-36:]) if row["action"] == "proof.deleted"]
    assert deleted["detail"] == {"reason": "retention_ended"}


def test_holds_are_announced_again_and_legacy_holds_released(env, tmp_path):
    """After the upgrade to file holds (every file snapshotted before holds a "legacy" hold) or a
    restore of profile's database, registration announces its holds again; then the legacy holds
    are released and only what a submitted version or a certificate needs stays held."""
    me = env.person()
    application = submit(env, me.token)
    submission = f"submission:{application['application_id']}:1"
    [photo] = held_by(env, submission, 1)
    with session_for(env.profile["DB_URL"]) as session:     # as migration 0004 leaves a database
        session.execute(delete(FileHold).where(FileHold.holder == submission))
        now = utcnow()
        session.add(FileHold(file_key=photo, holder="legacy", person_id=me.person_id, held_until=None,
                             created_at=now, updated_at=now))
        session.commit()
    registration_config, profile_config = tmp_path / "registration.yaml", tmp_path / "profile.yaml"
    registration_config.write_text(f"DB_URL: {env.config['DB_URL']}\n")
    profile_config.write_text(f"DB_URL: {env.profile['DB_URL']}\n")

    assert registration_cli.main(["--config", str(registration_config), "announce-file-holds"]) == 0
    assert held_by(env, submission, 1) == {photo}
    assert profile_cli.main(["--config", str(profile_config), "release-legacy-holds"]) == 0
    with session_for(env.profile["DB_URL"]) as session:
        holders = set(session.execute(select(FileHold.holder).where(FileHold.file_key == photo)).scalars())
        [released] = [row for row in profile_audit.for_entity(session, "legacy")
                      if row["action"] == "profile.legacy_holds_released"]
    assert holders == {submission} and released["actor"] == "cli" and released["detail"]["released"] >= 1
    [announced] = [row for row in env.audit_for("all") if row["action"] == "files.holds_announced"]
    assert announced["detail"]["versions"] >= 1
