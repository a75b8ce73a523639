"""Registration's rules in plain Python on an in-memory SQLite database (no broker): policy per
province, windows, the status machines, continuing education, drafts and sync, upgrade, and
what review and certificate events do."""
from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from services.registration import ce_import, domain
from services.registration import models as m
from services.registration.policy import Policy, PolicyError
from swms import errors
from swms.contracts.common import ApplicationKind as K
from swms.contracts.common import ApplicationStatus as S
from swms.contracts.common import Level
from swms.contracts.events import (
    ApplicationApproved,
    ApplicationRejected,
    ApplicationReturned,
    CertificateIssued,
    PasserLevelRaised,
)
from swms.contracts.profile import ProfileSnapshot
from swms.contracts.registration import OfflineCourse, ReplacementDetails
from swms.contracts.review import Stage
from tests.support import valid_id

TODAY = dt.date(2027, 3, 15)
POLICY_DOC = {
    "default": {"first_registration_window_years": 1, "re_registration_window_months": 3,
                "continuing_education_hours": {"助理社会工作师": 72, "社会工作师": 90, "高级社会工作师": 90},
                "registration_validity_years": 3},
    "44": {"first_registration_window_years": 2, "continuing_education_hours": {"助理社会工作师": 80}},
}
POLICY = Policy(POLICY_DOC)


@pytest.fixture
def session():
    engine = create_engine("sqlite://")
    m.metadata.create_all(engine)
    with Session(engine) as session:
        yield session


def snapshot(person_id=None, region="110105", level="社会工作师", exam_year=2026, revision=1, **extra) -> ProfileSnapshot:
    fields = dict(person_id=person_id or str(uuid.uuid4()), name="李明华", id_number=valid_id("11010519900307123"),
                  gender="男", birth_date=dt.date(1990, 3, 7), level=level, management_number="2026110000000123",
                  exam_year=exam_year, region_code=region, unit_category="企业", unit_name="某公司", position="职员",
                  revision=revision)
    return ProfileSnapshot(**{**fields, **extra})


def issue(session, snap: ProfileSnapshot, application_id: str, number: str, valid_from: dt.date,
          valid_until: dt.date, level: str | None = None):
    domain.apply_issue(session, CertificateIssued(
        certificate_number=number, application_id=application_id, person_id=snap.person_id,
        holder_name_masked="李**", id_number_masked="110***********1239", level=level or snap.level.value,
        authority="民政局", region_code=snap.region_code, valid_from=valid_from, valid_until=valid_until,
        issued_at=dt.datetime(2024, 6, 1, tzinfo=dt.UTC), sha256="0" * 64))
    session.flush()


def submit(session, kind, snap, today=TODAY, **fields):
    return domain.submit(session, domain.Submit(kind=kind, snapshot=snap, policy=POLICY.for_region(snap.region_code),
                                                today=today, actor=snap.person_id, applicant_name_masked="李**",
                                                **fields))


def holder(session, valid_until=dt.date(2027, 5, 31), level="社会工作师"):
    """A person with an issued first registration whose certificate runs until ``valid_until``."""
    snap = snapshot(level=level, exam_year=2024)
    application = submit(session, K.FIRST_REGISTRATION, snap, today=dt.date(2024, 5, 1))
    valid_from = domain.add_years(valid_until, -3) + dt.timedelta(days=1)
    issue(session, snap, application.application_id, "1120242000001", valid_from, valid_until)
    return snap, application


def count(session, model) -> int:
    return session.execute(select(func.count()).select_from(model)).scalar_one()


def add_proof(session, person_id, key=None, status=m.PROOF_VERIFIED):
    key = key or f"proofs/{person_id}/{uuid.uuid4()}"
    session.add(m.ProofFileRow(proof_key=key, person_id=person_id, filename="证明.pdf", content_type="application/pdf",
                               status=status, size=100, sha256="0" * 64, created_at=dt.datetime(2027, 1, 1),
                               verified_at=dt.datetime(2027, 1, 1), submitted=False))
    session.flush()
    return key


def course(key, hours=30.0, start=dt.date(2026, 5, 1), end=dt.date(2026, 5, 3)):
    return OfflineCourse(institution="北京社会管理职业学院", course="个案管理", start_date=start, end_date=end,
                         hours=hours, proof_key=key)


