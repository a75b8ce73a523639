"""Walks one social worker from sign-up to a downloaded certificate, printing each step.

``walk`` goes over RabbitMQ to the six services running as separate processes (the end-to-end test
asserts on its result). ``bin/demo`` runs ``main``: the same journey through the HTTP gateway
(tools/http_walkthrough.py), then the certificate email, the URL its QR code holds and what the
public verification page at that URL says.
"""
from __future__ import annotations

import eventlet

eventlet.monkey_patch()  # before anything imports ssl (urllib, boto3): see stack-notes, trap 1

import datetime as dt
import email
import email.policy
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from nameko.standalone.rpc import ClusterRpcProxy

from services.profile.codes import uscc_check_character
from services.profile.testing import make_photo, post_file
from swms.idcard import check_character
from tools.localstack import PYTHON, REPO_ROOT, LocalStack, wait_until

HOLDER_NAME = "李明华"
HOLDER_ID = "11010519900307123" + check_character("11010519900307123")
HOLDER_EMAIL = "liminghua@example.cn"
HOLDER_PASSWORD = "Swms-demo-2026!"
COUNTY, PROVINCE = "110105", "110000"   # 北京市朝阳区, 北京市
# Identity's strength rule refuses a password containing the email's name ("county", "province").
COUNTY_OFFICER_PASSWORD, PROVINCE_OFFICER_PASSWORD = "Chaoyang-review-2026", "Beijing-review-2026"
UNIT_NAME = "北京市朝阳区阳光社会工作服务中心"
UNIT_CREDIT_CODE = "52110105MJ0000001" + uscc_check_character("52110105MJ0000001")


@dataclass
class WalkResult:
    person_id: str
    application_id: str
    certificate_number: str
    object_key: str
    pdf_path: Path
    mail_path: Path


def write_registry(path: Path) -> Path:
    """The exam authority's list for this walk (this year's exam, so the window is always open)."""
    year = dt.date.today().year
    second = "44030519950612402"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "name,id_number,level,management_number,exam_year,province\n"
        f"{HOLDER_NAME},{HOLDER_ID},社会工作师,{year}11000000123456,{year},11\n"
        f"欧阳·娜仁,{second}{check_character(second)},助理社会工作师,{year}44000000654321,{year},44\n",
        encoding="utf-8")
    return path


