"""Quorum vs classic queues on a three-node RabbitMQ cluster, in one run: the empty RPC (bench/rpc.py)
and the re-registration burst (bench/registration_burst.py), each with both queue types.

  .venv/bin/python -m bench.cluster_compare [--rpc-calls 500] [--submissions 500] [--clients 10]
      [--pg-url postgresql+psycopg2://postgres:postgres@127.0.0.1:5432/postgres]

Starts a cluster of its own on loopback (tools/rabbitmq_cluster.py: three nodes, free ports, own
data directories; the machine's broker is not used), gives each of the four runs a virtual host of
its own (a queue's type cannot change, and each run declares the same queue names), passes every
node to the benchmarks (AMQP_URI as a ;-list) and prints their figures side by side. Clients and
services connect to the first node, so quorum queue leaders are all there and their followers on
the other two: every message is written on all three nodes before it is confirmed. Tears the
cluster down at the end.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._measure import cpu_seconds
from swms.config import REPO_ROOT
from tools.rabbitmq_cluster import LoopbackCluster



def run(module: str, arguments: list[str]) -> str:
    result = subprocess.run([sys.executable, "-m", module, *arguments], cwd=REPO_ROOT, capture_output=True,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, timeout=3600)
    if result.returncode:
        raise SystemExit(f"{module} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result.stdout


def row(output: str, label: str) -> list[float]:
    """The numbers of the table row that starts with ``label``."""
    for line in output.splitlines():
        if line.startswith(label):
            return [float(n) for n in line[len(label):].split()]
    raise SystemExit(f"no line {label!r} in:\n{output[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rpc-calls", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--submissions", type=int, default=500)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--pg-url", default=os.environ.get(
        "SWMS_TEST_PG_URL", "postgresql+psycopg2://postgres:postgres@127.0.0.1:5432/postgres"))
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="swms-cluster-bench-")) / "nodes"
    figures: dict[str, dict[str, list[float]]] = {}
    broker_ms: dict[str, float] = {}
    started = time.monotonic()
    with LoopbackCluster(scratch) as cluster:
        print(f"three-node cluster up in {time.monotonic() - started:.0f} s (AMQP on 127.0.0.1:"
              f"{cluster.port(1)}-{cluster.port(3)})", flush=True)
        for queue_type in ("classic", "quorum"):
            cluster.add_vhost(f"rpc-{queue_type}")
            cpu_before = sum(cpu_seconds(pid) for pid in cluster.beam_pids())
            output = run("bench.rpc", ["--calls", str(args.rpc_calls), "--concurrency", str(args.concurrency),
                                       "--passers", "500", "--amqp-uri", cluster.amqp_uri(f"rpc-{queue_type}"),
                                       "--queue-type", queue_type, "--backends", "sqlite",
                                       "--management-url", ""])
            # bench.rpc makes 50 warm-up + calls sequential + calls in flight, for each of its two RPCs
            calls = 2 * (50 + 2 * args.rpc_calls)
            broker_ms[queue_type] = (sum(cpu_seconds(pid) for pid in cluster.beam_pids()) - cpu_before) * 1000 / calls
            print(output, flush=True)
            figures.setdefault(queue_type, {})["empty RPC"] = row(output, "empty RPC (baseline)")
            figures[queue_type]["identity.check_passer"] = row(output, "identity.check_passer")
        for queue_type in ("classic", "quorum"):
            cluster.add_vhost(f"burst-{queue_type}")
            output = run("bench.registration_burst", [
                "--submissions", str(args.submissions), "--empty-calls", str(args.submissions),
                "--clients", str(args.clients), "--pg-url", args.pg_url, "--management-url", "",
                "--amqp-uri", cluster.amqp_uri(f"burst-{queue_type}"), "--queue-type", queue_type])
            print(output, flush=True)
            figures[queue_type]["burst: empty RPC"] = row(output, "empty RPC (baseline, same clients)")
            figures[queue_type]["burst: submit_re_registration"] = row(output, "registration.submit_re_registration")

    print(f"\nQuorum vs classic queues on a three-node cluster (one run, {time.monotonic() - started:.0f} s)")
    print(f"{'call':34} {'classic calls/s':>16} {'quorum calls/s':>15} {'quorum/classic':>15} "
          f"{'classic p50 ms':>15} {'quorum p50 ms':>14}")
    for label in figures["classic"]:
        classic, quorum = figures["classic"][label], figures["quorum"][label]
        # bench.rpc rows: p50, p99, calls/s; registration_burst rows: calls, calls/s, p50, p99
        rate, p50 = (2, 0) if not label.startswith("burst") else (1, 2)
        print(f"{label:34} {classic[rate]:16.0f} {quorum[rate]:15.0f} {quorum[rate] / classic[rate]:15.2f} "
              f"{classic[p50]:15.1f} {quorum[p50]:14.1f}")
    print(f"CPU of the three RabbitMQ nodes per RPC (request + reply; bench.rpc runs): classic "
          f"{broker_ms['classic']:.2f} ms, quorum {broker_ms['quorum']:.2f} ms "
          f"(×{broker_ms['quorum'] / broker_ms['classic']:.2f}; wall-clock rates depend on what else runs, CPU per call does not)")


if __name__ == "__main__":
    main()
