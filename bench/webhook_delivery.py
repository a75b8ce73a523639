"""Webhook deliveries per second to a loopback receiver vs AMQP events per second, in the same run.

  .venv/bin/python -m bench.webhook_delivery [--events 2000] [--endpoints 2]

Identity and notification run as separate ``nameko run`` processes (as deployed) on the local
RabbitMQ, in a fresh virtual host, on SQLite files. ``--endpoints`` webhook endpoints are registered
(as the CLI does), each a threaded ``http.server`` in this process on loopback that verifies every
Standard Webhooks signature. Beside them, an "AMQP agency": a queue bound to ``certificate.events``
before anything is published. N ``certificate_issued`` events are published (8 publishers).

Printed, from one run:
- baseline: raw ``requests`` POSTs/s of a signed event body to the same receiver over one connection
  (what the receiver takes with no broker or database in the way);
- events/s published;
- AMQP: events/s received by the AMQP agency (first publish → Nth message);
- webhooks: deliveries/s to all endpoints and events/s per endpoint (first publish → Nth delivery),
  and the share of the AMQP rate;
- checks: every event delivered to every endpoint, no bad signature, each endpoint in log order.
The machine is shared by several helpers: figures are noisy; compare them within one run.
"""
from __future__ import annotations

import eventlet

eventlet.monkey_patch()

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import http.server  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

from kombu import Connection, Exchange, Queue  # noqa: E402
from sqlalchemy import select  # noqa: E402
from sqlalchemy.orm import sessionmaker  # noqa: E402

from bench.notification_throughput import certificate_event, management, publish  # noqa: E402
from swms.db import engine_for  # noqa: E402
from swms.devkeys import SERVICES, ensure_dev_keys  # noqa: E402
from swms.migrations import upgrade  # noqa: E402
from tools.localstack import LocalStack, free_port  # noqa: E402


class Receiver:
    def __init__(self, secret: str):
        from services.notification import webhooks
        self.secret, self.verify = secret, webhooks.verify
        self.ids: list[str] = []
        self.bad = 0
        self.last_at = 0.0
        self.lock = threading.Lock()
        self.port = free_port()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"     # keep-alive, as a real agency's server would

            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                ok = receiver.verify(receiver.secret, self.headers["webhook-id"], self.headers["webhook-timestamp"],
                                     body, self.headers["webhook-signature"])
                with receiver.lock:
                    if ok:
                        receiver.ids.append(self.headers["webhook-id"])
                        receiver.last_at = time.perf_counter()
                    else:
                        receiver.bad += 1
                self.send_response(204 if ok else 401)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/events"


