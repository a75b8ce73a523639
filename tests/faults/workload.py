"""A stream of first registrations driven through the real services while faults are injected.

Every call is retried until it succeeds or gives a definite answer, as a patient front end would;
answers that mean "already done" (an open application, an item already decided) count as success.
"""
from __future__ import annotations

import datetime as dt
import email
import email.policy
import random
import time
from dataclasses import dataclass, field

from nameko.standalone.rpc import ClusterRpcProxy

from services.profile.codes import uscc_check_character
from services.profile.testing import make_photo, post_file
from swms.errors import SwmsError
from swms.idcard import check_character
from tools.localstack import LocalStack
from tools.walkthrough import COUNTY, PROVINCE, UNIT_CREDIT_CODE, UNIT_NAME, identity_cli, service_cli

PASSWORD = "Fault-run-2026!x"
ALREADY_DONE = {"APPLICATION_ALREADY_OPEN", "ALREADY_DECIDED", "ALREADY_REGISTERED"}


@dataclass
class Person:
    name: str
    id_number: str
    email: str
    person_id: str | None = None
    token: str | None = None
    application_id: str | None = None


@dataclass
class Figures:
    rpc_retries: int = 0
    errors: list[str] = field(default_factory=list)


def people(count: int, seed: int = 11) -> list[Person]:
    rng = random.Random(seed)
    result, seen = [], set()
    while len(result) < count:
        first17 = f"110105{rng.randint(1960, 2000)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}{rng.randint(0, 999):03d}"
        if first17 not in seen:
            seen.add(first17)
            i = len(result)
            given = "明华建国秀英志强丽娟海燕晓东春梅文静"
            name = "测" + given[i // len(given) % len(given)] + given[i % len(given)]
            result.append(Person(name=name, id_number=first17 + check_character(first17),
                                 email=f"worker{i}@example.cn"))
    return result


def patient(call, figures: Figures, what: str, deadline_s: float = 240.0):
    """Retry through service restarts and broker outages until a definite answer."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return call()
        except SwmsError as exc:
            if exc.code in ALREADY_DONE:
                return exc
            if exc.code != "UPSTREAM_UNAVAILABLE":
                raise
            reason = exc.code
        except Exception as exc:  # timeouts, UnknownService, connection resets while things restart
            reason = f"{type(exc).__name__}: {exc}"
        figures.rpc_retries += 1
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: no answer in {deadline_s} s (last: {reason})")
        time.sleep(0.5)


def proxy(stack: LocalStack, token: str | None = None, timeout: float = 10):
    return ClusterRpcProxy({"AMQP_URI": stack.amqp_uri}, timeout=timeout,
                           context_data={"auth_token": token} if token else {})


def prepare(stack: LocalStack, persons: list[Person], figures: Figures) -> dict[str, str]:
    """Registry, officers, directory, accounts and complete profiles (before any fault)."""
    year = dt.date.today().year
    registry = stack.workdir / "registry" / "faults.csv"
    registry.parent.mkdir(parents=True, exist_ok=True)
    registry.write_text("name,id_number,level,management_number,exam_year,province\n" + "".join(
        f"{p.name},{p.id_number},社会工作师,{year}11{i:012d},{year},11\n" for i, p in enumerate(persons)),
        encoding="utf-8")
    identity_cli(stack, "import-passers", str(registry))
    tokens = {}
    for level, region in (("county", COUNTY), ("province", PROVINCE)):
        identity_cli(stack, "create-officer", "--name", f"{level}审核员", "--email", f"{level}@example.gov.cn",
                     "--password", PASSWORD, "--region", region, "--level", level)
    directory = stack.workdir / "registry" / "organisations.csv"
    directory.write_text(f"统一社会信用代码,机构名称,所在地区代码\n{UNIT_CREDIT_CODE},{UNIT_NAME},{COUNTY}\n",
                         encoding="utf-8")
    service_cli(stack, "profile", "import-organisations", str(directory))
    assert uscc_check_character  # the directory's code is valid (imported from the walkthrough)
    with proxy(stack, timeout=30) as public:
        for level in ("county", "province"):
            tokens[level] = public.identity.login({"login": f"{level}@example.gov.cn", "password": PASSWORD})["access_token"]
        for person in persons:
            person.person_id = public.identity.sign_up({"name": person.name, "id_number": person.id_number,
                                                        "email": person.email, "password": PASSWORD})["person_id"]
            person.token = public.identity.login({"login": person.email, "password": PASSWORD})["access_token"]
    for person in persons:
        with proxy(stack, person.token, timeout=30) as worker:
            complete_profile(worker)
    return tokens


def complete_profile(worker) -> None:
    """As the social worker: the 个人信息表 (unit chosen from the directory) and an ID photo."""
    unit = worker.profile.search_organisations({"name": "阳光", "region_code": COUNTY})["items"][0]
    worker.profile.save_basic_info({
        "ethnicity": "汉族", "political_status": "群众", "education": "本科", "major": "社会工作",
        "mobile": "13800138000", "address": "北京市朝阳区", "region_code": COUNTY,
        "unit_category": "社会工作服务机构", "unit_directory_id": unit["org_id"], "position": "社工",
        "truth_commitment": True})
    ticket = worker.profile.request_upload({"purpose": "photo"})
    post_file(ticket, make_photo(295, 413, "JPEG"), "photo.jpg", "image/jpeg")
    worker.profile.confirm_photo({"upload_id": ticket["upload_id"]})


def submit_all(stack: LocalStack, persons: list[Person], figures: Figures) -> None:
    for person in persons:
        def submit():
            with proxy(stack, person.token) as worker:
                answer = worker.registration.submit_first_registration({"commitment": True})
                return answer["application_id"]

        outcome = patient(submit, figures, f"submit for {person.email}")
        if isinstance(outcome, SwmsError):  # a retry after a lost reply: the first one went through
            def mine():
                with proxy(stack, person.token) as worker:
                    return worker.registration.list_my_applications()["items"][0]["application_id"]
            outcome = patient(mine, figures, "list my applications")
        person.application_id = outcome


def approve_everything(stack: LocalStack, token: str, figures: Figures, expected: int, deadline_s: float) -> int:
    """As one officer: approve every item that reaches the queue until ``expected`` were approved."""
    approved: set[str] = set()
    deadline = time.monotonic() + deadline_s
    while len(approved) < expected and time.monotonic() < deadline:
        def page():
            with proxy(stack, token) as officer:
                return officer.review.list_queue({"page_size": 200})["items"]
        items = patient(page, figures, "list the queue")
        for item in items:
            def decide(item=item):
                with proxy(stack, token) as officer:
                    return officer.review.decide({"item_id": item["item_id"], "decision": "approve"})
            patient(decide, figures, "decide")
            approved.add(item["application_id"])
        if not items:
            time.sleep(0.5)
    return len(approved)


def certificate_mails(stack: LocalStack) -> dict:
    """The 证书已签发 emails the mail sink received, by file name."""
    found = {}
    for path in stack.mail_dir.glob("*.eml"):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        if "电子登记证书已签发" in (message["Subject"] or ""):
            found[path.name] = message
    return found
