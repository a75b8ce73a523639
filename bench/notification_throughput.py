"""Notification throughput: N ``certificate.certificate_issued`` events → N emails at a loopback SMTP server.

  .venv/bin/python -m bench.notification_throughput [--events 10000] [--pg-url postgresql+psycopg2://…/postgres]

Identity and notification run as separate ``nameko run`` processes (as deployed) on the local
RabbitMQ, in a fresh virtual host; each has its own database (SQLite files by default, PostgreSQL
with ``--pg-url``, an admin URL under which two scratch databases are created and dropped). The
SMTP server is tools.mailsink (aiosmtpd, one .eml file per message). Identity holds one account per
event (seeded through its own domain code with one precomputed password hash), so every event costs
a real ``identity.get_person`` lookup, two reminder rows, a rendered two-part email and its delivery.

Printed, from one run:
- baseline: raw ``smtplib`` sends/s of the same email to the same sink over one connection (what
  the SMTP server can take, with no broker, database or lookup in the way);
- events/s published (8 publishers with confirms);
- recorded/s: first event published → the Nth message recorded (composition: lookup, render, record);
- emails/s end to end: first event published → the Nth email at the sink; its share of the baseline;
- checks: exactly N emails, N distinct Message-IDs, N messages marked sent.
"""
from __future__ import annotations

import eventlet

eventlet.monkey_patch()

import argparse  # noqa: E402
import base64  # noqa: E402
import datetime as dt  # noqa: E402
import email  # noqa: E402
import email.policy  # noqa: E402
import faulthandler  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import smtplib  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.parse  # noqa: E402
import urllib.request  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

from sqlalchemy import create_engine, func, select, text  # noqa: E402
from sqlalchemy.orm import sessionmaker  # noqa: E402

from bench._measure import cpu_seconds  # noqa: E402
from bench._people import generated_passers as _generated  # noqa: E402
from swms.config import load_config, service_config_path  # noqa: E402
from swms.db import engine_for  # noqa: E402
from swms.devkeys import SERVICES, ensure_dev_keys  # noqa: E402
from swms.migrations import upgrade  # noqa: E402
from tools.localstack import LocalStack  # noqa: E402

MANAGEMENT = os.environ.get("RABBITMQ_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:15672")


def management(method: str, path: str, body: dict | None = None) -> None:
    """RabbitMQ's management API (a fresh virtual host keeps the bench's queues apart)."""
    parts = urllib.parse.urlsplit(MANAGEMENT)
    credentials = base64.b64encode(f"{parts.username}:{parts.password}".encode()).decode()
    request = urllib.request.Request(f"http://{parts.hostname}:{parts.port}/api/{path}", method=method,
                                     data=json.dumps(body or {}).encode(),
                                     headers={"content-type": "application/json", "authorization": f"Basic {credentials}"})
    urllib.request.urlopen(request, timeout=10).read()


NAME_CHARACTERS = "明华建国志强秀英丽娟伟芳敏静磊军洋勇艳杰涛超"


def generated_passers(count: int) -> list[dict[str, str]]:
    """bench.rpc's generated registry, with names identity accepts (letters only, no digits)."""
    rows = _generated(count, seed=11)
    for index, row in enumerate(rows):
        a, b = divmod(index, len(NAME_CHARACTERS))
        row["name"] = "测" + NAME_CHARACTERS[b] + NAME_CHARACTERS[a % len(NAME_CHARACTERS)]
    return rows


def seed_identity(db_url: str, count: int, keys_dir: Path) -> list[str]:
    """``count`` passers and accounts through identity's own code; returns the person ids."""
    from argon2 import PasswordHasher

    from sqlalchemy import delete

    from services.identity import domain
    from services.identity import settings as identity_settings
    from services.identity.models import outbox
    from swms.contracts.events import EmailConfirmationRequested

    config = load_config(service_config_path("identity"))
    config.update({"AUTH_PRIVATE_KEY_FILE": str(keys_dir / "token-signing.pem"),
                   "AUTH_PUBLIC_KEY_FILE": str(keys_dir / "token-signing.pub.pem")})
    settings = identity_settings.from_config(config)
    password_hash = PasswordHasher().hash("Bench-password-1x")   # one hash, reused: argon2 is not what we measure
    passers = generated_passers(count)
    people = []
    sessions = sessionmaker(engine_for(db_url))
    with sessions() as session:
        domain.import_passers(session, passers)
        session.commit()
    with sessions() as session:
        for index, row in enumerate(passers):
            account = domain.sign_up(session, settings, row["name"], row["id_number"], f"p{index}@bench.example.cn",
                                     password_hash)
            people.append(account.person_id)
            if index % 500 == 499:
                session.commit()
        # Sign-up also queues each person's email confirmation code; what is measured here is
        # certificate emails only, so those events are not relayed.
        session.execute(delete(outbox.table).where(outbox.table.c.event_type == EmailConfirmationRequested.event_type))
        session.commit()
    return people


