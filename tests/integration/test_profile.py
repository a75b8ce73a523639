"""Profile over a real RabbitMQ, a real S3 server (moto: the same boto3 code path as MinIO) and real
databases (SQLite and PostgreSQL): the 个人信息表 with its photo, work experience, honours, the
directory, the completeness check, sync events, access rules, and that nothing is stored half-way.

Files travel as a browser sends them: ``request_upload`` → HTML-form POST to the presigned URL →
confirm. moto does not enforce the POST policy's size range (MinIO does); the service's own size
check after arrival is what these tests prove.
"""
from __future__ import annotations

import datetime as dt
import io
import json
import urllib.request
import uuid

import pytest
from PIL import Image
from sqlalchemy import func, select

from services.identity import domain as identity_domain
from services.profile import cli, domain
from services.profile.files import FileStore, sweep
from services.profile.models import (
    FileHold,
    HonourRow,
    Profile,
    StoredFile,
    Upload,
    WorkExperienceRow,
    audit,
    outbox,
)
from services.profile.testing import (
    SUNSHINE,
    basic_info,
    credit_code,
    make_pdf,
    make_photo,
    post_file,
    seed_directory,
    upload,
    with_phone_metadata,
)
from swms import images
from swms.auth import Caller
from swms.contracts.events import FilesHeld
from swms.errors import SwmsError
from swms.storage import Bucket, make_s3_client
from tests.support import (
    EventTap,
    dispatch,
    officer_token,
    rpc_client,
    session_for,
    token,
    valid_id,
    wait_until,
    worker_token,
)

pytestmark = pytest.mark.integration

THIS_YEAR = dt.date.today().year
HOLDER = {"name": "李明华", "id_number": valid_id("11010519900307123"), "email": "li@example.cn"}
OTHER = {"name": "欧阳·娜仁", "id_number": valid_id("44030519950612402"), "email": "ouyang@example.cn"}
COUNTY, OTHER_COUNTY = "110105", "440305"
HARMONY = {"credit_code": credit_code("52440305MJ0000002"), "name": "深圳市南山区和谐社会工作服务社",
           "region_code": OTHER_COUNTY}
CLOSED = {"credit_code": credit_code("52110105MJ0000003"), "name": "北京市朝阳区已注销社工事务所",
          "region_code": COUNTY, "status": "注销"}
PROOF_LIMIT = 200 * 1024      # small in tests, to keep oversize uploads quick (default 5 MB)


class Env:
    def __init__(self, identity, profile, orgs, holder, other):
        self.identity, self.profile, self.orgs = identity, profile, orgs
        (self.person, self.token), (self.other_person, self.other_token) = holder, other
        self.s3 = make_s3_client(profile)
        self.bucket = profile["PROFILE_S3_BUCKET"]

    @property
    def sunshine(self) -> str:
        return self.orgs[SUNSHINE["credit_code"]]

    def keys(self, prefix: str = "") -> list[str]:
        listing = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return sorted(item["Key"] for item in listing.get("Contents", []))

    def object(self, key: str) -> bytes:
        return self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def state(self) -> dict:
        """Everything a change could touch: every profile table row, outbox and audit counts, and
        every object in the bucket."""
        def rows(session, model):
            return sorted((json.dumps({c.name: getattr(r, c.name) for c in model.__table__.columns},
                                      default=str, sort_keys=True)
                           for r in session.execute(select(model)).scalars()))
        with session_for(self.profile["DB_URL"]) as session:
            return {
                "profiles": rows(session, Profile), "work": rows(session, WorkExperienceRow),
                "honours": rows(session, HonourRow), "files": rows(session, StoredFile),
                "uploads": rows(session, Upload),
                "outbox": session.execute(select(func.count()).select_from(outbox.table)).scalar_one(),
                "audit": session.execute(select(func.count()).select_from(audit.table)).scalar_one(),
                "objects": self.keys(),
            }

    def audit_rows(self) -> list[dict]:
        with session_for(self.profile["DB_URL"]) as session:
            return audit.for_entity(session, self.person)


def sign_up(amqp_uri, keys_dir, who) -> tuple[str, str]:
    with rpc_client(amqp_uri) as client:
        person_id = client.identity.sign_up({**{k: who[k] for k in ("name", "id_number", "email")},
                                             "password": "Strong-pass-1"})["person_id"]
    return person_id, worker_token(keys_dir, person_id)


@pytest.fixture
def env(start_service, amqp_uri, keys_dir):
    identity = start_service("identity")
    with session_for(identity["DB_URL"]) as session:
        identity_domain.import_passers(session, [
            {"name": HOLDER["name"], "id_number": HOLDER["id_number"], "level": "社会工作师",
             "management_number": f"{THIS_YEAR}11000000123456", "exam_year": str(THIS_YEAR), "province": "11"},
            {"name": OTHER["name"], "id_number": OTHER["id_number"], "level": "助理社会工作师",
             "management_number": f"{THIS_YEAR}44000000654321", "exam_year": str(THIS_YEAR), "province": "44"},
        ])
        session.commit()
    # A bucket of its own: objects of earlier tests cannot hide or fake an orphan here.
    profile = start_service("profile", PROFILE_S3_BUCKET=f"profile-{uuid.uuid4().hex[:12]}",
                            PROOF_MAX_BYTES=PROOF_LIMIT)
    orgs = seed_directory(profile["DB_URL"], [SUNSHINE, HARMONY, CLOSED])
    return Env(identity, profile, orgs, sign_up(amqp_uri, keys_dir, HOLDER), sign_up(amqp_uri, keys_dir, OTHER))


@pytest.fixture
def changes(env, amqp_uri):
    tap = EventTap(amqp_uri, "profile", "profile_changed")
    yield tap
    tap.close()


