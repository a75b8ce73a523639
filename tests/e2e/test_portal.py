"""The web portal (portal/, served by the gateway at /portal/) in a real browser: Debian's
chromium driven headless by Playwright, at phone width (375 px) for social workers and desktop
width for officers and administrators. One system start (six services, S3, SMTP, the gateway)
for the module; a screenshot per step under tmp/artefacts/ (the path is printed at the end).

The five journeys of issue 17. To stay within the module's time budget, set-up that is not the
point of a journey goes over the HTTP API directly ("API shortcut", said where it happens): the
registry, officers and directory by the services' command lines as in production; other
workers' accounts, profiles and approvals by the journey before or after the browser part.
The browser part of each journey is what a person would do, by label and button text.
"""
from __future__ import annotations

import base64
import datetime as dt
import email
import email.policy
import io
import json
import os
import re
import time
from pathlib import Path

import httpx
import pytest
from pypdf import PdfReader

from services.profile.testing import make_photo, post_file
from swms.idcard import check_character
from tests.e2e.test_gateway import services_on_a_fresh_vhost
from tools.http_walkthrough import Api
from tools.localstack import wait_until
from tools.walkthrough import (COUNTY, COUNTY_OFFICER_PASSWORD, HOLDER_EMAIL, HOLDER_ID, HOLDER_NAME, HOLDER_PASSWORD,
                               PROVINCE_OFFICER_PASSWORD, identity_cli, service_cli, write_directory)

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
        # nothing but loopback is even looked up: a page that pulls from a CDN fails visibly
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1"]
PHONE = {"width": 375, "height": 812}
DESKTOP = {"width": 1280, "height": 900}
PASSWORD = "Swms-portal-2026!"
ADMIN_EMAIL, ADMIN_PASSWORD = "admin@example.gov.cn", "Registry-admin-2026"
COUNTY_EMAIL, PROVINCE_EMAIL = "county@example.gov.cn", "province@example.gov.cn"


def id_number(first17: str) -> str:
    return first17 + check_character(first17)


YEAR = dt.date.today().year
# (name, ID number, level, exam year, email): registry rows besides the demo's holder
RETURNED = ("张晓燕", id_number("11010519920215202"), "助理社会工作师", YEAR, "zhangxiaoyan@example.cn")
PAPER = ("王芳", id_number("11010519880516102"), "社会工作师", YEAR - 6, "wangfang@example.cn")
CAREFUL = ("陈立新", id_number("11010519850720301"), "社会工作师", YEAR, "chenlixin@example.cn")
UNLISTED = ("赵敏", id_number("11010519930101402"), "助理社会工作师", YEAR - 1, "zhaomin@example.cn")
FEEDBACK_MANAGEMENT_NUMBER = f"{YEAR - 1}11000000555555"


@pytest.fixture(scope="module")
def artefacts(request) -> Path:
    root = Path(os.environ.get("SWMS_ARTEFACTS", Path(__file__).resolve().parents[2] / "tmp" / "artefacts"))
    path = root / f"portal-{dt.datetime.now():%Y%m%d-%H%M%S}"
    path.mkdir(parents=True, exist_ok=True)
    yield path
    line = f"portal screenshots: {path} ({len(list(path.glob('*.png')))} files)"
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():   # past pytest's capture: seen in every run's output
        print("\n" + line, flush=True)


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    with services_on_a_fresh_vhost(tmp_path_factory.mktemp("portal") / "stack", "swms-portal") as stack:
        environment = stack.environment()
        stack.base_url = stack.start_gateway({
            "GATEWAY_RATE_PER_ADDRESS": "10000", "GATEWAY_BURST_PER_ADDRESS": "10000",
            "GATEWAY_HSTS_SECONDS": "0",
            "GATEWAY_PORTAL_STORAGE_ORIGINS": environment["S3_ENDPOINT_URL"]})
        registry = stack.workdir / "registry" / "passers.csv"
        registry.parent.mkdir(parents=True, exist_ok=True)
        rows = [(HOLDER_NAME, HOLDER_ID, "社会工作师", YEAR, ""), RETURNED, PAPER, CAREFUL]
        registry.write_text("name,id_number,level,management_number,exam_year,province\n" + "".join(
            f"{name},{number},{level},{year}1100000{index:07d},{year},11\n"
            for index, (name, number, level, year, _mail) in enumerate(rows, start=1)), encoding="utf-8")
        identity_cli(stack, "import-passers", str(registry))
        identity_cli(stack, "create-officer", "--name", "朝阳区民政局审核员", "--email", COUNTY_EMAIL,
                     "--password", COUNTY_OFFICER_PASSWORD, "--region", COUNTY, "--level", "county")
        identity_cli(stack, "create-officer", "--name", "北京市民政局审核员", "--email", PROVINCE_EMAIL,
                     "--password", PROVINCE_OFFICER_PASSWORD, "--region", "110000", "--level", "province")
        identity_cli(stack, "create-admin", "--name", "系统管理员", "--email", ADMIN_EMAIL, "--password", ADMIN_PASSWORD)
        service_cli(stack, "profile", "import-organisations",
                    str(write_directory(stack.workdir / "registry" / "organisations.csv")))
        stack.api = Api(stack.base_url)
        yield stack


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    manager = sync_playwright()
    playwright = manager.start()
    chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
    yield chromium
    chromium.close()
    # Under `nameko test` eventlet has patched threads, and Playwright's own stop() then waits
    # forever for its driver's exit; the driver is ended directly instead (plain pytest: stop()).
    import eventlet.patcher
    if eventlet.patcher.is_monkey_patched("thread"):
        manager._client._transport._proc.kill()
    else:
        playwright.stop()


