"""Faults, measured: kill -9 of random services during a stream of applications (100 kills), a
RabbitMQ restart and a PostgreSQL restart mid-stream. Nothing may be lost or duplicated: every
application ends 已出证 with exactly one certificate, one certificate_issued event and one email.

Bounded: a fixed number of applications and kills, every wait with a deadline. Figures are
printed (run with -s to see them; bin/test shows them in the summary of passed tests with -rP).
"""
from __future__ import annotations

import collections
import random
import signal
import subprocess
import time

import eventlet
import pytest
from kombu import Connection, Exchange, Queue
from sqlalchemy import create_engine, text

from swms.devkeys import SERVICES
from tests.faults.workload import (Figures, approve_everything, certificate_mails, patient, people, prepare, proxy,
                                   submit_all)
from tools.localstack import LocalStack, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.parametrize("db_backend", ["postgresql"], indirect=True)]


class DurableTap:
    """An agency's durable queue: it survives broker restarts, and is read with a fresh connection
    once the stream is over (a connection held through a restart would die with it)."""

    def __init__(self, amqp_uri: str, source: str, event_type: str):
        self.amqp_uri = amqp_uri
        self.queue = Queue(f"faults-tap-{source}-{event_type}-{time.time_ns()}", routing_key=event_type,
                           exchange=Exchange(f"{source}.events", type="topic", durable=True), durable=True)
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


class Chaos:
    """Sends ``sig`` (SIGKILL by default) to a random service (or, ``each_in_turn``, to every service
    once per round in a random order) every ``interval`` seconds, waits up to ``grace`` seconds for
    it to exit (then SIGKILLs it), and starts it again at once."""

    def __init__(self, stack: LocalStack, kills: int, interval: float, seed: int = 5,
                 sig: int = signal.SIGKILL, grace: float = 10, each_in_turn: bool = False):
        self.stack, self.kills, self.interval, self.sig, self.grace = stack, kills, interval, sig, grace
        self.each_in_turn, self._round = each_in_turn, []
        self.rng = random.Random(seed)
        self.done: list[str] = []
        self.exit_codes: list[int] = []
        self.stop_seconds: list[float] = []

    def run(self) -> None:
        while len(self.done) < self.kills:
            eventlet.sleep(self.interval * self.rng.uniform(0.5, 1.5))
            name = self._next_service()
            began = time.monotonic()
            self.exit_codes.append(self.stack.stop(name, sig=self.sig, timeout=self.grace)[name])
            self.stop_seconds.append(time.monotonic() - began)
            log_offset = self._log_size(name)
            self.stack.start_service(name)
            self.done.append(name)
            if self.sig != signal.SIGKILL:
                # As in a rolling restart, the next signal comes once this process is up: a SIGTERM
                # before nameko has set its handler would end the process by the default action
                # (with nothing in flight), which is not what is being tested here.
                wait_until(lambda: b"Connected to amqp" in self._log_since(name, log_offset),
                           timeout=60, interval=0.2, what=f"{name} started again")

    def _next_service(self) -> str:
        if not self.each_in_turn:
            return self.rng.choice(SERVICES)
        if not self._round:  # every service once per round, in a random order
            self._round = self.rng.sample(SERVICES, len(SERVICES))
        return self._round.pop()

    def _log_size(self, name: str) -> int:
        path = self.stack.log_dir / f"{name}.log"
        return path.stat().st_size if path.exists() else 0

    def _log_since(self, name: str, offset: int) -> bytes:
        with open(self.stack.log_dir / f"{name}.log", "rb") as log:
            log.seek(offset)
            return log.read()