def experience(env: Env, **overrides) -> dict:
    request = {"unit_category": "社会工作服务机构", "unit_directory_id": env.sunshine, "position": "项目主管",
               "start_date": "2019-03-01", "description": "社区矫正与青少年服务"}
    request.update(overrides)
    return request


# ---- the happy paths ---------------------------------------------------------------------------

def test_basic_info_and_photo_make_the_form_complete(env, amqp_uri, keys_dir, changes):
    with rpc_client(amqp_uri, env.token) as me:
        empty = me.profile.check_completeness({"person_id": env.person})
        assert not empty["complete"]
        assert {"民族", "政治面貌", "学历", "所学专业", "手机号码", "通讯地址", "单位名称", "照片"} <= set(empty["missing"])

        saved = me.profile.save_basic_info(basic_info(env.sunshine, province_code="110000", city_code="110100"))
        # From identity and the ID number, never typed: name, gender, birth date; email from the account.
        assert (saved["name"], saved["gender"], saved["birth_date"]) == ("李明华", "男", "1990-03-07")
        assert saved["id_number_masked"] == "110***********1239"
        assert saved["email"] == HOLDER["email"]
        assert (saved["unit_name"], saved["unit_credit_code"]) == (SUNSHINE["name"], SUNSHINE["credit_code"])
        assert (saved["province_code"], saved["city_code"], saved["region_code"]) == ("110000", "110100", COUNTY)
        assert saved["truth_committed_at"] and saved["revision"] == 1
        only_photo = me.profile.check_completeness({"person_id": env.person})
        assert only_photo["missing"] == ["照片"]
        assert only_photo["items"][0]["field"] == "photo" and only_photo["items"][0]["code"] == "MISSING"

        ticket = me.profile.request_upload({"purpose": "photo"})
        assert ticket["max_bytes"] == 512000 and ticket["method"] == "POST"
        assert ticket["fields"]["key"] == f"incoming/{env.person}/{ticket['upload_id']}"
        first = with_phone_metadata(make_photo(295, 413, "JPEG"))    # GPS position, device, time
        assert post_file(ticket, first, "me.jpg") == 204
        photo = me.profile.confirm_photo({"upload_id": ticket["upload_id"]})
        assert photo["revision"] == 2
        assert (photo["photo"]["content_type"], photo["photo"]["photo_size"]) == ("image/jpeg", "一寸")
        first_key = photo["photo"]["photo_key"]
        assert env.keys() == [first_key]                 # the incoming copy is gone
        stored = env.object(first_key)                   # kept without the phone's metadata
        assert b"PhoneMaker" not in stored and b"taken at home" not in stored
        with Image.open(io.BytesIO(stored)) as image:
            assert image.size == (295, 413) and len(image.getexif()) == 0
        assert me.profile.check_completeness({"person_id": env.person}) == {"complete": True, "missing": [], "items": []}

        # A second photo (PNG, 2-inch) replaces the first; the first was never in a snapshot: deleted.
        second = me.profile.confirm_photo({"upload_id": upload(me, "photo", make_photo(413, 579, "PNG"))})
        second_key = second["photo"]["photo_key"]
        assert second["photo"]["photo_size"] == "二寸" and second["revision"] == 3
        assert env.keys() == [second_key]

        snapshot = me.profile.get_snapshot({"person_id": env.person})
        assert (snapshot["photo_key"], snapshot["revision"]) == (second_key, 3)
        # Once a snapshot (a registration form being submitted) names it, it is kept for the grace
        # period (test_replaced_files_are_deleted_once_nothing_needs_them: and then deleted).
        third = me.profile.confirm_photo({"upload_id": upload(me, "photo", make_photo(300, 410, "JPEG"))})
        assert env.keys() == sorted([second_key, third["photo"]["photo_key"]])

    service = (keys_dir / "certificate.service-token").read_text().strip()
    with rpc_client(amqp_uri, service) as certificate:
        link = certificate.profile.get_photo_link({"person_id": env.person, "photo_key": second_key})
        with urllib.request.urlopen(link["url"], timeout=10) as response:
            assert response.read() == env.object(second_key)
        assert link["content_type"] == "image/png" and link["expires_in_seconds"] == 300
        with pytest.raises(SwmsError) as caught:   # a key of another person is not theirs to ask for
            certificate.profile.get_photo_link({"person_id": env.other_person, "photo_key": second_key})
        assert caught.value.code == "NOT_FOUND"

    events = sorted(changes.collect(4), key=lambda e: e["revision"])
    assert [(e["parts"], e["revision"]) for e in events] == [
        (["basic_info"], 1), (["photo"], 2), (["photo"], 3), (["photo"], 4)]
    assert all(e["person_id"] == env.person for e in events)
    wire = json.dumps(events, ensure_ascii=False)
    assert HOLDER["id_number"] not in wire and "13800138000" not in wire

    trail = env.audit_rows()
    assert [row["action"] for row in trail] == ["profile.basic_info_saved", "profile.photo_added",
                                                 "profile.photo_replaced", "profile.file_deleted",
                                                 "profile.photo_replaced"]
    assert [row["actor"] for row in trail] == [env.person] * 3 + ["housekeeping", env.person]
    assert all(row["at"] for row in trail)
    assert trail[3]["detail"]["file_key"] == first_key and not trail[3]["detail"]["snapshotted"]
    assert "mobile" in trail[0]["detail"]["changed_fields"]
    assert "13800138000" not in json.dumps([row["detail"] for row in trail], ensure_ascii=False)


