"""Review on PostgreSQL: listing a queue of 100,000 pending items, and batch approval end to end.

  .venv/bin/python -m bench.review_queue [--pending 100000] [--calls 500] [--batch 1000]

What it does, in one run:
1. creates a fresh PostgreSQL database (``SWMS_BENCH_PG_URL``, default the local server as user
   postgres), migrates it with review's Alembic revisions, and loads ``--pending`` pending items
   waiting for one province's final review (广东省, spread over its counties, kinds and 60 days of
   submissions, about a tenth overdue), plus as many decided items in the same queue and a fifth
   as many in other provinces and levels, then VACUUM ANALYZE;
2. prints EXPLAIN ANALYZE of the queue queries review actually sends (captured from the domain
   code), so the plans can be checked: index scans, no sort, no sequential scan;
3. starts review as a separate ``nameko run`` process on a RabbitMQ vhost of its own, and next to it
   bench/empty_service.py for the baseline: an empty RPC measured in the same run;
4. measures ``review.list_queue`` as the province officer (first page; every page of the whole queue
   with the keyset cursor; filters) — p50/p99 of sequential calls;
5. approves ``--batch`` items with ``review.approve_batch`` (calls of at most 1,000) and counts the
   ``application_approved`` events arriving on the broker: time to the reply and to the last event.
"""
from __future__ import annotations

import eventlet

eventlet.monkey_patch()

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import io  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402
from urllib.parse import quote  # noqa: E402

import requests  # noqa: E402
from kombu import Connection, Exchange, Queue  # noqa: E402
from nameko.standalone.rpc import ClusterRpcProxy  # noqa: E402
from sqlalchemy import create_engine, event, text  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from bench._measure import percentile  # noqa: E402
from services.review import domain  # noqa: E402
from services.review.workcalendar import WorkCalendar  # noqa: E402
from swms.auth import OFFICER, Caller, issue_token  # noqa: E402
from swms.config import REPO_ROOT  # noqa: E402
from swms.contracts.review import QueueRequest  # noqa: E402
from swms.devkeys import ensure_dev_keys  # noqa: E402
from swms.migrations import upgrade  # noqa: E402
from tools.localstack import NAMEKO, LocalStack  # noqa: E402

PG_ADMIN_URL = os.environ.get("SWMS_BENCH_PG_URL", "postgresql+psycopg2://postgres:postgres@127.0.0.1:5432/postgres")
PROVINCE = "44"                               # 广东省
CITIES = [f"44{n:02d}" for n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 14, 15, 16, 17, 18, 19, 20, 51, 52, 53)]
OTHER_PROVINCES = ["11", "31", "32", "33", "37", "41", "42", "51"]
KINDS = ["first_registration"] * 12 + ["re_registration"] * 7 + ["upgrade"]
COLUMNS = ("item_id", "application_id", "person_id", "kind", "round", "step", "chain_length", "chain", "level",
           "region_code", "region_prefix", "applicant_name_masked", "submitted_at", "accepted_at", "due_at",
           "opened_at", "status", "decided_by", "decided_at", "reason")


def figures(samples: list[float]) -> str:
    return (f"{statistics.median(samples):8.2f} {percentile(samples, 0.99):8.2f} {max(samples):8.2f} "
            f"{len(samples):7d}")


# ---- data ------------------------------------------------------------------------------------------

def rows(count: int, rng: random.Random, calendar: WorkCalendar, now: dt.datetime, *, level: str, status: str,
         provinces: list[str] | None = None):
    """Items as review stores them; a tenth were accepted long enough ago to be overdue."""
    for _ in range(count):
        province = rng.choice(provinces) if provinces else PROVINCE
        city = rng.choice(CITIES) if province == PROVINCE else f"{province}{rng.randint(1, 9):02d}"
        county = f"{city}{rng.randint(1, 20):02d}"
        overdue = rng.random() < 0.1
        submitted = now - dt.timedelta(days=rng.uniform(45, 80) if overdue else rng.uniform(0, 40),
                                       seconds=rng.randint(0, 86399))
        prefix = {"county": county, "city": city, "province": province}[level]
        step = 0 if level == "county" else 1
        decided = status != "pending"
        yield (str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4()), rng.choice(KINDS), 1, step, 2,
               "county,province", level, county, prefix, "张**", submitted, submitted,
               calendar.due_at(submitted, 30), submitted, status,
               "bench-officer" if decided else None, now if decided else None, None)


