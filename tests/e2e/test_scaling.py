"""Scaling out, proven locally: several processes of one service share its queues (competing
consumers), the work spreads over them, and no message is processed twice.

Registration, review and certificate (the services the HorizontalPodAutoscaler scales) and
notification run as three processes each, on PostgreSQL; a stream of first registrations goes
through them. Each process's own /metrics (swms.ops) says how many times each of its entrypoints
ran: summed over the processes of a service, every event handler ran exactly once per event
published, and every process took a share.
"""
from __future__ import annotations

import collections
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text

from swms.devkeys import SERVICES
from tests.faults.workload import Figures, approve_everything, certificate_mails, people, prepare, submit_all
from tools.localstack import LocalStack, free_port, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.parametrize("db_backend", ["postgresql"], indirect=True)]

SCALED = ("registration", "review", "certificate", "notification")
PROCESSES_EACH = 3
APPLICATIONS = 24


@pytest.fixture
def stack(tmp_path, amqp_uri, make_database):
    stack = LocalStack(workdir=tmp_path / "stack", amqp_uri=amqp_uri,
                       db_urls={name: make_database(name) for name in SERVICES})
    ops_ports: dict[str, int] = {}
    try:
        stack.start_infrastructure()
        for name in SERVICES:
            for number in range(1, (PROCESSES_EACH if name in SCALED else 1) + 1):
                instance = f"{name}-{number}"
                ops_ports[instance] = free_port()
                stack.start_service(name, instance, extra_env={"OPS_PORT": str(ops_ports[instance])})
        stack.ops_ports = ops_ports
        stack.wait_healthy()
        yield stack
    finally:
        stack.stop()


def entrypoint_calls(port: int) -> collections.Counter:
    """How many times each entrypoint of one process ran, whatever the outcome."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        families = text_string_to_metric_families(response.read().decode())
    calls: collections.Counter = collections.Counter()
    for family in families:
        if family.name == "swms_entrypoint_calls":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    calls[sample.labels["entrypoint"]] += int(sample.value)
    return calls


def test_processes_of_one_service_share_the_work_and_none_is_done_twice(stack):
    figures = Figures()
    persons = people(APPLICATIONS, seed=23)
    tokens = prepare(stack, persons, figures)
    submit_all(stack, persons, figures)
    assert approve_everything(stack, tokens["county"], figures, APPLICATIONS, deadline_s=300) == APPLICATIONS
    assert approve_everything(stack, tokens["province"], figures, APPLICATIONS, deadline_s=300) == APPLICATIONS

    certificates = create_engine(stack.db_urls["certificate"])

    def issued_and_mailed() -> bool:
        with certificates.connect() as conn:
            issued = conn.execute(text("SELECT count(*) FROM certificates")).scalar_one()
        return issued == APPLICATIONS and len(certificate_mails(stack)) >= APPLICATIONS

    wait_until(issued_and_mailed, timeout=300, interval=1, what="every certificate issued and mailed")

    def calls_of(service: str) -> dict[str, collections.Counter]:
        return {instance: entrypoint_calls(port) for instance, port in stack.ops_ports.items()
                if instance.rsplit("-", 1)[0] == service}

    # Every event was published once per application (twice for approvals: county, then province);
    # wait until the handlers have all run, then check that none ran more often than that.
    expected = {
        "review": {"on_application_submitted": APPLICATIONS},
        "certificate": {"on_application_approved": 2 * APPLICATIONS},
        "registration": {"on_application_approved": 2 * APPLICATIONS, "on_certificate_issued": APPLICATIONS},
        "notification": {"on_certificate_issued": APPLICATIONS, "on_application_submitted": APPLICATIONS},
    }

    def totals(service: str) -> collections.Counter:
        return sum(calls_of(service).values(), collections.Counter())

    for service, counts in expected.items():
        wait_until(lambda: all(totals(service)[name] >= n for name, n in counts.items()), timeout=120,
                   interval=1, what=f"{service}'s handlers")
    time.sleep(3)  # a late redelivery, if there were one, would show now

    report = {service: {instance: dict(c) for instance, c in calls_of(service).items()} for service in SCALED}
    print("\nentrypoint calls per process:", report)
    for service, counts in expected.items():
        per_process = calls_of(service)
        for name, n in counts.items():
            assert sum(c[name] for c in per_process.values()) == n, (service, name, report[service])
            # the work spread: every process of the service took some of these events
            assert all(c[name] > 0 for c in per_process.values()), (service, name, report[service])

    with certificates.connect() as conn:
        per_application = conn.execute(text(
            "SELECT application_id, count(*) FROM certificates GROUP BY application_id")).all()
    assert {a for a, _ in per_application} == {p.application_id for p in persons}
    assert all(n == 1 for _, n in per_application)
    mails = certificate_mails(stack)
    assert len(mails) == APPLICATIONS and len({m["To"] for m in mails.values()}) == APPLICATIONS
    # RPC calls spread too: each registration process answered some of the front end's calls.
    assert all(sum(c.values()) > 0 for c in calls_of("registration").values())