class Screens:
    """A browser context (one person's tab) with a screenshot per step."""

    def __init__(self, browser, base_url: str, artefacts: Path, journey: str, viewport: dict):
        self.context = browser.new_context(viewport=viewport, locale="zh-CN", accept_downloads=True)
        self.context.set_default_timeout(20_000)
        self.page = self.context.new_page()
        self.failures: list[str] = []
        self.page.on("pageerror", lambda error: self.failures.append(str(error)))
        # Script errors and console errors, but not the browser's own line for each refused API
        # call (a 404 or 422 the page shows the person is the point of some steps).
        self.page.on("console", lambda message: message.type == "error" and not message.text.startswith(
            "Failed to load resource") and self.failures.append(message.text))
        self.base_url, self.artefacts, self.journey = base_url, artefacts, journey
        self.step = 0

    def open(self, hash_path: str) -> None:
        self.page.goto(f"{self.base_url}/portal/#{hash_path}")

    def shot(self, name: str) -> None:
        self.step += 1
        self.page.screenshot(path=str(self.artefacts / f"{self.journey}-{self.step:02d}-{name}.png"), full_page=True)

    def login(self, who: str, password: str) -> None:
        self.open("/login")
        self.page.get_by_label("身份证号或电子邮箱").fill(who)
        self.page.get_by_label("密码", exact=True).fill(password)
        self.page.get_by_role("button", name="登录").click()
        self.page.wait_for_function("() => /^#\\/(home|review|admin)$/.test(location.hash)")
        self.page.locator("main h1").wait_for()

    def logout(self) -> None:
        self.page.get_by_role("button", name="退出").click()
        self.page.get_by_role("heading", name="登录").wait_for()

    def error_at(self, form: str, field: str):
        return self.page.locator(f"{form} [data-field='{field}'] .error")

    def message_at(self, form: str, field: str) -> str:
        """The message shown at a field, once there is one (the API's answer takes a moment)."""
        error = self.error_at(form, field)
        error.filter(has_text=re.compile(".+")).wait_for()
        return error.inner_text()

    def close(self) -> None:
        self.shot("last")   # where the journey ended, passed or not
        assert not self.failures, f"{self.journey}: errors in the page: {self.failures}"
        self.context.close()


@pytest.fixture
def screens(browser, system, artefacts, request):
    opened = []

    def open_screens(viewport=PHONE, suffix="") -> Screens:
        each = Screens(browser, system.base_url, artefacts, request.node.name.removeprefix("test_") + suffix, viewport)
        opened.append(each)
        return each
    yield open_screens
    for each in opened:
        each.close()


# -- API shortcuts (set-up that is not the point of a journey) ---------------------------------

def mail_to(stack, address: str, subject_part: str, after: float = 0) -> email.message.EmailMessage:
    def find():
        for path in sorted(stack.mail_dir.glob("*.eml")):
            if path.stat().st_mtime < after:
                continue
            message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            if message["To"] == address and subject_part in (message["Subject"] or ""):
                return message
        return None
    return wait_until(find, timeout=60, interval=0.3, what=f"mail to {address} about {subject_part}")


