"""Registration over a real RabbitMQ, on SQLite and on PostgreSQL.

Identity, profile and registration run; review and certificate do not: their outcome events are
published the way they publish them.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import uuid

import pytest
from sqlalchemy import func, select

from services.identity import domain as identity_domain
from services.registration.models import Application, StatusChange, outbox
from swms.contracts.common import ApplicationKind
from swms.contracts.events import (
    ApplicationApproved,
    ApplicationRejected,
    CertificateIssued,
)
from swms.contracts.review import Stage
from swms.errors import SwmsError
from tests.support import (
    EventTap,
    dispatch,
    officer_token,
    rpc_client,
    session_for,
    valid_id,
    wait_until,
    worker_token,
)

pytestmark = pytest.mark.integration

THIS_YEAR = dt.date.today().year
HOLDER = {"name": "李明华", "id_number": valid_id("11010519900307123"), "email": "li@example.cn"}
OTHER = {"name": "欧阳·娜仁", "id_number": valid_id("44030519950612402"), "email": "ouyang@example.cn"}
LATE = {"name": "王建国", "id_number": valid_id("32010219880815201"), "email": "wang@example.cn"}
PASSWORD = "Strong-pass-1"
COUNTY = "110105"
BASIC_INFO = {   # tools/walkthrough.py
    "ethnicity": "汉族", "education": "本科", "mobile": "13800138000", "address": "北京市朝阳区朝阳门外大街1号",
    "region_code": COUNTY, "unit_category": "社会工作服务机构", "unit_name": "北京市朝阳区阳光社会工作服务中心",
    "position": "社会工作者", "truth_commitment": True,
}


@pytest.fixture
def registration(start_service):
    identity = start_service("identity")
    with session_for(identity["DB_URL"]) as session:
        report = identity_domain.import_passers(session, [
            {"name": HOLDER["name"], "id_number": HOLDER["id_number"], "level": "社会工作师",
             "management_number": f"{THIS_YEAR}11000000123456", "exam_year": str(THIS_YEAR), "province": "11"},
            {"name": OTHER["name"], "id_number": OTHER["id_number"], "level": "助理社会工作师",
             "management_number": f"{THIS_YEAR}44000000654321", "exam_year": str(THIS_YEAR), "province": "44"},
            {"name": LATE["name"], "id_number": LATE["id_number"], "level": "助理社会工作师",
             "management_number": f"{THIS_YEAR - 3}32000000111111", "exam_year": str(THIS_YEAR - 3),
             "province": "32"},
        ])
        session.commit()
    assert report.added == 3
    start_service("profile")
    return start_service("registration", FIRST_REGISTRATION_WINDOW_YEARS=1)


@pytest.fixture
def submitted_tap(registration, amqp_uri):
    tap = EventTap(amqp_uri, "registration", "application_submitted")
    yield tap
    tap.close()


def sign_up(amqp_uri: str, keys_dir, who: dict = HOLDER, profile: bool = True) -> tuple[str, str]:
    """Returns (person_id, token); with ``profile`` the basic information is saved too."""
    with rpc_client(amqp_uri) as client:
        person_id = client.identity.sign_up({**{k: who[k] for k in ("name", "id_number", "email")},
                                             "password": PASSWORD})["person_id"]
    token = worker_token(keys_dir, person_id)
    if profile:
        with rpc_client(amqp_uri, token) as client:
            client.profile.save_basic_info(BASIC_INFO)
    return person_id, token


def submit(amqp_uri: str, token: str, commitment: bool = True) -> dict:
    with rpc_client(amqp_uri, token) as client:
        return client.registration.submit_first_registration({"commitment": commitment})


def get_application(amqp_uri: str, token: str, application_id: str) -> dict:
    with rpc_client(amqp_uri, token) as client:
        return client.registration.get_application({"application_id": application_id})


def stored(config) -> dict[str, int]:
    with session_for(config["DB_URL"]) as session:
        def count(table) -> int:
            return session.execute(select(func.count()).select_from(table)).scalar_one()
        return {"applications": count(Application), "history": count(StatusChange), "events": count(outbox.table)}


def statuses(application: dict) -> list[str]:
    return [change["status"] for change in application["history"]]


def wait_for_status(amqp_uri: str, token: str, application_id: str, status: str) -> dict:
    with rpc_client(amqp_uri, token) as client:
        def reached():
            application = client.registration.get_application({"application_id": application_id})
            return application if application["status"] == status else None
        return wait_until(reached, what=f"status {status}")


def outcome(event_cls, application: dict, **fields):
    common = {"application_id": application["application_id"], "person_id": application["person_id"],
              "kind": ApplicationKind.FIRST_REGISTRATION, "region_code": COUNTY}
    if event_cls is CertificateIssued:
        today = dt.date.today()
        return CertificateIssued(**{k: common[k] for k in ("application_id", "person_id", "region_code")},
                                 holder_name_masked="李**", id_number_masked="110***********1239",
                                 level="社会工作师", authority="北京市朝阳区民政局", valid_from=today,
                                 valid_until=today.replace(year=today.year + 3),
                                 issued_at=dt.datetime.now(dt.UTC), sha256="0" * 64, **fields)
    return event_cls(decided_by="county-officer-1", decided_at=dt.datetime.now(dt.UTC), **common, **fields)


def test_submission_requires_the_commitment(registration, amqp_uri, keys_dir):
    _, token = sign_up(amqp_uri, keys_dir)
    with pytest.raises(SwmsError) as caught:
        submit(amqp_uri, token, commitment=False)
    assert (caught.value.code, caught.value.field) == ("COMMITMENT_REQUIRED", "commitment")
    assert stored(registration) == {"applications": 0, "history": 0, "events": 0}


def test_submission_requires_a_complete_profile(registration, amqp_uri, keys_dir):
    _, token = sign_up(amqp_uri, keys_dir, profile=False)
    with pytest.raises(SwmsError) as caught:
        submit(amqp_uri, token)
    assert caught.value.code == "PROFILE_INCOMPLETE"
    missing = {detail["field"] for detail in caught.value.details}
    assert {"民族", "学历", "手机号码", "通讯地址", "单位名称", "职务"} <= missing
    assert all(detail["code"] == "PROFILE_INCOMPLETE" for detail in caught.value.details)
    assert "民族" in caught.value.message
    assert stored(registration) == {"applications": 0, "history": 0, "events": 0}
    with rpc_client(amqp_uri, token) as client:
        assert client.registration.list_my_applications() == {"items": []}


def test_submission_publishes_an_event_without_the_id_number(registration, amqp_uri, keys_dir, submitted_tap):
    person_id, token = sign_up(amqp_uri, keys_dir)
    application = submit(amqp_uri, token)
    assert application["status"] == "初审中"
    assert (application["person_id"], application["kind"]) == (person_id, "first_registration")
    assert statuses(application) == ["初审中"]
    assert application["rejection_reason"] is None and application["certificate_number"] is None

    [event] = submitted_tap.collect(1)
    assert event["application_id"] == application["application_id"]
    assert (event["region_code"], event["kind"], event["person_id"]) == (COUNTY, "first_registration", person_id)
    assert event["applicant_name_masked"] == "李**"
    assert event["resubmission"] is False
    wire = json.dumps(event, ensure_ascii=False)
    assert HOLDER["id_number"] not in wire and HOLDER["id_number"][:17] not in wire
    assert HOLDER["name"] not in wire
    with rpc_client(amqp_uri, token) as client:
        [mine] = client.registration.list_my_applications()["items"]
    assert mine["application_id"] == application["application_id"]


def test_a_second_submission_is_refused(registration, amqp_uri, keys_dir):
    _, token = sign_up(amqp_uri, keys_dir)
    first = submit(amqp_uri, token)
    before = stored(registration)
    with pytest.raises(SwmsError) as caught:
        submit(amqp_uri, token)
    assert caught.value.code == "APPLICATION_ALREADY_OPEN"
    assert stored(registration) == before == {"applications": 1, "history": 1, "events": 1}
    assert get_application(amqp_uri, token, first["application_id"]) == first


def test_review_outcomes_move_the_status_once_each(registration, amqp_uri, keys_dir, caplog):
    caplog.set_level(logging.INFO, logger="swms.events")
    _, token = sign_up(amqp_uri, keys_dir)
    application = submit(amqp_uri, token)
    application_id = application["application_id"]

    initial = outcome(ApplicationApproved, application, stage=Stage.INITIAL, final=False)
    dispatch(amqp_uri, initial)
    dispatch(amqp_uri, initial)   # redelivered: same event_id
    wait_for_status(amqp_uri, token, application_id, "终审中")
    wait_until(lambda: f"event {initial.event_id} already handled" in caplog.text
               or statuses(get_application(amqp_uri, token, application_id)).count("终审中") > 1,
               what="the redelivered approval to be handled")
    assert statuses(get_application(amqp_uri, token, application_id)) == ["初审中", "终审中"]

    # The final approval changes no status: 已出证 comes with the certificate.
    final = outcome(ApplicationApproved, application, stage=Stage.FINAL, final=True)
    dispatch(amqp_uri, final)
    issued = outcome(CertificateIssued, application, certificate_number="110105202600001")
    dispatch(amqp_uri, issued)
    done = wait_for_status(amqp_uri, token, application_id, "已出证")
    assert done["certificate_number"] == "110105202600001"
    assert statuses(done) == ["初审中", "终审中", "已出证"]
    assert [change["actor"] for change in done["history"][1:]] == ["county-officer-1", "certificate"]


def test_rejected_applicant_sees_the_reason_and_resubmits(registration, amqp_uri, keys_dir, submitted_tap):
    _, token = sign_up(amqp_uri, keys_dir)
    application = submit(amqp_uri, token)
    application_id = application["application_id"]
    dispatch(amqp_uri, outcome(ApplicationRejected, application, stage=Stage.INITIAL, reason="照片不符合要求"))
    rejected = wait_for_status(amqp_uri, token, application_id, "初审不通过")
    assert rejected["rejection_reason"] == "照片不符合要求"
    assert rejected["history"][-1]["reason"] == "照片不符合要求"

    again = submit(amqp_uri, token)
    assert (again["application_id"], again["status"], again["rejection_reason"]) == (application_id, "初审中", None)
    stored_now = get_application(amqp_uri, token, application_id)
    assert (stored_now["status"], stored_now["rejection_reason"]) == ("初审中", None)
    assert statuses(stored_now) == ["初审中", "初审不通过", "初审中"]
    events = submitted_tap.collect(2)
    assert [(e["application_id"], e["resubmission"]) for e in events] == [(application_id, False),
                                                                          (application_id, True)]
    assert stored(registration) == {"applications": 1, "history": 3, "events": 2}


def test_resubmission_answer_shows_the_new_status_in_its_history(registration, amqp_uri, keys_dir):
    """The answer to a resubmission must agree with itself and with get_application."""
    _, token = sign_up(amqp_uri, keys_dir)
    application = submit(amqp_uri, token)
    dispatch(amqp_uri, outcome(ApplicationRejected, application, stage=Stage.INITIAL, reason="照片不符合要求"))
    wait_for_status(amqp_uri, token, application["application_id"], "初审不通过")
    again = submit(amqp_uri, token)
    assert again["status"] == "初审中"
    assert statuses(again) == ["初审中", "初审不通过", "初审中"]
    assert again == get_application(amqp_uri, token, application["application_id"])


def test_applications_are_private_and_issuance_data_is_for_services(registration, amqp_uri, keys_dir):
    _, token = sign_up(amqp_uri, keys_dir)
    application_id = submit(amqp_uri, token)["application_id"]
    ref = {"application_id": application_id}
    other_person, other_token = sign_up(amqp_uri, keys_dir, OTHER, profile=False)
    strangers = (other_token, worker_token(keys_dir, str(uuid.uuid4())),
                 officer_token(keys_dir, "110106", "county"))
    for stranger in strangers:
        with rpc_client(amqp_uri, stranger) as client, pytest.raises(SwmsError) as caught:
            client.registration.get_application(ref)
        assert caught.value.code == "FORBIDDEN"
    with rpc_client(amqp_uri, officer_token(keys_dir, COUNTY, "county")) as client:
        assert client.registration.get_application(ref)["status"] == "初审中"

    for refused in (token, other_token):
        with rpc_client(amqp_uri, refused) as client, pytest.raises(SwmsError) as caught:
            client.registration.get_issuance_data(ref)
        assert caught.value.code == "FORBIDDEN"
    service = (keys_dir / "certificate.service-token").read_text().strip()
    with rpc_client(amqp_uri, service) as client:
        data = client.registration.get_issuance_data(ref)
    assert (data["application_id"], data["kind"]) == (application_id, "first_registration")
    snapshot = data["snapshot"]
    assert (snapshot["id_number"], snapshot["name"]) == (HOLDER["id_number"], HOLDER["name"])
    assert (snapshot["region_code"], snapshot["unit_name"]) == (COUNTY, BASIC_INFO["unit_name"])
    assert snapshot["exam_year"] == THIS_YEAR
    assert other_person != snapshot["person_id"]


def test_first_registration_window_closes_a_year_after_the_exam(registration, amqp_uri, keys_dir):
    _, token = sign_up(amqp_uri, keys_dir, LATE)
    with pytest.raises(SwmsError) as caught:
        submit(amqp_uri, token)
    assert (caught.value.code, caught.value.field) == ("FIRST_REGISTRATION_WINDOW_CLOSED", "exam_year")
    assert str(THIS_YEAR - 3) in caught.value.message
    assert stored(registration) == {"applications": 0, "history": 0, "events": 0}
