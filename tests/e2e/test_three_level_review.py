"""End to end through the six real services (separate processes, PostgreSQL): a province that
reviews first registrations at three levels, county → city → province. The statuses stay the
seed's (初审中, then 终审中 from the county's approval on), and the application says which level
has it: 初审中（区县级）, 审核中（市级）, 终审中（省级）; a return at the city reads 退回修改（市级）, and the
resubmission starts again at the county."""
from __future__ import annotations

import pytest
from nameko.standalone.rpc import ClusterRpcProxy

from swms.devkeys import SERVICES
from tests.faults.workload import complete_profile
from tests.support import unless_profile_incomplete
from tools.localstack import LocalStack, wait_until
from tools.walkthrough import (COUNTY, COUNTY_OFFICER_PASSWORD, HOLDER_ID, HOLDER_NAME, HOLDER_PASSWORD, PROVINCE,
                               PROVINCE_OFFICER_PASSWORD, approve_in_queue, identity_cli, service_cli,
                               write_directory, write_registry)

pytestmark = [pytest.mark.e2e, pytest.mark.parametrize("db_backend", ["postgresql"], indirect=True)]

CITY = "110100"
CITY_OFFICER_PASSWORD = "Jingcheng-review-2026"
CHAINS = """
default:
  first_registration: [county, province]
  re_registration: [county, province]
  replacement: [county]
  upgrade: [county, province]
"11":
  first_registration: [county, city, province]
"""


@pytest.fixture
def stack(tmp_path, amqp_uri, make_database):
    chains = tmp_path / "chains.yaml"
    chains.write_text(CHAINS, encoding="utf-8")
    stack = LocalStack(workdir=tmp_path / "stack", amqp_uri=amqp_uri,
                       db_urls={name: make_database(name) for name in SERVICES})
    try:
        stack.start_infrastructure()
        for name in SERVICES:   # review routes by the chains; notification mails each next level
            stack.start_service(name, extra_env={"REVIEW_CHAINS_FILE": str(chains)}
                                if name in ("review", "notification") else None)
        stack.wait_healthy()
        yield stack
    finally:
        stack.stop()


def test_the_application_says_which_of_three_levels_has_it(stack):
    config = {"AMQP_URI": stack.amqp_uri}
    identity_cli(stack, "import-passers", str(write_registry(stack.workdir / "registry" / "passers.csv")))
    service_cli(stack, "profile", "import-organisations",
                str(write_directory(stack.workdir / "registry" / "organisations.csv")))
    officers = {"county": (COUNTY, COUNTY_OFFICER_PASSWORD), "city": (CITY, CITY_OFFICER_PASSWORD),
                "province": (PROVINCE, PROVINCE_OFFICER_PASSWORD)}
    for level, (region, password) in officers.items():
        identity_cli(stack, "create-officer", "--name", f"{level}审核员", "--email", f"{level}@example.gov.cn",
                     "--password", password, "--region", region, "--level", level)
    with ClusterRpcProxy(config, timeout=30) as public:
        public.identity.sign_up({"name": HOLDER_NAME, "id_number": HOLDER_ID, "email": "holder@example.cn",
                                 "password": HOLDER_PASSWORD})
        holder = public.identity.login({"login": HOLDER_ID, "password": HOLDER_PASSWORD})["access_token"]
        tokens = {level: public.identity.login({"login": f"{level}@example.gov.cn", "password": password})[
            "access_token"] for level, (_, password) in officers.items()}

    with ClusterRpcProxy(config, timeout=30, context_data={"auth_token": holder}) as me:
        complete_profile(me)
        application_id = wait_until(lambda: unless_profile_incomplete(
            lambda: me.registration.submit_first_registration({"commitment": True})["application_id"]),
            timeout=60, interval=0.5, what="the first registration accepted")

        def shows(status: str, level: str | None, text: str) -> dict:
            def reached():
                application = me.registration.get_application({"application_id": application_id})
                seen = (application["status"], application["review_level"], application["status_text"])
                return application if seen == (status, level, text) else None
            return wait_until(reached, timeout=90, interval=0.3, what=f"{status} / {text}")

        shows("初审中", "county", "初审中（区县级）")
        approve_in_queue(config, tokens["county"], application_id)
        shows("终审中", "city", "审核中（市级）")
        [mine] = me.registration.list_my_applications()["items"]
        assert (mine["review_level"], mine["status_text"]) == ("city", "审核中（市级）")

        with ClusterRpcProxy(config, timeout=30, context_data={"auth_token": tokens["city"]}) as city:
            item = wait_until(lambda: next((i for i in city.review.list_queue({})["items"]
                                            if i["application_id"] == application_id), None),
                              timeout=60, interval=0.3, what="the application in the city's queue")
            city.review.decide({"item_id": item["item_id"], "decision": "return", "reason": "工作经历缺证明"})
        returned = shows("终审不通过", "city", "退回修改（市级）")
        assert returned["rejection_reason"] == "退回修改：工作经历缺证明"

        again = me.registration.submit_draft({"application_id": application_id, "commitment": True})
        assert (again["round"], again["status"]) == (2, "初审中")
        shows("初审中", "county", "初审中（区县级）")
        approve_in_queue(config, tokens["county"], application_id)
        shows("终审中", "city", "审核中（市级）")
        approve_in_queue(config, tokens["city"], application_id)
        shows("终审中", "province", "终审中（省级）")
        approve_in_queue(config, tokens["province"], application_id)
        done = shows("已出证", None, "已出证")
    assert [h["status"] for h in done["history"]] == ["初审中", "终审中", "终审不通过", "初审中", "终审中", "已出证"]
    assert done["certificate_number"]

