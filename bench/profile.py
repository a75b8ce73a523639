"""Profile: what a photo upload and the completeness check cost, against an empty RPC, in one run.

  .venv/bin/python -m bench.profile [--people 20] [--photos 5] [--calls 500] [--db-url URL]
  .venv/bin/python -m bench.profile --held 2000 [--people 50] [--admin-url postgresql://…/test] [--concurrency 10]
      [--cprofile]

The profile service runs as a separate ``nameko run`` process on the local RabbitMQ, with moto's S3
server on loopback (the same boto3 code path as MinIO) and a SQLite file (PostgreSQL with --db-url).
Forms are seeded directly in the database (basic information, three work experiences, two honours).
Prints p50/p99 of sequential calls and, for photos, uploads/s with one client per person in parallel:

* empty RPC (baseline);
* ``check_completeness`` (the call registration makes before every submission);
* photo: ticket (``request_upload``) + HTML-form POST to storage + ``confirm_photo`` (read back,
  decoded in a native thread, copied to its final key, recorded with its event) — a camera-like
  1-inch JPEG of about 120 KB.

``--held N`` measures only the ``files_held`` handler (its hold is the one each registration
submission carries in ``application_submitted``, handled by the same code), in this process,
without a broker: ``on_files_held`` is called as its entrypoint calls it (payload →
model → inbox → hold → audit, one transaction per group) for N events on SQLite, or on a PostgreSQL database
of its own made with ``--admin-url`` (dropped after). Every person has a photo and six proofs on the
form, three retired files and the holds of an earlier submission; each event holds the seven current
files for a new round. Prints the CPU time of this process per event (what the handler costs the
profile process; on PostgreSQL also its backends' CPU, for first deliveries), for first deliveries
and for redeliveries; ``--concurrency K`` delivers K at a time, each in a green thread of its own (a replica's
workers in a burst: deliveries arriving together share a transaction); ``--cprofile`` adds the
functions that cost most.
"""
from __future__ import annotations

import eventlet

eventlet.monkey_patch()

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from nameko.standalone.rpc import ClusterRpcProxy  # noqa: E402

from bench._measure import CpuLedger, percentile  # noqa: E402


def timed(call) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


def seed(db_url: str, people: int) -> list[str]:
    from sqlalchemy.orm import sessionmaker

    from services.profile import domain
    from services.profile.testing import SUNSHINE, basic_info, seed_directory
    from swms.contracts.identity import PersonResponse
    from swms.contracts.profile import BasicInfoRequest, HonourRequest, WorkExperienceRequest
    from swms.db import engine_for
    from swms.idcard import check_character

    org_id = seed_directory(db_url, [SUNSHINE])[SUNSHINE["credit_code"]]
    ids = []
    with sessionmaker(engine_for(db_url), expire_on_commit=False)() as session:
        for n in range(people):
            first17 = f"11010519900307{n:03d}"
            person = PersonResponse(person_id=f"00000000-0000-4000-8000-{n:012d}", name=f"测试{n}",
                                    id_number=first17 + check_character(first17), email=f"p{n}@example.cn",
                                    level="社会工作师", management_number=f"{n:018d}", exam_year=2026)
            profile = domain.ensure_profile(session, person.person_id, person)
            domain.save_basic_info(session, profile, BasicInfoRequest(**basic_info(org_id)), person.email, "bench")
            for year in (2014, 2017, 2020):
                domain.save_work_experience(session, profile, WorkExperienceRequest(
                    unit_category="企业", unit_name=f"某公司{year}", position="职员", start_date=dt.date(year, 1, 1),
                    end_date=dt.date(year + 2, 12, 31)), [], "bench")
            for level in ("省", "地市"):
                domain.save_honour(session, profile, HonourRequest(title="优秀社工", level=level, awarding_body="民政厅",
                                                                   awarded_on=dt.date(2022, 1, 1)), None, "bench")
            ids.append(person.person_id)
        session.commit()
    return ids


PROOFS_PER_PERSON = 6


