"""RPC latency and throughput: an empty Nameko RPC vs identity's sign-up lookup, in one run.

  .venv/bin/python -m bench.rpc [--calls 2000] [--concurrency 50] [--passers 20000]
      [--amqp-uri "pyamqp://…:5701/;pyamqp://…:5702/;…"] [--queue-type classic|quorum]

Both services run as separate ``nameko run`` processes on the local RabbitMQ (or the brokers of
--amqp-uri, default $AMQP_URI; a ;-list names a cluster's nodes), their RPC queues of --queue-type;
identity uses a SQLite file seeded with generated passers (PostgreSQL with --db-url). The client
runs here. Prints p50/p99 of sequential calls, calls/s with ``call_async`` keeping --concurrency in
flight, and the ratio of the real call to the empty one. bench/cluster_compare.py runs it on a
three-node cluster with each queue type.
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
from bench._measure import percentile  # noqa: E402
from bench._people import generated_passers  # noqa: E402
from swms.queues import QUEUE_TYPES, broker_urls  # noqa: E402
from tools.localstack import NAMEKO, LocalStack  # noqa: E402


def measure(call, calls: int, concurrency: int, make_args) -> dict[str, float]:
    for _ in range(50):  # warm up connections and caches
        call(*make_args())
    latencies = []
    for _ in range(calls):
        args = make_args()
        started = time.perf_counter()
        call(*args)
        latencies.append((time.perf_counter() - started) * 1000)
    started = time.perf_counter()
    in_flight = []
    for _ in range(calls):
        in_flight.append(call.call_async(*make_args()))
        if len(in_flight) >= concurrency:
            in_flight.pop(0).result()
    for reply in in_flight:
        reply.result()
    elapsed = time.perf_counter() - started
    return {"p50_ms": statistics.median(latencies), "p99_ms": percentile(latencies, 0.99),
            "calls_per_s": calls / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--passers", type=int, default=20000)
    parser.add_argument("--db-url", help="identity database (default: a fresh SQLite file)")
    parser.add_argument("--amqp-uri", default=os.environ.get("AMQP_URI", "pyamqp://guest:guest@127.0.0.1:5672/"),
                        help="one broker, or a cluster's brokers separated by ';'")
    parser.add_argument("--queue-type", choices=QUEUE_TYPES, default="classic")
    args = parser.parse_args()
    amqp_uri = args.amqp_uri

    from sqlalchemy.orm import sessionmaker

    from services.identity import domain
    from swms.db import engine_for
    from swms.migrations import upgrade

    workdir = Path(tempfile.mkdtemp(prefix="swms-bench-"))
    db_url = args.db_url or f"sqlite:///{workdir / 'identity.db'}"
    stack = LocalStack(workdir=workdir, amqp_uri=amqp_uri, queue_type=args.queue_type,
                       db_urls={name: db_url for name in ("identity", "profile", "registration", "review",
                                                          "certificate", "notification")})
    upgrade("identity", db_url)
    passers = generated_passers(args.passers)
    with sessionmaker(engine_for(db_url))() as session:
        domain.import_passers(session, passers)
        session.commit()
    from swms.devkeys import ensure_dev_keys
    ensure_dev_keys(stack.keys_dir)
    stack.start_service("identity")
    stack._spawn("bench_empty", empty_service.command(NAMEKO, workdir, amqp_uri, args.queue_type))
    try:
        with ClusterRpcProxy({"AMQP_URI": amqp_uri}, timeout=30) as cluster:
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
            empty = measure(cluster.bench_empty.ping, args.calls, args.concurrency, lambda: ())

            def lookup_args():
                row = passers[rng.randrange(len(passers))]
                return ({"name": row["name"], "id_number": row["id_number"]},)

            lookup = measure(cluster.identity.check_passer, args.calls, args.concurrency, lookup_args)
    finally:
        stack.stop()
        subprocess.run(["rm", "-rf", str(workdir)], check=False)

    print(f"RPC benchmark: {args.calls} calls each, {args.concurrency} in flight for throughput, "
          f"{args.passers} passers in identity ({db_url.split(':')[0]}), {args.queue_type} queues on "
          f"{len(broker_urls(amqp_uri))} broker node(s)")
    print(f"{'call':32} {'p50 ms':>8} {'p99 ms':>8} {'calls/s':>9}")
    for name, figures in (("empty RPC (baseline)", empty), ("identity.check_passer", lookup)):
        print(f"{name:32} {figures['p50_ms']:8.2f} {figures['p99_ms']:8.2f} {figures['calls_per_s']:9.0f}")
    print(f"ratio check_passer/empty: p50 ×{lookup['p50_ms'] / empty['p50_ms']:.2f}, "
          f"throughput ×{lookup['calls_per_s'] / empty['calls_per_s']:.2f}")


if __name__ == "__main__":
    main()