def mailed_code(stack, address: str) -> str:
    body = mail_to(stack, address, "邮箱验证码").get_body(preferencelist=("plain",)).get_content()
    return next(word for word in body.split() if word.isdigit() and len(word) == 6)


def worker_over_api(stack, person: tuple, complete: bool = True) -> Api:
    """Signs a registry person up and (if ``complete``) fills the 个人信息表 with a photo."""
    name, number, _level, _year, address = person
    stack.api.post("/accounts", {"name": name, "id_number": number, "email": address, "password": PASSWORD})
    worker = stack.api.as_(stack.api.post("/sessions", {"login": number, "password": PASSWORD})["access_token"])
    unit = worker.get("/organisations", name="阳光", region_code=COUNTY)["items"][0]
    worker.put("/me/profile/basic-info", {
        "ethnicity": "汉族", "political_status": "群众", "education": "本科", "major": "社会工作",
        "mobile": "13800138000", "address": "北京市朝阳区", "region_code": COUNTY,
        "unit_category": "社会工作服务机构", "unit_directory_id": unit["org_id"], "position": "社工",
        "truth_commitment": True})
    if complete:
        ticket = worker.post("/me/uploads", {"purpose": "photo"})
        post_file(ticket, make_photo(295, 413, "JPEG"), "photo.jpg", "image/jpeg")
        worker.put("/me/profile/photo", {"upload_id": ticket["upload_id"]})
    return worker


def officer_over_api(stack, login: str, password: str) -> Api:
    return stack.api.as_(stack.api.post("/sessions", {"login": login, "password": password})["access_token"])


def approve_over_api(officer: Api, application_id: str) -> None:
    item = wait_until(lambda: next((i for i in officer.get("/review/queue")["items"]
                                    if i["application_id"] == application_id), None),
                      timeout=60, interval=0.3, what="the application in the queue")
    officer.post(f"/review/items/{item['item_id']}/decision", {"decision": "approve"})


def submit_until_accepted(page, button_name: str) -> None:
    """Registration keeps its own copy of the 个人信息表, which follows the profile's event a moment
    after a save: until then a submission is refused as PROFILE_INCOMPLETE (shown on the page);
    a person would try again, and so does this."""
    deadline = time.monotonic() + 30
    while True:
        page.get_by_role("button", name=button_name).click()
        page.wait_for_function("() => location.hash.startsWith('#/application/') || "
                               "[...document.querySelectorAll('.error, .form-error')].some(e => e.textContent)")
        if page.url.split("#", 1)[1].startswith("/application/"):
            return
        if time.monotonic() > deadline or "个人信息" not in page.locator("form").last.inner_text():
            raise AssertionError("submission refused: " + page.locator("form").last.inner_text())
        time.sleep(0.5)


def wait_in_queue(officer: Screens, applicant_masked: str) -> None:
    """Until the officer's queue shows the applicant. Submitted work reaches review by an event, so
    the queue is loaded again until it does: a reload when the page already shows the queue (going
    to the same #/review is a same-document navigation that loads nothing)."""
    page = officer.page
    deadline = time.monotonic() + 60
    while not page.locator("#queue tr", has_text=applicant_masked).count():
        assert time.monotonic() < deadline, "the application never reached the officer's queue"
        if page.url.endswith("#/review"):
            time.sleep(0.3)
            page.reload()
        else:
            officer.open("/review")
        page.locator("#queue").wait_for()


def open_queue_item(officer: Screens, applicant_masked: str) -> None:
    page = officer.page
    wait_in_queue(officer, applicant_masked)
    page.locator("#queue tr", has_text=applicant_masked).first.get_by_role("link", name="审核").click()
    page.get_by_role("heading", name=re.compile("审核：")).wait_for()


def decide(officer: Screens, decision: str, reason: str = "") -> None:
    page = officer.page
    page.get_by_label(decision, exact=True).check()
    if reason:
        page.get_by_label("审核意见").fill(reason)
    page.get_by_role("button", name="提交审核决定").click()
    page.locator("#decided").wait_for()


# -- 1. sign-up → 个人信息表 → 系统校验 → 首次登记 → county → province → 查看证书 ------------------------