def baseline(receiver: Receiver, sends: int) -> float:
    import requests

    from services.notification import webhooks
    body = json.dumps(certificate_event(str(uuid.uuid4()), 0)).encode()
    with requests.Session() as http:
        started = time.perf_counter()
        for _ in range(sends):
            http.post(receiver.url, data=body, timeout=10,
                      headers=webhooks.headers_for(receiver.secret, "baseline", body, time.time())).close()
        rate = sends / (time.perf_counter() - started)
    with receiver.lock:
        receiver.ids.clear()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--endpoints", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    os.environ.setdefault("LOG_LEVEL", "WARNING")

    vhost = f"bench-webhooks-{uuid.uuid4().hex[:8]}"
    management("PUT", f"vhosts/{vhost}")
    management("PUT", f"permissions/{vhost}/guest", {"configure": ".*", "write": ".*", "read": ".*"})
    amqp_uri = f"pyamqp://guest:guest@127.0.0.1:5672/{vhost}"
    workdir = Path(tempfile.mkdtemp(prefix="swms-bench-webhooks-"))
    urls = {name: f"sqlite:///{workdir / 'data' / f'{name}.db'}" for name in SERVICES}
    stack = LocalStack(workdir=workdir, amqp_uri=amqp_uri, db_urls=urls)
    (workdir / "data").mkdir(parents=True, exist_ok=True)
    connection = None
    try:
        for name in ("identity", "notification"):
            upgrade(name, urls[name])
        ensure_dev_keys(stack.keys_dir)
        key_file = str(stack.keys_dir / "webhook-secrets.key")

        from services.notification import webhooks
        from services.notification.models import AgencyEvent, WebhookDelivery
        from services.notification.webhook_sender import webhook_settings
        settings = webhook_settings({"WEBHOOK_ALLOW_HTTP_LOOPBACK": "true"})
        box = webhooks.SecretBox.from_file(key_file)
        sessions = sessionmaker(engine_for(urls["notification"]), expire_on_commit=False)
        receivers = []
        for index in range(args.endpoints):
            receiver = Receiver("")
            with sessions.begin() as session:
                _, receiver.secret = webhooks.register_endpoint(
                    session, agency=f"bench agency {index}", url=receiver.url, event_types=["certificate_issued"],
                    admin_email="ops@bench.example.cn", actor="bench", box=box, settings=settings)
            receivers.append(receiver)
        base_rate = baseline(receivers[0], 500)

        # The AMQP agency: its queue exists before anything is published.
        connection = Connection(amqp_uri)
        exchange = Exchange("certificate.events", type="topic", durable=True)
        tap = Queue(f"bench-agency-{uuid.uuid4().hex[:6]}", exchange=exchange, routing_key="#", auto_delete=True)
        amqp = {"count": 0, "last_at": 0.0}

        def on_message(body, message):
            amqp["count"] += 1
            amqp["last_at"] = time.perf_counter()
            message.ack()

        consumer = connection.Consumer([tap], callbacks=[on_message], accept=["json"])
        consumer.consume()

        def drain():
            while True:
                try:
                    connection.drain_events(timeout=1)
                except Exception:   # noqa: BLE001 - timeouts between bursts
                    if amqp["count"] >= args.events:
                        return
        stack.start_infrastructure()
        stack.start_service("identity")
        stack.start_service("notification", extra_env={"WEBHOOK_ALLOW_HTTP_LOOPBACK": "true"})
        from nameko.standalone.rpc import ClusterRpcProxy
        with ClusterRpcProxy({"AMQP_URI": amqp_uri}, timeout=5) as cluster:
            deadline = time.monotonic() + 90
            while True:
                try:
                    if cluster.identity.health()["status"] == cluster.notification.health()["status"] == "ok":
                        break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)

        events = [certificate_event(str(uuid.uuid4()), index) for index in range(args.events)]
        drainer = eventlet.spawn(drain)
        started = time.perf_counter()
        publish_rate = publish(amqp_uri, events)
        deadline = time.monotonic() + args.timeout
        while any(len(r.ids) < args.events for r in receivers) and time.monotonic() < deadline:
            time.sleep(0.2)
        drainer.wait()
        delivered = [len(r.ids) for r in receivers]
        if any(count < args.events for count in delivered):
            raise SystemExit(f"timed out: delivered {delivered} of {args.events} per endpoint")
        # The sender alone: every event replayed to every endpoint (already logged, nothing else to do).
        counts = [len(r.ids) for r in receivers]
        replay_started = time.perf_counter()
        with sessions.begin() as session:
            for endpoint in webhooks.list_endpoints(session):
                webhooks.replay(session, endpoint.endpoint_id, since_event_id=None,
                                since=dt.datetime(2000, 1, 1), actor="bench", settings=settings)
        while any(len(r.ids) < c + args.events for r, c in zip(receivers, counts)) and time.monotonic() < deadline:
            time.sleep(0.2)
        replay_rate = sum(len(r.ids) - c for r, c in zip(receivers, counts)) / (
            max(r.last_at for r in receivers) - replay_started)
        replay_ok = all(r.ids[c:] == r.ids[:c] for r, c in zip(receivers, counts))
        for r, c in zip(receivers, counts):
            del r.ids[c:]
        with sessions() as session:
            order = list(session.execute(select(AgencyEvent.event_id).order_by(AgencyEvent.seq)).scalars())
            logged = list(session.execute(select(AgencyEvent.logged_at).order_by(AgencyEvent.seq)).scalars())
            delivered_at = sorted(session.execute(select(WebhookDelivery.delivered_at)).scalars())
    finally:
        if connection is not None:
            connection.release()
        stack.stop()
        from swms.db import dispose_engine
        for url in urls.values():
            dispose_engine(url)
        management("DELETE", f"vhosts/{vhost}")
        shutil.rmtree(workdir, ignore_errors=True)

    amqp_rate = args.events / (amqp["last_at"] - started)
    hook_elapsed = max(r.last_at for r in receivers) - started
    per_endpoint = args.events / hook_elapsed
    print(f"webhook delivery: {args.events} certificate_issued events, {args.endpoints} endpoint(s) on loopback, "
          f"one notification process on SQLite (noisy: shared 2-core machine)")
    print(f"{'baseline: raw requests POSTs to the receiver':48} {base_rate:9.0f} requests/s")
    print(f"{'events published (8 publishers, confirms)':48} {publish_rate:9.0f} events/s")
    print(f"{'AMQP agency: first publish → Nth event':48} {amqp_rate:9.0f} events/s")
    print(f"{'webhooks: first publish → Nth delivery':48} {per_endpoint * args.endpoints:9.0f} deliveries/s  "
          f"({per_endpoint:.0f} events/s per endpoint, {per_endpoint / amqp_rate:.0%} of the AMQP rate)")
    log_span = (logged[-1] - logged[0]).total_seconds()
    sent_span = (delivered_at[-1] - logged[0]).total_seconds()
    print(f"{'inside notification: events logged':48} {args.events / log_span:9.0f} events/s  "
          f"(last delivery {sent_span - log_span:.1f} s after the last event was logged)")
    print(f"{'sender alone: a replay of every event':48} {replay_rate:9.0f} deliveries/s  "
          f"(same order and ids as the first time: {replay_ok}; picked up within WEBHOOK_POLL_SECONDS)")
    in_order = all(r.ids == order for r in receivers)
    bad = sum(r.bad for r in receivers)
    print(f"checks: {delivered} delivered of {args.events} per endpoint, {bad} bad signature(s), "
          f"log order kept: {in_order}")
    if bad or not in_order or not replay_ok:
        raise SystemExit("FAILED")


if __name__ == "__main__":
    main()
