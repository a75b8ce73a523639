"""Webhooks for agencies: the notification service over a real RabbitMQ and database, delivering to a
REAL HTTP receiver on loopback (http.server in this process) that verifies every signature.

The receiver answers 500 to its first requests, then goes away (connection refused) for a few
seconds, then comes back: every event arrives, none with a bad signature, a duplicate only ever
with the same ``webhook-id``, in the order of the agency event log. A late subscriber replays the
range it missed, in order. An endpoint that never answers is disabled and its administrator emailed.
Backoff, the disable period and polling are tuned down so that this takes seconds.
"""
from __future__ import annotations

import datetime as dt
import http.server
import json
import threading
import time
import uuid

import pytest
from sqlalchemy import select

from services.notification import webhooks
from services.notification.models import AgencyEvent
from swms import idcard
from swms.auth import ADMIN, SOCIAL_WORKER, Caller
from swms.contracts.common import Level
from swms.contracts.events import CertificateIssued, CertificateRevoked, CertificateSuspended
from swms.errors import SwmsError
from tests.support import rpc_client, session_for, token, valid_id, wait_until
from tools.localstack import free_port

pytestmark = pytest.mark.integration

HOLDER_ID = valid_id("11010519900307123")
FAST = {"NOTIFICATION_POLL_SECONDS": "0.3", "NOTIFICATION_LEASE_SECONDS": "2", "WEBHOOK_ALLOW_HTTP_LOOPBACK": "true",
        "WEBHOOK_RETRY_BASE_SECONDS": "0.1", "WEBHOOK_RETRY_MAX_SECONDS": "0.5", "WEBHOOK_POLL_SECONDS": "0.1",
        "WEBHOOK_DISABLE_AFTER_SECONDS": "6", "WEBHOOK_GIVE_UP_SECONDS": "300", "WEBHOOK_TIMEOUT_SECONDS": "2"}
OUTAGE_SECONDS = 2.5


class Receiver:
    """An agency's endpoint: verifies each request's Standard Webhooks signature and records it.
    ``fail_first`` requests are answered 500; ``stop``/``start`` make it go away and come back."""

    def __init__(self, port: int, fail_first: int = 0):
        self.port, self.fail_first = port, fail_first
        self.secret: str | None = None
        self.requests: list[dict] = []       # every request: webhook-id, event_id, valid, answered
        self.lock = threading.Lock()
        self.server = None

    def start(self):
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                valid = webhooks.verify(receiver.secret, self.headers["webhook-id"], self.headers["webhook-timestamp"],
                                        body, self.headers["webhook-signature"])
                with receiver.lock:
                    answer = 500 if len(receiver.requests) < receiver.fail_first else 204
                    receiver.requests.append({"webhook_id": self.headers["webhook-id"], "body": json.loads(body),
                                              "valid": valid, "answer": answer, "at": time.monotonic()})
                self.send_response(answer)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/swms/events"

    def accepted(self) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if r["answer"] == 204]

    def accepted_ids(self) -> list[str]:
        return [r["webhook_id"] for r in self.accepted()]


def certificate_event(index: int):
    number = f"112026{index:07d}"
    common = dict(certificate_number=number, person_id=str(uuid.uuid4()), holder_name_masked="李**",
                  id_number_masked=idcard.mask(HOLDER_ID), level=Level.SOCIAL_WORKER, region_code="110105")
    today = dt.date.today()
    if index % 3 == 0:
        return CertificateIssued(application_id=str(uuid.uuid4()), authority="中华人民共和国民政部", valid_from=today,
                                 valid_until=today.replace(year=today.year + 3), issued_at=dt.datetime.now(dt.UTC),
                                 sha256="0" * 64, **common)
    model = CertificateSuspended if index % 3 == 1 else CertificateRevoked
    return model(reason="核查中", changed_by="officer-1", changed_at=dt.datetime.now(dt.UTC), **common)


def register(client, url: str, agency: str, email: str) -> tuple[str, str]:
    created = client.notification.register_webhook_endpoint({
        "agency": agency, "url": url, "admin_email": email,
        "event_types": ["certificate_issued", "certificate_suspended", "certificate_revoked"]})
    assert created["secret"].startswith("whsec_") and created["endpoint"]["status"] == "active"
    return created["endpoint"]["endpoint_id"], created["secret"]


def log_order(config) -> list[str]:
    with session_for(config["DB_URL"]) as session:
        return list(session.execute(select(AgencyEvent.event_id).order_by(AgencyEvent.seq)).scalars())