def certificate_event(person_id: str, index: int) -> dict:
    from swms.contracts.common import Level
    from swms.contracts.events import CertificateIssued

    today = dt.date.today()
    return CertificateIssued(
        certificate_number=f"B{today.year}{index:08d}", application_id=str(uuid.uuid4()), person_id=person_id,
        holder_name_masked="测*", id_number_masked="110***********0000", level=Level.SOCIAL_WORKER,
        authority="中华人民共和国民政部", region_code="110105", valid_from=today,
        valid_until=today.replace(year=today.year + 3) - dt.timedelta(days=1),
        issued_at=dt.datetime.now(dt.UTC), sha256="0" * 64).model_dump(mode="json")


def baseline(port: int, sends: int) -> float:
    """Raw smtplib: the same two-part certificate email, ``sends`` times over one connection."""
    from services.notification.mailer import SmtpSettings, build_email
    from services.notification.models import Message
    from services.notification.templates import Templates

    rendered = Templates().render("certificate_issued", {
        "name": "测试", "certificate_number": "B202600000000", "id_number_masked": "110***********0000",
        "level": "社会工作师", "valid_from_date": "2026-11-26", "valid_until_date": "2029-11-25",
        "authority": "中华人民共和国民政部", "application_kind": "first_registration",
        "portal_url": "https://swms.example.gov.cn"})
    smtp_settings = SmtpSettings(host="127.0.0.1", port=port, sender="全国社会工作信息系统 <no-reply@swms.example.gov.cn>")
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        started = time.perf_counter()
        for _ in range(sends):
            message = Message(message_id=str(uuid.uuid4()), to_address="p0@bench.example.cn", subject=rendered.subject,
                              body_text=rendered.text, body_html=rendered.html, kind="certificate_issued",
                              language="zh-CN")
            smtp.send_message(build_email(message, smtp_settings), from_addr=smtp_settings.sender_address,
                              to_addrs=[message.to_address])
        return sends / (time.perf_counter() - started)


