"""Where review has an application (services/registration/progress.py): the level from review's
events, worded with the status for the applicant and the help desk, never moved back by an event
arriving late, twice or out of order. In-memory SQLite, no broker."""
from __future__ import annotations

import datetime as dt

from services.registration import domain, progress
from services.registration import models as m
from swms.contracts.common import ApplicationKind as K
from swms.contracts.common import ApplicationStatus as S
from swms.contracts.events import ApplicationAccepted, ApplicationApproved, ApplicationRejected, ApplicationReturned
from swms.contracts.registration import ReplacementDetails
from swms.contracts.review import Stage
from tests.unit.test_registration_domain import issue, session, snapshot, submit  # noqa: F401 (session: fixture)

NOW = dt.datetime(2027, 3, 15, 2, 0, tzinfo=dt.UTC)


def _common(application, **extra):
    return dict(application_id=application.application_id, person_id=application.person_id,
                kind=K(application.kind), region_code=application.region_code, **extra)


def accepted(application, level="county", round_=1):
    return ApplicationAccepted(**_common(application), round=round_, level=level, stage=Stage.INITIAL, accepted_at=NOW)


def approved(application, level, stage, next_level=None, next_stage=None, round_=1):
    return ApplicationApproved(**_common(application), stage=stage, final=next_level is None, level=level,
                               next_level=next_level, next_stage=next_stage, round=round_,
                               decided_by=f"{level}-officer", decided_at=NOW)


def refused(cls, application, level, stage, round_=1):
    return cls(**_common(application), stage=stage, level=level, round=round_, reason="材料不全",
               decided_by=f"{level}-officer", decided_at=NOW)


def shown(application) -> tuple[str, str | None, str]:
    return (application.status, *progress.view(application))


def test_a_three_level_chain_shows_the_city_while_the_status_says_final_review(session):
    snap = snapshot()
    application = submit(session, K.FIRST_REGISTRATION, snap)
    assert shown(application) == ("初审中", None, "初审中")            # review has not accepted it yet
    domain.apply_acceptance(session, accepted(application))
    assert shown(application) == ("初审中", "county", "初审中（区县级）")
    county = approved(application, "county", Stage.INITIAL, "city", Stage.INTERMEDIATE)
    domain.apply_approval(session, county)
    assert shown(application) == ("终审中", "city", "审核中（市级）")
    domain.apply_approval(session, county)                               # the same approval again
    domain.apply_acceptance(session, accepted(application))              # the acceptance, late
    assert shown(application) == ("终审中", "city", "审核中（市级）")
    domain.apply_approval(session, approved(application, "city", Stage.INTERMEDIATE, "province", Stage.FINAL))
    assert shown(application) == ("终审中", "province", "终审中（省级）")
    domain.apply_approval(session, approved(application, "province", Stage.FINAL))
    assert shown(application) == ("终审中", "province", "终审通过（省级），正在制发证书")
    issue(session, snap, application.application_id, "1120272000001", dt.date(2027, 3, 15), dt.date(2030, 3, 14))
    assert shown(application) == ("已出证", None, "已出证")
    moves = [a for a in m.audit.for_entity(session, application.application_id)
             if a["action"] == "application.review_position"]
    assert [(a["actor"], a["detail"]["level"], a["detail"]["outcome"]) for a in moves] == [
        ("review", "county", "pending"), ("county-officer", "city", "pending"), ("city-officer", "province", "pending"),
        ("province-officer", "province", "approved")]