def test_first_registration_from_sign_up_to_certificate(screens, system, tmp_path):
    worker = screens()
    page = worker.page
    worker.open("/register")
    page.get_by_label("姓名").fill(HOLDER_NAME)
    page.get_by_label("身份证号").fill(HOLDER_ID)
    worker.shot("register")
    page.get_by_role("button", name="核对社工库").click()
    assert page.locator("#management-number").inner_text() == f"{YEAR}11000000000001"
    assert page.locator("#level").inner_text() == "社会工作师"
    page.get_by_label("电子邮箱").fill(HOLDER_EMAIL)
    page.get_by_label("密码", exact=True).fill(HOLDER_PASSWORD)
    worker.shot("registry-found")
    page.get_by_role("button", name="注册", exact=True).click()
    page.get_by_role("heading", name="邮箱验证").wait_for()
    page.get_by_label("邮箱验证码").fill(mailed_code(system, HOLDER_EMAIL))
    page.get_by_role("button", name="验证", exact=True).click()
    page.get_by_role("heading", name="邮箱已验证").wait_for()
    worker.shot("email-confirmed")

    # 系统校验 first: every missing item is a link to its field
    worker.open("/check")
    assert "需要补充" in page.locator("#check-result").inner_text()
    page.get_by_role("link", name="民族").click()
    page.get_by_role("heading", name="个人信息表").wait_for()
    assert page.evaluate("document.activeElement.name") == "ethnicity"
    worker.shot("check-links-to-field")

    basic = page.locator("#basic-form")
    basic.get_by_label("民族").fill("汉族")
    basic.get_by_label("政治面貌").select_option("中共党员")
    basic.get_by_label("学历").select_option("本科")
    basic.get_by_label("所学专业").fill("社会工作")
    basic.get_by_label("手机号码").fill("13800138000")
    basic.get_by_label("通讯地址").fill("北京市朝阳区朝阳门外大街1号")
    basic.get_by_label("登记区域（区县代码，6 位）").fill(COUNTY)
    basic.get_by_label("单位类别").select_option("社会工作服务机构")
    basic.get_by_label("查找社会工作服务机构（名录）").fill("阳光")
    basic.get_by_role("button", name="查找").click()
    basic.get_by_label(re.compile("阳光社会工作服务中心")).check()
    basic.get_by_label("职务").fill("社会工作者")
    basic.get_by_label("本人承诺以上信息真实有效").check()
    basic.get_by_role("button", name="保存基础信息").click()
    page.locator("#basic-form [name=ethnicity][value='汉族']").wait_for()
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(make_photo(295, 413, "JPEG"))
    page.get_by_label("选择照片").set_input_files(str(photo))
    page.locator("#photo-preview:not([hidden])").wait_for()
    worker.shot("photo-preview")
    page.get_by_role("button", name="上传照片").click()
    assert "一寸" in page.locator("#photo-saved").inner_text()
    work = page.locator("#work-form")
    work.get_by_label("单位类别").select_option("社会工作服务机构")   # chosen from the directory
    work.get_by_label("查找社会工作服务机构（名录）").fill("阳光")
    work.get_by_role("button", name="查找").click()
    work.get_by_label(re.compile("阳光社会工作服务中心")).check()
    work.get_by_label("职务").fill("社会工作者")
    work.get_by_label("开始日期").fill("2020-03-01")
    work.get_by_label("参与三区计划").check()
    proof = tmp_path / "sanqu.pdf"
    proof.write_bytes(minimal_pdf())
    work.get_by_label("证明材料").set_input_files(str(proof))
    work.get_by_role("button", name="保存工作经历").click()
    page.locator("#work .tag", has_text="三区计划").wait_for()
    honour = page.locator("#honour-form")
    honour.get_by_label("荣誉名称").fill("优秀社会工作者")
    honour.get_by_label("荣誉等级").select_option("区(县)")
    honour.get_by_label("授予单位").fill("北京市朝阳区民政局")
    honour.get_by_label("获得日期").fill("2023-12-01")
    honour.get_by_role("button", name="保存荣誉").click()
    page.locator("#honours .row", has_text="优秀社会工作者").wait_for()
    worker.shot("profile-filled")
    worker.open("/check")
    assert "已填写完整" in page.locator("#check-result").inner_text()
    worker.shot("check-complete")

    worker.open("/apply/first")
    page.get_by_label("我已阅读并同意以下承诺声明").check()
    submit_until_accepted(page, "提交首次登记")
    assert page.locator("#status").inner_text().startswith("初审中")
    worker.shot("submitted")

    county = screens(DESKTOP, "-county")
    county.login(COUNTY_EMAIL, COUNTY_OFFICER_PASSWORD)
    open_queue_item(county, "李**")
    assert county.page.locator("#applicant").inner_text() == HOLDER_NAME
    county.page.locator("img.photo").wait_for()
    county.shot("item")
    decide(county, "通过")
    province = screens(DESKTOP, "-province")
    province.login(PROVINCE_EMAIL, PROVINCE_OFFICER_PASSWORD)
    open_queue_item(province, "李**")
    decide(province, "通过")
    province.shot("approved")

    application_url = page.url
    wait_until(lambda: (page.goto(application_url), page.reload(),
                        "已出证" in page.locator("#status").inner_text())[-1], timeout=60, interval=1,
               what="已出证 on the status page")
    worker.shot("issued")
    page.get_by_role("link", name="查看证书").click()
    number = page.locator("#certificate-number").inner_text()
    assert page.locator("#certificate-status").inner_text() == "有效"
    worker.shot("certificate")
    with page.expect_download() as download:
        page.get_by_role("button", name="下载证书（PDF）").click()
    pdf = tmp_path / "certificate.pdf"
    download.value.save_as(pdf)
    text = PdfReader(io.BytesIO(pdf.read_bytes())).pages[0].extract_text()
    assert HOLDER_NAME in text and number in text
    # The verify link is the URL the PDF's QR code holds (certificate.view_certificate's
    # verification_url); the public page it opens says 有效.
    verify_url = page.get_by_role("link", name=re.compile("核验页面")).get_attribute("href")
    # the QR token v2 (a compact JWS, services/certificate/credentials.py) names this certificate
    token = re.fullmatch(rf"{re.escape(system.base_url)}/verify\?t=([\w-]+\.[\w-]+\.[\w-]+)", verify_url).group(1)
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=" * (-len(token.split(".")[1]) % 4)))
    assert claims["n"] == number
    page.get_by_role("link", name=re.compile("核验页面")).click()
    page.get_by_text("有效", exact=True).first.wait_for()
    worker.shot("verify-page")


