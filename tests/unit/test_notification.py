"""Notification rules in plain Python (templates, addresses, records, retries, reminders,
composition, SMTP outcome classes) on an in-memory SQLite database; no broker, no network."""
from __future__ import annotations

import datetime as dt
import json
import smtplib
import uuid

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from services.notification import compose, domain, mailer
from services.notification import models as m
from services.notification.compose import ComposeError
from services.notification.webhook_sender import disabled_email
from services.notification.templates import (
    MAX_SUBJECT,
    SHIPPED,
    RenderError,
    Templates,
    format_time,
)
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
    EmailConfirmationRequested,
    FeedbackDecided,
    FeedbackSubmitted,
    PasswordResetRequested,
)
from swms.contracts.identity import Contact, EmailConfirmationMessage, PasswordResetMessage
from swms.contracts.review import Stage
from swms.db import sqlite_transactions

NOW = dt.datetime(2026, 11, 26, 12, 0, 0)
UTC_NOW = NOW.replace(tzinfo=dt.UTC)
PERSON = str(uuid.uuid4())
CHAINS = {"default": {"first_registration": ["county", "province"], "re_registration": ["county", "province"],
                      "replacement": ["county"], "upgrade": ["county", "province"]},
          "44": {"first_registration": ["county", "city", "province"]}}


def session() -> Session:
    engine = sqlite_transactions(create_engine("sqlite://"))
    m.metadata.create_all(engine)
    return Session(engine, expire_on_commit=False)


def settings(**overrides) -> domain.Settings:
    values = dict(portal_url="https://swms.example.gov.cn", languages=("zh-CN",), chains=CHAINS)
    values.update(overrides)
    return domain.Settings(**values)


class FakeLookups:
    """Stands in for identity's RPCs (the integration tests use the real identity service)."""

    def __init__(self, officers=None, fail: ComposeError | None = None):
        self.officer_list = officers if officers is not None else [
            Contact(person_id=str(uuid.uuid4()), name="朝阳区审核员", email="county@example.gov.cn")]
        self.fail = fail
        self.calls = []

    def person(self, person_id):
        self.calls.append(("person", person_id))
        if self.fail:
            raise self.fail
        return Contact(person_id=person_id, name="李明华", email="li@example.cn")

    def feedback_contact(self, feedback_id):
        self.calls.append(("feedback", feedback_id))
        return Contact(person_id=None, name="王小红", email="wang@example.cn")

    def password_reset(self, reset_id):
        self.calls.append(("reset", reset_id))
        return PasswordResetMessage(person_id=PERSON, name="李明华", email="li@example.cn", code="493027",
                                    expires_at=UTC_NOW + dt.timedelta(minutes=30))

    def email_confirmation(self, confirmation_id):
        self.calls.append(("confirmation", confirmation_id))
        return EmailConfirmationMessage(person_id=PERSON, name="李明华", email="li@example.cn", code="508316",
                                        expires_at=UTC_NOW + dt.timedelta(hours=24))

    def officers(self, region_code, level):
        self.calls.append(("officers", region_code, level))
        return self.officer_list


def certificate_issued(valid_until=dt.date(2029, 11, 25), number="2026110000001", person_id=PERSON):
    return CertificateIssued(certificate_number=number, application_id=str(uuid.uuid4()), person_id=person_id,
                             holder_name_masked="李**", id_number_masked="110***********1239", level=Level.SOCIAL_WORKER,
                             authority="北京市民政局", region_code="110105", valid_from=dt.date(2026, 11, 26),
                             valid_until=valid_until, issued_at=UTC_NOW, sha256="0" * 64)


def sample_events():
    application = dict(application_id=str(uuid.uuid4()), person_id=PERSON, kind=ApplicationKind.FIRST_REGISTRATION,
                       region_code="110105")
    decided = dict(decided_by="officer-1", decided_at=UTC_NOW)
    status = dict(certificate_number="2026110000001", person_id=PERSON, holder_name_masked="李**",
                  id_number_masked="110***********1239", level=Level.SOCIAL_WORKER, region_code="110105",
                  changed_by="officer-1", changed_at=UTC_NOW)
    return [
        certificate_issued(),
        ApplicationSubmitted(applicant_name_masked="李**", submitted_at=UTC_NOW, **application),
        ApplicationSubmitted(applicant_name_masked="李**", submitted_at=UTC_NOW, resubmission=True, **application),
        ApplicationApproved(stage=Stage.INITIAL, final=False, **application, **decided),
        ApplicationApproved(stage=Stage.FINAL, final=True, **application, **decided),
        ApplicationRejected(stage=Stage.INITIAL, reason="照片不清晰", **application, **decided),
        ApplicationReturned(stage=Stage.FINAL, reason="请补充工作经历证明", **application, **decided),
        CertificateRevoked(reason="以欺骗手段取得登记", **status),
        CertificateSuspended(reason=None, **status),
        CertificateReinstated(**status),
        CertificateExpired(**status),
        FeedbackSubmitted(feedback_id=str(uuid.uuid4()), region_code="110105", applicant_name_masked="王**",
                          submitted_at=UTC_NOW),
        FeedbackDecided(feedback_id=str(uuid.uuid4()), approved=True, **decided),
        FeedbackDecided(feedback_id=str(uuid.uuid4()), approved=False, reason="证明材料无法核实", **decided),
        PasswordResetRequested(reset_id=str(uuid.uuid4()), person_id=PERSON,
                               expires_at=UTC_NOW + dt.timedelta(minutes=30)),
        EmailConfirmationRequested(confirmation_id=str(uuid.uuid4()), person_id=PERSON,
                                   expires_at=UTC_NOW + dt.timedelta(hours=24)),
    ]