def test_refusals_name_the_level_that_decided_and_a_resubmission_starts_again(session):
    snap = snapshot()
    application = submit(session, K.FIRST_REGISTRATION, snap)
    domain.apply_approval(session, approved(application, "county", Stage.INITIAL, "city", Stage.INTERMEDIATE))
    assert shown(application) == ("终审中", "city", "审核中（市级）")   # the approval came before the acceptance
    domain.apply_acceptance(session, accepted(application))
    assert shown(application) == ("终审中", "city", "审核中（市级）")
    domain.apply_rejection(session, refused(ApplicationReturned, application, "city", Stage.INTERMEDIATE))
    assert shown(application) == ("终审不通过", "city", "退回修改（市级）")

    again = submit(session, K.FIRST_REGISTRATION, snap)
    assert (again.application_id, again.round) == (application.application_id, 2)
    assert shown(again) == ("初审中", None, "初审中")
    domain.apply_acceptance(session, accepted(again, round_=2))
    domain.apply_approval(session, approved(again, "county", Stage.INITIAL, "city", Stage.INTERMEDIATE, round_=2))
    domain.apply_rejection(session, refused(ApplicationRejected, again, "city", Stage.INTERMEDIATE, round_=2))
    assert shown(again) == ("终审不通过", "city", "审核不通过（市级）")   # not 终审: the province never saw it

    other = submit(session, K.FIRST_REGISTRATION, snapshot())
    domain.apply_acceptance(session, accepted(other))
    domain.apply_rejection(session, refused(ApplicationRejected, other, "county", Stage.INITIAL))
    assert shown(other) == ("初审不通过", "county", "初审不通过（区县级）")


def test_a_county_only_replacement_reads_as_its_own_statuses(session):
    snap = snapshot()
    application = submit(session, K.REPLACEMENT, snap, replacement=ReplacementDetails(
        original_certificate_no="12345678", registration_type="首次登记", valid_from=dt.date(2025, 1, 1),
        valid_until=dt.date(2027, 12, 31)))
    domain.apply_acceptance(session, accepted(application))
    assert shown(application) == ("初审中", "county", "初审中（区县级）")
    domain.apply_rejection(session, refused(ApplicationRejected, application, "county", Stage.INITIAL))
    assert shown(application) == ("审核不通过", "county", "审核不通过（区县级）")
    again = submit(session, K.REPLACEMENT, snap)
    domain.apply_acceptance(session, accepted(again, round_=2))
    domain.apply_approval(session, approved(again, "county", Stage.INITIAL, round_=2))
    assert shown(again) == ("初审中", "county", "审核通过（区县级），正在制发证书")


def test_events_from_an_older_review_without_levels_change_nothing(session):
    application = submit(session, K.FIRST_REGISTRATION, snapshot())
    domain.apply_approval(session, ApplicationApproved(**_common(application), stage=Stage.INITIAL, final=False,
                                                       decided_by="c", decided_at=NOW))
    assert shown(application) == (S.FINAL_REVIEW.value, None, "终审中")


def test_a_late_decision_on_an_earlier_round_moves_nothing(session):
    """Rejected at the county, corrected and resubmitted: an approval or rejection of round 1
    arriving now (redelivered, out of order) neither moves the status nor the level of round 2."""
    application = submit(session, K.FIRST_REGISTRATION, snapshot())
    domain.apply_rejection(session, refused(ApplicationReturned, application, "county", Stage.INITIAL))
    again = submit(session, K.FIRST_REGISTRATION, snapshot(person_id=application.person_id))
    domain.apply_acceptance(session, accepted(again, round_=2))
    late_approval = approved(again, "county", Stage.INITIAL, "city", Stage.INTERMEDIATE)
    late_rejection = refused(ApplicationRejected, again, "county", Stage.INITIAL)
    domain.apply_approval(session, late_approval)
    domain.apply_rejection(session, late_rejection)
    assert shown(again) == ("初审中", "county", "初审中（区县级）")
    assert [c.status for c in again.history] == ["初审中", "初审不通过", "初审中"]
    ignored = [a["detail"] for a in m.audit.for_entity(session, again.application_id)
               if a["action"] == "application.event_ignored"]
    assert [(d["event_id"], d["round"], d["current_round"]) for d in ignored] == [
        (late_approval.event_id, 1, 2), (late_rejection.event_id, 1, 2)]
