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

from swms.devkeys import SERVICES
from tests.faults.workload import assert_nothing_lost_or_duplicated, every_service_healthy, run_stream
from tools.localstack import LocalStack, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.parametrize("db_backend", ["postgresql"], indirect=True)]


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
            every_service_healthy(stack, timeout=120, after=f"{what} restart")  # by itself (no restarts by us)
            recovery[what] = round(time.monotonic() - began, 1)
            eventlet.sleep(3)
    return disturb


def pg_version() -> str:
    import os
    return sorted(os.listdir("/etc/postgresql"))[-1]


def test_rabbitmq_and_postgresql_restarted_mid_stream(stack):
    recovery: dict = {}
    figures = run_stream(stack, count=20, disturb=broker_and_database_restarts(stack, recovery))
    figures["recovery_seconds"] = recovery
    assert set(recovery) == {"rabbitmq", "postgresql"}
    assert_nothing_lost_or_duplicated(figures)
