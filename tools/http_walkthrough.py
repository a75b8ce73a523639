"""The walkthrough of tools/walkthrough.py over HTTP only: one social worker from the registry
check to a downloaded certificate, every step a call to the gateway (the photo posted straight to
object storage with the form the gateway handed out), the officers deciding over HTTP too.

Used by the end-to-end test (tests/e2e/test_gateway.py), which asserts on the returned result.
Administrators' set-up (registry import, officers, the organisation directory) stays on the
services' command lines, as in production.
"""
from __future__ import annotations

import email
import email.policy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from services.profile.testing import make_photo, post_file
from tools.localstack import LocalStack, wait_until
from tools.walkthrough import (COUNTY, COUNTY_OFFICER_PASSWORD, HOLDER_EMAIL, HOLDER_ID, HOLDER_NAME,
                               HOLDER_PASSWORD, PROVINCE, PROVINCE_OFFICER_PASSWORD, identity_cli, service_cli,
                               write_directory, write_registry)


@dataclass
class HttpWalkResult:
    person_id: str
    application_id: str
    certificate_number: str
    pdf_path: Path
    request_ids: list[str]


class Api:
    """A thin JSON client of the gateway that fails loudly on anything but 2xx."""

    def __init__(self, base_url: str, token: str | None = None):
        self.client = httpx.Client(base_url=base_url + "/api/v1", timeout=30)
        self.token = token
        self.request_ids: list[str] = []

    def as_(self, token: str) -> "Api":
        other = Api.__new__(Api)
        other.client, other.token, other.request_ids = self.client, token, self.request_ids
        return other

    def call(self, method: str, path: str, body: dict | None = None, **params: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        response = self.client.request(method, path, json=body, params=params or None, headers=headers)
        self.request_ids.append(response.headers["X-Request-ID"])
        if response.status_code >= 300:
            raise AssertionError(f"{method} {path} → {response.status_code} {response.text}")
        return response.json()

    def get(self, path: str, **params: Any) -> Any:
        return self.call("GET", path, **params)

    def post(self, path: str, body: dict | None = None) -> Any:
        return self.call("POST", path, body)

    def put(self, path: str, body: dict) -> Any:
        return self.call("PUT", path, body)


def approve_over_http(api: Api, application_id: str) -> dict:
    """As the officer: wait for the application in the queue, look at it, approve it."""
    item = wait_until(lambda: next((i for i in api.get("/review/queue")["items"]
                                    if i["application_id"] == application_id), None),
                      timeout=60, interval=0.3, what="the application in the officer's queue")
    api.get(f"/review/items/{item['item_id']}")
    api.post(f"/review/items/{item['item_id']}/decision", {"decision": "approve"})
    return item


def confirmation_code(stack: LocalStack) -> str:
    def find():
        for path in sorted(stack.mail_dir.glob("*.eml")):
            message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            if message["To"] == HOLDER_EMAIL and "邮箱验证码" in (message["Subject"] or ""):
                return message
        return None
    mail = wait_until(find, timeout=60, interval=0.3, what="the email confirmation code")
    return next(word for word in mail.get_body(preferencelist=("plain",)).get_content().split()
                if word.isdigit() and len(word) == 6)


def walk_http(stack: LocalStack, base_url: str, out_dir: Path, say=print) -> HttpWalkResult:
    step = iter(range(1, 100))

    def show(text: str) -> None:
        say(f"[{next(step):2d}] {text}")

    identity_cli(stack, "import-passers", str(write_registry(stack.workdir / "registry" / "passers.csv")))
    identity_cli(stack, "create-officer", "--name", "朝阳区民政局审核员", "--email", "county@example.gov.cn",
                 "--password", COUNTY_OFFICER_PASSWORD, "--region", COUNTY, "--level", "county")
    identity_cli(stack, "create-officer", "--name", "北京市民政局审核员", "--email", "province@example.gov.cn",
                 "--password", PROVINCE_OFFICER_PASSWORD, "--region", PROVINCE, "--level", "province")
    service_cli(stack, "profile", "import-organisations",
                str(write_directory(stack.workdir / "registry" / "organisations.csv")))
    show("registry, officers and organisation directory loaded (command line)")

    public = Api(base_url)
    passer = public.post("/passers/check", {"name": HOLDER_NAME, "id_number": HOLDER_ID})
    show(f"POST /passers/check: {passer['level']}, 管理号 {passer['management_number']}")
    account = public.post("/accounts", {"name": HOLDER_NAME, "id_number": HOLDER_ID, "email": HOLDER_EMAIL,
                                        "password": HOLDER_PASSWORD})
    show(f"POST /accounts: person {account['person_id']} ({account['id_number_masked']})")
    session = public.post("/sessions", {"login": HOLDER_ID, "password": HOLDER_PASSWORD})
    worker = public.as_(session["access_token"])
    show(f"POST /sessions: {session['role']} token until {session['expires_at']}")
    confirmed = worker.post("/me/email/confirmation", {"code": confirmation_code(stack)})
    show(f"POST /me/email/confirmation: {confirmed['email']} confirmed with the mailed code")

    unit = worker.get("/organisations", name="阳光", region_code=COUNTY)["items"][0]
    profile = worker.put("/me/profile/basic-info", {
        "ethnicity": "汉族", "political_status": "中共党员", "education": "本科", "major": "社会工作",
        "mobile": "13800138000", "address": "北京市朝阳区朝阳门外大街1号", "region_code": COUNTY,
        "unit_category": "社会工作服务机构", "unit_directory_id": unit["org_id"],
        "position": "社会工作者", "truth_commitment": True})
    show(f"PUT /me/profile/basic-info: {profile['unit_name']}")
    ticket = worker.post("/me/uploads", {"purpose": "photo"})
    post_file(ticket, make_photo(295, 413, "JPEG"), "photo.jpg", "image/jpeg")   # straight to storage
    photo = worker.put("/me/profile/photo", {"upload_id": ticket["upload_id"]})["photo"]
    show(f"photo posted to object storage with the form from POST /me/uploads, confirmed: "
         f"{photo['width']}×{photo['height']}")
    completeness = worker.get(f"/persons/{account['person_id']}/profile/completeness")
    show(f"GET …/profile/completeness: complete={completeness['complete']}")
    application = worker.post("/me/applications/first-registration", {"commitment": True})
    application_id = application["application_id"]
    show(f"POST /me/applications/first-registration: {application['status']}")

    county = public.as_(public.post("/sessions", {"login": "county@example.gov.cn",
                                                  "password": COUNTY_OFFICER_PASSWORD})["access_token"])
    approve_over_http(county, application_id)
    show("county officer: GET /review/queue, GET /review/items/{id}, POST …/decision approve (初审)")
    province = public.as_(public.post("/sessions", {"login": "province@example.gov.cn",
                                                    "password": PROVINCE_OFFICER_PASSWORD})["access_token"])
    approve_over_http(province, application_id)
    show("province officer approved (终审)")

    issued = wait_until(lambda: (lambda a: a if a["status"] == "已出证" else None)(
        worker.get(f"/applications/{application_id}")), timeout=60, interval=0.3, what="the certificate")
    show(f"GET /applications/{{id}}: {issued['status']}, {issued['certificate_number']}")
    view = worker.get(f"/applications/{application_id}/certificate")
    show(f"GET /applications/{{id}}/certificate: link valid {view['download_expires_in_seconds']} s")
    out_dir.mkdir(parents=True, exist_ok=True)
    pdf_path = out_dir / f"certificate-{view['certificate_number']}.pdf"
    download = httpx.get(view["download_url"], timeout=30)
    download.raise_for_status()
    pdf_path.write_bytes(download.content)
    show(f"certificate PDF downloaded from the link: {pdf_path.stat().st_size} bytes")
    return HttpWalkResult(person_id=account["person_id"], application_id=application_id,
                          certificate_number=view["certificate_number"], pdf_path=pdf_path,
                          request_ids=list(public.request_ids))