def seed_files(db_url: str, people: int) -> list[tuple[str, list[str]]]:
    """People with files on their form, retired files and the holds of a first submission, written
    directly (Core): what a re-registration finds. Returns each person and their current files."""
    from sqlalchemy import insert

    from services.profile.models import ACTIVE, PHOTO, PROOF, RETIRED, FileHold, StoredFile
    from swms.db import engine_for

    now = dt.datetime(2026, 12, 1)
    files, holds, forms = [], [], []
    for n in range(people):
        person = f"00000000-0000-4000-9000-{n:012d}"

        def stored(key: str, kind: str, status: str) -> dict:
            return {"file_key": key, "person_id": person, "kind": kind, "owner_id": None,
                    "content_type": "image/jpeg" if kind == PHOTO else "application/pdf", "size_bytes": 120_000,
                    "width": 295 if kind == PHOTO else None, "height": 413 if kind == PHOTO else None,
                    "sha256": "0" * 64, "status": status, "created_at": now,
                    "retired_at": now if status == RETIRED else None, "referenced_at": now}

        current = [f"photos/{person}/current.jpg"] + [f"proofs/{person}/{i}.pdf" for i in range(PROOFS_PER_PERSON)]
        files += [stored(current[0], PHOTO, ACTIVE)] + [stored(key, PROOF, ACTIVE) for key in current[1:]]
        files += [stored(f"photos/{person}/old.jpg", PHOTO, RETIRED)]
        files += [stored(f"proofs/{person}/old{i}.pdf", PROOF, RETIRED) for i in range(2)]
        earlier = [f"photos/{person}/old.jpg", f"proofs/{person}/old0.pdf", f"proofs/{person}/old1.pdf"] + current[1:4]
        holds += [{"file_key": key, "holder": f"submission:{n:08d}:1", "person_id": person,
                   "held_until": now + dt.timedelta(days=5 * 365), "created_at": now, "updated_at": now}
                  for key in earlier]
        forms.append((person, current))
    with engine_for(db_url).begin() as connection:
        connection.execute(insert(StoredFile.__table__), files)
        connection.execute(insert(FileHold.__table__), holds)
    return forms


def counts(db_url: str) -> tuple[int, int]:
    """Holds other than the seeded first submissions', and files_held audit rows."""
    from sqlalchemy import func, select

    from services.profile.models import FileHold, audit
    from swms.db import engine_for

    with engine_for(db_url).connect() as connection:
        holds = connection.execute(select(func.count()).select_from(FileHold)
                                   .where(~FileHold.holder.like("submission:%:1"))).scalar_one()
        audited = connection.execute(select(func.count()).select_from(audit.table)
                                     .where(audit.table.c.action == "profile.files_held")).scalar_one()
    return holds, audited