def ce(session, person_id, hours, record_id=None, completed=dt.date(2025, 9, 1), id_number=None):
    domain.record_ce(session, source="learning", record_id=record_id or str(uuid.uuid4()), course="伦理", provider="平台",
                     hours=hours, completed_on=completed, person_id=None if id_number else person_id,
                     id_number=id_number, actor="test")


# ---- policy -----------------------------------------------------------------------------------

def test_province_overrides_only_what_it_names():
    guangdong, beijing = POLICY.for_region("440305"), POLICY.for_region("110105")
    assert (guangdong.first_registration_window_years, beijing.first_registration_window_years) == (2, 1)
    assert guangdong.required_hours("助理社会工作师") == 80 and guangdong.required_hours("社会工作师") == 90
    assert beijing.required_hours("助理社会工作师") == 72 and beijing.required_hours("高级社会工作师") == 90
    assert guangdong.re_registration_window_months == 3


def test_shipped_policy_file_loads():
    from swms.config import REPO_ROOT
    policy = Policy.load(REPO_ROOT / "services" / "registration" / "policy.yaml").for_region("110105")
    assert (policy.first_registration_window_years, policy.re_registration_window_months) == (1, 3)
    assert policy.required_hours("助理社会工作师") == 72 and policy.required_hours("社会工作师") == 90


@pytest.mark.parametrize("document, words", [
    ({}, "default"),
    ({"default": {**POLICY_DOC["default"], "first_registration_window_years": 0}}, "1 to 120"),
    ({"default": {**POLICY_DOC["default"], "extra": 1}}, "unknown keys"),
    ({"default": {k: v for k, v in POLICY_DOC["default"].items() if k != "re_registration_window_months"}}, "missing"),
    ({"default": POLICY_DOC["default"], "4": {"first_registration_window_years": 2}}, "2-digit"),
    ({"default": POLICY_DOC["default"], "44": {"continuing_education_hours": {"中级": 3}}}, "unknown level"),
    ({"default": POLICY_DOC["default"], "44": {"continuing_education_hours": {"社会工作师": "多"}}}, "hours"),
])
def test_broken_policy_is_refused(document, words):
    with pytest.raises(PolicyError, match=words):
        Policy(document)


# ---- dates and windows ------------------------------------------------------------------------

def test_month_arithmetic_keeps_month_ends():
    assert domain.add_months(dt.date(2027, 5, 31), -3) == dt.date(2027, 2, 28)
    assert domain.add_months(dt.date(2028, 5, 31), -3) == dt.date(2028, 2, 29)
    assert domain.add_months(dt.date(2027, 1, 15), -3) == dt.date(2026, 10, 15)
    assert domain.add_years(dt.date(2024, 2, 29), 3) == dt.date(2027, 2, 28)


def test_exam_window_follows_the_province(session):
    snap = snapshot(region="440305", exam_year=2025)
    assert submit(session, K.FIRST_REGISTRATION, snap, today=dt.date(2027, 12, 31)).status == S.INITIAL_REVIEW.value
    with pytest.raises(errors.SwmsError) as caught:
        submit(session, K.FIRST_REGISTRATION, snapshot(region="110105", exam_year=2025), today=dt.date(2027, 1, 1))
    assert (caught.value.code, caught.value.field) == ("FIRST_REGISTRATION_WINDOW_CLOSED", "exam_year")


# ---- status machines --------------------------------------------------------------------------

@pytest.mark.parametrize("kind, current, target, allowed", [
    (K.FIRST_REGISTRATION, S.NOT_REGISTERED, S.INITIAL_REVIEW, True),
    (K.FIRST_REGISTRATION, S.NOT_REGISTERED, S.ISSUED, False),
    (K.FIRST_REGISTRATION, S.FINAL_REJECTED, S.INITIAL_REVIEW, True),
    (K.FIRST_REGISTRATION, S.INITIAL_REVIEW, S.REJECTED, False),
    (K.RE_REGISTRATION, S.INITIAL_REVIEW, S.FINAL_REVIEW, True),
    (K.UPGRADE, S.FINAL_REVIEW, S.ISSUED, True),
    (K.REPLACEMENT, S.INITIAL_REVIEW, S.REJECTED, True),
    (K.REPLACEMENT, S.INITIAL_REVIEW, S.ISSUED, True),
    (K.REPLACEMENT, S.INITIAL_REVIEW, S.FINAL_REVIEW, False),
    (K.REPLACEMENT, S.INITIAL_REVIEW, S.INITIAL_REJECTED, False),
    (K.REPLACEMENT, S.REJECTED, S.INITIAL_REVIEW, True),
])
def test_transitions_per_kind(kind, current, target, allowed):
    assert (target in domain.TRANSITIONS[kind].get(current, set())) is allowed


