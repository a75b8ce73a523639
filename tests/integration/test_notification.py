"""Notification over a real RabbitMQ, real databases (SQLite and PostgreSQL), the real identity
service for every address and code, and a real SMTP server on loopback (tools/mailsink, aiosmtpd).

Each test starts identity and notification once and checks many things (argon2 sign-ups cost about
a second each): the emails of a person's and officers' events, once each; 反馈 and password reset
end to end through identity; a relay that refuses for a while and a restart in the middle of the
work (nothing lost, nothing twice); bad input recorded against its own message while the rest
flows, and what operators see.
"""
from __future__ import annotations

import collections
import datetime as dt
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select

from services.identity import domain as identity_domain
from services.identity import passwords as identity_passwords
from services.notification.models import Job, Message, Reminder, audit
from swms import idcard
from swms.auth import ADMIN, OFFICER, Caller
from swms.config import REPO_ROOT
from swms.contracts.common import ApplicationKind, Level
from swms.contracts.events import (
    ApplicationApproved,
    ApplicationRejected,
    ApplicationReturned,
    ApplicationSubmitted,
    CertificateExpired,
    CertificateIssued,
    CertificateReinstated,
    CertificateRevoked,
    CertificateSuspended,
)
from swms.contracts.review import Stage
from swms.errors import SwmsError
from tests.conftest import MailSink
from tests.support import (
    dispatch,
    rpc_client,
    session_for,
    token,
    valid_id,
    wait_until,
    worker_token,
)
from tools.localstack import free_port, wait_for_port

pytestmark = pytest.mark.integration

THIS_YEAR = dt.date.today().year
HOLDER_ID = valid_id("11010519900307123")
OTHER_ID = valid_id("44030519950612402")
NEWCOMER_ID = valid_id("11010519920415162")
PASSWORD = "Qz7!mLp2#Rv9-Hx"
COUNTY, PROVINCE = "110105", "110000"
FAST = {"NOTIFICATION_POLL_SECONDS": "0.3", "NOTIFICATION_LEASE_SECONDS": "2"}


def seed_passers(identity_config) -> None:
    with session_for(identity_config["DB_URL"]) as session:
        report = identity_domain.import_passers(session, [
            {"name": "李明华", "id_number": HOLDER_ID, "level": "社会工作师",
             "management_number": f"{THIS_YEAR}11000000123456", "exam_year": str(THIS_YEAR), "province": "11"},
            {"name": "欧阳·娜仁", "id_number": OTHER_ID, "level": "助理社会工作师",
             "management_number": f"{THIS_YEAR}44000000654321", "exam_year": str(THIS_YEAR), "province": "44"},
        ])
        session.commit()
    assert report.added == 2


def seed_officers(identity_config) -> dict[str, str]:
    with session_for(identity_config["DB_URL"]) as session:
        county = identity_domain.create_officer(session, "朝阳区审核员", "county@example.gov.cn",
                                                identity_passwords.DUMMY_HASH, COUNTY, "county")
        province = identity_domain.create_officer(session, "北京市审核员", "province@example.gov.cn",
                                                  identity_passwords.DUMMY_HASH, PROVINCE, "province")
        session.commit()
        return {"county": county.person_id, "province": province.person_id}


def sign_up(amqp_uri, name: str, id_number: str, email: str) -> str:
    with rpc_client(amqp_uri) as client:
        account = client.identity.sign_up({"name": name, "id_number": id_number, "email": email,
                                           "password": PASSWORD})
    return account["person_id"]


@pytest.fixture
def identity(start_service):
    config = start_service("identity")
    seed_passers(config)
    return config


def issued(person_id: str, number: str = f"11{THIS_YEAR}2000001", valid_until: dt.date | None = None
           ) -> CertificateIssued:
    today = dt.date.today()
    return CertificateIssued(
        certificate_number=number, application_id=str(uuid.uuid4()), person_id=person_id,
        holder_name_masked=idcard.mask_name("李明华"), id_number_masked=idcard.mask(HOLDER_ID),
        level=Level.SOCIAL_WORKER, authority="中华人民共和国民政部", region_code=COUNTY, valid_from=today,
        valid_until=valid_until or today.replace(year=today.year + 3) - dt.timedelta(days=1),
        issued_at=dt.datetime.now(dt.UTC), sha256="0" * 64)