def held_benchmark(args) -> None:
    """CPU of this process per ``files_held`` event (see the module's docstring)."""
    import cProfile
    import pstats
    import uuid

    from sqlalchemy.orm import sessionmaker

    from services.profile.service import ProfileService
    from swms.contracts.events import FilesHeld
    from swms.db import DatabaseAccess, engine_for
    from swms.grouping import GroupCommit
    from swms.migrations import upgrade

    workdir = Path(tempfile.mkdtemp(prefix="swms-bench-held-"))
    created = []
    if args.admin_url:
        from bench.registration_burst import create_database
        db_url = create_database(args.admin_url, "held")
        created.append(db_url)
    else:
        db_url = f"sqlite:///{workdir / 'profile.db'}"
    try:
        upgrade("profile", db_url)
        forms = seed_files(db_url, args.people)
        until = dt.datetime(2031, 12, 1, tzinfo=dt.timezone.utc)
        events = [FilesHeld(person_id=forms[i % len(forms)][0], holder=f"submission:{i % len(forms):08d}:{2 + i // len(forms)}",
                            file_keys=forms[i % len(forms)][1], held_until=until).model_dump(mode="json")
                  for i in range(args.held)]

        sessions = sessionmaker(engine_for(db_url), expire_on_commit=False)
        groups = GroupCommit()   # the container's files_held group (Grouped); a handler without one ignores it

        class Stand_in:    # what nameko injects into a worker (the database, the group), and the handler's helper
            held_groups = groups
            _hold = ProfileService._hold

            def __init__(self):
                self.db = DatabaseAccess(sessions)

        def one(payload: dict) -> None:
            worker = Stand_in()         # a new worker per message, as nameko does
            try:
                ProfileService.on_files_held(worker, payload)
            finally:
                worker.db.close()

        def deliver(batch: list[dict]) -> float:
            started = time.process_time()
            if args.concurrency > 1:    # as a replica's workers take the deliveries of a burst
                list(eventlet.GreenPool(args.concurrency).imap(one, batch))
            else:
                for payload in batch:
                    one(payload)
            return (time.process_time() - started) / len(batch) * 1000

        warm = [FilesHeld(person_id=person, holder=f"warm:{uuid.uuid4()}", file_keys=keys, held_until=until)
                .model_dump(mode="json") for person, keys in forms[:20]]
        deliver(warm)
        profiler = cProfile.Profile(time.process_time) if args.cprofile else None
        database = db_url.rsplit("/", 1)[1]
        backends = CpuLedger({"database": lambda pid, command: command.startswith("postgres: ")
                              and f" {database} " in command})   # this run's PostgreSQL backends
        backends.start()
        if profiler:
            profiler.enable()
        first = deliver(events)
        if profiler:
            profiler.disable()
        backend_ms = backends.stop()["database"] / len(events) * 1000
        written = counts(db_url)
        again = deliver(events[: max(1, len(events) // 4)])
        rewritten = counts(db_url)
    finally:
        if created:
            from bench.registration_burst import drop_databases
            drop_databases(args.admin_url, created)
        subprocess.run(["rm", "-rf", str(workdir)], check=False)
    print(f"profile files_held ({db_url.split(':')[0]}): {len(events)} events of {len(forms[0][1])} files, "
          f"{len(forms)} people with earlier holds, {args.concurrency} at a time")
    print(f"CPU per event, first delivery: {first:.2f} ms; redelivery (skipped): {again:.2f} ms"
          + (f"; PostgreSQL backends, first delivery: {backend_ms:.2f} ms" if created else ""))
    files = len(forms[0][1])
    expected = (len(warm) + len(events)) * files, len(warm) + len(events)
    print(f"checks: {written[0]} new holds and {written[1]} files_held audit rows for {len(events)} events "
          f"(+{len(warm)} warm-up) of {files} files (expected {expected[0]}, {expected[1]}); redeliveries wrote "
          f"{'nothing' if rewritten == written else 'again: WRONG'}")
    if written != expected or rewritten != written:
        raise SystemExit("files_held: holds or audit rows not as expected")
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(35)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--people", type=int, default=20)
    parser.add_argument("--photos", type=int, default=5, help="photos uploaded per person")
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--db-url", help="profile database (default: a fresh SQLite file)")
    parser.add_argument("--held", type=int, default=0,
                        help="measure only the files_held handler, for this many events (no broker)")
    parser.add_argument("--admin-url", help="with --held: PostgreSQL URL allowed to CREATE DATABASE")
    parser.add_argument("--cprofile", action="store_true", help="with --held: where the CPU goes")
    parser.add_argument("--concurrency", type=int, default=1,
                        help="with --held: deliveries handled at once, each in its own worker (green thread), as "
                             "PROFILE_MAX_WORKERS lets a replica; they share transactions if the handler groups them")
    args = parser.parse_args()
    if args.held:
        held_benchmark(args)
        return
    amqp_uri = os.environ.get("AMQP_URI", "pyamqp://guest:guest@127.0.0.1:5672/")
    # A virtual host of this run's own: its profile must not answer a demo's or a deployment's
    # calls on the same broker ('' in RABBIT_MANAGEMENT_URL: $AMQP_URI's virtual host as it is).
    from bench.registration_burst import own_vhost
    amqp_uri, remove_vhost = own_vhost(amqp_uri, os.environ.get("RABBIT_MANAGEMENT_URL", "http://127.0.0.1:15672"))

    from services.profile.testing import make_photo, post_file
    from swms.migrations import upgrade
    from tests.support import worker_token
    from tools.localstack import NAMEKO, LocalStack

    workdir = Path(tempfile.mkdtemp(prefix="swms-bench-profile-"))
    db_url = args.db_url or f"sqlite:///{workdir / 'profile.db'}"
    stack = LocalStack(workdir=workdir, amqp_uri=amqp_uri, db_urls={name: db_url for name in (
        "identity", "profile", "registration", "review", "certificate", "notification")})
    upgrade("profile", db_url)
    people = seed(db_url, args.people)
    photo = make_photo(295, 413, "JPEG", noise=True)
    try:
        stack.start_infrastructure()
        stack.start_service("profile")
        stack._spawn("bench_empty", [NAMEKO, "run", "--broker", amqp_uri, "bench.empty_service"])
        tokens = {person: worker_token(stack.keys_dir, person) for person in people}
        with ClusterRpcProxy({"AMQP_URI": amqp_uri}, timeout=30, context_data={"auth_token": tokens[people[0]]}) as me:
            deadline = time.monotonic() + 60
            while True:
                try:
                    me.profile.health(), me.bench_empty.ping()
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
            for _ in range(30):
                me.bench_empty.ping(), me.profile.check_completeness({"person_id": people[0]})
            empty = [timed(me.bench_empty.ping) for _ in range(args.calls)]
            completeness = [timed(lambda: me.profile.check_completeness({"person_id": people[0]}))
                            for _ in range(args.calls)]
            sequential, tickets, posts, confirms = [], [], [], []
            for _ in range(min(args.photos * 4, 40)):
                started = time.perf_counter()
                ticket = me.profile.request_upload({"purpose": "photo"})
                tickets.append((time.perf_counter() - started) * 1000)
                posts.append(timed(lambda: post_file(ticket, photo, "photo.jpg", "image/jpeg")))
                confirms.append(timed(lambda: me.profile.confirm_photo({"upload_id": ticket["upload_id"]})))
                sequential.append((time.perf_counter() - started) * 1000)

        def person_uploads(person: str) -> None:
            with ClusterRpcProxy({"AMQP_URI": amqp_uri}, timeout=60,
                                 context_data={"auth_token": tokens[person]}) as client:
                for _ in range(args.photos):
                    ticket = client.profile.request_upload({"purpose": "photo"})
                    post_file(ticket, photo, "photo.jpg", "image/jpeg")
                    client.profile.confirm_photo({"upload_id": ticket["upload_id"]})

        pool = eventlet.GreenPool(len(people))
        started = time.perf_counter()
        list(pool.imap(person_uploads, people))
        parallel_s = time.perf_counter() - started
    finally:
        stack.stop()
        remove_vhost()
        subprocess.run(["rm", "-rf", str(workdir)], check=False)

    uploads = len(people) * args.photos
    print(f"profile benchmark ({db_url.split(':')[0]}): {args.calls} sequential calls; photo {len(photo) // 1024} KB "
          f"JPEG 295×413; {len(people)} people × {args.photos} photos in parallel")
    print(f"{'call':44} {'p50 ms':>8} {'p99 ms':>8}")
    for name, samples in (("empty RPC (baseline)", empty), ("profile.check_completeness", completeness),
                          ("photo: ticket + POST to S3 + confirm_photo", sequential),
                          ("  of which profile.request_upload", tickets), ("  of which POST to S3 (moto)", posts),
                          ("  of which profile.confirm_photo", confirms)):
        print(f"{name:44} {statistics.median(samples):8.2f} {percentile(samples, 0.99):8.2f}")
    print(f"photo uploads in parallel: {uploads} in {parallel_s:.1f} s = {uploads / parallel_s:.1f} uploads/s")
    print(f"ratio check_completeness/empty p50 ×{statistics.median(completeness) / statistics.median(empty):.1f}")


if __name__ == "__main__":
    main()