def test_every_status_reachable_only_through_listed_moves():
    for machine in (domain.FIRST_REGISTRATION_TRANSITIONS, domain.REPLACEMENT_TRANSITIONS):
        reachable, frontier = {S.NOT_REGISTERED}, [S.NOT_REGISTERED]
        while frontier:
            for nxt in machine.get(frontier.pop(), set()):
                if nxt not in reachable:
                    reachable.add(nxt)
                    frontier.append(nxt)
        assert reachable == set(machine)
    assert S.REJECTED not in domain.FIRST_REGISTRATION_TRANSITIONS
    assert S.FINAL_REVIEW not in domain.REPLACEMENT_TRANSITIONS


def test_review_events_move_status_and_late_events_are_ignored(session):
    snap = snapshot()
    application = submit(session, K.FIRST_REGISTRATION, snap)
    common = dict(application_id=application.application_id, person_id=snap.person_id,
                  kind=K.FIRST_REGISTRATION, region_code=snap.region_code, decided_by="officer-1",
                  decided_at=dt.datetime.now(dt.UTC))
    domain.apply_approval(session, ApplicationApproved(stage=Stage.INITIAL, final=False, **common))
    assert application.status == S.FINAL_REVIEW.value
    domain.apply_rejection(session, ApplicationReturned(stage=Stage.FINAL, reason="照片模糊", **common))
    assert (application.status, application.rejection_reason) == (S.FINAL_REJECTED.value, "退回修改：照片模糊")
    late = ApplicationRejected(stage=Stage.INITIAL, reason="重复", **common)
    domain.apply_rejection(session, late)          # 终审不通过 → 终审不通过 is not a move: ignored
    assert application.status == S.FINAL_REJECTED.value and application.rejection_reason == "退回修改：照片模糊"
    ignored = m.audit.for_entity(session, application.application_id)[-1]
    assert ignored["action"] == "application.event_ignored" and ignored["detail"]["event_id"] == late.event_id


def test_replacement_rejection_is_shenhe_butongguo(session):
    snap = snapshot()
    application = submit(session, K.REPLACEMENT, snap, replacement=ReplacementDetails(
        original_certificate_no="12345678", registration_type="首次登记", valid_from=dt.date(2025, 1, 1),
        valid_until=dt.date(2027, 12, 31)))
    domain.apply_rejection(session, ApplicationRejected(
        application_id=application.application_id, person_id=snap.person_id, kind=K.REPLACEMENT,
        region_code=snap.region_code, stage=Stage.INITIAL, reason="编号不符", decided_by="c",
        decided_at=dt.datetime.now(dt.UTC)))
    assert application.status == S.REJECTED.value
    again = submit(session, K.REPLACEMENT, snap)    # corrected and resubmitted with the saved details
    assert (again.application_id, again.status, again.round) == (application.application_id, "初审中", 2)
    assert [c.status for c in again.history] == ["初审中", "审核不通过", "初审中"]


# ---- re-registration and continuing education -------------------------------------------------

def test_re_registration_counts_online_and_offline_hours_in_the_period(session):
    snap, first = holder(session)
    ce(session, snap.person_id, 40)
    ce(session, snap.person_id, 10, id_number=snap.id_number)          # from a file: by ID number
    ce(session, snap.person_id, 50, completed=dt.date(2023, 1, 1))     # before the period: not counted
    key = add_proof(session, snap.person_id)
    with pytest.raises(errors.SwmsError) as caught:
        submit(session, K.RE_REGISTRATION, snap, courses=[course(key, hours=39.5)])
    assert (caught.value.code, caught.value.field) == ("CE_HOURS_SHORT", "offline_courses")
    assert "还差0.5学时" in caught.value.message and "须完成90学时" in caught.value.message
    application = submit(session, K.RE_REGISTRATION, snap, courses=[course(key, hours=40)])
    summary = json.loads(application.form)["continuing_education"]
    assert (summary["online_hours"], summary["offline_hours"], summary["total_hours"]) == (50, 40, 90)
    assert application.previous_certificate_number == "1120242000001"
    proof = session.get(m.ProofFileRow, key)
    assert (proof.application_id, proof.submitted) == (application.application_id, True)
    assert count(session, m.Submission) == 2