def test_work_experience_and_honours_sync_into_snapshots(env, amqp_uri, keys_dir, changes):
    with rpc_client(amqp_uri, env.token) as me:
        pdf, scan = make_pdf(2), make_photo(800, 1100, "PNG")
        current = me.profile.save_work_experience(experience(
            env, sanqu_programme=True,
            proof_upload_ids=[upload(me, "proof", pdf, "三区证明.pdf"), upload(me, "proof", scan, "scan.png")]))
        assert current["revision"] == 1
        job = current["experience"]
        assert (job["unit_name"], job["unit_category"], job["end_date"]) == (SUNSHINE["name"], "社会工作服务机构", None)
        assert len(job["proof_keys"]) == 2 and all(k.startswith(f"proofs/{env.person}/") for k in job["proof_keys"])
        assert sorted(env.object(k) for k in job["proof_keys"]) == sorted([pdf, scan])

        past = me.profile.save_work_experience({
            "unit_category": "村(居)委会", "unit_name": "朝阳区某社区居委会", "position": "社区工作者",
            "start_date": "2014-07-01", "end_date": "2019-02-28", "qianshou_programme": True,
            "proof_upload_ids": [upload(me, "proof", make_pdf(), "牵手.pdf")]})["experience"]
        honour = me.profile.save_honour({"title": "优秀社会工作者", "level": "地市", "awarding_body": "北京市民政局",
                                         "awarded_on": "2022-12-01",
                                         "proof_upload_id": upload(me, "proof", make_photo(600, 400, "JPEG"))})
        plain = me.profile.save_honour({"title": "社区服务之星", "level": "街道(乡镇)", "awarding_body": "朝外街道办事处",
                                        "awarded_on": "2021-05-04"})
        assert honour["honour"]["proof_key"] and plain["honour"]["proof_key"] is None

        # Keep one proof of the current job, drop the other: dropped and never in a snapshot, so deleted.
        kept, dropped = job["proof_keys"]
        edited = me.profile.save_work_experience(experience(env, experience_id=job["experience_id"],
                                                            sanqu_programme=True, proof_keys=[kept],
                                                            position="项目总监"))["experience"]
        assert (edited["position"], edited["proof_keys"]) == ("项目总监", [kept])
        assert dropped not in env.keys() and kept in env.keys()

        # A social-work organisation chosen from the directory for a past job may have closed since.
        closed = me.profile.save_work_experience(experience(env, unit_directory_id=env.orgs[CLOSED["credit_code"]],
                                                            start_date="2013-01-01", end_date="2014-06-30"))
        assert closed["experience"]["unit_name"] == CLOSED["name"]
        assert me.profile.delete_work_experience({"experience_id": closed["experience"]["experience_id"]})["revision"] == 7
        assert me.profile.delete_honour({"honour_id": plain["honour"]["honour_id"]})["revision"] == 8

        me.profile.save_basic_info(basic_info(env.sunshine))
        me.profile.confirm_photo({"upload_id": upload(me, "photo", make_photo())})
        snapshot = me.profile.get_snapshot({"person_id": env.person})
        assert snapshot["revision"] == 10
        assert [w["experience_id"] for w in snapshot["work_experiences"]] == [job["experience_id"], past["experience_id"]]
        assert snapshot["work_experiences"][0]["sanqu_programme"] and snapshot["work_experiences"][1]["qianshou_programme"]
        assert [h["title"] for h in snapshot["honours"]] == ["优秀社会工作者"]
        assert snapshot["honours"][0]["level"] == "地市"

        # After the snapshot, a removed proof is kept for the grace period (a submission may name it).
        me.profile.save_work_experience(experience(env, experience_id=job["experience_id"], sanqu_programme=False))
        assert kept in env.keys()

    events = changes.collect(11)
    assert sorted(e["revision"] for e in events) == list(range(1, 12))
    parts = {e["revision"]: e["parts"] for e in events}
    assert parts[1] == parts[2] == parts[5] == parts[6] == parts[7] == ["work_experience"]
    assert parts[3] == parts[4] == parts[8] == ["honours"]
    assert (parts[9], parts[10]) == (["basic_info"], ["photo"])

    # Officers of the person's region read the form and open the proof material; others may not.
    for region, level in ((COUNTY, "county"), ("110100", "city"), ("110000", "province")):
        with rpc_client(amqp_uri, officer_token(keys_dir, region, level)) as officer:
            form = officer.profile.get_profile({"person_id": env.person})
            assert len(form["work_experiences"]) == 2 and form["id_number_masked"] == "110***********1239"
            link = officer.profile.get_file_link({"person_id": env.person, "file_key": kept})
            with urllib.request.urlopen(link["url"], timeout=10) as response:
                assert response.read() in (pdf, scan)
    with rpc_client(amqp_uri, officer_token(keys_dir, OTHER_COUNTY, "county")) as stranger:
        with pytest.raises(SwmsError) as caught:
            stranger.profile.get_file_link({"person_id": env.person, "file_key": kept})
        assert caught.value.code == "FORBIDDEN"

    actions = [row["action"] for row in env.audit_rows()]
    assert actions.count("profile.work_experience_added") == 3 and "profile.honour_deleted" in actions