def write_directory(path: Path) -> Path:
    """The registration authority's list of social-work service organisations (社会工作服务机构)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("统一社会信用代码,机构名称,所在地区代码\n"
                    f"{UNIT_CREDIT_CODE},{UNIT_NAME},{COUNTY}\n", encoding="utf-8")
    return path


def service_cli(stack: LocalStack, service: str, *args: str) -> str:
    result = subprocess.run([PYTHON, "-m", f"services.{service}.cli", *args], cwd=REPO_ROOT,
                            env=stack.environment(), capture_output=True, text=True, check=True)
    return result.stdout.strip()


def identity_cli(stack: LocalStack, *args: str) -> str:
    return service_cli(stack, "identity", *args)


def approve_in_queue(config: dict, officer_token: str, application_id: str) -> dict:
    """As the officer: wait for the application in the queue, approve it, return the item."""
    with ClusterRpcProxy(config, timeout=30, context_data={"auth_token": officer_token}) as officer:
        item = wait_until(lambda: next((i for i in officer.review.list_queue({})["items"]
                                        if i["application_id"] == application_id), None),
                          timeout=60, interval=0.3, what="the application in the officer's queue")
        officer.review.decide({"item_id": item["item_id"], "decision": "approve"})
    return item


def holder_mail(stack: LocalStack, subject_part: str, what: str) -> tuple[Path, email.message.EmailMessage]:
    """The first mail to the holder whose subject holds ``subject_part`` (the holder also hears
    of the submission and of each approval), once it has arrived."""
    def find():
        for path in sorted(stack.mail_dir.glob("*.eml")):
            message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            if message["To"] == HOLDER_EMAIL and subject_part in (message["Subject"] or ""):
                return path, message
        return None
    return wait_until(find, timeout=60, interval=0.3, what=what)


def walk(stack: LocalStack, out_dir: Path, say=print) -> WalkResult:
    config = {"AMQP_URI": stack.amqp_uri}
    step = iter(range(1, 100))

    def show(text: str) -> None:
        say(f"[{next(step):2d}] {text}")

    registry = write_registry(stack.workdir / "registry" / "passers.csv")
    show(f"exam-passer registry (社工库) loaded: {identity_cli(stack, 'import-passers', str(registry))}")
    identity_cli(stack, "create-officer", "--name", "朝阳区民政局审核员", "--email", "county@example.gov.cn",
                 "--password", COUNTY_OFFICER_PASSWORD, "--region", COUNTY, "--level", "county")
    identity_cli(stack, "create-officer", "--name", "北京市民政局审核员", "--email", "province@example.gov.cn",
                 "--password", PROVINCE_OFFICER_PASSWORD, "--region", PROVINCE, "--level", "province")
    show(f"officers created: county {COUNTY} (初审), province {PROVINCE} (终审)")
    directory = write_directory(stack.workdir / "registry" / "organisations.csv")
    show(f"directory of 社会工作服务机构 loaded: "
         f"{service_cli(stack, 'profile', 'import-organisations', str(directory))}")

    with ClusterRpcProxy(config, timeout=30) as public:
        passer = public.identity.check_passer({"name": HOLDER_NAME, "id_number": HOLDER_ID})
        show(f"name + ID verified against the registry; 职业水平证书管理号 filled in: "
             f"{passer['management_number']} ({passer['level']})")
        account = public.identity.sign_up({"name": HOLDER_NAME, "id_number": HOLDER_ID,
                                           "email": HOLDER_EMAIL, "password": HOLDER_PASSWORD})
        show(f"account created for {account['name']} ({account['id_number_masked']}), person {account['person_id']}")
        token = public.identity.login({"login": HOLDER_ID, "password": HOLDER_PASSWORD})["access_token"]
        county_token = public.identity.login({"login": "county@example.gov.cn",
                                              "password": COUNTY_OFFICER_PASSWORD})["access_token"]
        province_token = public.identity.login({"login": "province@example.gov.cn",
                                                "password": PROVINCE_OFFICER_PASSWORD})["access_token"]
        show("logged in (signed token, verified by each service locally)")

    _, mail = holder_mail(stack, "邮箱验证码", "the email confirmation code")
    code = next(word for word in mail.get_body(preferencelist=("plain",)).get_content().split()
                if word.isdigit() and len(word) == 6)
    with ClusterRpcProxy(config, timeout=30, context_data={"auth_token": token}) as worker:
        confirmed = worker.identity.confirm_email({"code": code})
    show(f"email {confirmed['email']} confirmed with the code mailed at sign-up (password resets go only there)")

    with ClusterRpcProxy(config, timeout=30, context_data={"auth_token": token}) as worker:
        unit = worker.profile.search_organisations({"name": "阳光", "region_code": COUNTY})["items"][0]
        profile = worker.profile.save_basic_info({
            "ethnicity": "汉族", "political_status": "中共党员", "education": "本科", "major": "社会工作",
            "mobile": "13800138000", "address": "北京市朝阳区朝阳门外大街1号", "region_code": COUNTY,
            "unit_category": "社会工作服务机构", "unit_directory_id": unit["org_id"],
            "position": "社会工作者", "truth_commitment": True})
        show(f"personal information form (个人信息表) saved: {profile['gender']}, born {profile['birth_date']}, "
             f"{profile['unit_name']} (chosen from the directory, {unit['credit_code']})")
        ticket = worker.profile.request_upload({"purpose": "photo"})
        post_file(ticket, make_photo(295, 413, "JPEG"), "photo.jpg", "image/jpeg")   # straight to storage
        photo = worker.profile.confirm_photo({"upload_id": ticket["upload_id"]})["photo"]
        show(f"ID photo uploaded and checked: {photo['photo_size']} {photo['width']}×{photo['height']} "
             f"{photo['content_type']}, {photo['size_bytes']} bytes")
        completeness = worker.profile.check_completeness({"person_id": account["person_id"]})
        show(f"completeness check (系统校验): complete={completeness['complete']}")
        application = worker.registration.submit_first_registration({"commitment": True})
        application_id = application["application_id"]
        show(f"first registration (首次登记) submitted with 承诺声明: status {application['status']}")

    item = approve_in_queue(config, county_token, application_id)
    show(f"county officer approved the initial review (初审通过), item {item['item_id']}")
    approve_in_queue(config, province_token, application_id)
    show("province officer approved the final review (终审通过)")

    with ClusterRpcProxy(config, timeout=30, context_data={"auth_token": token}) as worker:
        issued = wait_until(lambda: (lambda a: a if a["status"] == "已出证" else None)(
            worker.registration.get_application({"application_id": application_id})),
            timeout=60, interval=0.3, what="the certificate to be issued")
        show(f"status {issued['status']}, certificate number {issued['certificate_number']} "
             f"(history: {' → '.join(h['status'] for h in issued['history'])})")
        view = worker.certificate.view_certificate({"application_id": application_id})
        show(f"查看证书: short-lived link valid {view['download_expires_in_seconds']} s, sha256 {view['sha256'][:16]}…")
        out_dir.mkdir(parents=True, exist_ok=True)
        pdf_path = out_dir / f"certificate-{view['certificate_number']}.pdf"
        with urllib.request.urlopen(view["download_url"], timeout=30) as response:
            pdf_path.write_bytes(response.read())
        show(f"certificate PDF downloaded: {pdf_path} ({pdf_path.stat().st_size} bytes)")

    mail_path, mail = holder_mail(stack, "电子登记证书已签发", "the certificate email")
    show(f"email to {HOLDER_EMAIL} arrived: “{mail['Subject']}” → {mail_path}")
    return WalkResult(person_id=account["person_id"], application_id=application_id,
                      certificate_number=view["certificate_number"],
                      object_key=f"certificates/{view['certificate_number']}.pdf",
                      pdf_path=pdf_path, mail_path=mail_path)


def verification_page_says(page: str) -> str:
    """What the verification page says, as one line: the verdict, then each fact."""
    import html
    import re

    section = re.search(r'<section class="result[^"]*" id="result">(.*?)</section>', page, re.S)
    if section is None:
        return "(no result on the page)"
    verdict = re.search(r'<p class="verdict">(.*?)</p>', section.group(1)).group(1)
    facts = re.findall(r"<dt>(.*?)</dt><dd>(.*?)</dd>", section.group(1))
    return html.unescape(f"{verdict} — " + "，".join(f"{name} {value}" for name, value in facts))


def walk_through_gateway(stack: LocalStack, base_url: str, out_dir: Path, say=print):
    """The demo: the journey over HTTP (tools/http_walkthrough.py), then the certificate email,
    the certificate's verification URL (what its QR code holds) and what that page says."""
    import httpx

    from tools.http_walkthrough import walk_http

    lines = []

    def counted(line: str) -> None:
        lines.append(line)
        say(line)

    result = walk_http(stack, base_url, out_dir, say=counted)

    def show(text: str) -> None:
        counted(f"[{len(lines) + 1:2d}] {text}")

    mail_path, mail = holder_mail(stack, "电子登记证书已签发", "the certificate email")
    show(f"email to {HOLDER_EMAIL} arrived: “{mail['Subject']}” → {mail_path}")
    with httpx.Client(base_url=base_url, timeout=30) as client:
        token = client.post("/api/v1/sessions", json={"login": HOLDER_ID, "password": HOLDER_PASSWORD}).json()
        view = client.get(f"/api/v1/applications/{result.application_id}/certificate",
                          headers={"Authorization": f"Bearer {token['access_token']}"}).json()
        url = view["verification_url"]
        show(f"the certificate's QR code opens {url}")
        page = client.get(url)
    show(f"GET that page ({page.status_code}, no login): {verification_page_says(page.text)}")
    return result, mail_path, url