def test_re_registration_window_and_lapse(session):
    snap, _ = holder(session, valid_until=dt.date(2027, 7, 1))
    with pytest.raises(errors.SwmsError) as caught:
        submit(session, K.RE_REGISTRATION, snap, today=dt.date(2027, 3, 31), courses=[])
    assert caught.value.code == "RE_REGISTRATION_NOT_OPEN" and "2027-04-01" in caught.value.message
    # a draft may be prepared before the window opens
    draft = domain.open_draft(session, K.RE_REGISTRATION, snap, POLICY.for_region("110105"), dt.date(2027, 3, 31),
                              snap.person_id)
    assert draft.status == S.NOT_REGISTERED.value
    with pytest.raises(errors.SwmsError) as caught:
        submit(session, K.RE_REGISTRATION, snap, today=dt.date(2027, 7, 2), courses=[])
    assert caught.value.code == "REGISTRATION_LAPSED"
    assert "2027-07-01" in caught.value.message and "重新申请登记" in caught.value.message
    standing = domain.registration_standing(session, snap.person_id, POLICY.for_region("110105"), dt.date(2027, 7, 2))
    assert standing.lapsed and standing.can_apply_for == [K.FIRST_REGISTRATION]
    domain.discard_draft(session, draft.application_id, snap.person_id, snap.person_id)
    # a lapsed registration registers again, whatever the exam year
    again = submit(session, K.FIRST_REGISTRATION, snap, today=dt.date(2030, 1, 1))
    assert again.status == S.INITIAL_REVIEW.value


@pytest.mark.parametrize("change, code, field", [
    (dict(start=dt.date(2024, 1, 1), end=dt.date(2024, 1, 2)), "CE_COURSE_OUTSIDE_PERIOD", "offline_courses.0.start_date"),
    (dict(start=dt.date(2027, 3, 14), end=dt.date(2027, 3, 16)), "CE_COURSE_NOT_FINISHED", "offline_courses.0.end_date"),
])
def test_course_dates(session, change, code, field):
    snap, _ = holder(session)
    key = add_proof(session, snap.person_id)
    with pytest.raises(errors.SwmsError) as caught:
        submit(session, K.RE_REGISTRATION, snap, courses=[course(key, hours=90, **change)])
    assert (caught.value.code, caught.value.field) == (code, field)


def test_proof_must_be_the_applicants_verified_and_unused(session):
    snap, _ = holder(session)
    stranger = add_proof(session, str(uuid.uuid4()))
    pending = add_proof(session, snap.person_id, status=m.PROOF_PENDING)
    for key in (stranger, pending, "proofs/none"):
        with pytest.raises(errors.SwmsError) as caught:
            submit(session, K.RE_REGISTRATION, snap, courses=[course(key, hours=90)])
        assert (caught.value.code, caught.value.field) == ("PROOF_NOT_FOUND", "offline_courses.0.proof_key")
    used = add_proof(session, snap.person_id)
    session.get(m.ProofFileRow, used).application_id = str(uuid.uuid4())
    session.get(m.ProofFileRow, used).submitted = True
    with pytest.raises(errors.SwmsError) as caught:
        submit(session, K.RE_REGISTRATION, snap, courses=[course(used, hours=90)])
    assert caught.value.code == "PROOF_ALREADY_USED"


def test_re_registration_needs_a_usable_certificate(session):
    with pytest.raises(errors.SwmsError) as caught:
        submit(session, K.RE_REGISTRATION, snapshot(), courses=[])
    assert caught.value.code == "NOT_REGISTERED"
    snap, _ = holder(session)
    ce(session, snap.person_id, 90)
    for status, code in ((m.REVOKED, "CERTIFICATE_REVOKED"), (m.SUSPENDED, "CERTIFICATE_SUSPENDED")):
        domain.apply_certificate_status(session, "1120242000001", status, "officer", "原因")
        with pytest.raises(errors.SwmsError) as caught:
            submit(session, K.RE_REGISTRATION, snap, courses=[])
        assert caught.value.code == code
    domain.apply_certificate_status(session, "1120242000001", m.VALID, "officer", None)
    assert submit(session, K.RE_REGISTRATION, snap, courses=[]).status == S.INITIAL_REVIEW.value