def job_for(task: str, payload: dict, key: str | None = None) -> m.Job:
    return m.Job(job_id=str(uuid.uuid4()), key=key or f"{uuid.uuid4()}:{task}", task=task,
                 payload=json.dumps(payload, default=str), status=m.PENDING, attempts=0, next_attempt_at=NOW,
                 give_up_at=NOW + dt.timedelta(hours=48), created_at=NOW)


def planned_all() -> list[domain.Outgoing]:
    out = []
    for event in sample_events():
        for task in compose.tasks_for(event):
            out += compose.plan(job_for(task.name, compose.payload_of(event)), FakeLookups(), settings())
    for kind in (domain.WINDOW_OPEN, domain.ONE_MONTH):
        out += compose.plan(job_for(f"reminder.{kind}", {
            "reminder_id": str(uuid.uuid4()), "kind": kind, "certificate_number": "2026110000001",
            "person_id": PERSON, "valid_until": "2029-11-25", "window_open": "2029-08-25"}), FakeLookups(), settings())
    # an agency's webhook endpoint disabled for failing (services/notification/webhook_sender.py)
    out.append(disabled_email(m.WebhookEndpoint(endpoint_id=str(uuid.uuid4()), agency="北京市人社局",
                                                url="https://hr.example.gov.cn/hook", admin_email="ops@hr.example.gov.cn",
                                                failing_since=NOW), "HTTP 503"))
    return out


# ---- templates ---------------------------------------------------------------------------------

def test_every_language_has_the_same_kinds_with_both_parts():
    zh = {p.name for p in (SHIPPED / "zh-CN").iterdir()}
    en = {p.name for p in (SHIPPED / "en").iterdir()}
    assert zh == en
    for kind in Templates().kinds():
        assert f"{kind}.html" in zh, kind


def test_every_message_the_composer_makes_renders_in_both_languages():
    templates = Templates()
    kinds = set()
    for item in planned_all():
        kinds.add(item.kind)
        for languages in (("zh-CN",), ("en",), ("zh-CN", "en")):
            rendered = templates.render(item.kind, item.values, languages)
            assert "$" not in rendered.subject + rendered.text + rendered.html, (item.kind, languages)
            assert rendered.subject and len(rendered.subject) <= MAX_SUBJECT
            assert f'<html lang="{languages[0]}">' in rendered.html
            if languages == ("zh-CN", "en"):
                assert rendered.subject.startswith("【全国社会工作信息系统】")
                assert rendered.text.index("，您好") < rendered.text.index("Dear ")
    # every shipped template is used by some message
    assert kinds == set(templates.kinds()), set(templates.kinds()) ^ kinds


def test_certificate_email_says_how_to_view_it_and_carries_only_the_masked_id():
    item = next(i for i in planned_all() if i.kind == "certificate_issued")
    rendered = Templates().render(item.kind, item.values)
    assert "查看证书" in rendered.text and "2026110000001" in rendered.text
    assert "110***********1239" in rendered.text
    assert "2029年11月25日" in rendered.text
    assert "https://swms.example.gov.cn" in rendered.text


def status_mail(event, languages=("zh-CN",)):
    [task] = compose.tasks_for(event)
    [item] = compose.plan(job_for(task.name, compose.payload_of(event)), FakeLookups(), settings())
    return Templates().render(item.kind, item.values, languages)


def status_change(**extra) -> dict:
    return dict(certificate_number="2026110000001", person_id=PERSON, holder_name_masked="李**",
                id_number_masked="110***********1239", level=Level.SOCIAL_WORKER, region_code="110105",
                changed_by="officer-1", changed_at=UTC_NOW, **extra)


