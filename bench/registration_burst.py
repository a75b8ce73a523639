"""Burst of re-registration submissions (再登记 windows are one or two weeks per province), on
PostgreSQL, against an empty RPC measured in the same run.

  .venv/bin/python -m bench.registration_burst [--submissions 20000] [--clients 50]
      [--registration-processes 2] [--workers 30] [--pg-url postgresql+psycopg2://postgres:postgres@127.0.0.1:5432/postgres]
      [--amqp-uri "pyamqp://…:5701/;pyamqp://…:5702/;…"] [--queue-type classic|quorum] [--management-url URL|""]

What runs: profile and registration as separate ``nameko run`` processes (registration possibly
several, as a deployment scales it), each on its own fresh PostgreSQL database, moto's S3 server on
loopback, and the empty service of bench/rpc.py, all on a RabbitMQ virtual host of this run's own
(created through --management-url; with ``--management-url ""`` the virtual host of --amqp-uri is
used as it is). --amqp-uri (default $AMQP_URI) may list a cluster's nodes; every queue the services
(and the floors) declare is of --queue-type. bench/cluster_compare.py runs it on a three-node
cluster with each queue type.
Seeded before the clock starts: N people with a complete 个人信息表 (basic information and an ID photo
record; the first through profile's domain code, the rest as copies of its rows), a certificate
expiring in 30 days, 60 online continuing-education hours in the period, and one confirmed proof
each. The clock starts once registration holds a copy of every form (snapshot and completeness): the
steady state of a running system. By default those copies are seeded (the first form fetched from
profile as the handler fetches it, the others cloned with each person's identity);
``--copies-from-events`` builds them through the real events instead (one fetch per person, about
10–15 a second on this machine).

What is measured: ``--clients`` concurrent clients (each its own connection, one call after another,
each call with the person's own token) first call the empty RPC, then submit one
``registration.submit_re_registration`` per person (commitment, the 个人信息表 revision the applicant
saw, one 30-hour offline course with its proof: 60 + 30 = 90 hours, the 社会工作师 requirement). Each
submission is the real path: token check, the profile copy of that revision with its completeness,
the window, the hours and the proof checked, the application, its history, the submitted version and
the audit row written and the ``application_submitted`` event (naming the files to hold) put in
the outbox, in one transaction; the relay publishes it and profile records the hold on the person's
photo. (A submission naming no revision, or one the copy does not hold, asks profile: two more RPCs.)

Three floors run with the same clients before the submissions (bench/floor_service.py, as many
processes and workers as registration): a durable submission with no token check, no rules and no
ORM (the same request model, one transaction of 5 inserts and 1 update, one event); the same with
the transactions of concurrent workers grouped into one (group commit); and the grouped one with the
token check and, per group, one set-based read of registration's own tables for each rule (profile
copy, open application, certificate, online hours, proof), the rules checked on those rows: a
ceiling for any implementation of the submission path in this stack.

Prints calls/s, p50 and p99 of each, the ratio to the empty RPC (goal: submissions ≥ 0.5 × empty
RPC), the CPU per call of every process group in each phase (RabbitMQ, PostgreSQL, the services,
the clients), and checks that nothing was lost: one application row, one submitted version, one
published event (a queue bound before the burst counts them) and one hold recorded by profile per
submission.
"""
from __future__ import annotations

import eventlet

eventlet.monkey_patch()

import argparse  # noqa: E402
import collections  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

from nameko.standalone.rpc import ClusterRpcProxy  # noqa: E402

from bench import empty_service  # noqa: E402
from bench._measure import CpuLedger, percentile  # noqa: E402
from bench._people import chinese_name  # noqa: E402
from swms.queues import QUEUE_TYPES, broker_urls  # noqa: E402

COUNTY = "110105"


def person_id(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


name = chinese_name    # person n's name


def id_number(n: int) -> str:
    from swms.idcard import check_character
    birth = dt.date(1960, 1, 1) + dt.timedelta(days=n // 1000)
    first17 = f"{COUNTY}{birth:%Y%m%d}{n % 1000:03d}"
    return first17 + check_character(first17)


def create_database(admin_url: str, label: str) -> str:
    from sqlalchemy import create_engine, text
    db = f"swms_bench_{label}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{db}"'))
    admin.dispose()
    return admin_url.rsplit("/", 1)[0] + f"/{db}"


def drop_databases(admin_url: str, urls: list[str]) -> None:
    from sqlalchemy import create_engine, text

    from swms.db import _engines, dispose_engine
    for url in list(_engines):
        dispose_engine(url)
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for url in urls:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))
    admin.dispose()