def test_one_open_application_per_person(session):
    snap, _ = holder(session)
    domain.open_draft(session, K.RE_REGISTRATION, snap, POLICY.for_region("110105"), TODAY, snap.person_id)
    with pytest.raises(errors.SwmsError) as caught:
        domain.open_draft(session, K.UPGRADE, snap, POLICY.for_region("110105"), TODAY, snap.person_id)
    assert caught.value.code == "APPLICATION_ALREADY_OPEN"
    with pytest.raises(errors.SwmsError) as caught:
        submit(session, K.REPLACEMENT, snap)
    assert caught.value.code == "APPLICATION_ALREADY_OPEN"


def test_issued_holder_cannot_register_first_again(session):
    snap, _ = holder(session)
    with pytest.raises(errors.SwmsError) as caught:
        submit(session, K.FIRST_REGISTRATION, snap)
    assert caught.value.code == "ALREADY_HOLDS_CERTIFICATE" and "2027-05-31" in caught.value.message
    with pytest.raises(errors.SwmsError) as caught:
        submit(session, K.REPLACEMENT, snap)
    assert caught.value.code == "REPLACEMENT_NOT_NEEDED"


# ---- drafts and sync ---------------------------------------------------------------------------

def test_drafts_follow_the_profile_and_submitted_forms_do_not(session):
    person = str(uuid.uuid4())
    first = snapshot(person_id=person, revision=1)
    draft = domain.open_draft(session, K.FIRST_REGISTRATION, first, POLICY.for_region("110105"), TODAY, person)
    assert [c.status for c in draft.history] == ["未登记"]
    assert domain.mark_profile_changed(session, person, 2) == [draft.application_id]
    assert draft.profile_revision_seen == 2 and draft.snapshot_revision == 1
    newer = snapshot(person_id=person, revision=2, unit_name="新单位")
    assert domain.refresh_drafts(session, newer, None, "profile") == 1
    assert json.loads(draft.snapshot)["unit_name"] == "新单位"
    assert domain.refresh_drafts(session, snapshot(person_id=person, revision=1, unit_name="旧"), None, "profile") == 0
    application = submit(session, K.FIRST_REGISTRATION, newer)
    assert application.application_id == draft.application_id
    assert [c.status for c in application.history] == ["未登记", "初审中"]
    domain.mark_profile_changed(session, person, 3)
    assert domain.refresh_drafts(session, snapshot(person_id=person, revision=3, unit_name="第三"), None, "p") == 0
    assert json.loads(application.snapshot)["unit_name"] == "新单位"


def test_editing_is_refused_after_the_initial_review_passes(session):
    snap, _ = holder(session)
    ce(session, snap.person_id, 90)
    application = submit(session, K.RE_REGISTRATION, snap, courses=[])
    for status in (S.INITIAL_REVIEW, S.FINAL_REVIEW):
        application.status = status.value
        with pytest.raises(errors.SwmsError) as caught:
            domain.workable_application(session, K.RE_REGISTRATION, snap.person_id, application.application_id, False)
        assert (caught.value.code, caught.value.field) == ("APPLICATION_LOCKED", "application_id")
    with pytest.raises(errors.SwmsError) as caught:
        domain.workable_application(session, K.RE_REGISTRATION, str(uuid.uuid4()), application.application_id, False)
    assert caught.value.code == "FORBIDDEN"


# ---- upgrade ----------------------------------------------------------------------------------

def test_level_raise_marks_pending_upgrade_and_the_upgrade_resolves_it(session):
    snap, first = holder(session, level="助理社会工作师")
    with pytest.raises(errors.SwmsError) as caught:
        submit(session, K.UPGRADE, snap)
    assert caught.value.code == "NOT_PENDING_UPGRADE"
    domain.apply_level_raise(session, PasserLevelRaised(person_id=snap.person_id, previous_level="助理社会工作师",
                                                        new_level="社会工作师", management_number="2027110000009999",
                                                        exam_year=2027))
    assert first.status == S.ISSUED_PENDING_UPGRADE.value
    upgrade = submit(session, K.UPGRADE, snap)
    data = domain.issuance_data(session, upgrade)
    assert (data.snapshot.level, data.snapshot.management_number) == (Level.SOCIAL_WORKER, "2027110000009999")
    assert data.previous_certificate_number == "1120242000001"
    issue(session, snap, upgrade.application_id, "1120272000001", TODAY, dt.date(2030, 3, 14), level="社会工作师")
    assert (upgrade.status, first.status) == (S.ISSUED.value, S.ISSUED.value)
    assert first.history[-1].reason == "已按新等级换发证书1120272000001"
    assert session.get(m.HeldCertificate, "1120242000001").status == m.SUPERSEDED
    assert session.get(m.LevelRaise, snap.person_id).resolved_by_certificate == "1120272000001"