def publish(amqp_uri: str, events: list[dict], publishers: int = 8) -> float:
    from nameko.standalone.events import event_dispatcher

    def run(chunk: list[dict]) -> None:
        dispatch = event_dispatcher({"AMQP_URI": amqp_uri})
        for payload in chunk:
            dispatch("certificate", "certificate_issued", payload)

    started = time.perf_counter()
    pool = eventlet.GreenPool(publishers)
    for worker in range(publishers):
        pool.spawn(run, events[worker::publishers])
    pool.waitall()
    return len(events) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=10000)
    parser.add_argument("--baseline-sends", type=int, default=2000)
    parser.add_argument("--pg-url", help="PostgreSQL admin URL (default: SQLite files)")
    parser.add_argument("--timeout", type=float, default=1200)
    args = parser.parse_args()
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    faulthandler.register(signal.SIGUSR1, all_threads=True)   # kill -USR1 <pid>: where is it?

    vhost = f"bench-notification-{uuid.uuid4().hex[:8]}"
    management("PUT", f"vhosts/{vhost}")
    management("PUT", f"permissions/{vhost}/guest", {"configure": ".*", "write": ".*", "read": ".*"})
    amqp_uri = f"pyamqp://guest:guest@127.0.0.1:5672/{vhost}"
    workdir = Path(tempfile.mkdtemp(prefix="swms-bench-notification-"))
    created = []
    admin = create_engine(args.pg_url, isolation_level="AUTOCOMMIT") if args.pg_url else None

    def database(service: str) -> str:
        if admin is None:
            return f"sqlite:///{workdir / 'data' / f'{service}.db'}"
        name = f"bench_{service}_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        created.append(name)
        return args.pg_url.rsplit("/", 1)[0] + f"/{name}"

    urls = {name: database(name) if name in ("identity", "notification") else f"sqlite:///{workdir / f'{name}.db'}"
            for name in SERVICES}
    stack = LocalStack(workdir=workdir, amqp_uri=amqp_uri, db_urls=urls)

    def terminated(signum, _frame):   # e.g. `timeout`: stop the services it started (own sessions)
        stack.stop()
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, terminated)
    try:
        upgrade("identity", urls["identity"])
        upgrade("notification", urls["notification"])
        ensure_dev_keys(stack.keys_dir)
        print(f"seeding identity with {args.events} accounts …", flush=True)
        people = seed_identity(urls["identity"], args.events, stack.keys_dir)
        stack.start_infrastructure()
        base_rate = baseline(stack.smtp_port, args.baseline_sends)
        for path in stack.mail_dir.glob("*.eml"):
            path.unlink()
        stack.start_service("identity")
        stack.start_service("notification")
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

        events = [certificate_event(person, index) for index, person in enumerate(people)]
        from services.notification.models import Message
        sessions = sessionmaker(engine_for(urls["notification"]))

        def recorded() -> int:
            with sessions() as session:
                return session.execute(select(func.count()).select_from(Message)).scalar_one()

        watched = {name: stack.processes[name].pid for name in ("notification", "identity", "smtp")}
        cpu_before = {name: cpu_seconds(pid) for name, pid in watched.items()}
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        publish_rate = publish(amqp_uri, events)
        recorded_at = delivered_at = None
        deadline = time.monotonic() + args.timeout
        while delivered_at is None and time.monotonic() < deadline:
            if recorded_at is None and recorded() >= args.events:
                recorded_at = time.perf_counter()
            if sum(1 for _ in stack.mail_dir.glob("*.eml")) >= args.events:
                delivered_at = time.perf_counter()
                recorded_at = recorded_at or delivered_at
            else:
                time.sleep(0.2)
        if delivered_at is None:
            raise SystemExit(f"timed out: {sum(1 for _ in stack.mail_dir.glob('*.eml'))} of {args.events} delivered")
        cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in watched.items()}
        load_after = os.getloadavg()[0]
        time.sleep(3)   # anything sent twice would arrive within a mailer poll
        files = list(stack.mail_dir.glob("*.eml"))
        ids = {email.message_from_bytes(p.read_bytes(), policy=email.policy.default)["Message-ID"] for p in files}
        with sessions() as session:
            sent = session.execute(select(func.count()).select_from(Message).where(Message.status == "sent")).scalar_one()
    finally:
        stack.stop()
        from swms.db import dispose_engine
        for url in urls.values():
            dispose_engine(url)
        if admin is not None:
            with admin.connect() as conn:
                for name in created:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
        management("DELETE", f"vhosts/{vhost}")
        shutil.rmtree(workdir, ignore_errors=True)

    elapsed = delivered_at - started
    rate = args.events / elapsed
    backend = "PostgreSQL" if args.pg_url else "SQLite"
    config = load_config(service_config_path("notification"))
    print(f"notification throughput: {args.events} certificate_issued events, {backend}, one notification process "
          f"(max_workers {config['max_workers']}, SMTP_CONNECTIONS {config['SMTP_CONNECTIONS']}), "
          f"sink tools.mailsink (aiosmtpd)")
    print(f"{'baseline: raw smtplib to the same sink':48} {base_rate:9.0f} emails/s")
    print(f"{'events published (8 publishers, confirms)':48} {publish_rate:9.0f} events/s")
    print(f"{'recorded (lookup + render + record)':48} {args.events / (recorded_at - started):9.0f} messages/s")
    print(f"{'end to end: event published → email at sink':48} {rate:9.0f} emails/s  "
          f"({elapsed:.1f} s, {rate / base_rate:.0%} of the baseline)")
    print("CPU per email (load-independent): " + ", ".join(
        f"{name} {seconds / args.events * 1000:.1f} ms" for name, seconds in cpu.items())
        + f"; load average {load_before:.1f} → {load_after:.1f} on {os.cpu_count()} cores")
    print(f"checks: {len(files)} emails at the sink, {len(ids)} distinct Message-IDs, {sent} messages marked sent")
    if not (len(files) == len(ids) == sent == args.events):
        raise SystemExit("FAILED: some email was lost or sent twice")


if __name__ == "__main__":
    main()
