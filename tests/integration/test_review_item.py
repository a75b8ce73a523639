"""Opening one review item: the application as submitted, links to its files, the review trail.

Review runs for real (its own database, broker, token checks). Registration and profile are
**stand-ins** here, on the same broker and with the same RPC names, contracts and token checks
(``swms.auth.Auth``): registration's own tables are being reworked in parallel (issue 5), and the
stand-ins record *who* called them and *when*, which is what this test must observe: review checks
the officer's jurisdiction before it fetches anything, and fetches the snapshot with its own
service token. The real registration and profile are exercised end to end in tests/e2e.
"""
from __future__ import annotations

import datetime as dt
import uuid

import pytest
from nameko.rpc import rpc

from swms import errors
from swms.auth import SERVICE, Auth
from swms.contracts.common import ApplicationKind
from swms.contracts.profile import FileLink, FileRef, Honour, ProfileSnapshot, WorkExperience
from swms.contracts.registration import (
    ApplicationRef,
    ContinuingEducation,
    IssuanceData,
    OfflineCourse,
    OnlineRecord,
    ProofLink,
    ProofLinkRequest,
)
from swms.errors import SwmsError
from swms.rpc import contract
from tests.integration.test_review import (
    COUNTY,
    OTHER_COUNTY,
    PROVINCE,
    audit_actions,
    item_row,
    seed,
)
from tests.support import officer_token, rpc_client

pytestmark = pytest.mark.integration

ID_NUMBER = "110105199003071239"


class Calls:
    registration: list[tuple[str, str, str]] = []
    profile: list[tuple[str, str, str]] = []
    snapshots: dict[str, IssuanceData] = {}


class RegistrationStandIn:
    name = "registration"
    auth = Auth()

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(ProofLinkRequest, ProofLink)
    def get_proof_link(self, request: ProofLinkRequest):
        caller = self.auth.require()
        Calls.registration.append((caller.role, caller.subject, request.proof_key))
        return ProofLink(url=f"https://files.example/{request.proof_key}?X-Amz-Expires=300", expires_in_seconds=300)

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(ApplicationRef, IssuanceData)
    def get_issuance_data(self, request: ApplicationRef):
        caller = self.auth.require(SERVICE)         # as the real one: services only
        Calls.registration.append((caller.role, caller.subject, request.application_id))
        if request.application_id not in Calls.snapshots:
            raise errors.not_found("申请", "application_id")
        return Calls.snapshots[request.application_id]


class ProfileStandIn:
    name = "profile"
    auth = Auth()

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(FileRef, FileLink)
    def get_file_link(self, request: FileRef):
        caller = self.auth.require()
        Calls.profile.append((caller.role, caller.subject, request.file_key))
        if request.file_key.endswith("gone"):
            raise errors.not_found("文件", "file_key")
        return FileLink(url=f"https://files.example/{request.file_key}?X-Amz-Expires=300",
                        content_type="application/pdf", expires_in_seconds=300)


@pytest.fixture
def review(start_service):
    return start_service("review")


@pytest.fixture
def stand_ins(service_config, container_factory):
    Calls.registration, Calls.profile, Calls.snapshots = [], [], {}
    for cls in (RegistrationStandIn, ProfileStandIn):
        container_factory(cls, service_config("review")).start()
    return Calls