def minimal_pdf() -> bytes:
    from pypdf import PdfWriter
    out = io.BytesIO()
    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    writer.write(out)
    return out.getvalue()


# -- 2. not in the registry → 反馈 → administrator approves → email → sign-up -------------------

def test_feedback_when_not_in_registry_then_sign_up(screens, system, tmp_path):
    name, number, level, year, address = UNLISTED
    person = screens()
    page = person.page
    person.open("/register")
    page.get_by_label("姓名").fill(name)
    page.get_by_label("身份证号").fill(number)
    page.get_by_role("button", name="核对社工库").click()
    page.get_by_role("link", name="提交反馈").click()
    page.get_by_role("heading", name=re.compile("反馈")).wait_for()
    assert page.get_by_label("身份证号").input_value() == number   # carried over, not via the URL
    assert number not in page.url
    page.get_by_label("电子邮箱").fill(address)
    page.get_by_label("职业水平", exact=True).select_option(level)
    page.get_by_label("考试年度").fill(str(year))
    page.get_by_label("所在区县代码（选填，6 位）").fill(COUNTY)
    proof = tmp_path / "certificate-scan.pdf"
    proof.write_bytes(minimal_pdf())
    page.get_by_label("证明材料（选填）").set_input_files(str(proof))
    person.shot("feedback-form")
    page.get_by_role("button", name="提交反馈").click()
    page.locator("#feedback-receipt").wait_for()
    person.shot("feedback-receipt")
    # 查询处理结果: the id and the ID number come along from the receipt, neither in the URL
    page.get_by_role("link", name="查询处理结果").click()
    page.get_by_role("heading", name="反馈处理结果").wait_for()
    assert page.get_by_label("身份证号").input_value() == number
    feedback_id = page.get_by_label("反馈编号").input_value()
    assert feedback_id and feedback_id not in page.url and number not in page.url
    page.get_by_role("button", name="查询").click()
    page.locator("#feedback-state", has_text="待处理").wait_for()
    person.shot("feedback-status-pending")

    admin = screens(DESKTOP, "-admin")
    admin.login(ADMIN_EMAIL, ADMIN_PASSWORD)
    admin.page.get_by_role("link", name="反馈审核").first.click()
    admin.page.locator("#feedback-list tr", has_text=name).get_by_role("link", name="处理").click()
    admin.page.get_by_role("link", name="certificate-scan.pdf").wait_for()
    admin.page.get_by_label("职业水平证书管理号").fill(FEEDBACK_MANAGEMENT_NUMBER)
    admin.shot("feedback-decision")
    admin.page.get_by_role("button", name="提交").click()
    assert "已通过" in admin.page.locator("#decided").inner_text()

    page.get_by_role("button", name="查询").click()   # the same form, asked again
    page.locator("#feedback-state", has_text="已通过").wait_for()
    assert page.get_by_role("link", name="注册").last.is_visible()
    person.shot("feedback-status-approved")
    mail_to(system, address, "反馈")
    person.open("/register")
    page.get_by_label("姓名").fill(name)
    page.get_by_label("身份证号").fill(number)
    page.get_by_role("button", name="核对社工库").click()
    assert page.locator("#management-number").inner_text() == FEEDBACK_MANAGEMENT_NUMBER
    page.get_by_label("电子邮箱").fill(address)
    page.get_by_label("密码", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="注册", exact=True).click()
    page.get_by_role("heading", name="邮箱验证").wait_for()
    person.shot("signed-up")