def test_webhooks_survive_errors_and_an_outage_in_order_and_replay_fills_a_late_subscriber(
        start_service, amqp_uri, keys_dir, smtp_sink):
    from nameko.standalone.events import event_dispatcher

    start_service("identity")      # notification looks recipients up (unknown people: nothing is mailed)
    config = start_service("notification", SMTP_HOST="127.0.0.1", SMTP_PORT=smtp_sink.port,
                           WEBHOOK_SECRETS_KEY_FILE=str(keys_dir / "webhook-secrets.key"), **FAST)
    publish = event_dispatcher({"AMQP_URI": amqp_uri})

    def dispatch(event):
        publish(event.source, event.event_type, event.model_dump(mode="json"))

    agency = Receiver(free_port(), fail_first=4)
    agency.start()
    nobody = free_port()              # an endpoint nothing ever listens on: disabled after the period
    with rpc_client(amqp_uri, token(keys_dir, Caller("admin-1", ADMIN))) as admin:
        endpoint_id, agency.secret = register(admin, agency.url, "北京市人社局", "ops@hr.example.gov.cn")
        dead_id, _ = register(admin, f"http://127.0.0.1:{nobody}/hook", "已撤销的机构", "old@agency.example.cn")
        with pytest.raises(SwmsError) as refused:
            admin.notification.register_webhook_endpoint({"agency": "x", "url": "http://hr.example.cn/hook",
                                                          "event_types": ["certificate_issued"],
                                                          "admin_email": "a@hr.example.cn"})
        assert refused.value.field == "url"                     # plain http only on loopback
    with rpc_client(amqp_uri, token(keys_dir, Caller("person-1", SOCIAL_WORKER))) as someone:
        with pytest.raises(SwmsError) as refused:
            someone.notification.list_webhook_endpoints({})
        assert refused.value.code == "FORBIDDEN"

    events = [certificate_event(index) for index in range(30)]
    for event in events[:10]:
        dispatch(event)
    dispatch(events[0])               # the bus delivers at least once: logged and delivered once
    wait_until(lambda: len(agency.requests) >= agency.fail_first + 2, timeout=20, what="500s, then a success")
    agency.stop()                     # the agency goes away: connection refused
    for event in events[10:20]:
        dispatch(event)
    time.sleep(OUTAGE_SECONDS)
    agency.start()                    # … and comes back
    for event in events[20:]:
        dispatch(event)
    sent = {str(e.event_id): e.model_dump(mode="json") for e in events}
    wait_until(lambda: set(agency.accepted_ids()) == set(sent), timeout=40, what="every event delivered")

    assert all(r["valid"] for r in agency.requests), "a delivery with a bad signature"
    for request in agency.requests:   # the body is the AMQP event; a duplicate would carry the same id
        assert request["webhook_id"] == request["body"]["event_id"]
        assert request["body"] == sent[request["webhook_id"]]
        assert HOLDER_ID not in json.dumps(request["body"])
    assert agency.accepted_ids() == log_order(config)        # once each, in the event log's order
    assert len(log_order(config)) == 30

    with rpc_client(amqp_uri, token(keys_dir, Caller("admin-1", ADMIN))) as admin:
        deliveries = admin.notification.list_webhook_deliveries({"endpoint_id": endpoint_id, "limit": 500})["items"]
        assert len(deliveries) == 30 and {d["status"] for d in deliveries} == {"delivered"}
        outcomes = [a["outcome"] for d in deliveries for a in d["attempt_log"]]
        assert outcomes.count("http_error") == agency.fail_first and "unreachable" in outcomes
        assert all(a["latency_ms"] >= 0 and (a["error"] or "").find("核查") < 0
                   for d in deliveries for a in d["attempt_log"])

        # The endpoint nobody answers: disabled after the period, its administrator emailed.
        wait_until(lambda: {e["endpoint_id"]: e for e in admin.notification.list_webhook_endpoints({})["items"]}
                   [dead_id]["status"] == "disabled", timeout=20, what="the failing endpoint disabled")
        wait_until(lambda: any(str(mail["X-SWMS-Kind"]) == "webhook_endpoint_disabled"
                               and str(mail["To"]) == "old@agency.example.cn" for mail in smtp_sink.messages()),
                   timeout=20, what="its administrator emailed")
        with pytest.raises(SwmsError) as refused:
            admin.notification.replay_webhook_events({"endpoint_id": dead_id, "since": "2026-01-01T00:00:00Z"})
        assert refused.value.code == "INVALID_STATE"

        # A late subscriber replays what it missed: after the 10th event of the log, in order.
        late = Receiver(free_port())
        late.start()
        late_id, late.secret = register(admin, late.url, "广东省人社厅", "ops@hrss.gd.example.cn")
        order = log_order(config)
        replayed = admin.notification.replay_webhook_events({"endpoint_id": late_id, "since_event_id": order[9]})
        assert (replayed["count"], replayed["first_event_id"], replayed["last_event_id"]) == (20, order[10], order[-1])
        wait_until(lambda: len(late.accepted()) == 20, timeout=20, what="the replayed range")
        assert late.accepted_ids() == order[10:] and all(r["valid"] for r in late.requests)
        # The first agency asks for everything since a time: the same ids again (documented duplicates).
        again = admin.notification.replay_webhook_events({"endpoint_id": endpoint_id,
                                                          "since": (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
                                                          .isoformat()})
        assert again["count"] == 30
        wait_until(lambda: len(agency.accepted()) == 60, timeout=20, what="the replay to the first agency")
        assert agency.accepted_ids()[30:] == order