def test_certificate_issued_at_the_old_level_after_a_raise_is_pending_at_once(session):
    snap = snapshot(level="助理社会工作师")
    application = submit(session, K.FIRST_REGISTRATION, snap)
    domain.apply_level_raise(session, PasserLevelRaised(person_id=snap.person_id, previous_level="助理社会工作师",
                                                        new_level="社会工作师", management_number="1", exam_year=2027))
    issue(session, snap, application.application_id, "1120271000001", TODAY, dt.date(2030, 3, 14))
    assert [c.status for c in application.history] == ["初审中", "已出证", "已出证待升级"]


# ---- replacement ------------------------------------------------------------------------------

def test_replacement_checks_and_issuance_data(session):
    snap = snapshot()
    good = ReplacementDetails(original_certificate_no="20190001", registration_type="再登记",
                              valid_from=dt.date(2025, 1, 1), valid_until=dt.date(2027, 12, 31))
    for change, code, field in (
        (dict(original_certificate_no=None), "VALIDATION_FAILED", "original_certificate_no"),
        (dict(valid_until=dt.date(2027, 1, 1)), "ORIGINAL_EXPIRED", "valid_until"),
        (dict(valid_from=dt.date(2027, 4, 1), valid_until=dt.date(2028, 1, 1)), "VALIDATION_FAILED", "valid_from"),
        (dict(valid_from=dt.date(2024, 1, 1), valid_until=dt.date(2028, 1, 1)), "VALIDATION_FAILED", "valid_until"),
    ):
        with pytest.raises(errors.SwmsError) as caught:
            submit(session, K.REPLACEMENT, snap, replacement=good.model_copy(update=change))
        assert (caught.value.code, caught.value.field) == (code, field), change
    application = submit(session, K.REPLACEMENT, snap, replacement=good)
    data = domain.issuance_data(session, application)
    assert (data.original_certificate_no, data.original_registration_type) == ("20190001", "再登记")
    assert (data.original_valid_from, data.original_valid_until) == (good.valid_from, good.valid_until)
    with pytest.raises(errors.SwmsError) as caught:       # the same paper NO, same province, someone else
        submit(session, K.REPLACEMENT, snapshot(), replacement=good)
    assert (caught.value.code, caught.value.field) == ("ORIGINAL_NO_IN_USE", "original_certificate_no")
    assert submit(session, K.REPLACEMENT, snapshot(region="440305"), replacement=good).status == "初审中"


# ---- continuing-education records -------------------------------------------------------------

def test_records_are_upserted_by_source_and_record_id(session):
    person = str(uuid.uuid4())
    kwargs = dict(source="learning", record_id="R1", course="伦理", provider="平台", completed_on=dt.date(2026, 1, 1),
                  person_id=person, actor="t")
    assert domain.record_ce(session, hours=2, **kwargs) == "added"
    assert domain.record_ce(session, hours=2, **kwargs) == "unchanged"
    assert domain.record_ce(session, hours=3.5, **kwargs) == "updated"
    assert session.execute(select(m.CeRecord.hours_tenths)).scalar_one() == 35
    # Events are consumed in parallel: an older version arriving after a newer one is ignored.
    newer, older = dt.datetime(2026, 5, 2, 8, tzinfo=dt.UTC), dt.datetime(2026, 5, 2, 7, tzinfo=dt.UTC)
    kwargs["record_id"] = "R2"
    assert domain.record_ce(session, hours=6, source_time=newer, **kwargs) == "added"
    assert domain.record_ce(session, hours=4, source_time=older, **kwargs) == "stale"
    assert session.execute(select(m.CeRecord.hours_tenths).where(m.CeRecord.record_id == "R2")).scalar_one() == 60