def seeded_photo_key(n: int) -> str:
    """Person n's photo (n ≥ 1; person 0's is stored through profile's domain code): its own file, so
    that the hold each submission asks for is recorded on it, as in the running system."""
    return f"photos/{person_id(n)}/seeded-{n:08d}.jpg"


def seed_profiles(db_url: str, people: int, announce: bool) -> int:
    """Complete forms: the first through profile's own domain code (basic information and a photo
    record), the others as copies of its rows with each person's own identity (bulk inserts: the
    domain path costs tens of milliseconds a person, minutes for 20,000)."""
    from sqlalchemy import insert, select, update
    from sqlalchemy.orm import sessionmaker

    from services.profile import domain
    from services.profile.models import Profile, StoredFile, Upload, outbox
    from services.profile.testing import SUNSHINE, basic_info, seed_directory
    from swms import idcard
    from swms.contracts.events import ProfileChanged
    from swms.contracts.identity import PersonResponse
    from swms.contracts.profile import BasicInfoRequest
    from swms.db import engine_for
    from swms.outbox import utcnow

    org_id = seed_directory(db_url, [SUNSHINE])[SUNSHINE["credit_code"]]
    factory = sessionmaker(engine_for(db_url), expire_on_commit=False)
    with factory() as session:
        person = PersonResponse(person_id=person_id(0), name=name(0), id_number=id_number(0), email="p0@example.cn",
                                level="社会工作师", management_number=f"2023110000{0:08d}", exam_year=2023)
        profile = domain.ensure_profile(session, person.person_id, person)
        domain.save_basic_info(session, profile, BasicInfoRequest(**basic_info(org_id)), person.email, "bench")
        upload_id = str(uuid.uuid4())
        session.add(Upload(upload_id=upload_id, person_id=person.person_id, purpose="photo",
                           object_key=f"incoming/{upload_id}", max_bytes=512_000, created_at=utcnow(),
                           expires_at=utcnow() + dt.timedelta(minutes=15)))
        key = f"photos/{person.person_id}/{uuid.uuid4()}.jpg"
        domain.set_photo(session, profile, domain.StagedFile(
            upload_id=upload_id, file_key=key, content_type="image/jpeg", size_bytes=40_000, sha256="0" * 64,
            incoming_key=key, width=295, height=413, photo_size="1寸"), "bench")
        session.commit()
        template = {c.name: getattr(profile, c.name) for c in Profile.__table__.columns}
        photo = session.execute(select(StoredFile).where(StoredFile.file_key == key)).scalar_one()
        photo_row = {c.name: getattr(photo, c.name) for c in StoredFile.__table__.columns}
        for start in range(1, people, 5000):
            profiles, photos = [], []
            for n in range(start, min(people, start + 5000)):
                resident = idcard.parse(id_number(n))
                photo_key = seeded_photo_key(n)
                profiles.append({**template, "person_id": person_id(n), "name": name(n), "id_number": resident.number,
                                 "gender": resident.gender, "birth_date": resident.birth_date,
                                 "management_number": f"2023110000{n:08d}", "email": f"p{n}@example.cn",
                                 "mobile": f"138{n:08d}", "photo_key": photo_key})
                photos.append({**photo_row, "file_key": photo_key, "person_id": person_id(n)})
            session.execute(insert(Profile), profiles)
            session.execute(insert(StoredFile), photos)
            if not announce:
                continue
            # Each copied form announces itself as profile does: registration fetches every one
            # (snapshot and completeness) and keeps its copy, before the clock starts.
            session.execute(insert(outbox.table), [dict(
                event_id=str(uuid.uuid4()), event_type=ProfileChanged.event_type,
                payload=json.dumps(ProfileChanged(person_id=row["person_id"], parts=["basic_info", "photo"],
                                                  revision=row["revision"]).model_dump(mode="json"),
                                   ensure_ascii=False),
                created_at=utcnow(), next_attempt_at=utcnow(), attempts=0) for row in profiles])
        if not announce:    # the copies are seeded by seed_copies instead of being fetched one by one
            session.execute(update(outbox.table).values(published_at=utcnow()))
        session.commit()
    return template["revision"]


