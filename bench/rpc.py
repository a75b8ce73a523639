"""RPC latency and throughput: an empty Nameko RPC vs identity's sign-up lookup, in one run.

  .venv/bin/python -m bench.rpc [--calls 2000] [--concurrency 50] [--passers 20000]
      [--backends sqlite,postgresql] [--pg-url postgresql+psycopg2://…/postgres]
      [--amqp-uri "pyamqp://…:5701/;pyamqp://…:5702/;…"] [--queue-type classic|quorum]

Both services run as separate ``nameko run`` processes on the local RabbitMQ (or the brokers of
--amqp-uri, default $AMQP_URI; a ;-list names a cluster's nodes), in a virtual host of the run's own
(through --management-url: another run's identity or empty service on the same broker would
otherwise answer some of the calls), their RPC queues of --queue-type;
identity uses a SQLite file seeded with generated passers, then (``--backends``) a fresh PostgreSQL
database made from --pg-url (or --db-url: one given database). The client runs here.

Per backend it prints p50/p99 of sequential calls, calls/s with ``call_async`` keeping
--concurrency in flight, the CPU each service process spent per sequential call (from /proc: what
the service's own path costs, whatever else the machine runs), and the ratios of the real call to
the empty one (issue 20 goal 4: p50 ≤ 1.5×). The sequential calls alternate between the two RPCs
(empty, real, real, empty, …) so that both see the same machine load: on a machine shared with
other work the ratio is trustworthy where the absolute figures are not. bench/cluster_compare.py
runs it on a three-node cluster with each queue type.
"""
from __future__ import annotations

import eventlet

eventlet.monkey_patch()

import argparse  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from nameko.standalone.rpc import ClusterRpcProxy  # noqa: E402

from bench import empty_service  # noqa: E402
from bench._measure import cpu_seconds, percentile  # noqa: E402
from bench._people import generated_passers  # noqa: E402
from swms.queues import QUEUE_TYPES, broker_urls  # noqa: E402
from tools.localstack import NAMEKO, LocalStack  # noqa: E402

SERVICES = ("identity", "profile", "registration", "review", "certificate", "notification")


def sequential_pair(first, second, calls: int, make_first, make_second, pids) -> tuple[list, list, list]:
    """``calls`` sequential calls of each, alternating which goes first; the latencies of each and
    the CPU seconds each process in ``pids`` spent meanwhile."""
    for _ in range(50):  # warm up connections and caches
        first(*make_first())
        second(*make_second())
    latencies: tuple[list, list] = ([], [])
    cpu_before = [cpu_seconds(pid) for pid in pids]
    for index in range(calls):
        order = ((0, first, make_first), (1, second, make_second))
        for slot, call, make_args in (order if index % 2 == 0 else order[::-1]):
            args = make_args()
            started = time.perf_counter()
            call(*args)
            latencies[slot].append((time.perf_counter() - started) * 1000)
    cpu = [cpu_seconds(pid) - before for pid, before in zip(pids, cpu_before)]
    return latencies[0], latencies[1], cpu


def throughput(call, calls: int, concurrency: int, make_args) -> float:
    started = time.perf_counter()
    in_flight = []
    for _ in range(calls):
        in_flight.append(call.call_async(*make_args()))
        if len(in_flight) >= concurrency:
            in_flight.pop(0).result()
    for reply in in_flight:
        reply.result()
    return calls / (time.perf_counter() - started)


def create_database(admin_url: str) -> str:
    import uuid

    from sqlalchemy import create_engine, text
    name = f"swms_bench_rpc_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def drop_database(admin_url: str, url: str) -> None:
    from sqlalchemy import create_engine, text

    from swms.db import dispose_engine
    dispose_engine(url)
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))
    admin.dispose()