def copy_rows(engine, generator) -> int:
    buffer = io.StringIO()
    count = 0
    for row in generator:
        buffer.write("\t".join("\\N" if value is None else
                               value.isoformat(sep=" ") if isinstance(value, dt.datetime) else str(value)
                               for value in row) + "\n")
        count += 1
    buffer.seek(0)
    import psycopg2.extensions

    # eventlet greens psycopg2 with a wait callback, which COPY refuses; nothing else runs meanwhile.
    callback = psycopg2.extensions.get_wait_callback()
    psycopg2.extensions.set_wait_callback(None)
    raw = engine.raw_connection()
    try:
        with raw.cursor() as cursor:
            cursor.copy_expert(f"COPY review_items ({', '.join(COLUMNS)}) FROM STDIN", buffer)
        raw.commit()
    finally:
        raw.close()
        psycopg2.extensions.set_wait_callback(callback)
    return count


# ---- plans -----------------------------------------------------------------------------------------

def explain_queue(engine, rules: domain.Rules, officer: Caller) -> None:
    """Run review's own queue code, capture the SQL it sends, and EXPLAIN ANALYZE each statement."""
    captured: list[tuple[str, dict]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        captured.append((statement, parameters))

    cases = [("first page", QueueRequest()), ("kind filter", QueueRequest(kind="upgrade")),
             ("overdue only", QueueRequest(deadline="overdue")),
             ("submitted in one week", QueueRequest(submitted_from=dt.date.today() - dt.timedelta(days=14),
                                                    submitted_to=dt.date.today() - dt.timedelta(days=7)))]
    with Session(engine) as session:
        _, _, cursor = domain.queue(session, officer, QueueRequest(page_size=200, page=40), rules)
        cases.append(("keyset page after row 8,000", QueueRequest(page_size=200, cursor=cursor)))
        event.listen(engine, "before_cursor_execute", capture)
        try:
            for name, request in cases:
                captured.clear()
                domain.queue(session, officer, request, rules)
                for statement, parameters in list(captured):
                    label = "count" if "count(" in statement else "page"
                    event.remove(engine, "before_cursor_execute", capture)
                    plan = session.connection().exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement,
                                                                parameters).scalars().all()
                    event.listen(engine, "before_cursor_execute", capture)
                    nodes = [line.strip().split("  (")[0].lstrip("-> ") for line in plan
                             if "Scan" in line or "Sort" in line or "Aggregate" in line or "Limit" in line]
                    timing = next(line for line in plan if line.startswith("Execution Time"))
                    print(f"  {name + ' — ' + label:45} {timing:28} {' / '.join(nodes)}")
        finally:
            event.remove(engine, "before_cursor_execute", capture)


# ---- broker ----------------------------------------------------------------------------------------

class Vhost:
    """A RabbitMQ virtual host of the bench's own (management API), so nothing else hears it."""

    def __init__(self, amqp_uri: str, api: str = "http://127.0.0.1:15672", auth=("guest", "guest")):
        self.name = f"swms-bench-{uuid.uuid4().hex[:8]}"
        self.api, self.auth = api, auth
        requests.put(f"{api}/api/vhosts/{quote(self.name, safe='')}", auth=auth, timeout=10).raise_for_status()
        requests.put(f"{api}/api/permissions/{quote(self.name, safe='')}/{auth[0]}", auth=auth, timeout=10,
                     json={"configure": ".*", "write": ".*", "read": ".*"}).raise_for_status()
        self.uri = amqp_uri.rstrip("/") + "/" + quote(self.name, safe="")

    def delete(self) -> None:
        requests.delete(f"{self.api}/api/vhosts/{quote(self.name, safe='')}", auth=self.auth, timeout=10)