ADMIN_EMAIL, ADMIN_PASSWORD = "admin@example.gov.cn", "Registry-admin-2026"


def main(argv: list[str] | None = None) -> int:
    """bin/demo: the walk, then the system and the web portal left running until Ctrl-C
    (``--no-wait`` or SWMS_DEMO_NO_WAIT=1: stop after the walk, for scripts and tests)."""
    import argparse
    import os
    import time

    parser = argparse.ArgumentParser(prog="bin/demo", description=main.__doc__)
    parser.add_argument("--no-wait", action="store_true", default=os.environ.get("SWMS_DEMO_NO_WAIT") == "1",
                        help="stop everything after the walk instead of leaving the portal running")
    args = parser.parse_args(argv)
    workdir = REPO_ROOT / "var" / "demo"
    stack = LocalStack(workdir=workdir, amqp_uri=os.environ.get("AMQP_URI", "pyamqp://guest:guest@127.0.0.1:5672/"))
    stack.reset()
    print("starting: S3-compatible server and SMTP sink on loopback, migrations, six services, the HTTP gateway …")
    with stack:
        stack.start_infrastructure()
        stack.migrate()
        stack.start_services()
        # The portal's pages post uploads straight to the S3 server (docs/portal.md).
        base_url = stack.start_gateway({"GATEWAY_PORTAL_STORAGE_ORIGINS": stack.environment()["S3_ENDPOINT_URL"],
                                        "GATEWAY_HSTS_SECONDS": "0"})
        print(f"all six services healthy, the HTTP gateway at {base_url} (logs in {stack.log_dir}); "
              f"every step below goes through it\n")
        result, mail_path, url = walk_through_gateway(stack, base_url, workdir / "out")
        print(f"\ncertificate PDF: {result.pdf_path}\nemail:           {mail_path}\nverify URL:      {url}")
        if args.no_wait:
            return 0
        identity_cli(stack, "create-admin", "--name", "系统管理员", "--email", ADMIN_EMAIL, "--password", ADMIN_PASSWORD)
        print(f"\nthe web portal (网上办理): {base_url}/portal/\n"
              f"  social worker:    {HOLDER_ID} / {HOLDER_PASSWORD} ({HOLDER_NAME}, certificate issued)\n"
              f"  county officer:   county@example.gov.cn / {COUNTY_OFFICER_PASSWORD} (北京市朝阳区 {COUNTY})\n"
              f"  province officer: province@example.gov.cn / {PROVINCE_OFFICER_PASSWORD} (北京市 {PROVINCE})\n"
              f"  administrator:    {ADMIN_EMAIL} / {ADMIN_PASSWORD}\n"
              f"  registry, not yet signed up: 欧阳·娜仁 (see {workdir / 'registry' / 'passers.csv'})\n"
              f"  mail sent by the system: {stack.mail_dir}\n"
              "Running until Ctrl-C.", flush=True)
        # Ctrl-C, or a SIGTERM (a service manager, `kill`): stop every process this demo started.
        # Set explicitly: a shell that starts the demo in the background leaves SIGINT ignored.
        import signal

        def interrupt(_signum, _frame):
            raise KeyboardInterrupt
        signal.signal(signal.SIGINT, interrupt)
        signal.signal(signal.SIGTERM, interrupt)
        try:
            while True:
                for name in list(stack.processes):
                    stack.check_alive(name)
                time.sleep(2)
        except KeyboardInterrupt:
            print("\nstopping", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