def run_backend(db_url: str, passers: list[dict], args) -> dict:
    from sqlalchemy.orm import sessionmaker

    from services.identity import domain
    from swms.db import engine_for
    from swms.devkeys import ensure_dev_keys
    from swms.migrations import upgrade

    workdir = Path(tempfile.mkdtemp(prefix="swms-bench-"))
    db_url = db_url or f"sqlite:///{workdir / 'identity.db'}"
    stack = LocalStack(workdir=workdir, amqp_uri=args.amqp_uri, queue_type=args.queue_type,
                       db_urls={name: db_url for name in SERVICES})
    upgrade("identity", db_url)
    with sessionmaker(engine_for(db_url))() as session:
        domain.import_passers(session, passers)
        session.commit()
    ensure_dev_keys(stack.keys_dir)
    identity = stack.start_service("identity")
    empty = stack._spawn("bench_empty", empty_service.command(NAMEKO, workdir, args.amqp_uri, args.queue_type))
    try:
        with ClusterRpcProxy({"AMQP_URI": args.amqp_uri}, timeout=30) as cluster:
            deadline = time.monotonic() + 60
            while True:
                try:
                    cluster.identity.health(), cluster.bench_empty.ping()
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
            rng = random.Random(1)

            def lookup_args():
                row = passers[rng.randrange(len(passers))]
                return ({"name": row["name"], "id_number": row["id_number"]},)

            empty_ms, lookup_ms, (empty_cpu, identity_cpu) = sequential_pair(
                cluster.bench_empty.ping, cluster.identity.check_passer, args.calls, lambda: (), lookup_args,
                [empty.pid, identity.pid])
            empty_rate = throughput(cluster.bench_empty.ping, args.calls, args.concurrency, lambda: ())
            lookup_rate = throughput(cluster.identity.check_passer, args.calls, args.concurrency, lookup_args)
    finally:
        stack.stop()
        subprocess.run(["rm", "-rf", str(workdir)], check=False)
    return {"empty": {"p50_ms": statistics.median(empty_ms), "p99_ms": percentile(empty_ms, 0.99),
                      "calls_per_s": empty_rate, "cpu_ms": empty_cpu * 1000 / args.calls},
            "lookup": {"p50_ms": statistics.median(lookup_ms), "p99_ms": percentile(lookup_ms, 0.99),
                       "calls_per_s": lookup_rate, "cpu_ms": identity_cpu * 1000 / args.calls}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--passers", type=int, default=20000)
    parser.add_argument("--backends", default="sqlite,postgresql",
                        help="comma-separated: sqlite, postgresql (each measured in turn, in this run)")
    parser.add_argument("--db-url", help="identity's database for the postgresql backend (default: a fresh one)")
    parser.add_argument("--pg-url", default=os.environ.get(
        "SWMS_TEST_PG_URL", "postgresql+psycopg2://postgres:postgres@127.0.0.1:5432/postgres"),
        help="a PostgreSQL URL allowed to CREATE DATABASE")
    parser.add_argument("--amqp-uri", default=os.environ.get("AMQP_URI", "pyamqp://guest:guest@127.0.0.1:5672/"),
                        help="one broker, or a cluster's brokers separated by ';'")
    parser.add_argument("--queue-type", choices=QUEUE_TYPES, default="classic")
    parser.add_argument("--management-url", default=os.environ.get("RABBIT_MANAGEMENT_URL", "http://127.0.0.1:15672"),
                        help='RabbitMQ management API: the run gets a virtual host of its own, so that an identity or '
                             'empty service of another run on the same broker cannot answer its calls ("": use '
                             "--amqp-uri's virtual host as it is)")
    args = parser.parse_args()
    from bench.registration_burst import own_vhost
    args.amqp_uri, remove_vhost = own_vhost(args.amqp_uri, args.management_url)
    try:
        measure_all(args)
    finally:
        remove_vhost()


def measure_all(args) -> None:

    passers = generated_passers(args.passers)
    results = {}
    for backend in args.backends.split(","):
        if backend == "sqlite":
            results[backend] = run_backend("", passers, args)
        elif backend == "postgresql":
            url = args.db_url or create_database(args.pg_url)
            try:
                results[backend] = run_backend(url, passers, args)
            finally:
                if not args.db_url:
                    drop_database(args.pg_url, url)
        else:
            raise SystemExit(f"unknown backend {backend!r}")

    print(f"RPC benchmark: {args.calls} calls each (sequential, the two RPCs alternating), {args.concurrency} "
          f"in flight for throughput, {args.passers} passers in identity, {args.queue_type} queues on "
          f"{len(broker_urls(args.amqp_uri))} broker node(s)")
    for backend, figures in results.items():
        empty, lookup = figures["empty"], figures["lookup"]
        print(f"-- identity on {backend}")
        print(f"{'call':32} {'p50 ms':>8} {'p99 ms':>8} {'calls/s':>9} {'CPU ms/call':>12}")
        for name, row in (("empty RPC (baseline)", empty), ("identity.check_passer", lookup)):
            print(f"{name:32} {row['p50_ms']:8.2f} {row['p99_ms']:8.2f} {row['calls_per_s']:9.0f} "
                  f"{row['cpu_ms']:12.2f}")
        print(f"ratio check_passer/empty ({backend}): p50 ×{lookup['p50_ms'] / empty['p50_ms']:.2f}, "
              f"throughput ×{lookup['calls_per_s'] / empty['calls_per_s']:.2f}, "
              f"service CPU per call ×{lookup['cpu_ms'] / max(empty['cpu_ms'], 1e-9):.2f}")


if __name__ == "__main__":
    main()
