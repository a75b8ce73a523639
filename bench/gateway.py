"""The same calls straight over RPC and through the HTTP gateway, in one run.

  .venv/bin/python -m bench.gateway [--calls 1000] [--concurrency 100] [--passers 2000] [--rounds 2]

Two calls: ``identity.check_passer`` (POST /api/v1/passers/check) and the public verification by
QR token (``certificate.verify_certificate``, GET /api/v1/public/verifications?t=). identity and
certificate run as ``nameko run`` processes on SQLite files, the gateway as ``python -m
services.gateway`` with its rate limits lifted (one client address here). The client runs here,
in one asyncio loop:

* direct: the gateway's own aio-pika RPC client (services/gateway/rpc_client.py) in this process,
  sending what the gateway sends (same payload, same context: client_ip, call id). It is the fair
  "direct async" baseline: the same AMQP library and wire format, without HTTP.
* HTTP: httpx.AsyncClient, one per concurrent client (each with its keep-alive connection).

Latency: sequential calls, direct and HTTP alternating call by call (so both see the same machine
load); p50 and p99. Throughput: --concurrency clients each looping until --calls calls are done,
direct and HTTP alternating per round; the best round of each is printed (with p99 under load).
The CPU per call of the client (this process) for each way, and of the gateway per HTTP call (/proc), are
printed too: they depend much less on what else the machine runs than the rates do.

Goals (printed, not asserted): HTTP p50 <= 1.3 x direct p50; HTTP throughput at 100 clients >=
0.8 x direct. Exits non-zero when any answer is wrong (status, payload) or missing.
"""
from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

from bench._measure import CpuLedger, percentile
from bench._people import generated_passers
from services.certificate import tokens
from services.gateway.rpc_client import RpcClient
from swms.migrations import upgrade
from tools.localstack import PYTHON, REPO_ROOT, LocalStack, wait_until

NUMBER = "1120262000001"
# All clients here share one address: the gateway's own limits lifted. Keep-alive longer than
# httpx's pool keeps idle connections (5 s), so the server never closes one the client is reusing.
GATEWAY_ENV = {"GATEWAY_RATE_PER_ADDRESS": "1000000", "GATEWAY_BURST_PER_ADDRESS": "1000000",
               "GATEWAY_RATE_TOTAL": "1000000", "GATEWAY_BURST_TOTAL": "1000000", "GATEWAY_KEEP_ALIVE_SECONDS": "75"}
# certificate's own verification limits (per address, by number in all), lifted for the same reason
CERT_LIMITS_LIFTED = {"CERT_VERIFY_MAX_PER_ADDRESS": "100000", "CERT_VERIFY_MAX_BY_NUMBER": "10000000",
                      "CERT_VERIFY_WINDOW_SECONDS": "1"}


class Failures(Exception):
    pass


def seed_certificate(db_url: str) -> str:
    """One issued certificate in certificate's database, and the QR token its PDF would carry."""
    engine = create_engine(db_url)
    today, now = dt.date.today(), dt.datetime.now(dt.UTC).replace(tzinfo=None)
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO certificates (certificate_number, application_id, person_id, kind, status, holder_name,"
            " id_number, gender, level, region_code, unit_name, photo_missing, authority, valid_from, valid_until,"
            " issued_on, issued_at, object_key, created_at) VALUES (:n, :a, :p, 'first_registration', 'issued',"
            " '李明华', '11010519900307123X', '男', '社会工作师', '110105', '阳光社工', 0, '北京市民政局', :f, :u,"
            " :f, :t, :k, :t)"),
            {"n": NUMBER, "a": str(uuid.uuid4()), "p": str(uuid.uuid4()), "f": today,
             "u": today.replace(year=today.year + 3), "t": now, "k": f"certificates/{NUMBER}.pdf"})
        pem = connection.execute(text("SELECT pem FROM dev_key_material WHERE name = 'qr_token_key'")).scalar_one()
    engine.dispose()
    return tokens.make_token(pem.encode(), NUMBER)


class Call:
    """One kind of call, both ways, with the check that the answer is right."""

    def __init__(self, name, rpc, http, make_payload, check):
        self.name, self.rpc, self.http, self.make_payload, self.check = name, rpc, http, make_payload, check