def run_stream(stack: LocalStack, count: int, disturb) -> dict:
    """Prepare ``count`` people, then submit and approve everything while ``disturb()`` runs in a
    green thread; wait until every certificate and email exists. Returns the figures."""
    figures = Figures()
    persons = people(count)
    tokens = prepare(stack, persons, figures)
    issued_tap = DurableTap(stack.amqp_uri, "certificate", "certificate_issued")
    started = time.monotonic()
    disturbance = eventlet.spawn(disturb)
    submit_all(stack, persons, figures)
    approve_everything(stack, tokens["county"], figures, count, deadline_s=300)
    approve_everything(stack, tokens["province"], figures, count, deadline_s=300)
    disturbance.wait()

    def all_issued():
        statuses = []
        for person in persons:
            def status(person=person):
                with proxy(stack, person.token) as worker:
                    return worker.registration.get_application({"application_id": person.application_id})["status"]
            statuses.append(patient(status, figures, "status"))
        return statuses.count("已出证") == count

    wait_until(all_issued, timeout=300, interval=2, what="every certificate")
    wait_until(lambda: len(certificate_mails(stack)) >= count, timeout=180, interval=1, what="every email")
    time.sleep(5)  # let late duplicates, if any, arrive before counting
    events = issued_tap.drain()
    mails = certificate_mails(stack)
    with create_engine(stack.db_urls["certificate"]).connect() as conn:
        per_application = conn.execute(text(
            "SELECT application_id, count(*) FROM certificates GROUP BY application_id")).all()
    expected = {p.application_id for p in persons}
    event_ids_by_app = collections.defaultdict(set)
    for body in events:
        event_ids_by_app[body["application_id"]].add(body["event_id"])
    copies_by_message_id = collections.defaultdict(list)
    for mail in mails.values():
        copies_by_message_id[mail["Message-ID"]].append(mail)
    message_ids_by_recipient = collections.defaultdict(set)
    for message_id, copies in copies_by_message_id.items():
        message_ids_by_recipient[copies[0]["To"]].add(message_id)
    return {
        "applications": count,
        "seconds": round(time.monotonic() - started, 1),
        "rpc_retries": figures.rpc_retries,
        "lost_applications": len(expected - {a for a, _ in per_application}),
        "duplicate_certificates": sum(n - 1 for _, n in per_application),
        "lost_events": len(expected - set(event_ids_by_app)),
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


def test_kill_nine_of_random_services_during_a_stream(stack):
    chaos = Chaos(stack, kills=100, interval=1.2)
    figures = run_stream(stack, count=30, disturb=chaos.run)
    figures["kills"] = dict(collections.Counter(chaos.done))
    assert sum(figures["kills"].values()) == 100
    assert_nothing_lost_or_duplicated(figures)


def test_sigterm_during_a_stream_lets_work_finish_or_requeue(stack):
    """Graceful shutdown, as Kubernetes does it: SIGTERM, then SIGKILL after the grace period.
    Every process stops by itself well inside the grace period (exit code 0), and what was in
    flight either finished or went back to the queue: nothing lost, nothing done twice."""
    chaos = Chaos(stack, kills=18, interval=2.0, seed=7, sig=signal.SIGTERM, grace=30, each_in_turn=True)
    figures = run_stream(stack, count=20, disturb=chaos.run)
    figures["sigterms"] = dict(collections.Counter(chaos.done))
    figures["exit_codes"] = dict(collections.Counter(chaos.exit_codes))
    figures["slowest_stop_seconds"] = round(max(chaos.stop_seconds), 1)
    assert collections.Counter(chaos.done) == {name: 3 for name in SERVICES}
    assert_nothing_lost_or_duplicated(figures)
    assert figures["email_redeliveries"] == 0, figures  # a graceful stop commits what the relay accepted
    assert figures["event_redeliveries"] == 0, figures  # ... and marks every event it published
    assert set(chaos.exit_codes) == {0}, figures  # none had to be SIGKILLed; none crashed on the way out


def restart(command: list[str]) -> None:
    subprocess.run(command, check=True, capture_output=True, timeout=120)


def broker_and_database_restarts(stack: LocalStack, recovery: dict):
    def disturb():
        eventlet.sleep(3)
        for what, commands in (
            ("rabbitmq", [["rabbitmqctl", "stop_app"], ["rabbitmqctl", "start_app"]]),
            ("postgresql", [["pg_ctlcluster", "--skip-systemctl-redirect", pg_version(), "main", "restart"]]),
        ):
            for command in commands:
                restart(command)
            began = time.monotonic()
            for name in SERVICES:  # every service answers again by itself (no restarts by us)
                def healthy(name=name):
                    with proxy(stack, timeout=5) as cluster:
                        return getattr(cluster, name).health()["status"] == "ok"
                wait_until(lambda: _quietly(healthy), timeout=120, interval=1, what=f"{name} after {what} restart")
            recovery[what] = round(time.monotonic() - began, 1)
            eventlet.sleep(3)
    return disturb


def _quietly(check) -> bool:
    try:
        return check()
    except Exception:
        return False


def pg_version() -> str:
    import os
    return sorted(os.listdir("/etc/postgresql"))[-1]


def test_rabbitmq_and_postgresql_restarted_mid_stream(stack):
    recovery: dict = {}
    figures = run_stream(stack, count=20, disturb=broker_and_database_restarts(stack, recovery))
    figures["recovery_seconds"] = recovery
    assert set(recovery) == {"rabbitmq", "postgresql"}
    assert_nothing_lost_or_duplicated(figures)