def seed_copies(db_url: str, amqp_uri: str, service_token: str, people: int) -> None:
    """Registration's copy of every form, as the profile_changed handler keeps it: the first
    person's snapshot and completeness fetched from the running profile service (as a service,
    like the handler), the others the same with each person's own identity."""
    from sqlalchemy import insert
    from sqlalchemy.orm import sessionmaker

    from services.registration.models import ProfileCopy
    from swms import idcard
    from swms.contracts.profile import CompletenessResponse, ProfileSnapshot
    from swms.db import engine_for
    from swms.outbox import utcnow

    with ClusterRpcProxy({"AMQP_URI": amqp_uri}, timeout=30, context_data={"auth_token": service_token}) as cluster:
        snapshot = ProfileSnapshot.model_validate(cluster.profile.get_snapshot({"person_id": person_id(0)}))
        completeness = CompletenessResponse.model_validate(
            cluster.profile.check_completeness({"person_id": person_id(0)}))
    assert completeness.complete, completeness
    now = utcnow()
    with sessionmaker(engine_for(db_url))() as session:
        for start in range(0, people, 5000):
            rows = []
            for n in range(start, min(people, start + 5000)):
                resident = idcard.parse(id_number(n))
                copy = snapshot.model_copy(update=dict(
                    person_id=person_id(n), name=name(n), id_number=resident.number, gender=resident.gender,
                    birth_date=resident.birth_date, management_number=f"2023110000{n:08d}",
                    photo_key=snapshot.photo_key if n == 0 else seeded_photo_key(n)))
                rows.append(dict(person_id=copy.person_id, revision=copy.revision, snapshot=copy.model_dump_json(),
                                 complete=True, completeness=completeness.model_dump_json(), fetched_at=now))
            session.execute(insert(ProfileCopy), rows)
        session.commit()


def seed_registration(db_url: str, people: int, today: dt.date) -> None:
    """Each person holds a certificate expiring in 30 days, 60 online hours and a confirmed proof."""
    from sqlalchemy import insert
    from sqlalchemy.orm import sessionmaker

    from services.registration.models import CeRecord, HeldCertificate, ProofFileRow
    from swms.db import engine_for
    from swms.outbox import utcnow

    valid_until = today + dt.timedelta(days=30)
    valid_from = valid_until.replace(year=valid_until.year - 3) + dt.timedelta(days=1)
    now = utcnow()
    with sessionmaker(engine_for(db_url))() as session:
        for start in range(0, people, 5000):
            batch = range(start, min(people, start + 5000))
            session.execute(insert(HeldCertificate), [dict(
                certificate_number=f"1120232{n:06d}", person_id=person_id(n), application_id=None,
                level="社会工作师", region_code=COUNTY, valid_from=valid_from, valid_until=valid_until,
                issued_at=now, status="valid", updated_at=now) for n in batch])
            session.execute(insert(CeRecord), [dict(
                source="learning", record_id=f"bench-{n}", person_id=person_id(n), id_number=None,
                course="社会工作伦理与实务", provider="全国社会工作者继续教育平台", hours_tenths=600,
                completed_on=today - dt.timedelta(days=200), withdrawn=False, recorded_at=now) for n in batch])
            session.execute(insert(ProofFileRow), [dict(
                proof_key=proof_key(n), person_id=person_id(n), filename="结业证书.pdf",
                content_type="application/pdf", status="verified", size=30_000, sha256="0" * 64, created_at=now,
                verified_at=now, application_id=None, released_at=None, submitted=False) for n in batch])
        session.commit()


def proof_key(n: int) -> str:
    return f"proofs/{person_id(n)}/{uuid.UUID(int=n)}"