def test_reinstatement_email_gives_the_officers_reason_like_suspension_and_revocation():
    for event_cls, reason in ((CertificateReinstated, "调查结束，未发现违规"), (CertificateSuspended, "涉嫌违规执业"),
                              (CertificateRevoked, "以欺骗手段取得登记")):
        rendered = status_mail(event_cls(reason=reason, **status_change()), ("zh-CN", "en"))
        assert f"理由：{reason}" in rendered.text and f"Reason: {reason}" in rendered.text, event_cls
        assert reason in rendered.html
    assert "理由：（未注明）" in status_mail(CertificateReinstated(**status_change())).text


def test_expiry_email_says_what_the_holder_can_do_now_re_registration_being_refused():
    rendered = status_mail(CertificateExpired(reason="登记有效期届满", status="expired",
                                              valid_until=dt.date(2029, 11, 25), **status_change()), ("zh-CN", "en"))
    text = rendered.text
    assert "有效期至 2029年11月25日" in text and "2026110000001" in text
    # what registration answers (REGISTRATION_LAPSED) and allows after a lapse: 首次登记 again,
    # without the exam-year window; a re-registration submitted in time still goes through
    assert "不能再申请再登记" in text and "了解再登记办理要求" not in text
    assert "重新申请登记" in text and "《社会工作者首次登记信息表》" in text and "不受考试年度期限限制" in text
    assert "https://swms.example.gov.cn" in text and "登记所在地民政部门" in text
    assert "已提交再登记申请且仍在审核中，无需重复申请" in text
    assert "valid until 25 November 2029" in text and "cannot be re-registered" in text
    assert "register again at https://swms.example.gov.cn" in text
    assert "（未注明）" in status_mail(CertificateExpired(**status_change())).text   # an event without the date


def test_officer_emails_carry_the_masked_name_only():
    officer = [i for i in planned_all() if i.audience == m.OFFICER]
    assert {i.kind for i in officer} == {"officer_review_item", "officer_review_item_forwarded", "officer_feedback"}
    for item in officer:
        text = Templates().render(item.kind, item.values).text
        assert "李明华" not in text and "li@example.cn" not in text


def test_values_are_escaped_in_html_only():
    rendered = Templates().render("feedback_rejected", {"name": "李<b>明</b>", "reason": "<script>x</script> & 1"})
    assert "&lt;script&gt;" in rendered.html and "<script>" not in rendered.html
    assert "<script>x</script> & 1" in rendered.text


def test_missing_template_variable_names_the_variable():
    with pytest.raises(RenderError) as caught:
        Templates().render("certificate_issued", {"name": "李明华"})
    assert caught.value.code == "TEMPLATE_VARIABLE_MISSING"
    assert caught.value.field in {"certificate_number", "id_number_masked", "level_label", "valid_from_date",
                                  "valid_until_date", "authority", "portal_url", "kind_label"}


def test_operator_templates_override_shipped_ones(tmp_path):
    (tmp_path / "zh-CN").mkdir()
    (tmp_path / "zh-CN" / "feedback_approved.txt").write_text("Subject: 反馈通过 ${name}\n\n欢迎 ${name} ${undefined_value}\n",
                                                               encoding="utf-8")
    templates = Templates(tmp_path)
    with pytest.raises(RenderError) as caught:
        templates.render("feedback_approved", {"name": "王小红", "portal_url": "https://x"})
    assert (caught.value.code, caught.value.field) == ("TEMPLATE_VARIABLE_MISSING", "undefined_value")
    # kinds without an override still come from the shipped folder
    assert templates.render("feedback_rejected", {"name": "王", "reason": "r"}).subject.startswith("【")


@pytest.mark.parametrize("name, code", [("长" * 10_000, "SUBJECT_TOO_LONG"), ("李\r\nBcc: x@evil.example", "SUBJECT_INVALID")])
def test_subject_too_long_or_spanning_lines_is_refused(tmp_path, name, code):
    (tmp_path / "zh-CN").mkdir()
    (tmp_path / "zh-CN" / "feedback_approved.txt").write_text("Subject: 致 ${name}\n\nbody\n", encoding="utf-8")
    with pytest.raises(RenderError) as caught:
        Templates(tmp_path).render("feedback_approved", {"name": name, "portal_url": "https://x"})
    assert (caught.value.code, caught.value.field) == (code, "subject")


def test_unknown_kind_is_template_missing():
    with pytest.raises(RenderError) as caught:
        Templates().render("no_such_kind", {})
    assert (caught.value.code, caught.value.field) == ("TEMPLATE_MISSING", "kind")


def test_times_are_shown_in_beijing_time():
    assert format_time("2026-11-26T16:30:00+00:00", "zh-CN") == "2026年11月27日 00:30（北京时间）"
    assert format_time("2026-11-26T16:30:00", "en") == "27 November 2026, 00:30 (Beijing time)"