def test_directory_search_and_csv_import(env, amqp_uri, tmp_path):
    with rpc_client(amqp_uri, env.token) as me:
        by_name = me.profile.search_organisations({"name": "阳光"})
        assert [o["name"] for o in by_name["items"]] == [SUNSHINE["name"]] and by_name["total"] == 1
        assert me.profile.search_organisations({"name": "社工"})["total"] == 0   # 注销的不在目录中
        assert {o["name"] for o in me.profile.search_organisations({"region_code": "110000"})["items"]} == {SUNSHINE["name"]}
        assert me.profile.search_organisations({"region_code": "440300"})["items"][0]["name"] == HARMONY["name"]
        assert me.profile.search_organisations({"name": "社会工作", "region_code": "440305"})["total"] == 1
        assert me.profile.search_organisations({"name": SUNSHINE["credit_code"]})["total"] == 1
        assert me.profile.search_organisations({"name": "100%"})["total"] == 0        # LIKE wildcards are literal
        with pytest.raises(SwmsError) as caught:
            me.profile.search_organisations({})
        assert caught.value.code == "VALIDATION_FAILED"

    good = credit_code("52110105MJ0000004")
    csv_text = ("统一社会信用代码,机构名称,所在地区代码\n"
                f"{good},北京市朝阳区新星社会工作事务所,110105\n"
                f"{good[:-1]}{'0' if good[-1] != '0' else '1'},校验位错误的机构,110105\n"
                f"{SUNSHINE['credit_code']},北京市朝阳区阳光社会工作服务中心（更名）,110105\n"
                f"{good},重复的一行,110105\n"
                f"{credit_code('52990105MJ0000005')},地区错误,990105\n"
                f"{credit_code('91110105MA0000006')},一家企业,110105\n")
    path = tmp_path / "directory.csv"
    path.write_bytes(csv_text.encode("gb18030"))
    config = tmp_path / "profile.yaml"
    config.write_text(f"DB_URL: {env.profile['DB_URL']}\n")
    assert cli.main(["--config", str(config), "import-organisations", str(path)]) == 0
    with rpc_client(amqp_uri, env.token) as me:
        assert me.profile.search_organisations({"name": "新星"})["total"] == 1
        assert me.profile.search_organisations({"name": "更名"})["items"][0]["org_id"] == env.sunshine
    with session_for(env.profile["DB_URL"]) as session:
        [imported] = [row for row in audit.for_entity(session, "organisations") if row["actor"] == "cli"]
    assert imported["detail"] == {"added": 1, "updated": 1, "unchanged": 0, "rejected": 4}


def test_concurrent_changes_get_distinct_revisions(env, amqp_uri, changes):
    with rpc_client(amqp_uri, env.token) as me:
        me.profile.save_basic_info(basic_info(env.sunshine))
        replies = [me.profile.save_honour.call_async({"title": f"荣誉{i}", "level": "省", "awarding_body": "省民政厅",
                                                      "awarded_on": "2020-01-0" + str(i + 1)}) for i in range(6)]
        revisions = sorted(reply.result()["revision"] for reply in replies)
    assert revisions == [2, 3, 4, 5, 6, 7]
    assert sorted(e["revision"] for e in changes.collect(7)) == list(range(1, 8))


def test_housekeeping_deletes_what_was_never_confirmed(env, amqp_uri):
    with rpc_client(amqp_uri, env.token) as me:
        forgotten = me.profile.request_upload({"purpose": "photo"})
        assert post_file(forgotten, make_photo(), "me.jpg") == 204
        used = upload(me, "photo", make_photo())
        photo_key = me.profile.confirm_photo({"upload_id": used})["photo"]["photo_key"]
        # The person posts again with the used ticket (still valid): the checked copy is unaffected.
        with session_for(env.profile["DB_URL"]) as session:
            used_key = session.get(Upload, used).object_key
        env.s3.put_object(Bucket=env.bucket, Key=used_key, Body=make_pdf())
    assert sorted(env.keys("incoming/")) == sorted([forgotten["fields"]["key"], used_key])
    # what was checked (stored without metadata), not what was posted later
    assert env.object(photo_key) == images.without_metadata(make_photo(), images.JPEG)
    store = FileStore(Bucket(env.s3, env.bucket))
    from sqlalchemy.orm import sessionmaker

    from swms.db import engine_for
    sessions = sessionmaker(engine_for(env.profile["DB_URL"]), expire_on_commit=False)
    # A checked copy whose form transaction never committed (the process died in between): its key
    # is on the ticket, so housekeeping finds it although no form entry names it.
    with rpc_client(amqp_uri, env.token) as me:
        crashed = _ticket(me, "photo", make_photo())
    with session_for(env.profile["DB_URL"]) as session:
        ticket = session.get(Upload, crashed)
        ticket.staged_key = f"photos/{env.person}/{uuid.uuid4()}.jpg"
        staged_key = ticket.staged_key
        session.commit()
    env.s3.put_object(Bucket=env.bucket, Key=staged_key, Body=make_photo())
    assert sweep(sessions, store) == 0                     # nothing is due yet
    later = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(hours=1)
    assert sweep(sessions, store, now=later) == 3
    assert env.keys() == [photo_key]
    with session_for(env.profile["DB_URL"]) as session:
        assert session.execute(select(func.count()).select_from(Upload)).scalar_one() == 0


def _sessions(env: Env):
    from sqlalchemy.orm import sessionmaker

    from swms.db import engine_for
    return sessionmaker(engine_for(env.profile["DB_URL"]), expire_on_commit=False)