def snapshot_for(application_id: str, person_id: str, kind=ApplicationKind.FIRST_REGISTRATION) -> IssuanceData:
    snapshot = ProfileSnapshot(
        person_id=person_id, name="李明华", id_number=ID_NUMBER, gender="男", birth_date=dt.date(1990, 3, 7),
        level="社会工作师", management_number="2025110000001234", exam_year=2025, region_code=COUNTY,
        unit_category="社会工作服务机构", unit_name="朝阳区阳光社会工作服务中心", position="项目主管",
        photo_key="photos/p1.jpg",
        work_experiences=[WorkExperience(experience_id="w1", unit_name="阳光社工", position="社工",
                                         start_date=dt.date(2019, 7, 1), sanqu_programme=True,
                                         proof_keys=["proofs/w1-a.pdf", "proofs/w1-gone"])],
        honours=[Honour(honour_id="h1", title="优秀社会工作者", level="地市", awarding_body="北京市民政局",
                        awarded_on=dt.date(2023, 12, 1), proof_key="proofs/h1.pdf")],
        revision=7)
    return IssuanceData(application_id=application_id, kind=kind, snapshot=snapshot,
                        original_certificate_no="12345678" if kind == ApplicationKind.REPLACEMENT else None)


def test_an_officer_opens_an_item_with_the_form_as_submitted_files_and_trail(review, stand_ins, amqp_uri, keys_dir):
    [item_id] = seed(review, 1)
    row = item_row(review, item_id)
    stand_ins.snapshots[row.application_id] = snapshot_for(row.application_id, row.person_id)
    with rpc_client(amqp_uri, officer_token(keys_dir, COUNTY, "county", "county-officer-1")) as officer:
        detail = officer.review.get_item({"item_id": item_id})
    form = detail["form"]
    assert (form["name"], form["id_number_masked"], form["profile_revision"]) == ("李明华", "110***********1239", 7)
    assert ID_NUMBER not in str(detail), "the full ID number never reaches the officer"
    assert (detail["item"]["item_id"], detail["item"]["stage"], detail["item"]["deadline_state"]) == (
        item_id, "initial", "on_time")
    assert [f["kind"] for f in detail["files"]] == ["photo", "work_experience_proof", "work_experience_proof",
                                                     "honour_proof"]
    assert detail["files"][1]["url"].startswith("https://files.example/proofs/w1-a.pdf")
    assert detail["files"][1]["expires_in_seconds"] == 300
    assert (detail["files"][2]["url"], detail["files"][2]["note"]) == (None, "文件链接暂不可用，请稍后刷新")
    assert form["work_experiences"][0]["proof_files"] == [1, 2] and form["honours"][0]["proof_file"] == 3
    assert "proof_keys" not in str(form) and "photos/p1.jpg" not in str(form)
    assert [(t["item_id"], t["status"]) for t in detail["trail"]] == [(item_id, "pending")]
    # Fetched with review's own service token, once; file links likewise.
    assert stand_ins.registration == [("service", "review", row.application_id)]
    assert sorted(c[2] for c in stand_ins.profile) == ["photos/p1.jpg", "proofs/h1.pdf", "proofs/w1-a.pdf",
                                                       "proofs/w1-gone"]
    assert {c[:2] for c in stand_ins.profile} == {("service", "review")}
    assert audit_actions(review, item_id) == ["item.opened", "item.viewed"]


def test_the_province_sees_the_county_decision_in_the_trail(review, stand_ins, amqp_uri, keys_dir):
    [item_id] = seed(review, 1, kind=ApplicationKind.FIRST_REGISTRATION)
    row = item_row(review, item_id)
    stand_ins.snapshots[row.application_id] = snapshot_for(row.application_id, row.person_id)
    with rpc_client(amqp_uri, officer_token(keys_dir, COUNTY, "county", "county-officer-1")) as county:
        county.review.decide({"item_id": item_id, "decision": "approve", "reason": "初审通过"})
    with rpc_client(amqp_uri, officer_token(keys_dir, PROVINCE, "province", "province-officer-1")) as province:
        [final] = province.review.list_queue({})["items"]
        detail = province.review.get_item({"item_id": final["item_id"]})
    assert [(t["stage"], t["status"], t["decided_by"], t["reason"]) for t in detail["trail"]] == [
        ("initial", "approved", "county-officer-1", "初审通过"), ("final", "pending", None, None)]