# ---- addresses ---------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, expected", [
    ("li@example.cn", "li@example.cn"), (" Li.Ming+swms@Example.CN ", "Li.Ming+swms@example.cn"),
    ("wang@例子.中国", "wang@xn--fsqu00a.xn--fiqs8s"),
])
def test_good_addresses(raw, expected):
    assert domain.normalise_address(raw) == expected


@pytest.mark.parametrize("raw", [
    "", "li", "li@", "@example.cn", "li@@example.cn", "li..ming@example.cn", ".li@example.cn", "li@example",
    "li@-example.cn", "li@example..cn", "li ming@example.cn", "li,ming@example.cn", "李明@example.cn",
    "li@example.cn\r\nBcc: all@example.cn", "a" * 65 + "@example.cn", "li@" + "a" * 250 + ".cn", "li@example.123",
    None,
])
def test_malformed_addresses_are_refused(raw):
    with pytest.raises(domain.AddressError):
        domain.normalise_address(raw)


# ---- recording ---------------------------------------------------------------------------------

def outgoing(**overrides) -> domain.Outgoing:
    values = dict(audience=m.PERSON, person_id=PERSON, to_address="li@example.cn", kind="feedback_rejected",
                  values={"name": "李明华", "reason": "材料不全"})
    values.update(overrides)
    return domain.Outgoing(**values)


def test_record_is_idempotent_per_key_and_audited():
    with session() as s:
        first = domain.record(s, outgoing(), key="e1:t:p", job_id=None, settings=settings(), now=NOW)
        again = domain.record(s, outgoing(), key="e1:t:p", job_id=None, settings=settings(), now=NOW)
        s.commit()
        assert first is not None and again is None
        assert s.execute(select(func.count()).select_from(m.Message)).scalar_one() == 1
        assert first.status == m.PENDING and first.subject.endswith("您提交的反馈未通过审核")
        assert [a["action"] for a in m.audit.for_entity(s, first.message_id)] == ["message.recorded"]


@pytest.mark.parametrize("overrides, code, field", [
    ({"to_address": "li..ming@example.cn"}, "ADDRESS_INVALID", "to_address"),
    ({"values": {"name": "李明华"}}, "TEMPLATE_VARIABLE_MISSING", "reason"),
    ({"kind": "no_such_kind"}, "TEMPLATE_MISSING", "kind"),
    ({"expires_at": NOW - dt.timedelta(seconds=1), "sensitive": True}, "DELIVERY_EXPIRED", "expires_at"),
])
def test_a_message_that_cannot_be_sent_is_recorded_as_failed_with_the_reason(overrides, code, field):
    with session() as s:
        bad = domain.record(s, outgoing(**overrides), key="bad", job_id=None, settings=settings(), now=NOW)
        good = domain.record(s, outgoing(), key="good", job_id=None, settings=settings(), now=NOW)
        s.commit()
        assert (bad.status, bad.error_code, bad.error_field) == (m.FAILED, code, field)
        assert bad.last_error
        assert good.status == m.PENDING
        token, due = domain.claim_due_messages(s, 10, mailer.LEASE, now=NOW)
        assert [x.message_id for x in due] == [good.message_id]   # the failed one is never sent
        if overrides.get("sensitive"):
            assert bad.body_text == domain.REDACTED


# ---- delivery outcomes ---------------------------------------------------------------------------

def recorded(s, **overrides) -> m.Message:
    message = domain.record(s, outgoing(**overrides), key=str(uuid.uuid4()), job_id=None, settings=settings(), now=NOW)
    s.commit()
    return message


def test_claim_orders_by_priority_and_hides_claimed_rows_until_the_lease_ends():
    with session() as s:
        normal = recorded(s)
        urgent = recorded(s, priority=10)
        token, due = domain.claim_due_messages(s, 10, mailer.LEASE, now=NOW)
        s.commit()
        assert [x.message_id for x in due] == [urgent.message_id, normal.message_id]
        assert domain.claim_due_messages(s, 10, mailer.LEASE, now=NOW + dt.timedelta(seconds=5))[1] == []
        later, again = domain.claim_due_messages(s, 10, mailer.LEASE, now=NOW + mailer.LEASE + dt.timedelta(seconds=1))
        s.commit()
        assert len(again) == 2
        # the first claimant's lease was taken over: its late "sent" changes nothing
        assert domain.mark_sent(s, normal.message_id, token, now=NOW) is False
        assert domain.mark_sent(s, normal.message_id, later, now=NOW) is True


