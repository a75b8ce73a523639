"""Registration over a real RabbitMQ, on SQLite and on PostgreSQL: first registration, drafts and
their sync with the profile, review outcomes, privacy.

Identity, profile and registration run; review and certificate do not: their outcome events are
published the way they publish them. The helpers here are shared by the other
test_registration_*.py modules.
"""
from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import eventlet
import pytest
from sqlalchemy import create_engine, func, select, text

from nameko.standalone.events import event_dispatcher

from services.identity import domain as identity_domain
from services.profile.testing import (
    SUNSHINE,
    basic_info,
    credit_code,
    make_pdf,
    make_photo,
    post_file,
    seed_directory,
    upload,
)
from services.registration import ce_import
from services.registration.models import (
    Application,
    CeRecord,
    HeldCertificate,
    LevelRaise,
    ProfileCopy,
    ProofFileRow,
    StatusChange,
    Submission,
    audit,
    inbox,
    outbox,
)
from swms.auth import ADMIN, Caller
from swms.contracts.common import ApplicationKind
from swms.contracts.events import (
    ApplicationApproved,
    ApplicationRejected,
    ApplicationReturned,
    CertificateIssued,
    PasserLevelRaised,
)
from swms.contracts.registration import ContinuingEducationRecorded
from swms.contracts.review import Stage
from swms.errors import SwmsError
from swms.config import load_config, service_config_path
from swms.migrations import upgrade
from tests.conftest import PG_ADMIN_URL
from tests.support import (
    EventTap,
    token,
    dispatch,
    officer_token,
    results_or_codes,
    rpc_client,
    service_class,
    session_for,
    valid_id,
    wait_until,
    worker_token,
)

pytestmark = pytest.mark.integration

TODAY = dt.date.today()
THIS_YEAR = TODAY.year
PASSWORD = "Strong-pass-1"
COUNTY, GUANGDONG_COUNTY = "110105", "440305"
PROOF_LIMIT = 64 * 1024     # small in tests, so an oversize proof is quick to send (default 5 MB)
# A policy whose Guangdong entry keeps first registration open two years after the exam.
TEST_POLICY = """
default:
  first_registration_window_years: 1
  re_registration_window_months: 3
  continuing_education_hours: {助理社会工作师: 72, 社会工作师: 90, 高级社会工作师: 90}
  registration_validity_years: 3
"44":
  first_registration_window_years: 2
"""
HARMONY = {"credit_code": credit_code("52440305MJ0000002"), "name": "深圳市南山区和谐社会工作服务社",
           "region_code": GUANGDONG_COUNTY}
_SURNAMES, _GIVEN = "李王张刘陈杨赵黄周吴徐孙", "明华静丽强军敏伟芳娜秀英"
_serial = itertools.count(1)


@dataclass
class Person:
    person_id: str
    token: str
    name: str
    id_number: str
    level: str
    region_code: str


