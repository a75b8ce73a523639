"""A stream of first registrations driven through the real services while faults are injected.

Every call is retried until it succeeds or gives a definite answer, as a patient front end would;
answers that mean "already done" (an open application, an item already decided) count as success.
"""
from __future__ import annotations

import collections
import datetime as dt
import email
import email.policy
import random
import time
from dataclasses import dataclass, field

import eventlet
from kombu import Connection, Exchange, Queue
from sqlalchemy import create_engine, text

from services.profile.codes import uscc_check_character
from services.profile.testing import make_photo, post_file
from swms.devkeys import SERVICES
from swms.errors import SwmsError
from swms.idcard import check_character
from swms.queues import ClusterRpcProxy, durable_queue
from tools.localstack import LocalStack, wait_until
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


@dataclass
class Deadlines:
    """How long the stream waits (seconds): for one call's definite answer, for the officers'
    approvals, for every certificate and for every email."""
    call: float = 240
    approvals: float = 300
    certificates: float = 300
    emails: float = 180


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


def every_service_healthy(stack: LocalStack, timeout: float, after: str = "") -> None:
    """Waits until each of the six services answers its health RPC with "ok" (a new client each try)."""
    for name in SERVICES:
        def healthy(name=name):
            try:
                with proxy(stack, timeout=5) as cluster:
                    return getattr(cluster, name).health()["status"] == "ok"
            except Exception:
                return False
        wait_until(healthy, timeout=timeout, interval=1, what=f"{name} healthy" + (f" after {after}" if after else ""))


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


def submit_all(stack: LocalStack, persons: list[Person], figures: Figures, call_deadline_s: float = 240,
               pause_s: float = 0) -> None:
    for index, person in enumerate(persons):
        if index and pause_s:
            time.sleep(pause_s)
        def submit():
            with proxy(stack, person.token) as worker:
                answer = worker.registration.submit_first_registration({"commitment": True})
                return answer["application_id"]

        outcome = patient(submit, figures, f"submit for {person.email}", call_deadline_s)
        if isinstance(outcome, SwmsError):  # a retry after a lost reply: the first one went through
            def mine():
                with proxy(stack, person.token) as worker:
                    return worker.registration.list_my_applications()["items"][0]["application_id"]
            outcome = patient(mine, figures, "list my applications", call_deadline_s)
        person.application_id = outcome


def approve_everything(stack: LocalStack, token: str, figures: Figures, expected: int, deadline_s: float,
                       call_deadline_s: float = 240) -> int:
    """As one officer: approve every item that reaches the queue until ``expected`` were approved."""
    approved: set[str] = set()
    deadline = time.monotonic() + deadline_s
    while len(approved) < expected and time.monotonic() < deadline:
        def page():
            with proxy(stack, token) as officer:
                return officer.review.list_queue({"page_size": 200})["items"]
        items = patient(page, figures, "list the queue", call_deadline_s)
        for item in items:
            def decide(item=item):
                with proxy(stack, token) as officer:
                    return officer.review.decide({"item_id": item["item_id"], "decision": "approve"})
            patient(decide, figures, "decide", call_deadline_s)
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


class DurableTap:
    """An agency's durable queue (of ``queue_type``): it survives broker restarts, and is read with
    a fresh connection once the stream is over (a connection held through a restart would die with it)."""

    def __init__(self, amqp_uri: str, source: str, event_type: str, queue_type: str = "classic"):
        self.amqp_uri = amqp_uri
        self.queue = durable_queue(
            Queue(f"faults-tap-{source}-{event_type}-{time.time_ns()}", routing_key=event_type,
                  exchange=Exchange(f"{source}.events", type="topic", durable=True), durable=True),
            {"AMQP_QUEUE_TYPE": queue_type}, dead_letter=False)
        with Connection(amqp_uri) as conn:
            self.queue(conn.default_channel).declare()

    def drain(self) -> list[dict]:
        bodies = []
        with Connection(self.amqp_uri) as conn:
            queue = self.queue(conn.default_channel)
            while (message := queue.get(no_ack=True)) is not None:
                bodies.append(message.payload)
            queue.delete()
        return bodies