def test_transient_failures_back_off_then_give_up_after_the_window():
    with session() as s:
        message = recorded(s)
        delays, now = [], NOW
        while True:
            token, due = domain.claim_due_messages(s, 1, mailer.LEASE, now=now)
            if not due:
                break
            status = domain.mark_attempt_failed(s, due[0], token, domain.SMTP_UNAVAILABLE, "451 try later",
                                                permanent=False, now=now)
            s.commit()
            s.refresh(message)
            if status == m.FAILED:
                break
            delays.append((message.next_attempt_at - now).total_seconds())
            now = message.next_attempt_at
        assert delays[:3] == pytest.approx([2, 4, 8], rel=0.21)
        assert max(delays) <= domain.MAX_BACKOFF_SECONDS * 1.2
        assert (message.status, message.error_code) == (m.FAILED, domain.GAVE_UP)
        assert now - NOW <= dt.timedelta(hours=48)
        assert now - NOW >= dt.timedelta(hours=47)
        assert "451 try later" in message.last_error
        assert m.audit.for_entity(s, message.message_id)[-1]["action"] == "message.failed"


def test_a_permanent_refusal_fails_at_once_and_an_operator_may_retry_it():
    with session() as s:
        message = recorded(s)
        token, due = domain.claim_due_messages(s, 1, mailer.LEASE, now=NOW)
        domain.mark_attempt_failed(s, due[0], token, domain.RECIPIENT_REFUSED, "550 no such user", permanent=True,
                                   field="to_address", now=NOW)
        s.commit()
        s.refresh(message)
        assert (message.status, message.error_code, message.error_field) == (m.FAILED, "RECIPIENT_REFUSED", "to_address")
        failures = domain.list_failures(s, person_id=PERSON, email=None, since=None, include_retrying=True, limit=10)
        assert [(src, row.message_id) for src, row in failures] == [("message", message.message_id)]
        domain.retry_message(s, message.message_id, "admin-1", settings(), now=NOW + dt.timedelta(hours=1))
        s.commit()
        assert message.status == m.PENDING and message.give_up_at == NOW + dt.timedelta(hours=49)
        assert m.audit.for_entity(s, message.message_id)[-1]["actor"] == "admin-1"


def test_template_failures_and_reset_codes_cannot_be_retried_by_an_operator():
    from swms.errors import SwmsError
    with session() as s:
        broken = recorded(s, values={})
        with pytest.raises(SwmsError) as caught:
            domain.retry_message(s, broken.message_id, "admin-1", settings())
        assert (caught.value.code, caught.value.field) == ("INVALID_STATE", "message_id")


def test_a_reset_code_is_removed_from_the_database_once_sent():
    with session() as s:
        item = next(i for i in planned_all() if i.kind == "password_reset")
        message = domain.record(s, item, key="r", job_id=None, settings=settings(), now=NOW)
        s.commit()
        assert "493027" in message.body_text and message.priority == compose.ONE_TIME_CODE_PRIORITY
        token, _ = domain.claim_due_messages(s, 1, mailer.LEASE, now=NOW)
        domain.mark_sent(s, message.message_id, token, now=NOW)
        s.commit()
        s.refresh(message)
        assert message.status == m.SENT and "493027" not in message.body_text + message.body_html


def test_a_time_limited_message_fails_rather_than_arrive_after_it_expired():
    with session() as s:
        message = recorded(s, expires_at=NOW + dt.timedelta(seconds=5))
        token, due = domain.claim_due_messages(s, 1, mailer.LEASE, now=NOW)
        domain.mark_attempt_failed(s, due[0], token, domain.SMTP_UNAVAILABLE, "451", permanent=False,
                                   now=NOW + dt.timedelta(seconds=4))
        s.commit()
        s.refresh(message)
        assert (message.status, message.error_code) == (m.FAILED, domain.DELIVERY_EXPIRED)


# ---- jobs --------------------------------------------------------------------------------------

def test_jobs_are_idempotent_per_key_and_retry_lookups_with_backoff():
    with session() as s:
        job = domain.add_job(s, key="e:t", task="certificate_issued.holder", payload={}, now=NOW)
        assert domain.add_job(s, key="e:t", task="certificate_issued.holder", payload={}, now=NOW) is None
        s.commit()
        claimed = domain.claim_due_jobs(s, 10, dt.timedelta(seconds=60), now=NOW)
        assert [j.job_id for j in claimed] == [job.job_id]
        assert domain.claim_due_jobs(s, 10, dt.timedelta(seconds=60), now=NOW) == []
        assert domain.fail_job(s, job, domain.UPSTREAM_UNAVAILABLE, "person_id", "timeout", permanent=False,
                               now=NOW) == m.PENDING
        s.commit()
        s.refresh(job)
        assert job.attempts == 1 and NOW < job.next_attempt_at <= NOW + dt.timedelta(seconds=3)
        assert domain.fail_job(s, job, domain.CONTACT_NOT_FOUND, "person_id", "no such person", permanent=True,
                               now=NOW) == m.FAILED
        s.commit()
        s.refresh(job)
        assert (job.status, job.error_code) == (m.FAILED, domain.CONTACT_NOT_FOUND)