# -- 3. officer rejects with a reason → the worker corrects and resubmits → approved -------------

def test_rejected_then_corrected_and_resubmitted(screens, system):
    name, number, *_ = RETURNED
    # API shortcut: the account, a complete 个人信息表 and the submission are journey 1's business.
    api_worker = worker_over_api(system, RETURNED)
    application_id = wait_until(lambda: _submitted(api_worker), timeout=30, interval=0.5, what="the submission")

    county = screens(DESKTOP, "-county")
    county.login(COUNTY_EMAIL, COUNTY_OFFICER_PASSWORD)
    open_queue_item(county, "张**")
    county.shot("queue-item")
    decide(county, "不通过", "职务填写不规范，请按单位聘用文件填写")

    worker = screens()
    page = worker.page
    worker.login(number, PASSWORD)
    page.locator("table a", has_text="查看").first.click()
    assert page.locator("#status").inner_text().startswith("初审不通过")
    assert "职务填写不规范" in page.locator("#rejection").inner_text()
    assert "初审不通过" in page.locator("#history").inner_text()
    worker.shot("rejected")
    page.get_by_role("link", name="个人信息表").last.click()
    page.locator("#basic-form").get_by_label("职务").fill("社会工作师（项目主管）")
    page.locator("#basic-form").get_by_role("button", name="保存基础信息").click()
    page.locator("#basic-form [name=position][value='社会工作师（项目主管）']").wait_for()
    page.go_back()
    page.locator("#resubmit").wait_for()
    page.get_by_label("我已阅读并同意以下承诺声明").check()
    worker.shot("resubmit")
    page.get_by_role("button", name="重新提交").click()
    page.locator("#status", has_text="初审中").wait_for()
    assert "第" not in page.locator("#rejection").all_inner_texts().__str__()

    # The county approves by batch approval in the portal; the province over the API (shortcut).
    wait_in_queue(county, "张**")
    county.page.locator("#queue tr", has_text="张**").locator("input[type=checkbox]").check()
    county.shot("batch")
    county.page.get_by_role("button", name="批量通过所选事项").click()
    county.page.locator("#batch-result p").first.wait_for()
    assert "已通过 1 项" in county.page.locator("#batch-result").inner_text()
    approve_over_api(officer_over_api(system, PROVINCE_EMAIL, PROVINCE_OFFICER_PASSWORD), application_id)
    wait_until(lambda: (page.reload(), "已出证" in page.locator("#status").inner_text())[-1], timeout=60,
               interval=1, what="已出证 after the resubmission")
    worker.shot("issued")


def _submitted(worker: Api) -> str | None:
    response = worker.client.post("/me/applications/first-registration", json={"commitment": True},
                                  headers={"Authorization": f"Bearer {worker.token}"})
    if response.status_code == 409 and response.json()["code"] == "PROFILE_INCOMPLETE":
        return None
    assert response.status_code == 200, response.text
    return response.json()["application_id"]


# -- 4. 更换电子证 with an 8-digit NO, then 再登记 with offline hours and proof ----------------------