def test_file_import_reports_each_bad_row_and_is_idempotent(session):
    good_id = valid_id("11010519900307123")
    text = ("record_id,id_number,name,course,provider,hours,completed_on\n"
            f"A1,{good_id},李明华,伦理,平台,2.5,2026-01-01\n"
            f"A2,360426199101010072,张三,伦理,平台,2,2026-01-01\n"
            f"A3,{good_id},李明华,伦理,平台,-1,2026-01-01\n"
            f"A4,{good_id},李明华,伦理,平台,abc,2026-01-01\n"
            f"A5,{good_id},李明华,伦理,平台,2,2026/01/01\n"
            f"A6,{good_id},李明华,伦理,平台,2,2999-01-01\n"
            f"A1,{good_id},李明华,伦理,平台,2.5,2026-01-01\n"
            f",{good_id},李明华,伦理,平台,2,2026-01-01\n"
            f"A9,{good_id},李明华,伦理,平台,1.25,2026-01-01\n"
            f"A10,{good_id},李明华,伦理\u202e,平台,2,2026-01-01\n"
            f"A11,{good_id},李明华,伦理,平台😀,2,2026-01-01\n")
    rows = ce_import.read_file(text.encode("gb18030"))
    report = ce_import.import_records(session, rows, "learning", "t", today=TODAY)
    assert report.added == 1
    assert [line for line, _ in report.rejected] == [3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
    reasons = dict(report.rejected)
    assert "id_number" in reasons[3] and "大于0" in reasons[4] and "abc" in reasons[5]
    assert "date" in reasons[6] and "future" in reasons[7] and "twice" in reasons[8] and "一位小数" in reasons[10]
    assert reasons[11] == "course invalid: bidi control U+202E at character 3"
    assert reasons[12] == "provider invalid: emoji U+1F600 at character 3"
    again = ce_import.import_records(session, ce_import.read_file(text.encode("utf-8")), "learning", "t", today=TODAY)
    assert (again.added, again.unchanged) == (0, 1)
    with pytest.raises(ValueError, match="missing columns"):
        ce_import.read_file(b"record_id,hours\nA,1\n")


# ---- registration's copy of the profile ----------------------------------------------------------

def test_the_copy_keeps_the_newest_revision_and_serves_only_that_revision(session):
    from swms.contracts.profile import CompletenessResponse
    person = str(uuid.uuid4())
    complete = CompletenessResponse(complete=True, missing=[])
    domain.store_copy(session, domain.Fetched(snapshot(person_id=person, revision=5), complete))
    domain.store_copy(session, domain.Fetched(snapshot(person_id=person, revision=4, unit_name="旧"), complete))
    copy = domain.stored_copy(session, person, 5)
    assert copy is not None and not copy.live and copy.snapshot.unit_name == "某公司"
    assert domain.stored_copy(session, person, 4) is None and domain.stored_copy(session, person, 6) is None
    session.get(m.ProfileCopy, person).fetched_at -= domain.COPY_MAX_AGE + dt.timedelta(seconds=1)
    assert domain.stored_copy(session, person, 5) is None          # too old: fetched again
    incomplete = CompletenessResponse(complete=False, missing=["照片"])
    domain.store_copy(session, domain.Fetched(snapshot(person_id=person, revision=6), incomplete))
    error = domain.incomplete_error(domain.stored_copy(session, person, 6).completeness)
    assert (error.code, error.field, error.details[0]["label"]) == ("PROFILE_INCOMPLETE", "profile", "照片")


# ---- file retention: what a submission and a certificate ask profile to keep ---------------------

def _holds(session) -> list[dict]:
    """The holds asked for, in order: a submission's in its application_submitted, a certificate's
    in a files_held event."""
    rows = session.execute(select(m.outbox.table.c.event_type, m.outbox.table.c.payload).where(
        m.outbox.table.c.event_type.in_(["files_held", "application_submitted"])).order_by(m.outbox.table.c.id))
    holds = [json.loads(row.payload) for row in rows]
    return [hold.get("files_held", hold) for hold in holds if hold.get("files_held", hold) is not None]


def test_each_submitted_version_and_certificate_holds_the_files_it_names(session):
    job = {"experience_id": "job-1", "unit_name": "某公司", "position": "职员", "start_date": dt.date(2020, 1, 1),
           "sanqu_programme": True, "proof_keys": ["proofs/p/2.pdf", "proofs/p/1.pdf"]}
    honour = {"honour_id": "h-1", "title": "先进个人", "level": "省", "awarding_body": "省民政厅",
              "awarded_on": dt.date(2021, 1, 1), "proof_key": "proofs/p/3.pdf"}
    snap = snapshot(exam_year=2026, photo_key="photos/p/a.jpg", work_experiences=[job], honours=[honour])
    application = submit(session, K.FIRST_REGISTRATION, snap, retention_years=5)
    session.flush()
    [first] = _holds(session)
    assert first["holder"] == f"submission:{application.application_id}:1"
    assert first["file_keys"] == ["photos/p/a.jpg", "proofs/p/1.pdf", "proofs/p/2.pdf", "proofs/p/3.pdf"]
    submitted_at = application.submitted_at
    assert dt.datetime.fromisoformat(first["held_until"]).replace(tzinfo=None) == submitted_at.replace(
        year=submitted_at.year + 5)

    # Returned and resubmitted with another photo: round 2 holds its own files; round 1's hold stays.
    domain.apply_rejection(session, ApplicationReturned(
        application_id=application.application_id, person_id=snap.person_id, kind=K.FIRST_REGISTRATION,
        region_code=snap.region_code, stage=Stage.INITIAL, reason="照片不清晰", decided_by="officer",
        decided_at=dt.datetime(2027, 3, 16, tzinfo=dt.UTC)))
    again = snap.model_copy(update={"photo_key": "photos/p/b.jpg", "work_experiences": [], "honours": [],
                                    "revision": 2})
    submit(session, K.FIRST_REGISTRATION, again, application_id=application.application_id, retention_years=1)
    session.flush()
    second = _holds(session)[1]
    assert (second["holder"], second["file_keys"]) == (f"submission:{application.application_id}:2", ["photos/p/b.jpg"])

    # The certificate holds the photo of the version it was issued from, until its validity ends.
    issue(session, again, application.application_id, "1120272000001", dt.date(2027, 4, 1), dt.date(2030, 3, 31))
    third = _holds(session)[2]
    assert (third["holder"], third["file_keys"], third["held_until"][:19]) == (
        "certificate:1120272000001", ["photos/p/b.jpg"], "2030-04-01T00:00:00")


def test_a_snapshot_without_files_asks_for_no_hold(session):
    submit(session, K.FIRST_REGISTRATION, snapshot(exam_year=2026))
    session.flush()
    assert _holds(session) == []


def test_retention_years_from_config():
    assert domain.retention_years({}) == domain.RECORD_RETENTION_YEARS == 5
    assert domain.retention_years({"RECORD_RETENTION_YEARS": "10"}) == 10
    assert domain.retention_years({"RECORD_RETENTION_YEARS": ""}) == 5


def test_the_grace_period_outlasts_registrations_copy_of_the_form():
    """A submission may use registration's copy of the form (at most COPY_MAX_AGE old) and announce
    its hold after its commit: profile must keep a file a snapshot named at least that long, plus
    a day for the event, after the file left the form (config.yaml default and the code's)."""
    import re

    from services.profile.files import Settings
    from swms.config import REPO_ROOT
    text = (REPO_ROOT / "services" / "profile" / "config.yaml").read_text(encoding="utf-8")
    configured = float(re.search(r"\$\{PROFILE_FILE_GRACE_HOURS:([0-9.]+)\}", text).group(1))
    for hours in (configured, Settings().file_grace_hours, Settings.from_config({}).file_grace_hours):
        assert dt.timedelta(hours=hours) >= domain.COPY_MAX_AGE + dt.timedelta(days=1)


def test_a_submission_carries_its_hold_in_its_one_event(session):
    """One event per submission: application_submitted names the files its version holds (profile
    records the hold from it), no files_held of its own."""
    snap = snapshot(exam_year=2026, photo_key="photos/p/a.jpg")
    application = submit(session, K.FIRST_REGISTRATION, snap)
    rows = session.execute(select(m.outbox.table.c.event_id, m.outbox.table.c.event_type, m.outbox.table.c.payload)
                           .order_by(m.outbox.table.c.id)).all()
    assert [row.event_type for row in rows] == ["application_submitted"]
    submitted = json.loads(rows[0].payload)
    assert submitted["event_id"] == rows[0].event_id
    assert (submitted["application_id"], submitted["round"]) == (application.application_id, 1)
    assert submitted["files_held"]["file_keys"] == ["photos/p/a.jpg"]
    assert submitted["files_held"]["holder"] == f"submission:{application.application_id}:1"
    m.outbox.add(session)     # nothing to add: no statement, no row
    assert count(session, m.outbox.table) == 1


def test_a_proof_the_session_holds_shows_its_submission(session):
    """The proofs are attached by one statement on the table; a row the session holds shows it at once."""
    snap, _ = holder(session)
    ce(session, snap.person_id, 50)
    key = add_proof(session, snap.person_id)
    proof = session.get(m.ProofFileRow, key)     # held across the submission
    application = submit(session, K.RE_REGISTRATION, snap, courses=[course(key, hours=40)])
    assert (proof.application_id, proof.submitted, proof.released_at) == (application.application_id, True, None)
    assert not session.dirty
