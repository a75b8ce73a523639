"""End to end through the six real services (separate processes, PostgreSQL): the two ways to a
certificate other than first registration.

- Upgrade (升级): the exam authority's next file lists the holder at a higher level; identity
  publishes the raise, registration marks the holder 已出证待升级, the holder applies, county and
  province approve, certificate issues a new certificate at the new level and the old one is
  superseded (public verification says so).
- Replacement e-certificate (更换电子证书) for a paper certificate: the county alone decides, and the
  certificate records the paper certificate's NO.
"""
from __future__ import annotations

import datetime as dt

import pytest
from nameko.standalone.rpc import ClusterRpcProxy

from swms.idcard import check_character
from tests.faults.workload import complete_profile
from tests.support import unless_profile_incomplete
from tools.localstack import wait_until
from tools.walkthrough import (COUNTY_OFFICER_PASSWORD, HOLDER_ID, HOLDER_NAME, HOLDER_PASSWORD,
                               PROVINCE_OFFICER_PASSWORD, approve_in_queue, identity_cli, walk)

pytestmark = [pytest.mark.e2e, pytest.mark.parametrize("db_backend", ["postgresql"], indirect=True)]

PAPER_HOLDER_NAME = "王芳"
PAPER_HOLDER_ID = "11010519880516102" + check_character("11010519880516102")
PAPER_HOLDER_EMAIL = "wangfang@example.cn"
PAPER_CERTIFICATE = {"original_certificate_no": "20190812", "registration_type": "首次登记",
                     "valid_from": "2024-03-01", "valid_until": "2027-02-28"}


def login(config: dict, who: str, password: str) -> str:
    with ClusterRpcProxy(config, timeout=30) as public:
        return public.identity.login({"login": who, "password": password})["access_token"]


def as_user(config: dict, token: str) -> ClusterRpcProxy:
    return ClusterRpcProxy(config, timeout=30, context_data={"auth_token": token})


def wait_for_status(config: dict, token: str, application_id: str, status: str) -> dict:
    with as_user(config, token) as user:
        return wait_until(lambda: (lambda a: a if a["status"] == status else None)(
            user.registration.get_application({"application_id": application_id})),
            timeout=90, interval=0.3, what=f"application {application_id} to reach {status}")


def test_upgrade_and_replacement_through_the_six_services(stack, tmp_path):
    first = walk(stack, tmp_path / "out", say=lambda _line: None)
    config = {"AMQP_URI": stack.amqp_uri}
    holder = login(config, HOLDER_ID, HOLDER_PASSWORD)
    county = login(config, "county@example.gov.cn", COUNTY_OFFICER_PASSWORD)
    province = login(config, "province@example.gov.cn", PROVINCE_OFFICER_PASSWORD)

    # The exam authority's next file: the holder passed 高级社会工作师; a paper-certificate holder is new.
    year = dt.date.today().year
    registry = stack.workdir / "registry" / "passers-next.csv"
    registry.write_text(
        "name,id_number,level,management_number,exam_year,province\n"
        f"{HOLDER_NAME},{HOLDER_ID},高级社会工作师,{year}11000000999999,{year},11\n"
        f"{PAPER_HOLDER_NAME},{PAPER_HOLDER_ID},社会工作师,{year - 6}11000000777777,{year - 6},11\n",
        encoding="utf-8")
    report = identity_cli(stack, "import-passers", str(registry))
    assert "added 1" in report and "level raised 1" in report, report

    # ---- upgrade ------------------------------------------------------------------------------
    marked = wait_for_status(config, holder, first.application_id, "已出证待升级")
    assert marked["history"][-1]["actor"] == "identity"
    with as_user(config, holder) as me:
        view = wait_until(lambda: (lambda v: v if v["pending_upgrade_level"] else None)(
            me.certificate.view_certificate({"application_id": first.application_id})),
            timeout=60, interval=0.3, what="the certificate marked for upgrade")
        assert view["pending_upgrade_level"] == "高级社会工作师"
        upgrade = me.registration.submit_upgrade({"commitment": True})
    assert (upgrade["kind"], upgrade["status"], upgrade["level"]) == ("upgrade", "初审中", "高级社会工作师")
    approve_in_queue(config, county, upgrade["application_id"])
    approve_in_queue(config, province, upgrade["application_id"])
    issued = wait_for_status(config, holder, upgrade["application_id"], "已出证")
    new_number = issued["certificate_number"]
    assert new_number and new_number != first.certificate_number
    assert wait_for_status(config, holder, first.application_id, "已出证")["history"][-1]["status"] == "已出证"

    with as_user(config, holder) as me:
        new_view = me.certificate.view_certificate({"application_id": upgrade["application_id"]})
    assert (new_view["level"], new_view["kind"], new_view["supersedes"]) == (
        "高级社会工作师", "upgrade", first.certificate_number)
    with ClusterRpcProxy(config, timeout=30) as anyone:
        old = anyone.certificate.verify_certificate({"certificate_number": first.certificate_number,
                                                     "holder_name": HOLDER_NAME})
        new = anyone.certificate.verify_certificate({"certificate_number": new_number, "holder_name": HOLDER_NAME})
    assert (old["status"], old["superseded_by"], old["level"]) == ("superseded", new_number, "社会工作师")
    assert (new["status"], new["level"], new["holder_name_masked"]) == ("current", "高级社会工作师", "李**")

    # ---- replacement e-certificate for a paper certificate ------------------------------------------
    with ClusterRpcProxy(config, timeout=30) as public:
        public.identity.sign_up({"name": PAPER_HOLDER_NAME, "id_number": PAPER_HOLDER_ID,
                                 "email": PAPER_HOLDER_EMAIL, "password": HOLDER_PASSWORD})
    paper_holder = login(config, PAPER_HOLDER_EMAIL, HOLDER_PASSWORD)
    with as_user(config, paper_holder) as me:
        complete_profile(me)
        replacement = wait_until(lambda: unless_profile_incomplete(lambda: me.registration.submit_replacement(
            {**PAPER_CERTIFICATE, "commitment": True})), timeout=60, interval=0.5,
            what="the replacement accepted (registration holds the complete profile)")
    assert (replacement["kind"], replacement["status"]) == ("replacement", "初审中")
    approve_in_queue(config, county, replacement["application_id"])      # the county alone decides
    done = wait_for_status(config, paper_holder, replacement["application_id"], "已出证")
    assert [h["status"] for h in done["history"]] == ["初审中", "已出证"], done["history"]   # no 终审中
    with as_user(config, paper_holder) as me:
        view = me.certificate.view_certificate({"application_id": replacement["application_id"]})
    assert (view["kind"], view["original_certificate_no"], view["status"]) == ("replacement", "20190812", "issued")
    with as_user(config, province) as officer:   # nothing reached the province's queue
        assert all(item["application_id"] != replacement["application_id"]
                   for item in officer.review.list_queue({})["items"])