def test_replacement_then_re_registration_with_offline_hours(screens, system, tmp_path):
    name, number, *_ = PAPER
    worker_over_api(system, PAPER)   # API shortcut: account and 个人信息表
    worker = screens()
    page = worker.page
    worker.login(number, PASSWORD)
    page.get_by_role("link", name="更换电子证").click()
    valid_until = dt.date.today() + dt.timedelta(days=45)   # inside the 3-month 再登记 window
    page.get_by_label("证书编号（NO.）").fill("2019081")
    page.get_by_label("登记类型").select_option("首次登记")
    page.get_by_label("登记有效期起").fill((valid_until - dt.timedelta(days=3 * 365 - 1)).isoformat())
    page.get_by_label("登记有效期止").fill(valid_until.isoformat())
    page.get_by_label("我已阅读并同意以下承诺声明").check()
    page.get_by_role("button", name="提交更换申请").click()
    assert "8" in worker.message_at("#apply", "original_certificate_no")   # 7 digits refused at the field
    assert page.get_by_label("登记有效期止").input_value() == valid_until.isoformat()   # the form kept
    worker.shot("replacement-no-refused")
    page.get_by_label("证书编号（NO.）").fill("20190812")
    worker.shot("replacement")
    submit_until_accepted(page, "提交更换申请")
    application_id = page.url.rsplit("/", 1)[1]
    # API shortcut: the county alone decides a replacement (journeys 1 and 3 show the officer's screens)
    approve_over_api(officer_over_api(system, COUNTY_EMAIL, COUNTY_OFFICER_PASSWORD), application_id)
    wait_until(lambda: (page.reload(), "已出证" in page.locator("#status").inner_text())[-1], timeout=60,
               interval=1, what="the replacement certificate")
    worker.shot("replacement-issued")

    worker.open("/home")
    page.get_by_role("link", name="再登记").click()
    page.get_by_role("heading", name="再登记").wait_for()
    assert page.locator("#online-hours").inner_text() == "0"     # online hours: read-only, from the platform
    course = page.locator("#course-form")
    course.get_by_label("培训机构").fill("北京市社会工作者协会")
    course.get_by_label("课程名称").fill("社会工作实务督导")
    course.get_by_label("开始日期").fill((valid_until - dt.timedelta(days=300)).isoformat())
    course.get_by_label("结束日期").fill((valid_until - dt.timedelta(days=290)).isoformat())
    course.get_by_label("学时").fill("90")
    proof = tmp_path / "course.pdf"
    proof.write_bytes(minimal_pdf())
    course.get_by_label("证明材料").set_input_files(str(proof))
    course.get_by_role("button", name="添加课程").click()
    page.locator("#courses li", has_text="社会工作实务督导").wait_for()
    page.locator("#apply").get_by_label("我已阅读并同意以下承诺声明").check()
    worker.shot("re-registration")
    submit_until_accepted(page, "提交再登记")
    assert page.locator("#status").inner_text().startswith("初审中")
    worker.shot("re-registration-submitted")


# -- 5. bad input: each message at its field, the form kept ----------------------------------------

def test_bad_input_is_shown_at_its_field_and_the_form_kept(screens, system, tmp_path):
    name, number, *_ = CAREFUL
    person = screens()
    page = person.page
    person.open("/register")
    page.get_by_label("姓名").fill(name)
    wrong = number[:-1] + ("0" if number[-1] != "0" else "1")
    page.get_by_label("身份证号").fill(wrong)   # 18 characters: checked as typed
    assert person.message_at("#check", "id_number") == "请输入正确的身份证号"
    assert page.get_by_label("姓名").input_value() == name
    person.shot("id-checksum")

    worker_over_api(system, CAREFUL, complete=False)   # API shortcut: account and basic info, no photo
    person.login(number, PASSWORD)
    person.open("/profile")
    big = tmp_path / "big.jpg"
    big.write_bytes(make_photo(295, 413, "JPEG") + os.urandom(600 * 1024))
    page.get_by_label("选择照片").set_input_files(str(big))
    assert "500 KB" in person.message_at("#photo-form", "photo")
    page.get_by_role("button", name="上传照片").click()
    assert "500 KB" in person.message_at("#photo-form", "photo")
    person.shot("photo-too-large")
    fake = tmp_path / "photo.jpg"
    fake.write_bytes(minimal_pdf())   # a PDF renamed .jpg: only the server's content check can tell
    page.get_by_label("选择照片").set_input_files(str(fake))
    assert person.error_at("#photo-form", "photo").inner_text() == ""
    page.get_by_role("button", name="上传照片").click()
    refusal = person.message_at("#photo-form", "photo")
    assert re.search("JPEG|PNG|图片|照片", refusal), refusal
    assert page.locator("#basic-form").get_by_label("民族").input_value() == "汉族"   # the rest of the form kept
    person.shot("photo-not-an-image")

    person.open("/apply/first")
    page.get_by_role("button", name="提交首次登记").click()   # 承诺声明 unticked
    assert "承诺" in person.message_at("#apply", "commitment")
    assert page.get_by_label("我已阅读并同意以下承诺声明").get_attribute("aria-invalid") == "true"
    person.shot("commitment-unticked")