def test_replaced_files_are_deleted_once_nothing_needs_them(env, amqp_uri, keys_dir):
    """The retention rule (docs/operations.md, 文件保留): a file is kept while the form has it,
    while a hold lasts (a submitted application version, an issued certificate) and, if a snapshot
    named it, for the grace period after it left the form. Then housekeeping deletes it (object and
    row, audited) and no link is given for it any more."""
    with rpc_client(amqp_uri, env.token) as me:
        me.profile.save_basic_info(basic_info(env.sunshine))
        photo_a = me.profile.confirm_photo({"upload_id": upload(me, "photo", make_photo())})["photo"]["photo_key"]
        job = me.profile.save_work_experience(experience(
            env, sanqu_programme=True, proof_upload_ids=[upload(me, "proof", make_pdf(), "三区.pdf")]))["experience"]
        [proof_1] = job["proof_keys"]
        honour = me.profile.save_honour({"title": "优秀社会工作者", "level": "地市", "awarding_body": "北京市民政局",
                                         "awarded_on": "2022-12-01",
                                         "proof_upload_id": upload(me, "proof", make_pdf())})["honour"]
        honour_proof_1 = honour["proof_key"]
        # Registration copies the form after every change (a draft, a preview): that pins nothing.
        me.profile.get_snapshot({"person_id": env.person})
        photo_b = me.profile.confirm_photo({"upload_id": upload(me, "photo", make_photo(413, 579, "PNG"))})["photo"]["photo_key"]
        proof_2 = me.profile.save_work_experience(experience(
            env, experience_id=job["experience_id"], sanqu_programme=True,
            proof_upload_ids=[upload(me, "proof", make_pdf(2))]))["experience"]["proof_keys"][0]
        honour_proof_2 = me.profile.save_honour({
            "honour_id": honour["honour_id"], "title": "优秀社会工作者", "level": "地市", "awarding_body": "北京市民政局",
            "awarded_on": "2022-12-01", "proof_upload_id": upload(me, "proof", make_pdf())})["honour"]["proof_key"]

    # A submitted application version named the first honour proof: registration holds it for a year.
    held_until = dt.datetime.now(dt.UTC) + dt.timedelta(days=365)
    holder = f"submission:{uuid.uuid4()}:1"
    dispatch(amqp_uri, FilesHeld(person_id=env.person, holder=holder, file_keys=[honour_proof_1],
                                 held_until=held_until))
    with session_for(env.profile["DB_URL"]) as session:
        def recorded():
            session.rollback()  # a new snapshot each poll
            return session.get(FileHold, (honour_proof_1, holder))
        wait_until(recorded, timeout=60, what="the hold recorded")

    replaced = [photo_a, proof_1, honour_proof_1]
    current = [photo_b, proof_2, honour_proof_2]
    store, sessions = FileStore(Bucket(env.s3, env.bucket)), _sessions(env)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    sweep(sessions, store, now=now)                       # within the grace period: all kept
    assert set(replaced + current) <= set(env.keys())

    after_grace = now + dt.timedelta(hours=48, minutes=1)
    sweep(sessions, store, now=after_grace)
    assert env.keys() == sorted(current + [honour_proof_1])   # the bucket: A and the old proof are gone
    with rpc_client(amqp_uri, env.token) as me:
        for gone in (photo_a, proof_1):
            with pytest.raises(SwmsError) as caught:
                me.profile.get_file_link({"person_id": env.person, "file_key": gone})
            assert (caught.value.code, caught.value.field) == ("NOT_FOUND", "file_key")
        link = me.profile.get_file_link({"person_id": env.person, "file_key": honour_proof_1})   # held
        with urllib.request.urlopen(link["url"], timeout=10) as response:
            assert response.read().startswith(b"%PDF")
    service = (keys_dir / "certificate.service-token").read_text().strip()
    with rpc_client(amqp_uri, service) as certificate, pytest.raises(SwmsError) as caught:
        certificate.profile.get_photo_link({"person_id": env.person, "photo_key": photo_a})
    assert caught.value.code == "NOT_FOUND"

    # The hold ends: the file goes at the next pass.
    sweep(sessions, store, now=held_until.replace(tzinfo=None) + dt.timedelta(minutes=1))
    assert env.keys() == sorted(current)
    with session_for(env.profile["DB_URL"]) as session:
        assert session.execute(select(func.count()).select_from(FileHold)).scalar_one() == 0
        assert {row.file_key for row in session.execute(select(StoredFile)).scalars()} == set(current)

    deleted = {row["detail"]["file_key"]: row for row in env.audit_rows() if row["action"] == "profile.file_deleted"}
    assert set(deleted) == set(replaced)
    assert all(row["actor"] == "housekeeping" and row["detail"]["snapshotted"] for row in deleted.values())
    assert deleted[honour_proof_1]["detail"]["holds_ended"] == [holder]
    assert (deleted[photo_a]["detail"]["kind"], deleted[photo_a]["detail"]["holds_ended"]) == ("photo", [])
    [held] = [row for row in env.audit_rows() if row["action"] == "profile.files_held"]
    assert (held["actor"], held["detail"]["holder"], held["detail"]["file_keys"]) == (
        "registration", holder, [honour_proof_1])


def test_a_hold_and_a_deletion_never_cross(env, amqp_uri):
    """A hold that comes for a file being deleted finds it gone (reported, not recorded); a file
    that got a hold is not deleted by a pass that started before the hold."""
    with rpc_client(amqp_uri, env.token) as me:
        me.profile.save_basic_info(basic_info(env.sunshine))
        old = me.profile.confirm_photo({"upload_id": upload(me, "photo", make_photo())})["photo"]["photo_key"]
        me.profile.get_snapshot({"person_id": env.person})
        me.profile.confirm_photo({"upload_id": upload(me, "photo", make_photo(413, 579, "PNG"))})
    sessions = _sessions(env)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    after_grace = now + dt.timedelta(hours=49)
    with sessions() as session:
        assert domain.unneeded_files(session, after_grace, dt.timedelta(hours=48), 10) == [old]
    # The pass listed it; before it claims the file, a submission's hold is recorded: the claim
    # re-checks in its own transaction and leaves the file alone.
    with sessions.begin() as session:
        assert domain.hold_files(session, env.person, "submission:a:1", [old], after_grace + dt.timedelta(days=1),
                                 "registration") == []
    with sessions() as session:
        assert not domain.claim_for_deletion(session, old, after_grace, dt.timedelta(hours=48))
        session.rollback()
    assert old in env.keys()
    # Once claimed, a hold finds the file gone.
    later = after_grace + dt.timedelta(days=2)
    with sessions() as session:
        assert domain.claim_for_deletion(session, old, later, dt.timedelta(hours=48))
        session.commit()
    with sessions.begin() as session:
        assert domain.hold_files(session, env.person, "certificate:1", [old], None, "registration") == [old]
        assert session.get(FileHold, (old, "certificate:1")) is None
    with rpc_client(amqp_uri, env.token) as me, pytest.raises(SwmsError) as caught:
        me.profile.get_file_link({"person_id": env.person, "file_key": old})    # being deleted: no link
    assert caught.value.code == "NOT_FOUND"
    sweep(sessions, FileStore(Bucket(env.s3, env.bucket)), now=later)    # finishes the claimed deletion
    assert old not in env.keys()
    with sessions() as session:
        assert session.get(StoredFile, old) is None