def own_vhost(amqp_uri: str, management_url: str) -> tuple[str, callable]:
    """A virtual host of this run's own (RabbitMQ management API): services of other runs on the
    same broker (demo, other benchmarks) must not answer this run's calls or take its events.
    An empty ``management_url`` keeps ``amqp_uri``'s virtual host as it is (nothing to remove)."""
    if not management_url:
        return amqp_uri, lambda: None
    import urllib.parse

    import requests
    vhost = f"bench-{uuid.uuid4().hex[:8]}"
    brokers = [urllib.parse.urlsplit(url) for url in broker_urls(amqp_uri)]
    parts = brokers[0]
    auth = (urllib.parse.unquote(parts.username or "guest"), urllib.parse.unquote(parts.password or "guest"))
    api = management_url.rstrip("/") + "/api"
    requests.put(f"{api}/vhosts/{vhost}", auth=auth, timeout=10).raise_for_status()
    requests.put(f"{api}/permissions/{vhost}/{auth[0]}", json={"configure": ".*", "write": ".*", "read": ".*"},
                 auth=auth, timeout=10).raise_for_status()

    def remove():
        requests.delete(f"{api}/vhosts/{vhost}", auth=auth, timeout=30)
    return ";".join(f"{each.scheme}://{each.netloc}/{vhost}" for each in brokers), remove


def burst(amqp_uri: str, clients: int, jobs: list, call) -> dict:
    """``clients`` concurrent clients, each with its own connection, take jobs one after another."""
    latencies: list[float] = []
    failures: collections.Counter = collections.Counter()
    queue = collections.deque(jobs)

    def client(_):
        with ClusterRpcProxy({"AMQP_URI": amqp_uri}, timeout=120) as proxy:
            while queue:
                job = queue.popleft()
                started = time.perf_counter()
                try:
                    call(proxy, job)
                except Exception as exc:  # counted, and shown: a failed submission is a finding
                    failures[getattr(exc, "code", type(exc).__name__)] += 1
                latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    list(eventlet.GreenPool(clients).imap(client, range(clients)))
    elapsed = time.perf_counter() - started
    return {"calls": len(jobs), "seconds": elapsed, "calls_per_s": len(jobs) / elapsed,
            "p50_ms": statistics.median(latencies), "p99_ms": percentile(latencies, 0.99), "failures": failures}


def re_registration_request(n: int, revision: int | None, today: dt.date) -> dict:
    """Person n's 再登记信息表: the commitment, the form revision seen, one 30-hour offline course."""
    return {"commitment": True, "profile_revision": revision, "offline_courses": [{
        "institution": "北京社会管理职业学院", "course": "个案管理实务",
        "start_date": (today - dt.timedelta(days=44)).isoformat(), "end_date": (today - dt.timedelta(days=40)).isoformat(),
        "hours": 30, "proof_key": proof_key(n)}]}


def floor_request(n: int) -> dict:
    return re_registration_request(n, 1, dt.date.today())


def unpublished_events(db_url: str) -> int:
    """Events in a database's outbox that the relay has not published yet."""
    from sqlalchemy import func, select

    from services.registration.models import outbox
    from swms.db import engine_for
    with engine_for(db_url).connect() as connection:
        return connection.execute(select(func.count()).select_from(outbox.table).where(
            outbox.table.c.published_at.is_(None))).scalar_one()