async def timed(coroutine) -> float:
    started = time.perf_counter()
    await coroutine
    return (time.perf_counter() - started) * 1000


async def throughput(make_call, calls: int, concurrency: int) -> tuple[float, float, float]:
    """calls/s, p99 ms and this (client) process's CPU ms per call, with ``concurrency`` clients
    looping until ``calls`` are done."""
    remaining = iter(range(calls))
    latencies: list[float] = []

    async def client(number: int):
        for _ in remaining:
            latencies.append(await timed(make_call(number)))

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(client(number) for number in range(concurrency)))
    return (calls / (time.perf_counter() - started), percentile(latencies, 0.99),
            (time.process_time() - cpu) * 1000 / calls)


async def run(args, base_url: str, amqp_uri: str, passers, token: str, ledger: CpuLedger) -> dict:
    rpc = RpcClient(amqp_uri, timeout=30)
    await rpc.start()
    await asyncio.to_thread(wait_until, lambda: rpc.ready, 30, 0.1, "the bench's AMQP connection")
    # One AsyncClient (one keep-alive connection) per concurrent client, as separate browsers or
    # apps would be: one shared pool of 100 connections costs httpx several times the CPU per call.
    one = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    clients = [httpx.AsyncClient(base_url=base_url, timeout=30, limits=one) for _ in range(args.concurrency)]
    context = {"client_ip": "127.0.0.1", "call_id_stack": ["bench-gateway"]}
    counter = iter(range(10**9))
    failures: list[str] = []

    def passer_payload():
        row = passers[next(counter) % len(passers)]
        return {"name": row["name"], "id_number": row["id_number"]}

    management_numbers = {row["id_number"]: row["management_number"] for row in passers}

    def check_passer_answer(payload, result):
        return result.get("management_number") == management_numbers[payload["id_number"]]

    calls = [
        Call("identity.check_passer", "identity.check_passer",
             lambda http, payload: http.post("/api/v1/passers/check", json=payload), passer_payload,
             check_passer_answer),
        Call("public verification (QR token)", "certificate.verify_certificate",
             lambda http, payload: http.get("/api/v1/public/verifications", params={"t": payload["token"]}),
             lambda: {"token": token},
             lambda payload, result: result.get("status") == "current" and result.get("certificate_number") == NUMBER),
    ]

    def direct(call: Call):
        async def go():
            payload = call.make_payload()
            result = await rpc.call(call.rpc, payload, context)
            if not call.check(payload, result):
                failures.append(f"{call.name} direct: {result}")
        return go()

    def over_http(call: Call, number: int = 0):
        async def go():
            payload = call.make_payload()
            response = await call.http(clients[number], payload)
            if response.status_code != 200 or not call.check(payload, response.json()):
                failures.append(f"{call.name} HTTP: {response.status_code} {response.text[:300]}")
        return go()

    figures = {}
    try:
        for call in calls:
            for _ in range(50):   # warm-up: connections, caches, the services' first queries
                await direct(call)
                await over_http(call)
            sequential = {"direct": [], "http": []}
            for _ in range(args.calls):   # alternating, so both see the same load
                sequential["direct"].append(await timed(direct(call)))
                sequential["http"].append(await timed(over_http(call)))
            rounds = {"direct": [], "http": []}
            cpu = []
            for _ in range(args.rounds):
                rounds["direct"].append(await throughput(lambda number: direct(call), args.calls, args.concurrency))
                ledger.start()
                rounds["http"].append(await throughput(lambda number: over_http(call, number), args.calls,
                                                       args.concurrency))
                cpu.append(ledger.stop()["gateway"] * 1000 / args.calls)
            figures[call.name] = {
                way: {"p50": statistics.median(sequential[way]), "p99": percentile(sequential[way], 0.99),
                      "rate": max(rate for rate, _, _ in rounds[way]),
                      "p99_load": min(p99 for _, p99, _ in rounds[way]),
                      "client_cpu_ms": min(cpu for _, _, cpu in rounds[way])}
                for way in ("direct", "http")}
            figures[call.name]["gateway_cpu_ms"] = min(cpu)
    finally:
        for http in clients:
            await http.aclose()
        await rpc.close()
    if failures:
        raise Failures(f"{len(failures)} wrong answers, first: {failures[:3]}")
    return figures


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=1000, help="calls per measurement")
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--passers", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2, help="throughput rounds per way (best is printed)")
    args = parser.parse_args()
    amqp_uri = os.environ.get("AMQP_URI", "pyamqp://guest:guest@127.0.0.1:5672/")
    # A virtual host of this run's own: its services must not answer a demo's or a deployment's
    # calls on the same broker ('' in RABBIT_MANAGEMENT_URL: $AMQP_URI's virtual host as it is).
    from bench.registration_burst import own_vhost
    amqp_uri, remove_vhost = own_vhost(amqp_uri, os.environ.get("RABBIT_MANAGEMENT_URL", "http://127.0.0.1:15672"))

    workdir = Path(tempfile.mkdtemp(prefix="swms-bench-gateway-"))
    stack = LocalStack(workdir=workdir, amqp_uri=amqp_uri)
    try:
        stack.start_infrastructure()
        for service in ("identity", "certificate"):
            upgrade(service, stack.db_urls[service])
        passers = generated_passers(args.passers)
        registry = workdir / "passers.csv"
        with open(registry, "w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(passers[0]))
            writer.writeheader()
            writer.writerows(passers)
        subprocess.run([PYTHON, "-m", "services.identity.cli", "import-passers", str(registry)],
                       env=stack.environment(), cwd=REPO_ROOT, check=True, capture_output=True)
        stack.start_service("identity")
        stack.start_service("certificate", extra_env=CERT_LIMITS_LIFTED)
        base_url = stack.start_gateway(GATEWAY_ENV)

        async def services_answer():
            rpc = RpcClient(amqp_uri, timeout=3)
            await rpc.start()
            try:
                deadline = time.monotonic() + 120
                while True:
                    try:
                        await rpc.call("identity.health", None, {})
                        await rpc.call("certificate.health", None, {})
                        return
                    except Exception:
                        if time.monotonic() > deadline:
                            raise
                        for name in ("identity", "certificate"):
                            stack.check_alive(name)
                        await asyncio.sleep(0.5)
            finally:
                await rpc.close()

        asyncio.run(services_answer())
        token = seed_certificate(stack.db_urls["certificate"])
        gateway_pid = stack.processes["gateway"].pid
        ledger = CpuLedger({"gateway": lambda pid, command: pid == gateway_pid})
        figures = asyncio.run(run(args, base_url, amqp_uri, passers, token, ledger))
    except Failures as failure:
        print(f"FAILED: {failure}")
        return 1
    finally:
        stack.stop()
        remove_vhost()
        shutil.rmtree(workdir, ignore_errors=True)

    load = os.getloadavg()
    print(f"Gateway benchmark: {args.calls} calls per measurement, {args.concurrency} concurrent clients for "
          f"throughput (best of {args.rounds} rounds), {args.passers} passers; {os.cpu_count()} CPUs, load average "
          f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (the machine is shared: figures taken under that load)")
    print("direct = the gateway's own aio-pika RPC client in this process; HTTP = httpx.AsyncClient → gateway → RPC")
    print(f"{'call':32} {'path':7} {'p50 ms':>8} {'p99 ms':>8} {'calls/s':>9} {'p99 ms @' + str(args.concurrency):>12} "
          f"{'client CPU ms/call':>19}")
    for name, ways in figures.items():
        for way, label in (("direct", "direct"), ("http", "HTTP")):
            f = ways[way]
            print(f"{name if way == 'direct' else '':32} {label:7} {f['p50']:8.2f} {f['p99']:8.2f} {f['rate']:9.0f} "
                  f"{f['p99_load']:12.1f} {f['client_cpu_ms']:19.2f}")
    for name, ways in figures.items():
        latency = ways["http"]["p50"] / ways["direct"]["p50"]
        rate = ways["http"]["rate"] / ways["direct"]["rate"]
        print(f"{name}: HTTP/direct p50 ×{latency:.2f} (goal ≤ 1.30: {'met' if latency <= 1.3 else 'NOT met'}), "
              f"throughput ×{rate:.2f} (goal ≥ 0.80: {'met' if rate >= 0.8 else 'NOT met'}); "
              f"gateway CPU {ways['gateway_cpu_ms']:.2f} ms per HTTP call")
    print("checks: every answer right (status 200, the passer's management number, the certificate current): OK")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