def test_nothing_is_fetched_for_an_officer_outside_the_jurisdiction(review, stand_ins, amqp_uri, keys_dir):
    [item_id] = seed(review, 1)
    row = item_row(review, item_id)
    stand_ins.snapshots[row.application_id] = snapshot_for(row.application_id, row.person_id)
    for region, level in ((OTHER_COUNTY, "county"), (PROVINCE, "province"), ("110000", "city")):
        with rpc_client(amqp_uri, officer_token(keys_dir, region, level, "outsider")) as outsider:
            with pytest.raises(SwmsError) as caught:
                outsider.review.get_item({"item_id": item_id})
        assert (caught.value.code, caught.value.field) == ("FORBIDDEN", "item_id")
    with rpc_client(amqp_uri, officer_token(keys_dir, COUNTY, "county", "county-officer-1")) as officer:
        with pytest.raises(SwmsError) as caught:
            officer.review.get_item({"item_id": str(uuid.uuid4())})
    assert (caught.value.code, caught.value.field) == ("NOT_FOUND", "item_id")
    assert stand_ins.registration == [] and stand_ins.profile == []
    assert audit_actions(review, item_id) == ["item.opened"]


def test_a_replacement_shows_the_paper_certificate_number(review, stand_ins, amqp_uri, keys_dir):
    [item_id] = seed(review, 1, kind=ApplicationKind.REPLACEMENT)
    row = item_row(review, item_id)
    stand_ins.snapshots[row.application_id] = snapshot_for(row.application_id, row.person_id,
                                                           ApplicationKind.REPLACEMENT)
    with rpc_client(amqp_uri, officer_token(keys_dir, COUNTY, "county", "county-officer-1")) as officer:
        detail = officer.review.get_item({"item_id": item_id})
    assert (detail["item"]["kind"], detail["form"]["original_certificate_no"]) == ("replacement", "12345678")


def test_a_re_registration_shows_continuing_education_with_links_to_its_proofs(review, stand_ins, amqp_uri,
                                                                             keys_dir):
    [item_id] = seed(review, 1, kind=ApplicationKind.RE_REGISTRATION)
    row = item_row(review, item_id)
    data = snapshot_for(row.application_id, row.person_id, ApplicationKind.RE_REGISTRATION)
    data.previous_certificate_number = "1120232000007"
    data.continuing_education = ContinuingEducation(
        period_from=dt.date(2023, 6, 1), period_until=dt.date(2026, 5, 31), required_hours=90, online_hours=60,
        offline_hours=32, total_hours=92,
        online_records=[OnlineRecord(source="platform", record_id="r1", course="社会工作伦理", provider="中国社会工作学习平台",
                                     hours=60, completed_on=dt.date(2025, 3, 1))],
        offline_courses=[OfflineCourse(institution="北京社会管理职业学院", course="督导实务", start_date=dt.date(2025, 5, 6),
                                       end_date=dt.date(2025, 5, 9), hours=32, proof_key="ce/course-1.pdf")])
    stand_ins.snapshots[row.application_id] = data
    with rpc_client(amqp_uri, officer_token(keys_dir, COUNTY, "county", "county-officer-1")) as officer:
        detail = officer.review.get_item({"item_id": item_id})
    education = detail["form"]["continuing_education"]
    assert (education["required_hours"], education["total_hours"]) == (90, 92)
    assert [r["course"] for r in education["online_records"]] == ["社会工作伦理"]
    course = education["offline_courses"][0]
    assert (course["course"], course["hours"]) == ("督导实务", 32)
    proof = detail["files"][course["proof_file"]]
    assert (proof["kind"], proof["url"]) == ("continuing_education_proof",
                                             "https://files.example/ce/course-1.pdf?X-Amz-Expires=300")
    assert detail["form"]["previous_certificate_number"] == "1120232000007"
    assert ("service", "review", "ce/course-1.pdf") in stand_ins.registration     # registration owns that file
    assert "ce/course-1.pdf" not in [c[2] for c in stand_ins.profile]