def with_token(proxy, token: str):
    # The standalone proxy sends its context data as headers; each call carries its person's token.
    proxy._worker_ctx.data["auth_token"] = token
    return proxy


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--submissions", type=int, default=20000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--empty-calls", type=int, default=10000)
    parser.add_argument("--registration-processes", type=int, default=2)
    parser.add_argument("--workers", type=int, default=30, help="max_workers of registration and profile")
    parser.add_argument("--pg-url", default=os.environ.get(
        "SWMS_TEST_PG_URL", "postgresql+psycopg2://postgres:postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--copies-from-events", action="store_true",
                        help="build registration's profile copies through profile_changed (one fetch per person: "
                             "slow at 20,000) instead of seeding them")
    parser.add_argument("--management-url", default="http://127.0.0.1:15672",
                        help="RabbitMQ management API, to create this run's own virtual host "
                             "(empty: use the one of --amqp-uri)")
    parser.add_argument("--amqp-uri", default=os.environ.get("AMQP_URI", "pyamqp://guest:guest@127.0.0.1:5672/"),
                        help="one broker, or a cluster's brokers separated by ';'")
    parser.add_argument("--queue-type", choices=QUEUE_TYPES, default="classic")
    args = parser.parse_args()
    amqp_uri, remove_vhost = own_vhost(args.amqp_uri, args.management_url)

    from kombu import Connection, Exchange, Queue
    from sqlalchemy import func, select
    from sqlalchemy.orm import sessionmaker

    from services.profile.models import FileHold
    from services.registration.models import Application, Submission, outbox
    from swms.auth import SOCIAL_WORKER, Caller, issue_token
    from swms.db import engine_for
    from swms.devkeys import ensure_dev_keys
    from swms.migrations import upgrade
    from tools.localstack import NAMEKO, LocalStack

    today = dt.date.today()
    workdir = Path(tempfile.mkdtemp(prefix="swms-bench-registration-"))
    urls = {"profile": create_database(args.pg_url, "profile"),
            "registration": create_database(args.pg_url, "registration")}
    floor_url = create_database(args.pg_url, "floor")
    os.environ.update({"REGISTRATION_MAX_WORKERS": str(args.workers), "PROFILE_MAX_WORKERS": str(args.workers)})
    stack = LocalStack(workdir=workdir, amqp_uri=amqp_uri, queue_type=args.queue_type, db_urls={
        name: urls.get(name, f"sqlite:///{workdir / f'{name}.db'}")
        for name in ("identity", "profile", "registration", "review", "certificate", "notification")})
    events_queue = f"bench-registration-events-{uuid.uuid4().hex[:8]}"
    connection = Connection(amqp_uri)
    try:
        print(f"seeding {args.submissions} people on PostgreSQL …", flush=True)
        started = time.perf_counter()
        for service, url in urls.items():
            upgrade(service, url)
        revision = seed_profiles(urls["profile"], args.submissions, announce=args.copies_from_events)
        seed_registration(urls["registration"], args.submissions, today)
        from bench import floor_service
        floor_service.create_tables(floor_url)
        with engine_for(floor_url).begin() as conn:
            conn.execute(floor_service.proofs.insert(), [{"proof_key": proof_key(n)} for n in range(args.empty_calls)])
        upgrade("registration", floor_url)     # the guarded floor reads registration's own tables
        seed_registration(floor_url, args.empty_calls, today)
        print(f"seeded in {time.perf_counter() - started:.0f} s", flush=True)
        keys = ensure_dev_keys(stack.keys_dir)
        private = (keys / "token-signing.pem").read_bytes()
        tokens = [issue_token(private, Caller(subject=person_id(n), role=SOCIAL_WORKER), dt.timedelta(hours=2))[0]
                  for n in range(max(args.submissions, args.empty_calls))]

        # Count the events: a queue bound before the burst receives every application_submitted.
        queue = Queue(events_queue, exchange=Exchange("registration.events", type="topic", durable=True),
                      routing_key="application_submitted", durable=False, auto_delete=False)
        queue(connection.default_channel).declare()

        stack.start_infrastructure()
        stack.start_service("profile")
        for index in range(args.registration_processes):
            stack.start_service("registration", instance=f"registration-{index + 1}")
        stack._spawn("bench_empty", empty_service.command(NAMEKO, workdir, amqp_uri, args.queue_type))
        floor_config = workdir / "floor.yaml"
        floor_config.write_text(json.dumps({"AMQP_URI": amqp_uri, "AMQP_QUEUE_TYPE": args.queue_type,
                                            "serializer": "json", "max_workers": args.workers,
                                            "AUTH_PUBLIC_KEY_FILE": str(keys / "token-signing.pub.pem"),
                                            "DB_URL": floor_url}))   # the guarded floor's outbox relay
        for index in range(args.registration_processes):   # as many processes and workers as registration
            stack._spawn(f"bench_floor-{index + 1}", [NAMEKO, "run", "--config", str(floor_config),
                                                      "bench.floor_service:FloorService",
                                                      "bench.floor_service:BatchedFloorService",
                                                      "bench.floor_service:GuardedBatchedFloorService"],
                         {"FLOOR_DB_URL": floor_url})
        floor_events = Queue(f"{events_queue}-floor", exchange=Exchange("bench_floor.events", type="topic",
                                                                        durable=True),
                             routing_key="application_submitted", durable=False, auto_delete=False)
        floor_events(connection.default_channel).declare()   # the broker keeps its events, as registration's
        Queue(f"{events_queue}-floor-batched", exchange=Exchange("bench_floor_batched.events", type="topic",
                                                                 durable=True),
              routing_key="application_submitted", durable=False, auto_delete=False)(connection.default_channel).declare()
        guarded_events = Queue(f"{events_queue}-floor-guarded", exchange=Exchange("bench_floor_guarded.events",
                                                                                  type="topic", durable=True),
                               routing_key="application_submitted", durable=False, auto_delete=False)
        guarded_events(connection.default_channel).declare()
        with ClusterRpcProxy({"AMQP_URI": amqp_uri}, timeout=30) as cluster:
            deadline = time.monotonic() + 90
            while True:
                try:
                    cluster.profile.health(), cluster.registration.health(), cluster.bench_empty.ping()
                    cluster.bench_floor.submit(floor_request(0)), cluster.bench_floor_batched.submit(floor_request(0))
                    cluster.bench_floor_guarded.ping()
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)

        # Steady state: registration holds a copy of every form (kept from profile_changed).
        from services.registration.models import ProfileCopy
        copies_started = time.perf_counter()
        service_token = (keys / "registration.service-token").read_text().strip()
        seed_copies(floor_url, amqp_uri, service_token, args.empty_calls)
        if not args.copies_from_events:
            seed_copies(urls["registration"], amqp_uri, service_token, args.submissions)
        with sessionmaker(engine_for(urls["registration"]))() as session:
            while True:
                copies = session.execute(select(func.count()).select_from(ProfileCopy)).scalar_one()
                session.rollback()
                if copies >= args.submissions:
                    break
                if time.perf_counter() - copies_started > 1800:
                    raise RuntimeError(f"only {copies} profile copies after 30 minutes")
                time.sleep(2)
        print(f"registration holds {args.submissions} profile copies "
              + (f"(took {args.submissions} profile_changed events, fetching each form, in "
                 f"{time.perf_counter() - copies_started:.0f} s)" if args.copies_from_events else
                 "(seeded from the first form as profile answered it)"), flush=True)

        # Warm up (connections, pools): every person submits exactly once, so only the empty RPC.
        burst(amqp_uri, args.clients, list(range(500)), lambda proxy, job: proxy.bench_empty.ping())
        pids = {name: process.pid for name, process in stack.processes.items()}
        ledger = CpuLedger({
            "registration processes": lambda pid, _: pid in {pids[f"registration-{i + 1}"]
                                                              for i in range(args.registration_processes)},
            "empty service": lambda pid, _: pid == pids["bench_empty"],
            "floor service processes": lambda pid, _: pid in {pids[f"bench_floor-{i + 1}"]
                                                               for i in range(args.registration_processes)},
            "profile": lambda pid, _: pid == pids["profile"],
            "RabbitMQ": lambda _, command: "beam.smp" in command,
            "PostgreSQL": lambda _, command: command.startswith("postgres"),
            "the clients (this process)": lambda pid, _: pid == os.getpid(),
        })
        ledger.start()
        empty = burst(amqp_uri, args.clients, list(range(args.empty_calls)),
                      lambda proxy, job: with_token(proxy, tokens[job % len(tokens)]).bench_empty.ping())
        empty["cpu"] = ledger.stop()

        ledger.start()
        floor = burst(amqp_uri, args.clients, list(range(args.empty_calls)),
                      lambda proxy, n: proxy.bench_floor.submit(floor_request(n)))
        floor["cpu"] = ledger.stop()
        ledger.start()
        batched = burst(amqp_uri, args.clients, list(range(args.empty_calls)),
                        lambda proxy, n: proxy.bench_floor_batched.submit(floor_request(n)))
        batched["cpu"] = ledger.stop()
        ledger.start()
        guarded = burst(amqp_uri, args.clients, list(range(args.empty_calls)),
                        lambda proxy, n: with_token(proxy, tokens[n]).bench_floor_guarded.submit(
                            re_registration_request(n, revision, today)))
        guarded["cpu"] = ledger.stop()
        guarded["backlog"] = unpublished_events(floor_url)
        guarded_accepted = guarded["calls"] - sum(guarded["failures"].values())
        deadline = time.monotonic() + 60
        while (guarded_published := guarded_events(connection.default_channel).queue_declare(
                passive=True).message_count) < guarded_accepted and time.monotonic() < deadline:
            time.sleep(0.5)
        for index in range(args.registration_processes):   # its connections count against max_connections
            floor_process = stack.processes.pop(f"bench_floor-{index + 1}")
            floor_process.terminate()
            floor_process.wait(30)

        def submit(proxy, n):
            with_token(proxy, tokens[n]).registration.submit_re_registration(re_registration_request(n, revision, today))

        ledger.start()
        submitted = burst(amqp_uri, args.clients, list(range(args.submissions)), submit)
        submitted["cpu"] = ledger.stop()
        submitted["backlog"] = unpublished_events(urls["registration"])

        # Nothing lost: rows, submitted versions, published events and profile's holds, one per submission.
        factory = sessionmaker(engine_for(urls["registration"]))
        profile_sessions = sessionmaker(engine_for(urls["profile"]))
        deadline = time.monotonic() + 120
        while True:
            with factory() as session:
                rows = session.execute(select(func.count()).select_from(Application).where(
                    Application.kind == "re_registration", Application.status == "初审中")).scalar_one()
                versions = session.execute(select(func.count()).select_from(Submission)).scalar_one()
                in_outbox = session.execute(select(func.count()).select_from(outbox.table).where(
                    outbox.table.c.event_type == "application_submitted")).scalar_one()
                unpublished = session.execute(select(func.count()).select_from(outbox.table).where(
                    outbox.table.c.published_at.is_(None))).scalar_one()
            # Each application_submitted names the version's files: profile records the hold.
            with profile_sessions() as session:
                holds = session.execute(select(func.count(func.distinct(FileHold.holder))).where(
                    FileHold.holder.like("submission:%"))).scalar_one()
            published = queue(connection.default_channel).queue_declare(passive=True).message_count
            if (unpublished == 0 and published >= in_outbox and holds >= in_outbox) or time.monotonic() > deadline:
                break
            time.sleep(1)
    finally:
        try:
            queue(connection.default_channel).delete()
        except Exception:
            pass
        connection.release()
        stack.stop()
        drop_databases(args.pg_url, [*urls.values(), floor_url])
        remove_vhost()
        subprocess.run(["rm", "-rf", str(workdir)], check=False)

    ok = submitted["calls"] - sum(submitted["failures"].values())
    print(f"\nRegistration burst: {args.submissions} re-registrations, {args.clients} concurrent clients, "
          f"{args.registration_processes} registration process(es) × {args.workers} workers, PostgreSQL, "
          f"{args.queue_type} queues on {len(broker_urls(amqp_uri))} broker node(s)")
    print(f"{'call':40} {'calls':>7} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for label, figures in (("empty RPC (baseline, same clients)", empty), ("floor: bench_floor.submit", floor),
                           ("floor, group commit", batched), ("floor, grouped, token + rule reads", guarded),
                           ("registration.submit_re_registration", submitted)):
        print(f"{label:40} {figures['calls']:7d} {figures['calls_per_s']:9.0f} {figures['p50_ms']:8.1f} "
              f"{figures['p99_ms']:8.1f}")
    ratio = submitted["calls_per_s"] / empty["calls_per_s"]
    print(f"throughput ratio submissions / empty RPC: {ratio:.2f} (goal ≥ 0.50: {'met' if ratio >= 0.5 else 'NOT met'})")
    print(f"floor: a minimal durable submission (bench/floor_service.py: same request model, one transaction of "
          f"5 inserts + 1 update in SQLAlchemy Core, one event; no token, no rules, no ORM) / empty RPC: "
          f"{floor['calls_per_s'] / empty['calls_per_s']:.2f}; the same with the transactions of concurrent "
          f"workers grouped (group commit): {batched['calls_per_s'] / empty['calls_per_s']:.2f}; grouped, with the "
          f"token check and one set-based read per rule for each group (a ceiling for registration's path): "
          f"{guarded['calls_per_s'] / empty['calls_per_s']:.2f}")
    against_floor = submitted["calls_per_s"] / guarded["calls_per_s"]
    print(f"throughput ratio submissions / guarded floor: {against_floor:.2f} (issue 20 goal 5: ≥ 0.60: "
          f"{'met' if against_floor >= 0.6 else 'NOT met'})")
    print(f"failed calls: {dict(submitted['failures']) or 'none'}; empty RPC failures: {dict(empty['failures']) or 'none'}; "
          f"guarded floor refusals: {dict(guarded['failures']) or 'none'}, events relayed {guarded_published} of "
          f"{guarded_accepted}")
    print_cpu(empty, floor, batched, guarded, submitted, os.cpu_count() or 1)
    # Relaying these (and profile recording the holds) happens after the CPU window closed.
    print(f"events not yet relayed when the calls ended (their relaying is outside the CPU figures): "
          f"guarded floor {guarded['backlog']}, submissions {submitted['backlog']}")
    consistent = ok == rows == versions == in_outbox == published == holds and unpublished == 0
    print(f"nothing lost: {ok} accepted = {rows} application rows = {versions} submitted versions = "
          f"{in_outbox} application_submitted events, {published} published = {holds} holds profile recorded "
          f"({unpublished} events not yet published): "
          f"{'OK' if consistent else 'MISMATCH'}")
    # A failed call or a lost row or event is a finding, not a figure: the run fails.
    if not consistent or submitted["failures"] or empty["failures"] or guarded["failures"] \
            or guarded_published != guarded_accepted:
        raise SystemExit("FAILED: a call failed, or a row or an event is missing (see above)")