# ---- reminders ---------------------------------------------------------------------------------

@pytest.mark.parametrize("day, months, expected", [
    (dt.date(2029, 11, 25), 3, dt.date(2029, 8, 25)), (dt.date(2029, 5, 31), 3, dt.date(2029, 2, 28)),
    (dt.date(2028, 5, 31), 3, dt.date(2028, 2, 29)), (dt.date(2029, 2, 15), 3, dt.date(2028, 11, 15)),
    (dt.date(2029, 3, 31), 1, dt.date(2029, 2, 28)),
])
def test_months_before(day, months, expected):
    assert domain.months_before(day, months) == expected


def test_reminders_are_scheduled_at_nine_in_beijing_and_once_per_certificate():
    event = certificate_issued(valid_until=dt.date(2029, 11, 25))
    with session() as s:
        for _ in range(2):
            domain.schedule_reminders(s, certificate_number=event.certificate_number, person_id=PERSON,
                                      valid_until=event.valid_until, settings=settings(), now=NOW)
        s.commit()
        rows = domain.reminders_for(s, PERSON)
    assert [(r.kind, r.due_at, r.status) for r in rows] == [
        (domain.WINDOW_OPEN, dt.datetime(2029, 8, 25, 1, 0), m.SCHEDULED),
        (domain.ONE_MONTH, dt.datetime(2029, 10, 25, 1, 0), m.SCHEDULED)]


def enqueue(s, now):
    taken = domain.enqueue_due_reminders(s, 100, settings(), now=now)
    s.commit()
    return taken


def test_due_reminders_become_jobs_exactly_once():
    with session() as s:
        domain.schedule_reminders(s, certificate_number="C1", person_id=PERSON, valid_until=dt.date(2029, 11, 25),
                                  settings=settings(), now=NOW)
        s.commit()
        assert enqueue(s, dt.datetime(2029, 8, 25, 0, 59)) == 0
        assert enqueue(s, dt.datetime(2029, 8, 25, 1, 0)) == 1
        assert enqueue(s, dt.datetime(2029, 8, 26)) == 0      # already enqueued
        jobs = s.execute(select(m.Job)).scalars().all()
        assert [(j.task, j.key.startswith("reminder:")) for j in jobs] == [("reminder.reregistration_window_open", True)]
        assert json.loads(jobs[0].payload)["window_open"] == "2029-08-25"
        assert enqueue(s, dt.datetime(2029, 10, 25, 2)) == 1
        assert s.execute(select(func.count()).select_from(m.Job)).scalar_one() == 2


def test_a_late_run_sends_only_the_latest_reminder_and_none_after_expiry():
    with session() as s:
        for number, until in (("C1", dt.date(2029, 11, 25)), ("C2", dt.date(2029, 11, 25))):
            domain.schedule_reminders(s, certificate_number=number, person_id=str(uuid.uuid4()), valid_until=until,
                                      settings=settings(), now=NOW)
        s.commit()
        enqueue(s, dt.datetime(2029, 11, 1))        # the service was down from August to November
        rows = {(r.certificate_number, r.kind): r.status for r in s.execute(select(m.Reminder)).scalars()}
        assert rows[("C1", domain.WINDOW_OPEN)] == m.SKIPPED and rows[("C1", domain.ONE_MONTH)] == m.ENQUEUED
        domain.schedule_reminders(s, certificate_number="C3", person_id=PERSON, valid_until=dt.date(2029, 1, 1),
                                  settings=settings(), now=NOW)
        s.commit()
        enqueue(s, dt.datetime(2029, 1, 2))
        statuses = {r.status for r in s.execute(select(m.Reminder).where(m.Reminder.certificate_number == "C3")).scalars()}
        assert statuses == {m.SKIPPED}


def test_a_newer_certificate_cancels_the_older_ones_reminders_and_not_the_other_way_round():
    with session() as s:
        domain.schedule_reminders(s, certificate_number="OLD", person_id=PERSON, valid_until=dt.date(2029, 1, 1),
                                  settings=settings(), now=NOW)
        domain.schedule_reminders(s, certificate_number="NEW", person_id=PERSON, valid_until=dt.date(2032, 1, 1),
                                  settings=settings(), now=NOW)
        domain.schedule_reminders(s, certificate_number="OLDER", person_id=PERSON, valid_until=dt.date(2026, 12, 31),
                                  settings=settings(), now=NOW)
        s.commit()
        by_cert = {}
        for r in domain.reminders_for(s, PERSON):
            by_cert.setdefault(r.certificate_number, set()).add(r.status)
    assert by_cert == {"OLD": {m.CANCELLED}, "NEW": {m.SCHEDULED}, "OLDER": {m.CANCELLED}}