class Env:
    """identity, profile and registration, started once per module and database backend; each
    test makes its own people. What the tests read back comes from registration's database."""

    def __init__(self, amqp_uri, keys_dir, identity, profile, registration, orgs):
        self.amqp_uri, self.keys_dir = amqp_uri, keys_dir
        self.identity, self.profile, self.config, self.orgs = identity, profile, registration, orgs

    def client(self, token: str | None):
        return rpc_client(self.amqp_uri, token)

    def person(self, level: str = "社会工作师", exam_year: int = THIS_YEAR, region_code: str = COUNTY,
               profile: bool = True) -> Person:
        """A passer in the registry who signed up; with ``profile`` the 个人信息表 is complete."""
        n = next(_serial)
        first17 = f"{region_code}19{70 + n % 30:02d}{1 + n % 12:02d}{1 + n % 28:02d}{n % 1000:03d}"
        id_number = valid_id(first17)
        name = _SURNAMES[n % len(_SURNAMES)] + _GIVEN[(n // 3) % len(_GIVEN)] + _GIVEN[(n // 7) % len(_GIVEN)]
        with session_for(self.identity["DB_URL"]) as session:
            report = identity_domain.import_passers(session, [{
                "name": name, "id_number": id_number, "level": level,
                "management_number": f"{exam_year}{region_code[:2]}{n:012d}", "exam_year": str(exam_year),
                "province": region_code[:2]}])
            session.commit()
        assert report.added == 1, report
        with rpc_client(self.amqp_uri) as client:
            person_id = client.identity.sign_up({"name": name, "id_number": id_number,
                                                 "email": f"p{n}-{uuid.uuid4().hex[:6]}@example.cn",
                                                 "password": PASSWORD})["person_id"]
        token = worker_token(self.keys_dir, person_id)
        if profile:
            org = self.orgs[HARMONY["credit_code"] if region_code[:2] == "44" else SUNSHINE["credit_code"]]
            with self.client(token) as me:
                me.profile.save_basic_info(basic_info(org, region_code=region_code))
                me.profile.confirm_photo({"upload_id": upload(me, "photo", make_photo(), "photo.jpg")})
            # Registration takes each profile_changed (it keeps a copy of the form): settle first,
            # so that what a test measures is its own doing.
            self.wait_profile_changes_handled(person_id)
        return Person(person_id, token, name, id_number, level, region_code)

    def service_token(self, service: str = "certificate") -> str:
        return (self.keys_dir / f"{service}.service-token").read_text().strip()

    def state(self, person_id: str | None = None) -> dict:
        """Everything a request could change in registration: each table's rows (of one person,
        if given), and the outbox and audit counts."""
        def rows(session, model):
            query = select(model)
            if person_id is not None and hasattr(model, "person_id"):
                query = query.where(model.person_id == person_id)
            return sorted(json.dumps({c.name: getattr(r, c.name) for c in model.__table__.columns},
                                     default=str, sort_keys=True) for r in session.execute(query).scalars())
        with session_for(self.config["DB_URL"]) as session:
            return {"applications": rows(session, Application), "history": rows(session, StatusChange),
                    "submissions": rows(session, Submission), "certificates": rows(session, HeldCertificate),
                    "raises": rows(session, LevelRaise), "ce": rows(session, CeRecord),
                    "proofs": rows(session, ProofFileRow), "copies": rows(session, ProfileCopy),
                    "outbox": session.execute(select(func.count()).select_from(outbox.table)).scalar_one(),
                    "audit": session.execute(select(func.count()).select_from(audit.table)).scalar_one()}

    def counts(self, person_id: str | None = None) -> dict[str, int]:
        return {name: (len(value) if isinstance(value, list) else value)
                for name, value in self.state(person_id).items()}

    def wait_profile_changes_handled(self, person_id: str) -> None:
        """Until registration has taken every profile_changed the profile published for this person."""
        from services.profile.models import outbox as profile_outbox
        with session_for(self.profile["DB_URL"]) as session:
            def published():
                session.rollback()  # end the read transaction: a new snapshot each poll
                rows = session.execute(select(profile_outbox.table.c.event_id, profile_outbox.table.c.published_at,
                                              profile_outbox.table.c.payload)
                                       .where(profile_outbox.table.c.event_type == "profile_changed")).all()
                mine = [r for r in rows if json.loads(r.payload)["person_id"] == person_id]
                return [r.event_id for r in mine] if mine and all(r.published_at for r in mine) else None
            event_ids = wait_until(published, timeout=60, what="profile_changed published")
        with session_for(self.config["DB_URL"]) as session:
            def handled():
                session.rollback()  # end the read transaction: a new snapshot each poll
                return session.execute(select(func.count()).select_from(inbox.table).where(
                    inbox.table.c.event_id.in_(event_ids))).scalar_one() == len(event_ids)
            wait_until(handled, timeout=60, what="profile_changed handled by registration")

    def audit_for(self, entity_id: str) -> list[dict]:
        with session_for(self.config["DB_URL"]) as session:
            return audit.for_entity(session, entity_id)

    def wait_for_status(self, token: str, application_id: str, status: str) -> dict:
        with self.client(token) as client:
            def reached():
                application = client.registration.get_application({"application_id": application_id})
                return application if application["status"] == status else None
            return wait_until(reached, timeout=60, what=f"status {status}")

    def holds(self, person: Person, valid_until: dt.date, level: str | None = None,
              number: str | None = None, application_id: str | None = None) -> str:
        """The certificate service announces a certificate for this person (as it does on issue);
        returns its number once registration has recorded it."""
        number = number or f"11{THIS_YEAR}2{next(_serial):06d}"
        event = CertificateIssued(
            certificate_number=number, application_id=application_id or str(uuid.uuid4()),
            person_id=person.person_id, holder_name_masked=person.name[0] + "**",
            id_number_masked=person.id_number[:3] + "*" * 11 + person.id_number[-4:], level=level or person.level,
            authority="北京市朝阳区民政局", region_code=person.region_code,
            valid_from=valid_until.replace(year=valid_until.year - 3) + dt.timedelta(days=1),
            valid_until=valid_until, issued_at=dt.datetime.now(dt.UTC), sha256="0" * 64)
        dispatch(self.amqp_uri, event)
        with session_for(self.config["DB_URL"]) as session:
            def recorded():
                session.rollback()  # end the read transaction: a new snapshot each poll
                return session.get(HeldCertificate, number)
            wait_until(recorded, timeout=60, what=f"certificate {number} recorded")
        return number

    def upload_proof(self, token: str, data: bytes | None = None, content_type: str = "application/pdf",
                     confirm: bool = True) -> str:
        with self.client(token) as me:
            ticket = me.registration.request_proof_upload({"filename": "结业证书.pdf", "content_type": content_type})
            assert post_file(ticket, make_pdf() if data is None else data, "结业证书.pdf", content_type) in (200, 204)
            if confirm:
                me.registration.confirm_proof_upload({"proof_key": ticket["proof_key"]})
        return ticket["proof_key"]


def _database(backend: str, service: str, directory: Path, created: list[str]) -> str:
    if backend == "sqlite":
        url = f"sqlite:///{directory / f'{service}.db'}"
    else:
        name = f"swms_test_{service}_{uuid.uuid4().hex[:10]}"
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        created.append(name)
        url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    upgrade(service, url)
    return url


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def env(request, vhost_pipeline, keys_dir, s3_server, tmp_path_factory) -> Env:
    """The three services once per module and backend (starting them per test would cost most of
    the time budget); tests stay independent because each makes its own people."""
    from nameko.containers import get_container_cls

    backend = request.param
    directory = tmp_path_factory.mktemp(f"registration-{backend}")
    policy = directory / "policy.yaml"
    policy.write_text(TEST_POLICY, encoding="utf-8")
    created: list[str] = []
    containers = []
    with vhost_pipeline.get() as vhost:
        base = urlparse(request.config.getoption("RABBIT_AMQP_URI"))
        amqp_uri = f"{base.scheme}://{base.netloc}/{vhost}"
        configs = {}
        overrides = {"registration": {"POLICY_PATH": str(policy), "PROOF_MAX_BYTES": PROOF_LIMIT,
                                      "REGISTRATION_S3_BUCKET": f"registration-{uuid.uuid4().hex[:12]}"}}
        try:
            for name in ("identity", "profile", "registration"):
                config = load_config(service_config_path(name))
                config.update(s3_server)
                config.update({"AMQP_URI": amqp_uri, "DB_URL": _database(backend, name, directory, created),
                               "AUTH_PUBLIC_KEY_FILE": str(keys_dir / "token-signing.pub.pem"),
                               "AUTH_PRIVATE_KEY_FILE": str(keys_dir / "token-signing.pem"),
                               "SERVICE_TOKEN_FILE": str(keys_dir / f"{name}.service-token")})
                config.pop("LOGGING", None)
                config.update(overrides.get(name, {}))
                containers.append(get_container_cls(config)(service_class(name), config))
                configs[name] = config
            pool = eventlet.GreenPool()
            list(pool.imap(lambda container: container.start(), containers))
            orgs = seed_directory(configs["profile"]["DB_URL"], [SUNSHINE, HARMONY])
            yield Env(amqp_uri, keys_dir, configs["identity"], configs["profile"], configs["registration"], orgs)
        finally:
            list(eventlet.GreenPool().imap(lambda container: container.stop(), containers))
            from swms.db import _engines, dispose_engine
            for url in list(_engines):
                dispose_engine(url)
            if created:
                admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
                with admin.connect() as conn:
                    for name in created:
                        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                admin.dispose()


class SubmittedTap(EventTap):
    """application_submitted as review receives it. The stack is shared by the module's tests and
    review does not run, so events of earlier tests may still be retried from the outbox when this
    queue appears: ``of`` keeps one application's events."""

    def of(self, application_id: str, count: int, timeout: float = 60.0) -> list[dict]:
        found, deadline = [], time.monotonic() + timeout
        while len(found) < count and time.monotonic() < deadline:
            found += [e for e in self.collect(1, timeout=0.5) if e["application_id"] == application_id]
        return found


@pytest.fixture
def submitted_tap(env):
    tap = SubmittedTap(env.amqp_uri, "registration", "application_submitted")
    yield tap
    tap.close()


def submit(env: Env, token: str, commitment: bool = True) -> dict:
    with env.client(token) as client:
        return client.registration.submit_first_registration({"commitment": commitment})


def get_application(env: Env, token: str, application_id: str) -> dict:
    with env.client(token) as client:
        return client.registration.get_application({"application_id": application_id})


def statuses(application: dict) -> list[str]:
    return [change["status"] for change in application["history"]]


def outcome(event_cls, application: dict, kind=ApplicationKind.FIRST_REGISTRATION, **fields):
    common = {"application_id": application["application_id"], "person_id": application["person_id"],
              "kind": kind, "region_code": COUNTY}
    if event_cls is CertificateIssued:
        today = dt.date.today()
        values = dict(holder_name_masked="李**", id_number_masked="110***********1239", level="社会工作师",
                      authority="北京市朝阳区民政局", valid_from=today,
                      valid_until=today.replace(year=today.year + 3) - dt.timedelta(days=1),
                      issued_at=dt.datetime.now(dt.UTC), sha256="0" * 64)
        values.update(fields)
        return CertificateIssued(**{k: common[k] for k in ("application_id", "person_id", "region_code")}, **values)
    return event_cls(decided_by="county-officer-1", decided_at=dt.datetime.now(dt.UTC), **common, **fields)


def refused(call, code: str, field: str | None = None) -> SwmsError:
    with pytest.raises(SwmsError) as caught:
        call()
    assert caught.value.code == code, caught.value
    if field is not None:
        assert caught.value.field == field, caught.value
    assert caught.value.message, "every refusal says why in words"
    return caught.value


# ---- first registration ------------------------------------------------------------------------

def test_submission_requires_the_commitment_and_a_complete_profile(env):
    me = env.person()
    before = env.state()
    refused(lambda: submit(env, me.token, commitment=False), "COMMITMENT_REQUIRED", "commitment")
    assert env.state() == before

    incomplete = env.person(profile=False)
    before = env.state()
    error = refused(lambda: submit(env, incomplete.token), "PROFILE_INCOMPLETE", "profile")
    fields = {detail["field"] for detail in error.details}
    assert {"profile.ethnicity", "profile.education", "profile.mobile", "profile.photo"} <= fields
    assert all(detail["code"] == "PROFILE_INCOMPLETE" and detail["message"] for detail in error.details)
    assert "民族" in error.message and "照片" in error.message
    assert env.state() == before
    with env.client(incomplete.token) as client:
        assert client.registration.list_my_applications() == {"items": []}


def test_submission_publishes_an_event_without_the_id_number(env, submitted_tap):
    me = env.person()
    application = submit(env, me.token)
    assert application["status"] == "初审中"
    assert (application["person_id"], application["kind"], application["round"]) == (
        me.person_id, "first_registration", 1)
    assert statuses(application) == ["初审中"]
    assert application["rejection_reason"] is None and application["certificate_number"] is None
    form = application["form"]
    assert (form["name"], form["region_code"], form["level"]) == (me.name, COUNTY, "社会工作师")
    assert form["id_number_masked"] != me.id_number and form["id_number_masked"].endswith(me.id_number[-4:])

    [event] = submitted_tap.of(application["application_id"], 1)
    assert (event["region_code"], event["kind"], event["person_id"]) == (COUNTY, "first_registration", me.person_id)
    assert (event["applicant_name_masked"], event["resubmission"], event["round"]) == (me.name[0] + "**", False, 1)
    assert event["level"] == "社会工作师"
    wire = json.dumps(event, ensure_ascii=False)
    assert me.id_number not in wire and me.id_number[:17] not in wire and me.name not in wire
    with env.client(me.token) as client:
        [mine] = client.registration.list_my_applications()["items"]
    assert mine["application_id"] == application["application_id"]
    [entry] = [a for a in env.audit_for(application["application_id"]) if a["action"] == "application.submitted"]
    assert entry["actor"] == me.person_id and entry["at"] is not None

    # one open application per person
    before = env.state()
    refused(lambda: submit(env, me.token), "APPLICATION_ALREADY_OPEN", "kind")
    assert env.state() == before
    assert get_application(env, me.token, application["application_id"]) == application


def test_review_outcomes_move_the_status_once_each(env, caplog):
    caplog.set_level(logging.INFO, logger="swms.events")
    me = env.person()
    application = submit(env, me.token)
    application_id = application["application_id"]

    initial = outcome(ApplicationApproved, application, stage=Stage.INITIAL, final=False)
    dispatch(env.amqp_uri, initial)
    dispatch(env.amqp_uri, initial)   # redelivered: same event_id
    env.wait_for_status(me.token, application_id, "终审中")
    wait_until(lambda: f"event {initial.event_id} already handled" in caplog.text
               or statuses(get_application(env, me.token, application_id)).count("终审中") > 1,
               timeout=60, what="the redelivered approval to be handled")
    assert statuses(get_application(env, me.token, application_id)) == ["初审中", "终审中"]

    # The final approval changes no status: 已出证 comes with the certificate.
    final = outcome(ApplicationApproved, application, stage=Stage.FINAL, final=True)
    dispatch(env.amqp_uri, final)
    number = f"1120262{next(_serial):06d}"
    issued = outcome(CertificateIssued, application, certificate_number=number)
    dispatch(env.amqp_uri, issued)
    done = env.wait_for_status(me.token, application_id, "已出证")
    assert done["certificate_number"] == number
    assert statuses(done) == ["初审中", "终审中", "已出证"]
    assert [change["actor"] for change in done["history"][1:]] == ["county-officer-1", "certificate"]
    # The certificate is now what registration knows the holder by.
    with env.client(me.token) as client:
        standing = client.registration.my_registration()
    assert standing["certificate"]["certificate_number"] == number
    assert standing["certificate"]["valid_until"] == issued.valid_until.isoformat()
    assert standing["can_apply_for"] == [] and "再登记" in standing["advice"]
    # Every transition is audited with its actor and time.
    moves = [a for a in env.audit_for(application_id) if a["action"] == "application.status_changed"]
    assert [(a["actor"], a["detail"]["to"]) for a in moves] == [("county-officer-1", "终审中"), ("certificate", "已出证")]
    assert all(a["at"] for a in moves)
    # Holding a valid certificate, a second first registration is refused with what to do instead.
    before = env.state()
    error = refused(lambda: submit(env, me.token), "ALREADY_HOLDS_CERTIFICATE", "kind")
    assert "再登记" in error.message
    assert env.state() == before


def test_rejected_applicant_sees_the_reason_and_resubmits(env, submitted_tap):
    me = env.person()
    application = submit(env, me.token)
    application_id = application["application_id"]
    dispatch(env.amqp_uri, outcome(ApplicationRejected, application, stage=Stage.INITIAL, reason="照片不符合要求"))
    rejected = env.wait_for_status(me.token, application_id, "初审不通过")
    assert rejected["rejection_reason"] == "照片不符合要求"
    assert rejected["history"][-1]["reason"] == "照片不符合要求"

    again = submit(env, me.token)
    assert (again["application_id"], again["status"], again["rejection_reason"]) == (application_id, "初审中", None)
    assert statuses(again) == ["初审中", "初审不通过", "初审中"]
    stored_now = get_application(env, me.token, application_id)
    assert stored_now == again and stored_now["round"] == 2
    events = submitted_tap.of(application_id, 2)
    assert [(e["application_id"], e["resubmission"], e["round"]) for e in events] == [
        (application_id, False, 1), (application_id, True, 2)]
    counts = env.counts(me.person_id)
    assert (counts["applications"], len([h for h in env.state()["history"] if application_id in h])) == (1, 3)
    assert len([r for r in env.state()["submissions"] if application_id in r]) == 2

    # Returned for correction at the final stage (退回修改): the applicant sees it and resubmits.
    dispatch(env.amqp_uri, outcome(ApplicationApproved, application, stage=Stage.INITIAL, final=False))
    env.wait_for_status(me.token, application_id, "终审中")
    dispatch(env.amqp_uri, outcome(ApplicationReturned, application, stage=Stage.FINAL, reason="单位名称有误"))
    returned = env.wait_for_status(me.token, application_id, "终审不通过")
    assert returned["rejection_reason"] == "退回修改：单位名称有误"
    assert submit(env, me.token)["round"] == 3


def test_applications_are_private_and_issuance_data_is_for_services(env):
    me = env.person()
    application_id = submit(env, me.token)["application_id"]
    ref = {"application_id": application_id}
    other = env.person(profile=False)
    strangers = (other.token, worker_token(env.keys_dir, str(uuid.uuid4())),
                 officer_token(env.keys_dir, "110106", "county"))
    for stranger in strangers:
        with env.client(stranger) as client, pytest.raises(SwmsError) as caught:
            client.registration.get_application(ref)
        assert caught.value.code == "FORBIDDEN"
    with env.client(officer_token(env.keys_dir, COUNTY, "county")) as client:
        seen = client.registration.get_application(ref)
    assert seen["status"] == "初审中" and seen["form"]["id_number_masked"] != me.id_number

    for refused_token in (me.token, other.token, officer_token(env.keys_dir, COUNTY, "county")):
        with env.client(refused_token) as client, pytest.raises(SwmsError) as caught:
            client.registration.get_issuance_data(ref)
        assert caught.value.code == "FORBIDDEN"
    with env.client(env.service_token()) as client:
        data = client.registration.get_issuance_data(ref)
    assert (data["application_id"], data["kind"]) == (application_id, "first_registration")
    snapshot = data["snapshot"]
    assert (snapshot["id_number"], snapshot["name"], snapshot["person_id"]) == (me.id_number, me.name, me.person_id)
    assert snapshot["region_code"] == COUNTY and snapshot["unit_name"] == SUNSHINE["name"]
    assert snapshot["exam_year"] == THIS_YEAR and snapshot["photo_key"]
    assert data["previous_certificate_number"] is None and data["original_certificate_no"] is None


def test_an_administrator_reads_applications_only_with_a_reason_and_is_audited(env):
    """Support, read-only: an administrator names why (``access_reason``) and each read is audited
    with who, what and why; drafts stay the applicant's own, as for officers."""
    me = env.person()
    env.holds(me, valid_until=TODAY + dt.timedelta(days=30))
    proof = env.upload_proof(me.token)
    with env.client(me.token) as client:
        draft = client.registration.save_re_registration_draft({"offline_courses": [course(proof, 90)]})
    admin = token(env.keys_dir, Caller(subject="admin-7", role=ADMIN))
    ref = {"application_id": draft["application_id"]}
    reason = "工单 2026-0413：申请人询问办理进度"
    before = env.state()
    with env.client(admin) as client:
        refused(lambda: client.registration.get_application(ref), "VALIDATION_FAILED", "access_reason")
        refused(lambda: client.registration.get_proof_link({**ref, "proof_key": proof}), "VALIDATION_FAILED",
                "access_reason")
        refused(lambda: client.registration.get_application({**ref, "access_reason": reason}), "NOT_FOUND")   # a draft
        refused(lambda: client.registration.get_proof_link({**ref, "proof_key": proof, "access_reason": reason}),
                "NOT_FOUND")
        refused(lambda: client.registration.submit_draft({**ref, "commitment": True}), "FORBIDDEN")
        refused(lambda: client.registration.get_issuance_data(ref), "FORBIDDEN")
    assert env.state() == before

    with env.client(me.token) as client:
        client.registration.submit_draft({**ref, "commitment": True})
    with env.client(admin) as client:
        seen = client.registration.get_application({**ref, "access_reason": reason})
        link = client.registration.get_proof_link({**ref, "proof_key": proof, "access_reason": reason})
    assert (seen["status"], seen["person_id"]) == ("初审中", me.person_id)
    assert seen["form"]["id_number_masked"] != me.id_number and link["url"]
    reads = [a for a in env.audit_for(draft["application_id"]) if a["action"] == "personal_data.read_by_admin"]
    assert [(a["actor"], a["detail"]["method"], a["detail"]["reason"], a["detail"]["person_id"]) for a in reads] == [
        ("admin-7", "get_application", reason, me.person_id), ("admin-7", "get_proof_link", reason, me.person_id)]
    assert reads[1]["detail"]["proof_key"] == proof
    # The applicant and the region's officers read as before, without a reason and without an entry.
    for reader in (me.token, officer_token(env.keys_dir, COUNTY, "county")):
        with env.client(reader) as client:
            assert client.registration.get_application(ref)["status"] == "初审中"
    assert len([a for a in env.audit_for(draft["application_id"])
                if a["action"] == "personal_data.read_by_admin"]) == 2


def test_first_registration_window_is_set_per_province(env):
    late = env.person(level="助理社会工作师", exam_year=THIS_YEAR - 3)       # Beijing: 1 year after the exam
    before = env.state()
    error = refused(lambda: submit(env, late.token), "FIRST_REGISTRATION_WINDOW_CLOSED", "exam_year")
    assert str(THIS_YEAR - 3) in error.message
    assert env.state() == before
    # Guangdong keeps it open for two years (policy file): an exam two years ago is still in time,
    # while in Beijing the same exam year is too late.
    assert submit(env, env.person(exam_year=THIS_YEAR - 2, region_code=GUANGDONG_COUNTY).token)["status"] == "初审中"
    refused(lambda: submit(env, env.person(exam_year=THIS_YEAR - 2).token), "FIRST_REGISTRATION_WINDOW_CLOSED")


# ---- drafts and sync ----------------------------------------------------------------------------

def test_a_draft_follows_the_profile_and_a_submitted_form_keeps_what_was_submitted(env):
    me = env.person()
    with env.client(me.token) as client:
        draft = client.registration.open_draft({"kind": "first_registration"})
        assert (draft["status"], draft["submitted_at"], draft["round"]) == ("未登记", None, 0)
        assert statuses(draft) == ["未登记"]
        assert client.registration.open_draft({"kind": "first_registration"})["application_id"] == draft["application_id"]
        revision = draft["form"]["profile_revision"]

        # The profile changes: profile publishes profile_changed, registration refreshes the draft.
        client.profile.save_work_experience({"unit_category": "企业", "unit_name": "北京某科技公司", "position": "专员",
                                             "start_date": "2015-07-01", "end_date": "2018-12-31"})

        def synced():
            seen = client.registration.get_application({"application_id": draft["application_id"]})
            return seen if seen["form"]["work_experiences"] else None
        refreshed = wait_until(synced, timeout=60, what="the draft to follow the profile")
        assert refreshed["form"]["profile_revision"] > revision
        assert [w["unit_name"] for w in refreshed["form"]["work_experiences"]] == ["北京某科技公司"]

        # Submitting names the revision the applicant saw: an older one is refused, nothing changes.
        seen = refreshed["form"]["profile_revision"]
        before = env.state()
        refused(lambda: client.registration.submit_draft({"application_id": draft["application_id"], "commitment": True,
                                                          "profile_revision": revision}),
                "PROFILE_CHANGED", "profile_revision")
        assert env.state() == before
        submitted = client.registration.submit_draft({"application_id": draft["application_id"], "commitment": True,
                                                      "profile_revision": seen})
        assert submitted["application_id"] == draft["application_id"]
        assert statuses(submitted) == ["未登记", "初审中"]
        assert submitted["form"]["profile_revision"] == seen

        # After submission the form no longer follows: what the reviewer saw is what is stored.
        client.profile.save_honour({"title": "优秀社会工作者", "level": "地市", "awarding_body": "北京市民政局",
                                    "awarded_on": "2024-12-01"})
    env.wait_profile_changes_handled(me.person_id)
    with env.client(env.service_token()) as service:
        data = service.registration.get_issuance_data({"application_id": draft["application_id"]})
    assert data["snapshot"]["honours"] == [] and len(data["snapshot"]["work_experiences"]) == 1
    assert get_application(env, me.token, draft["application_id"])["form"]["honours"] == []
    synced_entries = [a for a in env.audit_for(draft["application_id"]) if a["action"] == "application.draft_synced"]
    assert len(synced_entries) >= 1 and all(a["actor"] == "profile" for a in synced_entries)
    # Registration's copy of the form follows every change (it serves submissions naming a revision).
    with session_for(env.config["DB_URL"]) as session:
        copy = session.get(ProfileCopy, me.person_id)
        assert copy.complete and copy.revision == seen + 1
        assert json.loads(copy.snapshot)["honours"][0]["title"] == "优秀社会工作者"


def test_drafts_can_be_discarded_and_only_drafts(env):
    me = env.person()
    with env.client(me.token) as client:
        draft = client.registration.open_draft({"kind": "first_registration"})
        assert client.registration.discard_draft({"application_id": draft["application_id"]}) == {
            "application_id": draft["application_id"], "discarded": True}
        assert client.registration.list_my_applications() == {"items": []}
        submitted = client.registration.submit_first_registration({"commitment": True})
        before = env.state()
        refused(lambda: client.registration.discard_draft({"application_id": submitted["application_id"]}),
                "INVALID_STATE", "application_id")
        assert env.state() == before
    assert [a["action"] for a in env.audit_for(draft["application_id"])] == [
        "application.draft_created", "application.draft_discarded"]


# ---- re-registration ----------------------------------------------------------------------------

def course(proof_key: str, hours: float = 40, start: dt.date | None = None, end: dt.date | None = None) -> dict:
    end = end or TODAY - dt.timedelta(days=30)
    return {"institution": "北京社会管理职业学院", "course": "个案管理实务", "start_date": (start or end - dt.timedelta(days=2)).isoformat(),
            "end_date": end.isoformat(), "hours": hours, "proof_key": proof_key}


def learning_event(person: Person, record_id: str, hours: float, days_ago: int = 100, **extra):
    return ContinuingEducationRecorded(record_id=record_id, person_id=person.person_id, course="社会工作伦理",
                                       provider="全国社会工作者继续教育平台", hours=hours,
                                       completed_on=TODAY - dt.timedelta(days=days_ago), **extra)


def test_re_registration_counts_platform_records_and_offline_courses(env, submitted_tap):
    me = env.person()
    old_number = env.holds(me, valid_until=TODAY + dt.timedelta(days=30))

    # Online hours: from the learning platform's events (a duplicate, a correction, a malformed
    # one) and from a file import; typed online hours are never taken.
    first = learning_event(me, "L-1", 30)
    for event in (first, first, learning_event(me, "L-1", 35), learning_event(me, "L-2", 5)):
        dispatch(env.amqp_uri, event)
    event_dispatcher({"AMQP_URI": env.amqp_uri})("learning", "course_completed", {
        "event_id": str(uuid.uuid4()), "record_id": "L-3", "person_id": me.person_id, "course": "伦理",
        "provider": "平台", "hours": -4, "completed_on": TODAY.isoformat()})
    with session_for(env.config["DB_URL"]) as session:
        report = ce_import.import_records(session, ce_import.read_file((
            "record_id,id_number,name,course,provider,hours,completed_on\n"
            f"F-1,{me.id_number},{me.name},督导实务,北京市社会工作者协会,10,{(TODAY - dt.timedelta(days=200)).isoformat()}\n"
            f"F-2,{me.id_number},{me.name},旧课程,协会,50,{(TODAY - dt.timedelta(days=4 * 365)).isoformat()}\n"
        ).encode("utf-8")), "learning", actor="import:test.csv")
        session.commit()
    assert (report.added, report.rejected) == (2, [])

    def online_hours():
        with env.client(me.token) as client:
            draft = client.registration.open_draft({"kind": "re_registration"})
        ce = draft["form"]["continuing_education"]
        return draft if ce["online_hours"] == 50 else None
    draft = wait_until(online_hours, timeout=60, what="the platform's records in the draft")   # 35 + 5 + 10; F-2 is too old
    ce = draft["form"]["continuing_education"]
    assert (ce["required_hours"], ce["offline_hours"], ce["total_hours"]) == (90, 0, 50)
    assert sorted(r["record_id"] for r in ce["online_records"]) == ["F-1", "L-1", "L-2"]
    assert draft["form"]["previous_certificate_number"] == old_number
    refusal = [a for a in env.audit_for("L-3") if a["action"] == "ce_record.refused"]
    assert refusal and "hours" in json.dumps(refusal[0]["detail"])

    # Offline hours: typed per course, each with a proof uploaded and checked.
    proof = env.upload_proof(me.token)
    with env.client(me.token) as client:
        saved = client.registration.save_re_registration_draft({"offline_courses": [course(proof, 40)]})
        assert saved["form"]["continuing_education"]["total_hours"] == 90
        submitted = client.registration.submit_draft({"application_id": draft["application_id"], "commitment": True})
    assert (submitted["kind"], submitted["status"], submitted["round"]) == ("re_registration", "初审中", 1)
    assert statuses(submitted) == ["未登记", "初审中"]
    [event] = submitted_tap.of(submitted["application_id"], 1)
    assert (event["kind"], event["resubmission"]) == ("re_registration", False)

    with env.client(env.service_token()) as service:
        data = service.registration.get_issuance_data({"application_id": submitted["application_id"]})
    assert (data["kind"], data["previous_certificate_number"]) == ("re_registration", old_number)
    submitted_ce = data["continuing_education"]
    assert (submitted_ce["online_hours"], submitted_ce["offline_hours"], submitted_ce["required_hours"]) == (50, 40, 90)
    assert [c["proof_key"] for c in submitted_ce["offline_courses"]] == [proof]
    # Reviewers of the region open the proof through a short-lived link; others may not.
    ref = {"application_id": submitted["application_id"], "proof_key": proof}
    with env.client(officer_token(env.keys_dir, COUNTY, "county")) as officer:
        link = officer.registration.get_proof_link(ref)
    with urllib.request.urlopen(link["url"], timeout=10) as response:
        assert response.read().startswith(b"%PDF")
    with env.client(officer_token(env.keys_dir, "440305", "county")) as stranger:
        refused(lambda: stranger.registration.get_proof_link(ref), "FORBIDDEN")

    # Issued: the new certificate continues the old one, which is superseded.
    application = {"application_id": submitted["application_id"], "person_id": me.person_id}
    new_number = f"11{THIS_YEAR}2{next(_serial):06d}"
    valid_from = TODAY + dt.timedelta(days=31)
    dispatch(env.amqp_uri, outcome(CertificateIssued, application, certificate_number=new_number,
                                   valid_from=valid_from, valid_until=valid_from.replace(year=valid_from.year + 3)))
    env.wait_for_status(me.token, submitted["application_id"], "已出证")
    with env.client(me.token) as client:
        standing = client.registration.my_registration()
    assert standing["certificate"]["certificate_number"] == new_number
    with session_for(env.config["DB_URL"]) as session:
        old = session.get(HeldCertificate, old_number)
        assert (old.status, old.superseded_by) == ("superseded", new_number)
        assert session.get(ProofFileRow, proof).submitted is True


# ---- replacement e-certificate ------------------------------------------------------------------

def test_replacement_e_certificate_is_reviewed_by_the_county_only(env):
    me = env.person()
    paper = {"original_certificate_no": "20190812", "registration_type": "首次登记",
             "valid_from": (TODAY - dt.timedelta(days=400)).isoformat(),
             "valid_until": (TODAY + dt.timedelta(days=600)).isoformat()}
    with env.client(me.token) as client:
        draft = client.registration.save_replacement_draft({"original_certificate_no": "20190812"})
        assert (draft["kind"], draft["status"]) == ("replacement", "未登记")
        assert draft["form"]["replacement"]["original_certificate_no"] == "20190812"
        assert draft["form"]["replacement"]["valid_from"] is None
        # region and unit come from the profile
        assert (draft["form"]["region_code"], draft["form"]["unit_name"]) == (COUNTY, SUNSHINE["name"])
        submitted = client.registration.submit_replacement({**paper, "commitment": True})
    assert (submitted["application_id"], submitted["status"]) == (draft["application_id"], "初审中")

    with env.client(env.service_token()) as service:
        data = service.registration.get_issuance_data({"application_id": submitted["application_id"]})
    assert (data["original_certificate_no"], data["original_registration_type"]) == ("20190812", "首次登记")
    assert (data["original_valid_from"], data["original_valid_until"]) == (paper["valid_from"], paper["valid_until"])

    application = {"application_id": submitted["application_id"], "person_id": me.person_id}
    dispatch(env.amqp_uri, outcome(ApplicationRejected, application, kind=ApplicationKind.REPLACEMENT,
                                   stage=Stage.INITIAL, reason="编号与档案不符"))
    rejected = env.wait_for_status(me.token, submitted["application_id"], "审核不通过")
    assert rejected["rejection_reason"] == "编号与档案不符"
    with env.client(me.token) as client:
        client.registration.save_replacement_draft({**paper, "original_certificate_no": "20190813"})
        again = client.registration.submit_draft({"application_id": submitted["application_id"], "commitment": True})
    assert (again["status"], again["round"], again["form"]["replacement"]["original_certificate_no"]) == (
        "初审中", 2, "20190813")
    # County approval is the final one for a replacement: 已出证 comes with the certificate.
    dispatch(env.amqp_uri, outcome(ApplicationApproved, application, kind=ApplicationKind.REPLACEMENT,
                                   stage=Stage.INITIAL, final=True))
    dispatch(env.amqp_uri, outcome(CertificateIssued, application, certificate_number=f"1120262{next(_serial):06d}"))
    done = env.wait_for_status(me.token, submitted["application_id"], "已出证")
    assert statuses(done) == ["未登记", "初审中", "审核不通过", "初审中", "已出证"]
    with env.client(env.service_token()) as service:
        data = service.registration.get_issuance_data({"application_id": submitted["application_id"]})
    assert data["original_certificate_no"] == "20190813"     # the version the county approved


def test_saving_a_draft_changes_only_the_fields_sent(env):
    """PATCH: a field left out keeps its saved value, null empties it; a refused save stores nothing.
    The same rule for the re-registration draft's offline courses."""
    me = env.person()
    valid_from, valid_until = (TODAY - dt.timedelta(days=400)).isoformat(), (TODAY + dt.timedelta(days=600)).isoformat()
    with env.client(me.token) as client:
        draft = client.registration.save_replacement_draft({"original_certificate_no": "20190815"})
        ref = {"application_id": draft["application_id"]}
        saved = client.registration.save_replacement_draft({**ref, "valid_from": valid_from})
        saved = client.registration.save_replacement_draft({"registration_type": "再登记", "valid_until": valid_until})
        assert saved["application_id"] == draft["application_id"]
        assert saved["form"]["replacement"] == {"original_certificate_no": "20190815", "registration_type": "再登记",
                                                "valid_from": valid_from, "valid_until": valid_until}
        # The merged period must still be in order; the refusal names the field sent, and keeps all.
        before = env.state(me.person_id)
        error = refused(lambda: client.registration.save_replacement_draft(
            {"valid_until": (TODAY - dt.timedelta(days=500)).isoformat()}), "VALIDATION_FAILED", "valid_until")
        assert valid_from in error.message
        assert env.state(me.person_id) == before
        emptied = client.registration.save_replacement_draft({"registration_type": None})
        assert emptied["form"]["replacement"] == {**saved["form"]["replacement"], "registration_type": None}
        # An empty save keeps everything; the draft, as saved, is what submit_draft submits.
        assert client.registration.save_replacement_draft({})["form"]["replacement"] == emptied["form"]["replacement"]
        client.registration.save_replacement_draft({"registration_type": "首次登记"})
        submitted = client.registration.submit_draft({**ref, "commitment": True})
    assert (submitted["status"], submitted["form"]["replacement"]["original_certificate_no"]) == ("初审中", "20190815")
    saves = [a for a in env.audit_for(draft["application_id"]) if a["action"] == "application.form_saved"]
    assert [a["detail"]["fields"] for a in saves] == [
        ["original_certificate_no"], ["valid_from"], ["registration_type", "valid_until"], ["registration_type"], [],
        ["registration_type"]]

    holder = env.person()
    env.holds(holder, valid_until=TODAY + dt.timedelta(days=30))
    proofs = [env.upload_proof(holder.token), env.upload_proof(holder.token)]
    with env.client(holder.token) as client:
        saved = client.registration.save_re_registration_draft({"offline_courses": [course(p, 20) for p in proofs]})
        ref = {"application_id": saved["application_id"]}
        kept = client.registration.save_re_registration_draft(ref)
        assert [c["proof_key"] for c in kept["form"]["continuing_education"]["offline_courses"]] == proofs
        assert kept["form"]["continuing_education"]["offline_hours"] == 40
        emptied = client.registration.save_re_registration_draft({**ref, "offline_courses": []})
        assert emptied["form"]["continuing_education"]["offline_courses"] == []
    with session_for(env.config["DB_URL"]) as session:
        assert all(session.get(ProofFileRow, p).application_id is None for p in proofs)   # released


# ---- upgrade --------------------------------------------------------------------------------------

def test_a_level_raise_marks_the_holder_and_the_upgrade_reissues(env):
    me = env.person(level="助理社会工作师")
    first = submit(env, me.token)
    number = f"1120261{next(_serial):06d}"
    dispatch(env.amqp_uri, outcome(CertificateIssued, first, certificate_number=number, level="助理社会工作师"))
    env.wait_for_status(me.token, first["application_id"], "已出证")

    dispatch(env.amqp_uri, PasserLevelRaised(person_id=me.person_id, previous_level="助理社会工作师",
                                             new_level="社会工作师", management_number=f"{THIS_YEAR}11009999999999",
                                             exam_year=THIS_YEAR))
    pending = env.wait_for_status(me.token, first["application_id"], "已出证待升级")
    assert pending["history"][-1]["actor"] == "identity"
    with env.client(me.token) as client:
        standing = client.registration.my_registration()
        assert standing["pending_upgrade_level"] == "社会工作师" and "upgrade" in standing["can_apply_for"]
        upgrade = client.registration.submit_upgrade({"commitment": True})
    assert (upgrade["kind"], upgrade["status"], upgrade["level"]) == ("upgrade", "初审中", "社会工作师")
    with env.client(env.service_token()) as service:
        data = service.registration.get_issuance_data({"application_id": upgrade["application_id"]})
    assert (data["snapshot"]["level"], data["snapshot"]["management_number"]) == ("社会工作师", f"{THIS_YEAR}11009999999999")
    assert data["previous_certificate_number"] == number

    new_number = f"1120262{next(_serial):06d}"
    dispatch(env.amqp_uri, outcome(CertificateIssued, upgrade, certificate_number=new_number))
    env.wait_for_status(me.token, upgrade["application_id"], "已出证")
    reissued = env.wait_for_status(me.token, first["application_id"], "已出证")
    assert statuses(reissued) == ["初审中", "已出证", "已出证待升级", "已出证"]
    assert new_number in reissued["history"][-1]["reason"]
    with env.client(me.token) as client:
        standing = client.registration.my_registration()
    assert (standing["certificate"]["certificate_number"], standing["pending_upgrade_level"]) == (new_number, None)


def test_concurrent_submissions_make_one_application(env):
    """Ten submissions of one person at once: exactly one is accepted, the others are told an
    application is open; one row, one history entry, one event."""
    me = env.person()
    with env.client(me.token) as client:
        replies = [client.registration.submit_first_registration.call_async({"commitment": True}) for _ in range(10)]
        outcomes = [o["status"] if isinstance(o, dict) else o for o in results_or_codes(replies)]
    assert sorted(outcomes) == ["APPLICATION_ALREADY_OPEN"] * 9 + ["初审中"], outcomes
    counts = env.counts(me.person_id)
    assert counts["applications"] == 1
    [application] = env.state(me.person_id)["applications"]
    application_id = json.loads(application)["application_id"]
    assert len([h for h in env.state()["history"] if application_id in h]) == 1
    assert len([a for a in env.audit_for(application_id) if a["action"] == "application.submitted"]) == 1