def application(person_id: str, **overrides) -> dict:
    values = dict(application_id=str(uuid.uuid4()), person_id=person_id, kind=ApplicationKind.FIRST_REGISTRATION,
                  region_code=COUNTY)
    values.update(overrides)
    return values


def decided() -> dict:
    return dict(decided_by="officer-1", decided_at=dt.datetime.now(dt.UTC))


def status_change(person_id: str, number: str, **extra) -> dict:
    return dict(certificate_number=number, person_id=person_id, holder_name_masked="李**",
                id_number_masked=idcard.mask(HOLDER_ID), level=Level.SOCIAL_WORKER, region_code=COUNTY,
                changed_by="officer-1", changed_at=dt.datetime.now(dt.UTC), **extra)


def messages_of(amqp_uri, keys_dir, person_id: str) -> list[dict]:
    with rpc_client(amqp_uri, worker_token(keys_dir, person_id)) as client:
        return client.notification.list_messages({"person_id": person_id})["items"]


def admin(amqp_uri, keys_dir):
    return rpc_client(amqp_uri, token(keys_dir, Caller("admin-1", ADMIN)))


def stays(predicate, seconds: float, what: str = "condition") -> None:
    """Asserts that ``predicate`` holds throughout the next ``seconds`` (checked every 0.2 s)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert predicate(), f"{what} stopped holding"
        time.sleep(0.2)


def plain_text(mail) -> str:
    return mail.get_body(preferencelist=("plain",)).get_content()


def by_kind(sink: MailSink) -> dict[tuple[str, str], list]:
    """{(To, X-SWMS-Kind): [emails]} of everything the sink accepted."""
    found = collections.defaultdict(list)
    for mail in sink.messages():
        found[(str(mail["To"]), str(mail["X-SWMS-Kind"]))].append(mail)
    return found


def start_sink(directory, port: int, refuse_seconds: float = 0.0, reply_delay: float = 0.0) -> MailSink:
    argv = [sys.executable, "-m", "tools.mailsink", "--port", str(port), "--dir", str(directory)]
    if refuse_seconds:
        argv += ["--refuse-until", str(time.time() + refuse_seconds)]
    if reply_delay:
        argv += ["--reply-delay", str(reply_delay)]
    process = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    wait_for_port(port)
    return MailSink(directory, port, process)


@pytest.fixture
def sinks():
    """Starts sinks on demand (on a port chosen before the service starts); stops them after."""
    started: list[MailSink] = []

    def start(directory, port: int, refuse_seconds: float = 0.0, reply_delay: float = 0.0) -> MailSink:
        sink = start_sink(directory, port, refuse_seconds, reply_delay)
        started.append(sink)
        return sink

    yield start
    for sink in started:
        sink.process.terminate()
        sink.process.wait(10)


def count(config, model, *where) -> int:
    with session_for(config["DB_URL"]) as session:
        return session.execute(select(func.count()).select_from(model).where(*where)).scalar_one()


# ---- a person's and officers' emails ------------------------------------------------------------

def test_every_event_of_a_person_and_their_officers_gives_one_email(identity, start_service, smtp_sink, amqp_uri,
                                                                       keys_dir):
    officers = seed_officers(identity)
    config = start_service("notification", SMTP_HOST="127.0.0.1", SMTP_PORT=smtp_sink.port, **FAST)
    holder = sign_up(amqp_uri, "李明华", HOLDER_ID, "li@example.cn")
    certificate = issued(holder)
    dispatch(amqp_uri, certificate)
    dispatch(amqp_uri, certificate)     # delivered twice (the relay is at-least-once): one email
    submitted = ApplicationSubmitted(applicant_name_masked="李**", submitted_at=dt.datetime.now(dt.UTC),
                                     **application(holder))
    common = {key: getattr(submitted, key) for key in ("application_id", "person_id", "kind", "region_code")}
    for event in (submitted,
                  ApplicationApproved(stage=Stage.INITIAL, final=False, **common, **decided()),
                  ApplicationApproved(stage=Stage.FINAL, final=True, **common, **decided()),
                  ApplicationRejected(stage=Stage.FINAL, reason="工作经历证明与单位信息不一致", **common, **decided()),
                  ApplicationReturned(stage=Stage.INITIAL, reason="请补充二寸证件照", **common, **decided())):
        dispatch(amqp_uri, event)

    expected = {("li@example.cn", kind) for kind in (
        "email_confirmation",          # the code mailed at sign-up
        "certificate_issued", "application_submitted", "application_approved", "application_approved_final",
        "application_rejected", "application_returned")} | {
        ("county@example.gov.cn", "officer_review_item"), ("province@example.gov.cn", "officer_review_item_forwarded")}
    wait_until(lambda: set(by_kind(smtp_sink)) >= expected, timeout=30, what="one email per event")

    # Certificate reminders: scheduled at 09:00 Beijing time, 3 months and 1 month before expiry.
    with rpc_client(amqp_uri, worker_token(keys_dir, holder)) as own:
        reminders = own.notification.list_reminders({"person_id": holder})["items"]
    until = certificate.valid_until
    assert [(r["kind"], r["status"], r["due_at"][:10]) for r in reminders] == [
        ("reregistration_window_open", "scheduled", _months_before(until, 3).isoformat()),
        ("reregistration_reminder", "scheduled", _months_before(until, 1).isoformat())]
    assert all(r["due_at"].endswith("T01:00:00") for r in reminders)

    # Suspension holds them, reinstatement releases them, revocation cancels them; each is emailed.
    for event, state in ((CertificateSuspended(reason="正在核查投诉", **status_change(holder, certificate.certificate_number)),
                          "held"),
                         (CertificateReinstated(reason="调查结束，未发现违规",
                                                **status_change(holder, certificate.certificate_number)), "scheduled"),
                         (CertificateRevoked(reason="以欺骗手段取得登记", **status_change(holder, certificate.certificate_number)),
                          "cancelled"),
                         # (as the certificate service sends it for an expiry; notification mails what it is told)
                         (CertificateExpired(reason="登记有效期届满", status="expired", valid_until=certificate.valid_until,
                                             **status_change(holder, certificate.certificate_number)), "cancelled")):
        dispatch(amqp_uri, event)
        wait_until(lambda: {r.status for r in _reminders(config, holder)} == {state}, timeout=15,
                   what=f"reminders {state} after {event.event_type}")
    expected |= {("li@example.cn", kind) for kind in ("certificate_suspended", "certificate_reinstated",
                                                      "certificate_revoked", "certificate_expired")}
    wait_until(lambda: set(by_kind(smtp_sink)) == expected, timeout=20, what="the certificate status emails")
    # Nothing more arrives (a second email for the duplicate would come within a mailer poll).
    stays(lambda: all(len(mails) == 1 for mails in by_kind(smtp_sink).values()) and set(by_kind(smtp_sink)) == expected,
          seconds=2, what="one email per event")

    mails = {kind: mails[0] for (_, kind), mails in by_kind(smtp_sink).items()}
    certificate_mail = mails["certificate_issued"]
    assert "电子登记证书" in str(certificate_mail["Subject"])
    text = plain_text(certificate_mail)
    assert certificate.certificate_number in text and "查看证书" in text and idcard.mask(HOLDER_ID) in text
    assert HOLDER_ID not in certificate_mail.as_string()
    assert certificate.certificate_number in certificate_mail.get_body(preferencelist=("html",)).get_content()
    assert certificate_mail["Message-ID"].endswith("@swms.example.gov.cn>")
    assert "工作经历证明与单位信息不一致" in plain_text(mails["application_rejected"])
    assert "终审" in plain_text(mails["application_rejected"])
    assert "请补充二寸证件照" in plain_text(mails["application_returned"])
    assert "以欺骗手段取得登记" in plain_text(mails["certificate_revoked"])
    assert "理由：调查结束，未发现违规" in plain_text(mails["certificate_reinstated"])
    expired_text = plain_text(mails["certificate_expired"])
    assert "不能再申请再登记" in expired_text and "《社会工作者首次登记信息表》" in expired_text
    assert f"有效期至 {certificate.valid_until.year}年{certificate.valid_until.month}月" in expired_text
    officer_text = plain_text(mails["officer_review_item"])
    assert "李**" in officer_text and "李明华" not in officer_text and "初审" in officer_text
    assert "终审" in plain_text(mails["officer_review_item_forwarded"])

    # The person sees their messages (address masked); others do not.
    items = wait_until(lambda: (lambda i: i if i and all(m["status"] == "sent" for m in i) else None)(
        messages_of(amqp_uri, keys_dir, holder)), timeout=10, what="list_messages to show every message sent")
    assert len(items) == 11 and {m["to_masked"] for m in items} == {"l***@example.cn"}
    assert all(m["attempts"] == 1 and m["sent_at"] and m["error_code"] is None for m in items)
    assert "li@example.cn" not in str(items)
    with rpc_client(amqp_uri, worker_token(keys_dir, str(uuid.uuid4()))) as stranger:
        with pytest.raises(SwmsError) as caught:
            stranger.notification.list_messages({"person_id": holder})
        assert caught.value.code == "FORBIDDEN"
        with pytest.raises(SwmsError) as caught:
            stranger.notification.list_failures({})
        assert caught.value.code == "FORBIDDEN"
    with rpc_client(amqp_uri) as anonymous, pytest.raises(SwmsError) as caught:
        anonymous.notification.list_messages({"person_id": holder})
    assert caught.value.code == "AUTH_REQUIRED"
    with admin(amqp_uri, keys_dir) as operator:
        # support reads a person's messages only stating why, and each read is audited
        with pytest.raises(SwmsError) as caught:
            operator.notification.list_messages({"person_id": officers["county"]})
        assert (caught.value.code, caught.value.field) == ("VALIDATION_FAILED", "access_reason")
        county_items = operator.notification.list_messages({"person_id": officers["county"],
                                                            "access_reason": "工单 77：审核员未收到邮件"})["items"]
        assert [(m["kind"], m["audience"], m["status"]) for m in county_items] == [
            ("officer_review_item", "officer", "sent")]
        assert operator.notification.list_failures({"person_id": holder})["items"] == []
    with session_for(config["DB_URL"]) as session:
        [read] = [row for row in audit.for_entity(session, officers["county"])
                  if row["action"] == "personal_data.read_by_admin"]
    assert read["detail"] == {"method": "list_messages", "reason": "工单 77：审核员未收到邮件"}


def _months_before(day: dt.date, months: int) -> dt.date:
    from services.notification.domain import months_before
    return months_before(day, months)


def _reminders(config, person_id: str) -> list[Reminder]:
    with session_for(config["DB_URL"]) as session:
        return list(session.execute(select(Reminder).where(Reminder.person_id == person_id)).scalars())


# ---- 反馈 and password reset, end to end through identity ---------------------------------------

def mailed_code(mail) -> str:
    return next(word for word in plain_text(mail).split() if word.isdigit() and len(word) == 6)


def test_feedback_confirmation_and_password_reset_emails_through_identity(identity, start_service, smtp_sink,
                                                                            amqp_uri, keys_dir):
    seed_officers(identity)
    config = start_service("notification", SMTP_HOST="127.0.0.1", SMTP_PORT=smtp_sink.port, **FAST)
    holder = sign_up(amqp_uri, "李明华", HOLDER_ID, "li@example.cn")
    # The address is confirmed with the code mailed at sign-up (reset codes go only to a confirmed one).
    wait_until(lambda: ("li@example.cn", "email_confirmation") in by_kind(smtp_sink), timeout=30,
               what="the email confirmation code")
    with rpc_client(amqp_uri, worker_token(keys_dir, holder)) as own:
        own.identity.confirm_email({"code": mailed_code(by_kind(smtp_sink)[("li@example.cn", "email_confirmation")][0])})
    county = token(keys_dir, Caller("officer-chaoyang", OFFICER, COUNTY, "county"))
    feedback = {"name": "张伟", "id_number": NEWCOMER_ID, "email": "zhangwei@example.cn", "level": "社会工作师",
                "exam_year": THIS_YEAR, "note": "注册时提示查无此人", "region_code": COUNTY}
    with rpc_client(amqp_uri) as public:
        first = public.identity.submit_feedback(feedback)["feedback_id"]
        public.identity.request_password_reset({"login": "li@example.cn"})

    # The county officer hears of the new feedback (masked name only); the holder gets the code.
    wait_until(lambda: {("county@example.gov.cn", "officer_feedback"), ("li@example.cn", "password_reset")}
               <= set(by_kind(smtp_sink)), timeout=30, what="the officer's feedback email and the reset code")
    officer_mail = by_kind(smtp_sink)[("county@example.gov.cn", "officer_feedback")][0]
    assert "张*" in plain_text(officer_mail) and "张伟" not in plain_text(officer_mail)
    assert NEWCOMER_ID not in officer_mail.as_string()
    reset_mail = by_kind(smtp_sink)[("li@example.cn", "password_reset")][0]
    code = mailed_code(reset_mail)
    assert "北京时间" in plain_text(reset_mail)
    with rpc_client(amqp_uri) as public:
        assert public.identity.reset_password({"login": HOLDER_ID, "code": code,
                                               "new_password": "New-secret-22x"})["ok"] is True
        assert public.identity.login({"login": HOLDER_ID, "password": "New-secret-22x"})["subject"] == holder
    # The code is not kept once sent.
    with session_for(config["DB_URL"]) as session:
        stored = session.execute(select(Message).where(Message.kind == "password_reset")).scalar_one()
        confirmation = session.execute(select(Message).where(Message.kind == "email_confirmation")).scalar_one()
    assert stored.status == "sent" and code not in stored.body_text + stored.body_html
    assert confirmation.status == "sent" and not any(word.isdigit() and len(word) == 6
                                                     for word in confirmation.body_text.split())

    # The officer rejects with a reason: the submitter (no account yet) reads it; then approves a new one.
    with rpc_client(amqp_uri, county) as officer:
        officer.identity.decide_feedback({"feedback_id": first, "decision": "reject",
                                          "reason": "成绩单与考试年度不符"})
    wait_until(lambda: ("zhangwei@example.cn", "feedback_rejected") in by_kind(smtp_sink), timeout=20,
               what="the rejection email")
    assert "成绩单与考试年度不符" in plain_text(by_kind(smtp_sink)[("zhangwei@example.cn", "feedback_rejected")][0])
    with rpc_client(amqp_uri) as public:
        second = public.identity.submit_feedback(feedback)["feedback_id"]
    with rpc_client(amqp_uri, county) as officer:
        officer.identity.decide_feedback({"feedback_id": second, "decision": "approve",
                                          "management_number": f"{THIS_YEAR}11000000999999"})
    wait_until(lambda: ("zhangwei@example.cn", "feedback_approved") in by_kind(smtp_sink), timeout=20,
               what="the approval email")
    assert "注册" in plain_text(by_kind(smtp_sink)[("zhangwei@example.cn", "feedback_approved")][0])
    expected = {("county@example.gov.cn", "officer_feedback"): 2,   # one per feedback submitted
                ("li@example.cn", "email_confirmation"): 1, ("li@example.cn", "password_reset"): 1, ("zhangwei@example.cn", "feedback_rejected"): 1,
                ("zhangwei@example.cn", "feedback_approved"): 1}
    wait_until(lambda: {k: len(v) for k, v in by_kind(smtp_sink).items()} == expected, timeout=10,
               what="the officer's second feedback email")
    stays(lambda: {k: len(v) for k, v in by_kind(smtp_sink).items()} == expected, seconds=1, what="one email each")
    assert count(config, Job, Job.status != "done") == 0


# ---- a relay that refuses for a while, and a crash in the middle of the work ---------------------

def run_notification(config: dict, log_path) -> subprocess.Popen:
    """Notification as its own ``nameko run`` process (as deployed), so that SIGKILL is a real crash:
    connections, locks and claims die with it."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), AMQP_URI=config["AMQP_URI"], NOTIFICATION_DB_URL=config["DB_URL"],
               AUTH_PUBLIC_KEY_FILE=config["AUTH_PUBLIC_KEY_FILE"],
               NOTIFICATION_SERVICE_TOKEN_FILE=config["SERVICE_TOKEN_FILE"], SMTP_HOST="127.0.0.1",
               SMTP_PORT=str(config["SMTP_PORT"]), LOG_LEVEL="WARNING", **FAST)
    log = open(log_path, "ab")
    process = subprocess.Popen([str(Path(sys.executable).with_name("nameko")), "run", "--config",
                                "services/notification/config.yaml", "services.notification.service"],
                               cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        with rpc_client(config["AMQP_URI"], timeout=2) as client:
            def answers():
                assert process.poll() is None, f"notification exited; see {log_path}"
                try:
                    return client.notification.health()["status"] == "ok"
                except Exception:
                    return False
            wait_until(answers, timeout=60, interval=0.2, what="the notification process to answer")
    except BaseException:
        process.kill()   # not handed to the caller's cleanup yet: do not leave it running
        process.wait(10)
        raise
    return process


@pytest.fixture
def processes():
    started: list[subprocess.Popen] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.terminate()
            process.wait(20)


def test_a_refusing_relay_and_a_crash_mid_run_lose_nothing_and_send_nothing_twice(
        identity, service_config, processes, sinks, amqp_uri, keys_dir, tmp_path):
    holder = sign_up(amqp_uri, "李明华", HOLDER_ID, "li@example.cn")
    other = sign_up(amqp_uri, "欧阳·娜仁", OTHER_ID, "ouyang@example.cn")
    config = service_config("notification", SMTP_PORT=free_port())
    processes.append(run_notification(config, tmp_path / "first.log"))
    sink = sinks(tmp_path / "mail", config["SMTP_PORT"], refuse_seconds=5.0)   # 451 "try again later" for 5 s

    # Certificates expiring in 20 days: the one-month reminder is due at once (the 3-month one is
    # past and superseded by it). Plus a burst of submissions.
    soon = dt.date.today() + dt.timedelta(days=20)
    events = [issued(holder, "C-HOLDER", soon), issued(other, "C-OTHER", soon)]
    events += [ApplicationSubmitted(applicant_name_masked="李**", submitted_at=dt.datetime.now(dt.UTC),
                                    **application(person)) for person in (holder, other) for _ in range(12)]
    for event in events[:14]:
        dispatch(amqp_uri, event)
    # Crash it while it works: lookups, the reminder run and refused attempts in flight.
    wait_until(lambda: count(config, Message, Message.attempts >= 1) >= 1, timeout=20, interval=0.05,
               what="a first refused attempt")
    processes[0].kill()
    processes[0].wait(10)
    recorded_before = count(config, Message)
    for event in events[14:]:        # events keep coming while it is down: they wait in its queues
        dispatch(amqp_uri, event)
    assert sink.messages() == []
    processes.append(run_notification(config, tmp_path / "second.log"))

    expected = {(mail, kind): 1 for mail in ("li@example.cn", "ouyang@example.cn")
                for kind in ("certificate_issued", "reregistration_reminder")}
    expected |= {("li@example.cn", "application_submitted"): 12, ("ouyang@example.cn", "application_submitted"): 12}
    # The sign-up codes too: identity's relay keeps the events until notification's queues exist.
    expected |= {("li@example.cn", "email_confirmation"): 1, ("ouyang@example.cn", "email_confirmation"): 1}
    wait_until(lambda: {key: len(mails) for key, mails in by_kind(sink).items()} == expected, timeout=60,
               what="every email exactly once after the relay recovers")
    stays(lambda: len(sink.messages()) == 30, seconds=2, what="no second copy")
    assert len({mail["Message-ID"] for mail in sink.messages()}) == 30
    with session_for(config["DB_URL"]) as session:
        rows = session.execute(select(Message)).scalars().all()
        reminders = session.execute(select(Reminder)).scalars().all()
    assert len(rows) == 30 and {m.status for m in rows} == {"sent"} and recorded_before < 30
    assert max(m.attempts for m in rows) >= 2          # some met the refusal and were retried
    assert sorted((r.kind, r.status) for r in reminders) == [
        ("reregistration_reminder", "enqueued"), ("reregistration_reminder", "enqueued"),
        ("reregistration_window_open", "skipped"), ("reregistration_window_open", "skipped")]


def test_a_graceful_stop_records_the_email_in_flight_and_hands_back_the_rest(
        identity, service_config, processes, sinks, amqp_uri, tmp_path):
    """SIGTERM (a rolling update) while the relay is slow to answer: the relay has kept a message
    but not yet said 250. The stopping process waits for the answer and records the message sent,
    gives back what it had claimed but not sent, and exits 0; the next process sends the rest.
    Each holder gets each email once (a SIGKILL in the same place would send it again)."""
    holder = sign_up(amqp_uri, "李明华", HOLDER_ID, "li@example.cn")
    config = service_config("notification", SMTP_PORT=free_port())
    sink = sinks(tmp_path / "mail", config["SMTP_PORT"], reply_delay=1.5)
    processes.append(run_notification(config, tmp_path / "first.log"))
    for _ in range(8):
        dispatch(amqp_uri, ApplicationSubmitted(applicant_name_masked="李**", submitted_at=dt.datetime.now(dt.UTC),
                                                **application(holder)))
    wait_until(lambda: count(config, Message) == 9, timeout=30, what="the eight submissions and the sign-up code recorded")
    wait_until(lambda: len(sink.messages()) >= 2, timeout=30, interval=0.05, what="a second email kept by the relay")
    processes[0].terminate()          # the relay has the second message but has not answered yet
    assert processes[0].wait(30) == 0
    sent_by_the_first = count(config, Message, Message.status == "sent")
    assert sent_by_the_first == len(sink.messages()) < 9          # the one in flight is recorded, no more
    assert count(config, Message, Message.claim_token.is_not(None)) == 0     # the rest handed back

    processes.append(run_notification(config, tmp_path / "second.log"))
    wait_until(lambda: count(config, Message, Message.status == "sent") == 9, timeout=60, what="the rest sent")
    stays(lambda: len(sink.messages()) == 9, seconds=2, what="no second copy")
    assert len({mail["Message-ID"] for mail in sink.messages()}) == 9


# ---- bad input: recorded against its own message, the rest flows; what operators see ------------

def test_bad_input_is_recorded_for_its_message_and_the_queue_keeps_flowing(
        identity, start_service, sinks, amqp_uri, keys_dir, tmp_path):
    holder = sign_up(amqp_uri, "李明华", HOLDER_ID, "li@example.cn")
    malformed = sign_up(amqp_uri, "欧阳·娜仁", OTHER_ID, "ouyang..narin@example.cn")   # identity accepts it
    overrides = tmp_path / "templates" / "zh-CN"
    overrides.mkdir(parents=True)
    # An operator's template edits: one uses a value no event supplies, one has a 10,000-character subject.
    (overrides / "application_returned.txt").write_text(
        "Subject: 申请退回\n\n${name}，请修改：${reason}（经办人：${officer_phone}）\n", encoding="utf-8")
    (overrides / "application_rejected.txt").write_text(
        "Subject: " + "审" * 10_000 + "\n\n${name}：${reason}\n", encoding="utf-8")
    port = free_port()      # nothing listens there yet: the relay is down when the service starts
    config = start_service("notification", SMTP_HOST="127.0.0.1", SMTP_PORT=port,
                           NOTIFICATION_TEMPLATES_DIR=str(tmp_path / "templates"), **FAST)

    common = application(holder)
    dispatch(amqp_uri, ApplicationReturned(stage=Stage.INITIAL, reason="照片不清晰", **common, **decided()))
    dispatch(amqp_uri, ApplicationRejected(stage=Stage.FINAL, reason="材料不实", **common, **decided()))
    dispatch(amqp_uri, ApplicationSubmitted(applicant_name_masked="欧**", submitted_at=dt.datetime.now(dt.UTC),
                                            **application(malformed)))
    dispatch(amqp_uri, issued(str(uuid.uuid4()), "C-NOBODY"))        # identity has no such person
    broken = issued(holder, "C-BROKEN").model_dump(mode="json")
    del broken["valid_until"]                                          # does not match the contract
    from nameko.standalone.events import event_dispatcher
    event_dispatcher({"AMQP_URI": amqp_uri})("certificate", "certificate_issued", broken)
    good = [ApplicationSubmitted(applicant_name_masked="李**", submitted_at=dt.datetime.now(dt.UTC),
                                 **application(holder)), issued(holder, "C-GOOD")]
    for event in good:
        dispatch(amqp_uri, event)

    def failures() -> dict[str, dict]:
        with admin(amqp_uri, keys_dir) as operator:
            return {item["error_code"]: item for item in operator.notification.list_failures({})["items"]}

    # While the relay is down the good messages are retried, and operators see why.
    found = wait_until(lambda: (lambda f: f if {"ADDRESS_INVALID", "TEMPLATE_VARIABLE_MISSING", "SUBJECT_TOO_LONG",
                                                "CONTACT_NOT_FOUND", "EVENT_INVALID", "SMTP_UNAVAILABLE"} <= set(f)
                                else None)(failures()), timeout=30, what="every failure listed for operators")
    assert (found["ADDRESS_INVALID"]["error_field"], found["ADDRESS_INVALID"]["status"]) == ("to_address", "failed")
    assert found["ADDRESS_INVALID"]["to_masked"] == "o***@example.cn" and found["ADDRESS_INVALID"]["person_id"] == malformed
    assert (found["TEMPLATE_VARIABLE_MISSING"]["error_field"], found["TEMPLATE_VARIABLE_MISSING"]["kind"]) == (
        "officer_phone", "application_returned")
    assert found["SUBJECT_TOO_LONG"]["error_field"] == "subject" and "10000" in found["SUBJECT_TOO_LONG"]["last_error"]
    assert (found["CONTACT_NOT_FOUND"]["source"], found["CONTACT_NOT_FOUND"]["error_field"]) == ("lookup", "person_id")
    assert (found["EVENT_INVALID"]["source"], found["EVENT_INVALID"]["error_field"]) == ("lookup", "payload")
    assert "valid_until" in found["EVENT_INVALID"]["last_error"]
    retrying = found["SMTP_UNAVAILABLE"]
    assert retrying["status"] == "pending" and retrying["attempts"] >= 1 and retrying["next_attempt_at"]
    with admin(amqp_uri, keys_dir) as operator:
        mine = operator.notification.list_failures({"person_id": holder, "include_retrying": False})["items"]
        # ... and that no officer covers the region (no officers exist in this test): a queue nobody watches
        assert {item["error_code"] for item in mine} == {"TEMPLATE_VARIABLE_MISSING", "SUBJECT_TOO_LONG", "NO_RECIPIENTS"}
        by_address = wait_until(lambda: (lambda items: items if len(items) >= 2 else None)(
            operator.notification.list_failures({"email": "ouyang..narin@example.cn"})["items"]), timeout=30,
            what="the sign-up code to the malformed address refused too")
        assert sorted((item["error_code"], item["kind"]) for item in by_address) == [    # and the sign-up code
            ("ADDRESS_INVALID", "application_submitted"), ("ADDRESS_INVALID", "email_confirmation")]
        with pytest.raises(SwmsError) as caught:   # a template failure is not re-sent as it was
            operator.notification.retry_message({"message_id": found["SUBJECT_TOO_LONG"]["id"]})
        assert (caught.value.code, caught.value.field) == ("INVALID_STATE", "message_id")
        with pytest.raises(SwmsError) as caught:
            operator.notification.list_failures({"person_id": holder, "email": "li@example.cn"})
        assert (caught.value.code, caught.value.field) == ("VALIDATION_FAILED", "email")

    # The relay comes up: the good messages go out, once each; the bad ones never.
    sink = sinks(tmp_path / "mail", port)
    wait_until(lambda: {key: len(v) for key, v in by_kind(sink).items()} == {
        ("li@example.cn", "application_submitted"): 1, ("li@example.cn", "certificate_issued"): 1,
        ("li@example.cn", "email_confirmation"): 1}, timeout=40, what="the good emails once the relay is up")
    stays(lambda: len(sink.messages()) == 3, seconds=2, what="only the good emails")
    own = {m["kind"]: m for m in messages_of(amqp_uri, keys_dir, holder)}
    assert own["application_returned"]["status"] == "failed"
    assert own["application_returned"]["error_code"] == "TEMPLATE_VARIABLE_MISSING"
    assert len(own["application_rejected"]["subject"]) <= 200
    [was_retrying] = [m for m in own.values() if m["message_id"] == retrying["id"]]
    assert was_retrying["status"] == "sent" and was_retrying["attempts"] >= 2 and was_retrying["error_code"] is None
    assert count(config, Message, Message.status == "failed") == 4