def test_suspension_holds_reminders_reinstatement_releases_them_revocation_cancels():
    with session() as s:
        domain.schedule_reminders(s, certificate_number="C1", person_id=PERSON, valid_until=dt.date(2029, 11, 25),
                                  settings=settings(), now=NOW)
        domain.change_reminders(s, "C1", (m.SCHEDULED,), m.HELD, "suspended", now=NOW)
        s.commit()
        assert enqueue(s, dt.datetime(2029, 11, 1)) == 0
        domain.change_reminders(s, "C1", (m.HELD,), m.SCHEDULED, "reinstated", now=NOW)
        s.commit()
        assert {r.status for r in domain.reminders_for(s, PERSON)} == {m.SCHEDULED}
        domain.change_reminders(s, "C1", (m.SCHEDULED, m.HELD), m.CANCELLED, "revoked", now=NOW)
        s.commit()
        assert enqueue(s, dt.datetime(2029, 11, 1)) == 0
        assert {r.status for r in domain.reminders_for(s, PERSON)} == {m.CANCELLED}


def test_a_crash_in_the_middle_of_the_reminder_run_repeats_nothing_and_loses_nothing(tmp_path):
    """The run is one transaction per batch: a crash inside it (here: the database refuses the
    third job) leaves every reminder as it was, and the next run takes each exactly once."""
    engine = sqlite_transactions(create_engine(f"sqlite:///{tmp_path / 'n.db'}"))
    m.metadata.create_all(engine)
    with Session(engine) as s:
        for number in ("C1", "C2", "C3", "C4"):
            domain.schedule_reminders(s, certificate_number=number, person_id=str(uuid.uuid4()),
                                      valid_until=dt.date(2029, 11, 25), settings=settings(), now=NOW)
        s.commit()
    real_add_job, calls = domain.add_job, []

    def crashing_add_job(*args, **kwargs):
        calls.append(kwargs["key"])
        if len(calls) == 3:
            raise RuntimeError("power cut")
        return real_add_job(*args, **kwargs)

    run_at = dt.datetime(2029, 8, 26)
    domain.add_job = crashing_add_job
    try:
        with Session(engine) as s, pytest.raises(RuntimeError):
            domain.enqueue_due_reminders(s, 100, settings(), now=run_at)
            s.commit()
    finally:
        domain.add_job = real_add_job
    with Session(engine) as s:
        assert s.execute(select(func.count()).select_from(m.Job)).scalar_one() == 0
        assert {r.status for r in s.execute(select(m.Reminder)).scalars()} == {m.SCHEDULED}
        assert domain.enqueue_due_reminders(s, 100, settings(), now=run_at) == 4
        s.commit()
        assert domain.enqueue_due_reminders(s, 100, settings(), now=run_at + dt.timedelta(minutes=1)) == 0
        s.commit()
        keys = [j.key for j in s.execute(select(m.Job)).scalars()]
    assert len(keys) == len(set(keys)) == 4


def test_certificate_events_move_the_reminders():
    with session() as s:
        first = certificate_issued(number="C-OLD", valid_until=dt.date(2029, 11, 25))
        compose.adjust_reminders(s, first, settings())
        reissued = certificate_issued(number="C-NEW", valid_until=dt.date(2029, 11, 25))
        reissued.supersedes = "C-OLD"   # an upgrade re-issue keeps the validity period
        compose.adjust_reminders(s, reissued, settings())
        status = dict(certificate_number="C-NEW", person_id=PERSON, holder_name_masked="李**",
                      id_number_masked="110***********1239", level=Level.SOCIAL_WORKER, region_code="110105",
                      changed_by="officer-1", changed_at=UTC_NOW)
        compose.adjust_reminders(s, CertificateSuspended(**status), settings())
        s.commit()
        states = {(r.certificate_number, r.status) for r in domain.reminders_for(s, PERSON)}
        assert states == {("C-OLD", m.CANCELLED), ("C-NEW", m.HELD)}
        compose.adjust_reminders(s, CertificateReinstated(**status), settings())
        compose.adjust_reminders(s, CertificateExpired(**status), settings())
        s.commit()
        assert {r.status for r in domain.reminders_for(s, PERSON)} == {m.CANCELLED}


# ---- composition -------------------------------------------------------------------------------

def test_tasks_per_event():
    names = {type(e).__name__ + ("-final" if getattr(e, "final", False) else ""): [t.name for t in compose.tasks_for(e)]
             for e in sample_events()}
    assert names["ApplicationSubmitted"] == ["application_submitted.applicant", "application_submitted.officers"]
    assert names["ApplicationApproved"] == ["application_approved.applicant", "application_approved.officers"]
    assert names["ApplicationApproved-final"] == ["application_approved.applicant"]   # no next level
    assert names["CertificateRevoked"] == ["certificate_revoked.holder"]
    assert names["PasswordResetRequested"] == ["password_reset_requested.person"]