def print_cpu(empty: dict, floor: dict, batched: dict, guarded: dict, submitted: dict, cores: int) -> None:
    """CPU per call, by process group, in each phase; and what the goal leaves a submission."""
    per = {phase: {label: seconds * 1000 / figures["calls"] for label, seconds in figures["cpu"].items()}
           for phase, figures in (("empty", empty), ("floor", floor), ("batched", batched), ("guarded", guarded),
                                  ("submit", submitted))}
    for figures in per.values():
        figures["everything else"] = figures["whole machine"] - sum(
            value for label, value in figures.items() if label != "whole machine")
        figures["whole machine"] = figures.pop("whole machine")    # printed last
    print(f"\nCPU per call, ms (all {cores} cores; wall-clock rates depend on what else runs, CPU per call does not)")
    print(f"{'':40} {'empty RPC':>10} {'floor':>8} {'grouped':>8} {'guarded':>8} {'submission':>11}")
    for label in per["empty"]:
        print(f"  {label:38} {per['empty'][label]:10.2f} {per['floor'][label]:8.2f} {per['batched'][label]:8.2f} "
              f"{per['guarded'][label]:8.2f} {per['submit'][label]:11.2f}")
    whole_empty, whole_submit = per["empty"]["whole machine"], per["submit"]["whole machine"]
    whole_floor = per["floor"]["whole machine"]
    print(f"busy cores: empty RPC {whole_empty * empty['calls_per_s'] / 1000:.2f}, "
          f"floor {whole_floor * floor['calls_per_s'] / 1000:.2f}, "
          f"submissions {whole_submit * submitted['calls_per_s'] / 1000:.2f} of {cores}")
    print(f"at saturation a ratio to the empty RPC is at most CPU(empty) / CPU(call): floor "
          f"{whole_empty / whole_floor:.2f}, submission {whole_empty / whole_submit:.2f}. The goal (0.5) allows "
          f"{2 * whole_empty:.2f} ms per submission in all; the floor, with no rules at all, takes {whole_floor:.2f} ms; "
          f"registration's token check, rules and ORM add {whole_submit - whole_floor:.2f} ms. Grouping "
          f"transactions (group commit) brings the floor to {per['batched']['whole machine']:.2f} ms, leaving "
          f"{2 * whole_empty - per['batched']['whole machine']:.2f} ms for the token check and every rule. The "
          f"grouped floor with the token check and one set-based read per rule takes "
          f"{per['guarded']['whole machine']:.2f} ms (ratio at most {whole_empty / per['guarded']['whole machine']:.2f})")
    whole_guarded = per["guarded"]["whole machine"]
    registration = "registration processes"
    print(f"submission / guarded floor by CPU (whole machine): {whole_guarded / whole_submit:.2f} (goal 5 asks 0.60: "
          f"{whole_guarded / 0.6:.2f} ms per submission in all); registration's own processes "
          f"{per['submit'].get(registration, 0.0):.2f} ms per submission")

if __name__ == "__main__":
    main()