def run_stream(stack: LocalStack, count: int, disturb, deadlines: Deadlines = Deadlines(),
               stall_ok: bool = False, pace_s: float = 0) -> dict:
    """Prepare ``count`` people, then submit and approve everything while ``disturb()`` runs in a
    green thread; wait until every certificate and email exists. Returns the figures.

    ``pace_s``: one submission every ``pace_s`` seconds, with both officers approving at the same
    time, so that every stage (submission, review, issue, email) is busy while ``disturb`` acts
    (without it, submissions and approvals go as fast as they can, one after the other).
    ``stall_ok``: a phase that runs out of its deadline ends the stream (named in ``stalled``)
    instead of failing it, and the figures count what got through (the classic-queue contrast
    of tests/faults/test_cluster.py)."""
    figures = Figures()
    persons = people(count)
    began = time.monotonic()
    tokens = prepare(stack, persons, figures)
    prepare_seconds = round(time.monotonic() - began, 1)
    issued_tap = DurableTap(stack.amqp_uri, "certificate", "certificate_issued", stack.queue_type or "classic")
    started = time.monotonic()
    disturbance = eventlet.spawn(disturb)
    stalled = None

    def all_issued():
        statuses = []
        for person in persons:
            def status(person=person):
                with proxy(stack, person.token) as worker:
                    return worker.registration.get_application({"application_id": person.application_id})["status"]
            statuses.append(patient(status, figures, "status", deadlines.call))
        return statuses.count("已出证") == count

    try:
        if pace_s:
            officers = [eventlet.spawn(approve_everything, stack, tokens[level], figures, count, deadlines.approvals,
                                       deadlines.call) for level in ("county", "province")]
            submit_all(stack, persons, figures, deadlines.call, pace_s)
            for officer in officers:
                officer.wait()
        else:
            submit_all(stack, persons, figures, deadlines.call)
            approve_everything(stack, tokens["county"], figures, count, deadlines.approvals, deadlines.call)
            approve_everything(stack, tokens["province"], figures, count, deadlines.approvals, deadlines.call)
        disturbance.wait()
        wait_until(all_issued, timeout=deadlines.certificates, interval=2, what="every certificate")
        wait_until(lambda: len(certificate_mails(stack)) >= count, timeout=deadlines.emails, interval=1,
                   what="every email")
    except TimeoutError as exc:
        if not stall_ok:
            raise
        stalled = str(exc)
        disturbance.wait()
    seconds = round(time.monotonic() - started, 1)
    time.sleep(5)  # let late duplicates, if any, arrive before counting
    events = issued_tap.drain()
    mails = certificate_mails(stack)
    with create_engine(stack.db_urls["certificate"]).connect() as conn:
        per_application = conn.execute(text(
            "SELECT application_id, count(*) FROM certificates GROUP BY application_id")).all()
    expected = [p.application_id for p in persons]   # None: never submitted (only when stall_ok)
    event_ids_by_app = collections.defaultdict(set)
    for body in events:
        event_ids_by_app[body["application_id"]].add(body["event_id"])
    copies_by_message_id = collections.defaultdict(list)
    for mail in mails.values():
        copies_by_message_id[mail["Message-ID"]].append(mail)
    message_ids_by_recipient = collections.defaultdict(set)
    for message_id, copies in copies_by_message_id.items():
        message_ids_by_recipient[copies[0]["To"]].add(message_id)
    result = {
        "applications": count,
        "prepare_seconds": prepare_seconds,
        "seconds": seconds,
        "rpc_retries": figures.rpc_retries,
        "lost_applications": sum(1 for a in expected if a not in {a for a, _ in per_application}),
        "duplicate_certificates": sum(n - 1 for _, n in per_application),
        "lost_events": sum(1 for a in expected if a not in event_ids_by_app),
        "duplicate_events": sum(len(ids) - 1 for ids in event_ids_by_app.values()),
        "event_redeliveries": len(events) - len(event_ids_by_app),
        "lost_emails": count - len(message_ids_by_recipient),
        # A second, different message to one holder for one certificate: what the idempotency key
        # (event id + audience + recipient) must prevent.
        "duplicate_emails": sum(len(ids) - 1 for ids in message_ids_by_recipient.values()),
        # The same message handed to the relay again: the documented at-least-once delivery after a
        # crash between the relay's acceptance and the commit (docs/contracts.md, "Guarantees").
        "email_redeliveries": len(mails) - len(copies_by_message_id),
        "redeliveries_differing_from_the_first_copy": sum(
            1 for copies in copies_by_message_id.values() for copy in copies[1:]
            if mail_content(copy) != mail_content(copies[0])),
        "unpublished_outbox_rows": unpublished(stack),
    }
    if stall_ok:
        result["stalled"] = stalled
    return result


def mail_content(message) -> tuple:
    return (message["To"], message["Subject"], message["Message-ID"], message.get_body().get_content())


def unpublished(stack: LocalStack) -> int:
    total = 0
    for name in SERVICES:
        with create_engine(stack.db_urls[name]).connect() as conn:
            total += conn.execute(text("SELECT count(*) FROM outbox WHERE published_at IS NULL")).scalar_one()
    return total


def assert_nothing_lost_or_duplicated(figures: dict) -> None:
    print("\nfault figures:", figures)
    for key in ("lost_applications", "duplicate_certificates", "lost_events", "duplicate_events",
                "lost_emails", "duplicate_emails", "redeliveries_differing_from_the_first_copy",
                "unpublished_outbox_rows"):
        assert figures[key] == 0, (key, figures)