@pytest.mark.parametrize("kind, region, stage, level", [
    ("first_registration", "110105", None, "county"), ("first_registration", "110105", "initial", "province"),
    ("first_registration", "110105", "final", None), ("first_registration", "440305", "initial", "city"),
    ("first_registration", "440305", "intermediate", "province"), ("replacement", "110105", "initial", None),
])
def test_the_next_officer_level_follows_the_review_chain(kind, region, stage, level):
    assert compose.level_after(CHAINS, kind, region, stage) == level


def test_officers_of_the_right_level_get_the_new_item_and_nobody_is_an_error():
    event = next(e for e in sample_events() if isinstance(e, ApplicationSubmitted))
    lookups = FakeLookups()
    out = compose.plan(job_for("application_submitted.officers", compose.payload_of(event)), lookups, settings())
    assert lookups.calls == [("officers", "110105", "county")]
    assert [(o.audience, o.kind, o.to_address) for o in out] == [(m.OFFICER, "officer_review_item",
                                                                  "county@example.gov.cn")]
    with pytest.raises(ComposeError) as caught:
        compose.plan(job_for("application_submitted.officers", compose.payload_of(event)), FakeLookups(officers=[]),
                     settings())
    assert (caught.value.code, caught.value.permanent) == ("NO_RECIPIENTS", True)


def test_complete_job_records_one_message_per_recipient_once():
    event = next(e for e in sample_events() if isinstance(e, ApplicationSubmitted))
    officers = [Contact(person_id=str(uuid.uuid4()), name=f"审核员{i}", email=f"o{i}@example.gov.cn") for i in range(3)]
    officers.append(Contact(person_id=str(uuid.uuid4()), name="重复", email="O0@example.gov.cn"))  # same mailbox
    with session() as s:
        job = domain.add_job(s, key=f"{event.event_id}:application_submitted.officers",
                             task="application_submitted.officers", payload=compose.payload_of(event), now=NOW)
        s.commit()
        out = compose.plan(job, FakeLookups(officers=officers), settings())
        first = domain.complete_job(s, job, out, settings(), now=NOW)
        again = domain.complete_job(s, job, out, settings(), now=NOW)
        s.commit()
        s.refresh(job)
        assert (len(first), len(again), job.status) == (3, 0, m.DONE)


# ---- SMTP outcomes -----------------------------------------------------------------------------

@pytest.mark.parametrize("exc, code, permanent, broken", [
    (smtplib.SMTPRecipientsRefused({"a@b.cn": (550, b"no such user")}), "RECIPIENT_REFUSED", True, False),
    (smtplib.SMTPRecipientsRefused({"a@b.cn": (450, b"mailbox busy")}), "SMTP_UNAVAILABLE", False, False),
    (smtplib.SMTPDataError(451, b"try again later"), "SMTP_UNAVAILABLE", False, False),
    (smtplib.SMTPDataError(554, b"content rejected"), "SMTP_REJECTED", True, False),
    (smtplib.SMTPSenderRefused(553, b"sender not allowed", "x"), "SMTP_UNAVAILABLE", False, False),
    (smtplib.SMTPSenderRefused(552, b"too big", "x"), "SMTP_REJECTED", True, False),
    (smtplib.SMTPResponseException(421, b"closing"), "SMTP_UNAVAILABLE", False, True),
    (smtplib.SMTPServerDisconnected("gone"), "SMTP_UNAVAILABLE", False, True),
    (ConnectionResetError("reset"), "SMTP_UNAVAILABLE", False, True),
    (TimeoutError("timed out"), "SMTP_UNAVAILABLE", False, True),
    (UnicodeEncodeError("ascii", "李", 0, 1, "x"), "MESSAGE_INVALID", True, False),
])
def test_smtp_outcomes(exc, code, permanent, broken):
    outcome = mailer.classify(exc)
    assert (outcome.code, outcome.permanent, outcome.connection_broken) == (code, permanent, broken)


def test_the_email_has_both_parts_and_stable_headers():
    with session() as s:
        message = recorded(s)
    smtp = mailer.SmtpSettings(host="127.0.0.1", port=25, sender="全国社会工作信息系统 <no-reply@swms.example.gov.cn>")
    mail = mailer.build_email(message, smtp)
    assert mail["Message-ID"] == f"<{message.message_id}@swms.example.gov.cn>"
    assert mail["Auto-Submitted"] == "auto-generated" and mail["X-SWMS-Kind"] == "feedback_rejected"
    assert mail.get_body(("plain",)).get_content().startswith("李明华，您好")
    assert "<html" in mail.get_body(("html",)).get_content()
    assert all(ord(ch) < 128 for ch in mail.as_string())     # 7-bit on the wire: any relay takes it