# -- the officer's other screens and the pages' own properties --------------------------------------

def test_officer_screens_and_page_properties(screens, system):
    officer = screens(DESKTOP, "-county")
    officer.login(COUNTY_EMAIL, COUNTY_OFFICER_PASSWORD)
    officer.open("/deadlines")
    officer.page.locator("#deadlines").wait_for()
    officer.shot("deadlines")
    officer.open("/review?status=approved")
    first = officer.page.locator("#queue a", has_text="审核").first
    item_id = first.get_attribute("href").rsplit("/", 1)[1]
    officer.open(f"/audit/{item_id}")
    assert "通过" in officer.page.locator("#audit").inner_text()
    officer.shot("audit")
    # tokens: none in the URL or in localStorage; logout forgets the refresh token
    assert officer.page.evaluate("Object.keys(localStorage).length") == 0
    assert officer.page.evaluate("sessionStorage.getItem('swms.portal.refresh')")
    assert "token" not in officer.page.url
    officer.logout()
    assert officer.page.evaluate("sessionStorage.getItem('swms.portal.refresh')") is None
    # an administrator disables the officer's account: the login is refused at its field; enabled again
    admin = screens(DESKTOP, "-admin")
    admin.login(ADMIN_EMAIL, ADMIN_PASSWORD)
    admin.page.get_by_role("link", name="停用账号", exact=True).click()
    admin.page.get_by_role("heading", name="停用或恢复账号").wait_for()
    admin.page.get_by_label("账号（身份证号或电子邮箱）").fill("nobody@example.gov.cn")
    admin.page.get_by_label("理由").fill("调离岗位")
    admin.page.get_by_role("button", name="停用账号").click()
    assert "不存在" in admin.message_at("#account-status", "login")
    admin.page.get_by_label("账号（身份证号或电子邮箱）").fill(COUNTY_EMAIL)
    admin.page.get_by_label("理由").fill("")
    admin.page.get_by_role("button", name="停用账号").click()
    assert admin.message_at("#account-status", "reason")
    admin.page.get_by_label("理由").fill("调离岗位")
    admin.page.get_by_role("button", name="停用账号").click()
    admin.page.locator("#account-disabled", has_text="已停用").wait_for()
    assert COUNTY_EMAIL not in admin.page.locator("#account-state").inner_text()   # masked: c***@example.gov.cn
    admin.shot("account-disabled")
    page = officer.page
    page.get_by_label("身份证号或电子邮箱").fill(COUNTY_EMAIL)
    page.get_by_label("密码", exact=True).fill(COUNTY_OFFICER_PASSWORD)
    page.get_by_role("button", name="登录").click()
    assert officer.message_at("#login", "login") == "账号已停用，请联系所在地民政部门"
    officer.shot("login-refused-disabled")
    admin.page.get_by_label("理由").fill("已返岗，恢复使用")
    admin.page.get_by_role("button", name="恢复账号").click()
    admin.page.locator("#account-disabled", has_text="正常").wait_for()
    admin.shot("account-enabled")
    officer.open("/review")   # a fresh login screen (heading focused), for the keyboard-only login below
    page.wait_for_function("() => location.hash === '#/login' && document.activeElement.tagName === 'H1'")
    # keyboard only: Tab to each field, Enter submits; the focused field is visibly outlined
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.name") == "login"
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"
    page.keyboard.type(COUNTY_EMAIL)
    page.keyboard.press("Tab")
    page.keyboard.type(COUNTY_OFFICER_PASSWORD)
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="待审队列").wait_for()
    officer.shot("keyboard-login")
    response = httpx.get(f"{system.base_url}/portal/")
    csp = response.headers["content-security-policy"]
    assert "'unsafe-inline'" not in csp and "script-src 'self'" in csp
    assert not re.search(r"""(src|href)=["']https?://""", response.text)   # every asset from this origin
