"""Helpers shared by the tests: tokens, RPC clients, seeding, and a tap on an event exchange."""
from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import queue
import socket
import subprocess
import time
from pathlib import Path

from kombu import Connection, Exchange, Queue
from nameko.standalone.events import event_dispatcher
from nameko.standalone.rpc import ClusterRpcProxy
from sqlalchemy.orm import sessionmaker

from swms.auth import OFFICER, SOCIAL_WORKER, Caller, issue_token
from swms.contracts.events import Event
from swms.errors import SwmsError
from swms.db import engine_for
from swms.idcard import check_character
from tools.localstack import wait_until  # noqa: F401  (re-exported for the tests)

SERVICE_CLASSES = {
    "identity": "services.identity.service:IdentityService",
    "profile": "services.profile.service:ProfileService",
    "registration": "services.registration.service:RegistrationService",
    "review": "services.review.service:ReviewService",
    "certificate": "services.certificate.service:CertificateService",
    "notification": "services.notification.service:NotificationService",
}


def service_class(name: str):
    module, cls = SERVICE_CLASSES[name].split(":")
    return getattr(importlib.import_module(module), cls)


def valid_id(first17: str) -> str:
    return first17 + check_character(first17)


def token(keys_dir: Path, caller: Caller, ttl: dt.timedelta = dt.timedelta(minutes=30)) -> str:
    return issue_token((keys_dir / "token-signing.pem").read_bytes(), caller, ttl)[0]


def worker_token(keys_dir: Path, person_id: str) -> str:
    return token(keys_dir, Caller(subject=person_id, role=SOCIAL_WORKER))


def officer_token(keys_dir: Path, region: str, level: str, officer_id: str = "officer-1") -> str:
    return token(keys_dir, Caller(subject=officer_id, role=OFFICER, region_code=region, level=level))


@contextlib.contextmanager
def rpc_client(amqp_uri: str, auth_token: str | None = None, timeout: float = 20):
    context = {"auth_token": auth_token} if auth_token else {}
    with ClusterRpcProxy({"AMQP_URI": amqp_uri}, timeout=timeout, context_data=context) as proxy:
        yield proxy


def healthy(amqp_uri: str, service: str, timeout: float = 2) -> bool:
    """Whether the service answers its health RPC with ``ok`` now (False while it does not answer)."""
    try:
        with rpc_client(amqp_uri, timeout=timeout) as client:
            return getattr(client, service).health()["status"] == "ok"
    except Exception:
        return False


def session_for(db_url: str):
    return sessionmaker(engine_for(db_url), expire_on_commit=False)()


def dispatch(amqp_uri: str, event: Event) -> None:
    """Publish an event as its source service would (JSON body)."""
    event_dispatcher({"AMQP_URI": amqp_uri})(event.source, event.event_type, event.model_dump(mode="json"))


class EventTap:
    """A queue bound to ``<source>.events`` for one routing key, declared before the events flow."""

    def __init__(self, amqp_uri: str, source: str, event_type: str):
        self.connection = Connection(amqp_uri)
        exchange = Exchange(f"{source}.events", type="topic", durable=True)
        self.queue = Queue(f"test-tap-{source}-{event_type}-{time.time_ns()}", exchange=exchange,
                           routing_key=event_type, auto_delete=True)
        self.received: queue.Queue = queue.Queue()
        self.consumer = self.connection.Consumer([self.queue], callbacks=[self._on_message], accept=["json"])
        self.consumer.consume()

    def _on_message(self, body, message):
        self.received.put(body)
        message.ack()

    def collect(self, count: int = 1, timeout: float = 20.0) -> list[dict]:
        bodies = []
        deadline = time.monotonic() + timeout
        while len(bodies) < count and time.monotonic() < deadline:
            try:
                self.connection.drain_events(timeout=0.2)
            except socket.timeout:
                pass
            while not self.received.empty():
                bodies.append(self.received.get())
        return bodies

    def close(self):
        self.consumer.cancel()
        self.connection.release()


def results_or_codes(replies) -> list:
    """Each async reply's result, or the code of the SwmsError it raised (for concurrency tests)."""
    outcomes = []
    for reply in replies:
        try:
            outcomes.append(reply.result())
        except SwmsError as exc:
            outcomes.append(exc.code)
    return outcomes


def unless_profile_incomplete(call):
    """The call's answer, or None while registration refuses it as PROFILE_INCOMPLETE (its copy of
    the just-completed 个人信息表 follows profile_changed): callers retry with ``wait_until``."""
    try:
        return call()
    except SwmsError as exc:
        if exc.code == "PROFILE_INCOMPLETE":
            return None
        raise


def run_until_exit(argv: list[str], env: dict[str, str], timeout: float, cwd=None) -> tuple[int, str]:
    """Starts a process and waits for it to end: (exit status, output). One that still runs after
    ``timeout`` seconds is killed and fails the test with the end of its output."""
    import pytest

    process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        pytest.fail(f"{' '.join(argv[:4])} was still running {timeout:g} s after start:\n{output[-3000:]}")
    return process.returncode, output