class Tap:
    def __init__(self, amqp_uri: str):
        self.connection = Connection(amqp_uri)
        exchange = Exchange("review.events", type="topic", durable=True)
        self.queue = Queue(f"bench-tap-{uuid.uuid4().hex[:8]}", exchange=exchange,
                           routing_key="application_approved", auto_delete=True)
        self.received: list[tuple[float, dict]] = []
        self.consumer = self.connection.Consumer([self.queue], callbacks=[self._on_message], accept=["json"])
        self.consumer.consume()

    def _on_message(self, body, message):
        self.received.append((time.perf_counter(), body))
        message.ack()

    def collect(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            try:
                self.connection.drain_events(timeout=0.2)
            except socket.timeout:
                pass

    def close(self) -> None:
        self.consumer.cancel()
        self.connection.release()


def timed(call, *args) -> float:
    started = time.perf_counter()
    call(*args)
    return (time.perf_counter() - started) * 1000


# ---- main ------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pending", type=int, default=100_000)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--keep", action="store_true", help="keep the database (prints its URL)")
    args = parser.parse_args()
    amqp_uri = os.environ.get("AMQP_URI", "pyamqp://guest:guest@127.0.0.1:5672/")

    rng = random.Random(6)
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    rules = domain.Rules(chains=domain.load_chains(REPO_ROOT / "services" / "review" / "chains.yaml"),
                         calendar=WorkCalendar.load(REPO_ROOT / "services" / "review" / "calendar.yaml"))
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"swms_bench_review_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    workdir = Path(tempfile.mkdtemp(prefix="swms-bench-review-"))
    vhost = Vhost(amqp_uri)
    stack = LocalStack(workdir=workdir, amqp_uri=vhost.uri, db_urls={s: url for s in (
        "identity", "profile", "registration", "review", "certificate", "notification")})
    engine = create_engine(url)
    try:
        upgrade("review", url)
        started = time.perf_counter()
        loaded = copy_rows(engine, rows(args.pending, rng, rules.calendar, now, level="province", status="pending"))
        loaded += copy_rows(engine, rows(args.pending, rng, rules.calendar, now, level="province", status="approved"))
        loaded += copy_rows(engine, rows(args.pending // 5, rng, rules.calendar, now, level="county",
                                         status="pending", provinces=OTHER_PROVINCES + [PROVINCE]))
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE review_items"))
            pending_here = conn.execute(text("SELECT count(*) FROM review_items WHERE level = 'province' "
                                             "AND region_prefix = :p AND status = 'pending'"), {"p": PROVINCE}).scalar()
            overdue_here = conn.execute(text("SELECT count(*) FROM review_items WHERE level = 'province' "
                                             "AND region_prefix = :p AND status = 'pending' AND due_at < :now"),
                                        {"p": PROVINCE, "now": now}).scalar()
        print(f"loaded {loaded:,} review items in {time.perf_counter() - started:.1f} s; the 广东省 final-review "
              f"queue holds {pending_here:,} pending ({overdue_here:,} overdue)")

        officer = Caller("bench-province-officer", OFFICER, "440000", "province")
        print("\nPlans of the queries review sends (EXPLAIN ANALYZE, PostgreSQL):")
        explain_queue(engine, rules, officer)

        ensure_dev_keys(stack.keys_dir)
        officer_token = issue_token((stack.keys_dir / "token-signing.pem").read_bytes(), officer,
                                    dt.timedelta(hours=2))[0]
        stack.start_service("review")
        stack._spawn("bench_empty", [NAMEKO, "run", "--broker", vhost.uri, "bench.empty_service"])
        tap = Tap(vhost.uri)   # bound before any approval: events are counted on the broker
        with ClusterRpcProxy({"AMQP_URI": vhost.uri}, timeout=120,
                             context_data={"auth_token": officer_token}) as cluster:
            deadline = time.monotonic() + 90
            while True:
                try:
                    cluster.review.health(), cluster.bench_empty.ping()
                    break
                except Exception:
                    stack.check_alive("review")
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
            for _ in range(50):                         # warm up connections, caches, plans
                cluster.bench_empty.ping()
                cluster.review.list_queue({})
            results: dict[str, list[float]] = {}
            results["empty RPC (baseline)"] = [timed(cluster.bench_empty.ping) for _ in range(args.calls)]
            results["first page, 20 items"] = [timed(cluster.review.list_queue, {}) for _ in range(args.calls)]
            results["first page, 200 items"] = [timed(cluster.review.list_queue, {"page_size": 200})
                                                for _ in range(args.calls // 5)]
            walk, cursor = [], None
            while True:
                request = {"page_size": 200, **({"cursor": cursor} if cursor else {})}
                started = time.perf_counter()
                page = cluster.review.list_queue(request)
                walk.append((time.perf_counter() - started) * 1000)
                cursor = page["next_cursor"]
                if cursor is None:
                    break
            results[f"every page, 200 items (keyset, {len(walk)} pages)"] = walk
            results["kind filter (upgrade)"] = [timed(cluster.review.list_queue, {"kind": "upgrade"})
                                                for _ in range(args.calls // 5)]
            results["overdue only"] = [timed(cluster.review.list_queue, {"deadline": "overdue"})
                                       for _ in range(args.calls // 5)]
            week = {"submitted_from": (dt.date.today() - dt.timedelta(days=14)).isoformat(),
                    "submitted_to": (dt.date.today() - dt.timedelta(days=7)).isoformat()}
            results["submitted in one week"] = [timed(cluster.review.list_queue, week) for _ in range(args.calls // 5)]
            results["deadline summary per county"] = [timed(cluster.review.deadline_summary, {})
                                                      for _ in range(args.calls // 10)]

            print(f"\nreview.list_queue as the 广东省 province officer ({pending_here:,} pending in the queue), "
                  f"sequential calls over RabbitMQ; {os.cpu_count()} CPUs, load average "
                  f"{os.getloadavg()[0]:.1f} (figures scale with other work on the machine):")
            print(f"{'call':52} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'calls':>7}")
            for label, samples in results.items():
                print(f"{label:52} {figures(samples)}")
            base = statistics.median(results["empty RPC (baseline)"])
            print(f"first page p50 is the empty RPC's ×{statistics.median(results['first page, 20 items']) / base:.2f}")

            # ---- batch approval, end to end --------------------------------------------------------
            ids: list[str] = []
            cursor = None
            while len(ids) < args.batch:
                page = cluster.review.list_queue({"page_size": 200, **({"cursor": cursor} if cursor else {})})
                ids.extend(item["item_id"] for item in page["items"])
                cursor = page["next_cursor"]
            ids = ids[:args.batch]
            started = time.perf_counter()
            approved = failed = 0
            for chunk in range(0, len(ids), 1000):
                reply = cluster.review.approve_batch({"item_ids": ids[chunk:chunk + 1000], "reason": "批量终审通过"})
                approved += reply["approved"]
                failed += reply["failed"]
            replied = time.perf_counter()
            tap.collect(approved, timeout=120)
            last = max((at for at, _ in tap.received), default=replied)
            arrived = {body["application_id"] for _, body in tap.received}
            print(f"\nreview.approve_batch of {len(ids):,} items (final review, from the same queue):")
            print(f"  approved {approved:,}, refused {failed:,}; reply after {(replied - started):.2f} s "
                  f"({len(ids) / (replied - started):,.0f} items/s)")
            print(f"  application_approved events on the broker: {len(tap.received):,} "
                  f"({len(arrived):,} distinct applications); last one {(last - started):.2f} s after the call "
                  f"({len(tap.received) / max(last - started, 1e-9):,.0f} events/s end to end)")
        tap.close()
    finally:
        stack.stop()
        vhost.delete()
        shutil.rmtree(workdir, ignore_errors=True)
        engine.dispose()
        if args.keep:
            print(f"database kept: {url}")
        else:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