# ---- bad input: each a clear error, nothing stored, no orphan files ------------------------------

def _ticket(me, purpose: str, data: bytes | None) -> str:
    ticket = me.profile.request_upload({"purpose": purpose})
    if data is not None:
        assert post_file(ticket, data) == 204
    return ticket["upload_id"]


def _truncated_jpeg() -> bytes:
    data = make_photo()
    return data[: len(data) * 2 // 3]


def _corrupt_png() -> bytes:
    data = bytearray(make_photo(295, 413, "PNG"))
    at = data.index(b"IDAT") + 20
    data[at] ^= 0xFF
    return bytes(data)


def _padded(data: bytes, size: int) -> bytes:
    return data + b"\0" * (size - len(data))


PHOTO_CASES = [
    # (name, file content or None for "never uploaded", code)
    ("600 KB photo", lambda: _padded(make_photo(), 600 * 1024), "FILE_TOO_LARGE"),
    ("PDF renamed .jpg", lambda: make_pdf(), "FILE_TYPE_NOT_ALLOWED"),
    ("truncated JPEG", _truncated_jpeg, "FILE_DAMAGED"),
    ("PNG with a broken chunk", _corrupt_png, "FILE_DAMAGED"),
    ("wrong dimensions 300×300", lambda: make_photo(300, 300), "PHOTO_DIMENSIONS_INVALID"),
    ("landscape 413×295", lambda: make_photo(413, 295), "PHOTO_DIMENSIONS_INVALID"),
    ("just outside the tolerance 295×440", lambda: make_photo(295, 440), "PHOTO_DIMENSIONS_INVALID"),
    ("huge image header (decompression bomb)", lambda: make_photo(4000, 5600, "PNG"), "PHOTO_DIMENSIONS_INVALID"),
    ("GIF", lambda: b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "FILE_TYPE_NOT_ALLOWED"),
    ("text file", lambda: "这不是照片".encode(), "FILE_TYPE_NOT_ALLOWED"),
]


def test_bad_photos_are_refused_and_leave_nothing(env, amqp_uri, subtests):
    with rpc_client(amqp_uri, env.token) as me:
        me.profile.save_basic_info(basic_info(env.sunshine))
        before = env.state()
        for name, content, code in PHOTO_CASES:
            with subtests.test(name):
                upload_id = _ticket(me, "photo", content())
                with pytest.raises(SwmsError) as caught:
                    me.profile.confirm_photo({"upload_id": upload_id})
                assert (caught.value.code, caught.value.field) == (code, "upload_id"), caught.value
                assert caught.value.message
                assert env.state() == before      # the file and its ticket are gone too

        with subtests.test("confirm before uploading"):
            upload_id = _ticket(me, "photo", None)
            with pytest.raises(SwmsError) as caught:
                me.profile.confirm_photo({"upload_id": upload_id})
            assert (caught.value.code, caught.value.field) == ("UPLOAD_MISSING", "upload_id")
            after = env.state()
            assert {k: v for k, v in after.items() if k != "uploads"} == {k: v for k, v in before.items() if k != "uploads"}
        with subtests.test("unknown upload"):
            with pytest.raises(SwmsError) as caught:
                me.profile.confirm_photo({"upload_id": str(uuid.uuid4())})
            assert (caught.value.code, caught.value.field) == ("UPLOAD_NOT_FOUND", "upload_id")
        with subtests.test("a proof ticket used as a photo"):
            upload_id = _ticket(me, "proof", make_photo())
            with pytest.raises(SwmsError) as caught:
                me.profile.confirm_photo({"upload_id": upload_id})
            assert caught.value.code == "UPLOAD_NOT_FOUND"
        with subtests.test("a ticket used twice"):
            upload_id = _ticket(me, "photo", make_photo())
            me.profile.confirm_photo({"upload_id": upload_id})
            settled = env.state()
            with pytest.raises(SwmsError) as caught:
                me.profile.confirm_photo({"upload_id": upload_id})
            assert caught.value.code == "UPLOAD_NOT_FOUND"
            assert env.state() == settled
        with subtests.test("unknown purpose"):
            with pytest.raises(SwmsError) as caught:
                me.profile.request_upload({"purpose": "video"})
            assert (caught.value.code, caught.value.field) == ("VALIDATION_FAILED", "purpose")
        mine = _ticket(me, "photo", make_photo())
    with rpc_client(amqp_uri, env.other_token) as other, subtests.test("another person's ticket"):
        with pytest.raises(SwmsError) as caught:
            other.profile.confirm_photo({"upload_id": mine})
        assert caught.value.code == "UPLOAD_NOT_FOUND"


def _basic_cases(env: Env) -> list[tuple[str, dict, str, str]]:
    good = basic_info(env.sunshine)
    typed = {k: v for k, v in good.items() if k != "unit_directory_id"}
    return [
        ("unknown unit category", dict(good, unit_category="个体户"), "VALIDATION_FAILED", "unit_category"),
        ("typed unit for 社会工作服务机构", dict(typed, unit_name="某某社工中心"), "UNIT_MUST_BE_CHOSEN", "unit_name"),
        ("社会工作服务机构 without a unit", typed, "UNIT_MUST_BE_CHOSEN", "unit_directory_id"),
        ("unit id not in the directory", dict(good, unit_directory_id=str(uuid.uuid4())),
         "UNIT_NOT_IN_DIRECTORY", "unit_directory_id"),
        ("deregistered organisation", dict(good, unit_directory_id=env.orgs[CLOSED["credit_code"]]),
         "UNIT_NOT_IN_DIRECTORY", "unit_directory_id"),
        ("directory unit with another typed name", dict(good, unit_name="别的名字"), "UNIT_MUST_BE_CHOSEN", "unit_name"),
        ("directory id with category 企业", dict(good, unit_category="企业", unit_name="某公司"),
         "VALIDATION_FAILED", "unit_directory_id"),
        ("a registered 社工机构 typed under 其他", dict(typed, unit_category="其他", unit_name=SUNSHINE["name"]),
         "UNIT_MUST_BE_CHOSEN", "unit_name"),
        ("typed category without a name", dict(typed, unit_category="企业"), "VALIDATION_FAILED", "unit_name"),
        ("unknown ethnicity", dict(good, ethnicity="火星族"), "VALIDATION_FAILED", "ethnicity"),
        ("unknown political status", dict(good, political_status="党员"), "VALIDATION_FAILED", "political_status"),
        ("unknown education", dict(good, education="幼儿园"), "VALIDATION_FAILED", "education"),
        ("mobile number too short", dict(good, mobile="1380013800"), "VALIDATION_FAILED", "mobile"),
        ("bad email", dict(good, email="li-at-example"), "VALIDATION_FAILED", "email"),
        ("province that does not exist", dict(good, region_code="990105"), "REGION_CODE_INVALID", "region_code"),
        ("province code as county", dict(good, region_code="110000"), "REGION_CODE_INVALID", "region_code"),
        ("city code disagrees", dict(good, city_code="110200"), "REGION_CODE_INVALID", "city_code"),
        ("truth commitment not given", dict(good, truth_commitment=False), "COMMITMENT_REQUIRED", "truth_commitment"),
        ("major missing", {k: v for k, v in good.items() if k != "major"}, "VALIDATION_FAILED", "major"),
        ("markup in the address", dict(good, address="<script>alert(1)</script>"), "VALIDATION_FAILED", "address"),
        ("name sent (it comes from identity)", dict(good, name="王五"), "VALIDATION_FAILED", "name"),
    ]


def test_bad_basic_info_is_refused(env, amqp_uri, subtests):
    with rpc_client(amqp_uri, env.token) as me:
        me.profile.save_basic_info(basic_info(env.sunshine))
        before = env.state()
        for name, request, code, field in _basic_cases(env):
            with subtests.test(name):
                with pytest.raises(SwmsError) as caught:
                    me.profile.save_basic_info(request)
                assert (caught.value.code, caught.value.field) == (code, field), caught.value
                assert caught.value.message
                assert env.state() == before


def test_bad_work_experience_and_honours_are_refused(env, amqp_uri, subtests):
    tomorrow = (dt.date.today() + dt.timedelta(days=1)).isoformat()
    with rpc_client(amqp_uri, env.other_token) as other:
        theirs = other.profile.save_work_experience(experience(env))["experience"]["experience_id"]
        their_honour = other.profile.save_honour({"title": "先进个人", "level": "区(县)", "awarding_body": "南山区民政局",
                                                  "awarded_on": "2023-03-01"})["honour"]["honour_id"]
    with rpc_client(amqp_uri, env.token) as me:
        mine = me.profile.save_work_experience(experience(env, qianshou_programme=True,
                                                          proof_upload_ids=[upload(me, "proof", make_pdf())]))
        my_proof = mine["experience"]["proof_keys"][0]
        second = me.profile.save_work_experience(experience(env, start_date="2015-01-01", end_date="2018-12-31"))
        baseline = {"state": env.state()}

        def refused(name, call, code, field, files=None):
            with subtests.test(name):
                with pytest.raises(SwmsError) as caught:
                    call()
                assert (caught.value.code, caught.value.field) == (code, field), caught.value
                assert caught.value.message
                after, before = env.state(), baseline["state"]
                if files == "kept":      # a valid upload of the request stays usable until its ticket expires
                    after = {k: v for k, v in after.items() if k not in ("uploads", "objects")} | {
                        "objects": [k for k in after["objects"] if not k.startswith("incoming/")]}
                    expected = {k: v for k, v in before.items() if k not in ("uploads", "objects")} | {
                        "objects": [k for k in before["objects"] if not k.startswith("incoming/")]}
                    assert after == expected
                    baseline["state"] = env.state()
                else:
                    assert after == before

        save = me.profile.save_work_experience
        refused("end date before start", lambda: save(experience(env, start_date="2020-05-01", end_date="2020-04-30")),
                "DATE_INVALID", "end_date")
        refused("start date in the future", lambda: save(experience(env, start_date=tomorrow)), "DATE_INVALID", "start_date")
        refused("end date in the future", lambda: save(experience(env, end_date=tomorrow)), "DATE_INVALID", "end_date")
        refused("start before working age", lambda: save(experience(env, start_date="2005-01-01")),
                "DATE_INVALID", "start_date")
        refused("not a date", lambda: save(experience(env, start_date="2020-13-01")), "DATE_INVALID", "start_date")
        refused("三区计划 = 是 without proof", lambda: save(experience(env, sanqu_programme=True)),
                "PROOF_REQUIRED", "proof_upload_ids")
        refused("牵手计划 = 是 without proof", lambda: save(experience(env, qianshou_programme=True)),
                "PROOF_REQUIRED", "proof_upload_ids")
        refused("typed unit for 社会工作服务机构",
                lambda: save(experience(env, unit_directory_id=None, unit_name="某某社工中心")),
                "UNIT_MUST_BE_CHOSEN", "unit_name")
        refused("unknown unit category", lambda: save(experience(env, unit_category="外企")),
                "VALIDATION_FAILED", "unit_category")
        refused("position missing", lambda: save({k: v for k, v in experience(env).items() if k != "position"}),
                "VALIDATION_FAILED", "position")
        refused("editing another person's experience", lambda: save(experience(env, experience_id=theirs)),
                "NOT_FOUND", "experience_id")
        refused("deleting another person's experience",
                lambda: me.profile.delete_work_experience({"experience_id": theirs}), "NOT_FOUND", "experience_id")
        refused("keeping a proof of another experience",
                lambda: save(experience(env, experience_id=second["experience"]["experience_id"],
                                        sanqu_programme=True, proof_keys=[my_proof])), "NOT_FOUND", "proof_keys")
        refused("proof without a programme", lambda: save(experience(env, proof_upload_ids=[_ticket(me, "proof", make_pdf())])),
                "VALIDATION_FAILED", "proof_upload_ids", files="kept")
        refused("proof: a text file renamed .pdf",
                lambda: save(experience(env, sanqu_programme=True, proof_upload_ids=[_ticket(me, "proof", b"hello")])),
                "FILE_TYPE_NOT_ALLOWED", "proof_upload_ids.0")
        refused("proof: a truncated PDF",
                lambda: save(experience(env, sanqu_programme=True,
                                        proof_upload_ids=[_ticket(me, "proof", make_pdf()[:-40])])),
                "FILE_DAMAGED", "proof_upload_ids.0")
        refused("proof: too large",
                lambda: save(experience(env, sanqu_programme=True,
                                        proof_upload_ids=[_ticket(me, "proof", _padded(make_pdf(), PROOF_LIMIT + 1))])),
                "FILE_TOO_LARGE", "proof_upload_ids.0")
        refused("proof: a good file and a bad one (the good one's copy is removed too)",
                lambda: save(experience(env, sanqu_programme=True, proof_upload_ids=[
                    _ticket(me, "proof", make_pdf()), _ticket(me, "proof", make_photo()[:500])])),
                "FILE_DAMAGED", "proof_upload_ids.1", files="kept")
        refused("proof: a photo ticket", lambda: save(experience(env, sanqu_programme=True,
                                                                 proof_upload_ids=[_ticket(me, "photo", make_pdf())])),
                "UPLOAD_NOT_FOUND", "proof_upload_ids.0", files="kept")

        honour = me.profile.save_honour
        good = {"title": "优秀社工", "level": "省", "awarding_body": "北京市民政局", "awarded_on": "2022-01-01"}
        refused("honour level outside the list", lambda: honour(dict(good, level="国家级")), "VALIDATION_FAILED", "level")
        refused("honour date in the future", lambda: honour(dict(good, awarded_on=tomorrow)), "DATE_INVALID", "awarded_on")
        refused("honour before birth", lambda: honour(dict(good, awarded_on="1980-01-01")), "DATE_INVALID", "awarded_on")
        refused("honour without an awarding body", lambda: honour(dict(good, awarding_body="")),
                "VALIDATION_FAILED", "awarding_body")
        refused("honour proof: a truncated JPEG",
                lambda: honour(dict(good, proof_upload_id=_ticket(me, "proof", _truncated_jpeg()))),
                "FILE_DAMAGED", "proof_upload_id")
        refused("honour: keep a proof that is not its own", lambda: honour(dict(good, proof_key=my_proof)),
                "NOT_FOUND", "proof_key")
        refused("editing another person's honour", lambda: honour(dict(good, honour_id=their_honour)),
                "NOT_FOUND", "honour_id")
        refused("deleting another person's honour", lambda: me.profile.delete_honour({"honour_id": their_honour}),
                "NOT_FOUND", "honour_id")


def test_access_is_the_person_and_their_region(env, amqp_uri, keys_dir, subtests):
    with rpc_client(amqp_uri, env.token) as me:
        me.profile.save_basic_info(basic_info(env.sunshine))
    before = env.state()
    ref = {"person_id": env.person}
    cases = [
        ("a county officer of another region reads the form", officer_token(keys_dir, OTHER_COUNTY, "county"),
         "get_profile", ref, "FORBIDDEN"),
        ("a city officer of another city reads the form", officer_token(keys_dir, "110200", "city"),
         "check_completeness", ref, "FORBIDDEN"),
        ("another social worker reads the form", env.other_token, "get_profile", ref, "FORBIDDEN"),
        ("an officer edits the form", officer_token(keys_dir, COUNTY, "county"), "save_basic_info",
         basic_info(env.sunshine), "FORBIDDEN"),
        ("an officer takes the snapshot", officer_token(keys_dir, COUNTY, "county"), "get_snapshot", ref, "FORBIDDEN"),
        ("another social worker takes the snapshot", env.other_token, "get_snapshot", ref, "FORBIDDEN"),
        ("a social worker asks for a photo link", env.token, "get_photo_link",
         {"person_id": env.person, "photo_key": "photos/x.jpg"}, "FORBIDDEN"),
        ("no token", None, "get_profile", ref, "AUTH_REQUIRED"),
        ("an expired token", token(keys_dir, Caller(subject=env.person, role="social_worker"),
                                   dt.timedelta(seconds=-1)), "get_profile", ref, "TOKEN_EXPIRED"),
    ]
    for name, auth, method, payload, code in cases:
        with subtests.test(name):
            with rpc_client(amqp_uri, auth) as client, pytest.raises(SwmsError) as caught:
                getattr(client.profile, method)(payload)
            assert caught.value.code == code, caught.value
            assert env.state() == before
    with rpc_client(amqp_uri, officer_token(keys_dir, COUNTY, "county")) as officer:
        assert officer.profile.check_completeness(ref)["missing"] == ["照片"]
