"""Exam-passer registry at national scale: import N generated passers into PostgreSQL, then time
sign-up verification lookups. Goal (issue 3): 2,000,000 imported in ≤ 60 s, lookup p99 ≤ 5 ms.

  .venv/bin/python -m bench.identity_registry [--passers 2000000] [--lookups 20000] [--rpc-calls 2000]
                                              [--pg-url postgresql+psycopg2://postgres:postgres@127.0.0.1:5432/postgres]

What is measured, all in one run against a fresh database (dropped at the end):

1. the import exactly as operators run it: ``python -m services.identity.cli import-passers FILE``
   in its own process (read + decode + check every row, COPY into a temporary table, set-based
   merge, commit), then the same file again (idempotent: everything unchanged);
2. sign-up verification as the service does it (a session per call, ``domain.find_passer``: one
   indexed SELECT and the name check) for random registered people and for unknown ID numbers,
   next to a bare ``SELECT 1`` on the same engine (the floor of any database round trip);
3. if RabbitMQ answers: ``identity.check_passer`` over RPC against the running service, next to
   an empty Nameko RPC (bench/empty_service.py).
"""
from __future__ import annotations

import eventlet

eventlet.monkey_patch()  # the service's own conditions (green psycopg2), and RPC below

import argparse  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import resource  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.orm import sessionmaker  # noqa: E402

from bench._measure import percentile  # noqa: E402
from swms.config import REPO_ROOT  # noqa: E402
from swms.idcard import check_character  # noqa: E402

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华玉萍红娥玲芬燕彩春菊兰凤洁梅琳素云莲真环雪荣爱妹霞香月莺媛艳瑞凡佳嘉琼勤珍贞莉桂娣叶璧璐娅琦晶妍茜秋珊莎锦黛青倩婷姣婉娴瑾颖露瑶怡婵雁蓓纨仪荷丹蓉眉君琴蕊薇菁梦岚苑婕馨瑗琰韵融园艺咏卿聪澜纯毓悦昭冰爽琬茗羽希宁欣飘育滢馥筠柔竹霭凝晓欢霄枫芸菲寒伊亚宜可姬舒影荔枝思丽"
LEVELS = ("助理社会工作师", "社会工作师", "高级社会工作师")
PROVINCES = ("11", "12", "13", "14", "15", "21", "22", "23", "31", "32", "33", "34", "35", "36", "37", "41", "42",
             "43", "44", "45", "46", "50", "51", "52", "53", "54", "61", "62", "63", "64", "65")


def county_codes() -> list[str]:
    """300 county-shaped codes spread over the provinces (shape is all the validator checks)."""
    return [f"{province}{city:02d}{county:02d}" for province in PROVINCES for city in (1, 2) for county in range(1, 6)][:300]


def write_registry(path: Path, count: int, seed: int = 7) -> list[tuple[str, str]]:
    """The exam authority's CSV with ``count`` distinct people; returns (name, id) of a sample.

    ID numbers are unique by construction: person i gets county i mod C, birth date from
    (i div C) mod D and the sequence number from i div (C·D)."""
    import datetime as dt

    rng = random.Random(seed)
    counties = county_codes()
    first_day = 7300   # an offset into the range of birth dates (1960-01-01 + 15,700 days ≈ 2003)
    base = dt.date(1960, 1, 1)
    days = 15_700
    year = dt.date.today().year
    sample: list[tuple[str, str]] = []
    names = [rng.choice(SURNAMES) + "".join(rng.choice(GIVEN) for _ in range(rng.choice((1, 2))))
             for _ in range(9973)]
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write("name,id_number,level,management_number,exam_year,province\n")
        lines = []
        for i in range(count):
            county = counties[i % len(counties)]
            birth = base + dt.timedelta(days=(i // len(counties) * 7919 + first_day) % days)
            sequence = (i // (len(counties) * days)) % 1000
            first17 = f"{county}{birth:%Y%m%d}{sequence:03d}"
            number = first17 + check_character(first17)
            name = names[i % len(names)]
            level = LEVELS[0] if i % 10 < 6 else LEVELS[1] if i % 10 < 9 else LEVELS[2]
            exam_year = year - i % 15
            lines.append(f"{name},{number},{level},{exam_year}{county[:2]}{i:012d},{exam_year},{county[:2]}\n")
            if len(lines) == 100_000:
                handle.writelines(lines)
                lines.clear()
            if i % max(1, count // 50_000) == 0:
                sample.append((name, number))
        handle.writelines(lines)
    return sample


def read_sample(path: Path, every: int = 40) -> list[tuple[str, str]]:
    with open(path, encoding="utf-8") as handle:
        next(handle)
        return [tuple(line.split(",", 2)[:2]) for index, line in enumerate(handle) if index % every == 0]


class Samples(list):
    cpu_ms: float = 0.0   # this process's CPU time per call: barely moved by other load on the machine


def figures(samples_ms: Samples) -> str:
    return (f"p50 {statistics.median(samples_ms):6.2f} ms   p99 {percentile(samples_ms, 0.99):6.2f} ms   "
            f"max {max(samples_ms):7.2f} ms   client CPU {samples_ms.cpu_ms:5.2f} ms/call   ({len(samples_ms)} calls)")


def timed(call, count: int, make_args) -> Samples:
    for _ in range(min(200, count)):   # warm up connections, caches, the plan cache
        call(*make_args())
    samples = Samples()
    cpu = time.process_time()
    for _ in range(count):
        args = make_args()
        started = time.perf_counter()
        call(*args)
        samples.append((time.perf_counter() - started) * 1000)
    samples.cpu_ms = (time.process_time() - cpu) * 1000 / count
    return samples


def broker_answers(amqp_uri: str) -> bool:
    url = urlsplit(amqp_uri.replace("pyamqp://", "amqp://"))
    try:
        with socket.create_connection((url.hostname or "127.0.0.1", url.port or 5672), timeout=2):
            return True
    except OSError:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--passers", type=int, default=2_000_000)
    parser.add_argument("--lookups", type=int, default=20_000)
    parser.add_argument("--rpc-calls", type=int, default=2_000, help="0: skip the RPC part")
    parser.add_argument("--pg-url", default=os.environ.get(
        "SWMS_TEST_PG_URL", "postgresql+psycopg2://postgres:postgres@127.0.0.1:5432/postgres"),
        help="a PostgreSQL URL allowed to CREATE DATABASE")
    parser.add_argument("--keep", action="store_true", help="keep the database (its URL is printed)")
    parser.add_argument("--csv", help="generated file to reuse (written there first if missing)")
    args = parser.parse_args()
    amqp_uri = os.environ.get("AMQP_URI", "pyamqp://guest:guest@127.0.0.1:5672/")

    from services.identity import domain
    from swms.db import engine_for
    from swms.devkeys import ensure_dev_keys
    from swms.errors import SwmsError
    from swms.migrations import upgrade

    workdir = Path(tempfile.mkdtemp(prefix="swms-bench-identity-"))
    keys = ensure_dev_keys(workdir / "keys")
    admin = create_engine(args.pg_url, isolation_level="AUTOCOMMIT")
    database = f"swms_bench_identity_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{database}"'))
        server = conn.execute(text("SHOW server_version")).scalar()
    db_url = args.pg_url.rsplit("/", 1)[0] + f"/{database}"
    print(f"identity registry benchmark: PostgreSQL {server}, {os.cpu_count()} CPUs, database {database}, "
          f"load average {os.getloadavg()[0]:.1f} at start (other work on this machine skews every figure)")
    try:
        upgrade("identity", db_url)
        csv_path = Path(args.csv) if args.csv else workdir / "passers.csv"
        started = time.perf_counter()
        if csv_path.exists():
            sample = read_sample(csv_path)
            print(f"reusing {csv_path} ({csv_path.stat().st_size / 1e6:.0f} MB)")
        else:
            sample = write_registry(csv_path, args.passers)
            print(f"generated {args.passers:,} passers ({csv_path.stat().st_size / 1e6:.0f} MB CSV) in "
                  f"{time.perf_counter() - started:.1f} s (not counted)")

        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), IDENTITY_DB_URL=db_url,
                   AUTH_PRIVATE_KEY_FILE=str(keys / "token-signing.pem"))
        for attempt in ("import", "re-import (same file)"):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            result = subprocess.run([sys.executable, "-m", "services.identity.cli", "import-passers", str(csv_path)],
                                    cwd=REPO_ROOT, env=env, capture_output=True, text=True)
            if result.returncode != 0:
                raise SystemExit(f"import failed ({result.returncode}):\n{result.stdout}\n{result.stderr[-3000:]}")
            elapsed = time.perf_counter() - started
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            summary = " | ".join(line.strip() for line in result.stdout.splitlines()[:2])
            print(f"{attempt:22} {elapsed:6.1f} s wall, {cpu:6.1f} s CPU in the CLI and its workers "
                  f"(PostgreSQL's own CPU not counted)  ({args.passers / elapsed:,.0f} rows/s)\n    {summary}")

        engine = engine_for(db_url)
        sessions = sessionmaker(engine)
        rng = random.Random(3)
        misses = [first17 + check_character(first17) for first17 in
                  (f"11010519{rng.randint(10, 99)}0{rng.randint(1, 9)}1{rng.randint(0, 9)}"
                   f"{rng.randint(100, 999)}" for _ in range(1000))]

        def select_one():
            with sessions() as session:
                session.execute(text("SELECT 1")).scalar()

        def verify(name, number):
            with sessions() as session:
                try:
                    domain.find_passer(session, name, number)
                except SwmsError:
                    pass

        floor = timed(select_one, args.lookups, lambda: ())
        hits = timed(verify, args.lookups, lambda: sample[rng.randrange(len(sample))])
        unknown = timed(verify, min(args.lookups, 5000), lambda: ("张伟", misses[rng.randrange(len(misses))]))
        print(f"bare SELECT 1 (baseline)     {figures(floor)}")
        print(f"verification, registered     {figures(hits)}")
        print(f"verification, not registered {figures(unknown)}")
        executions = []
        with engine.connect() as conn:
            for _ in range(500):   # the database's own time for the lookup (no client, no network)
                plan = conn.execute(text("EXPLAIN (ANALYZE, FORMAT JSON) SELECT * FROM passers WHERE id_number = :n"),
                                    {"n": sample[rng.randrange(len(sample))][1]}).scalar()
                executions.append(plan[0]["Execution Time"])
        print(f"lookup inside PostgreSQL     p50 {statistics.median(executions):6.3f} ms   "
              f"p99 {percentile(executions, 0.99):6.3f} ms   (EXPLAIN ANALYZE, 500 lookups, "
              f"plan: {plan[0]['Plan']['Node Type']} on {plan[0]['Plan'].get('Index Name')})")

        if args.rpc_calls and broker_answers(amqp_uri):
            rpc_figures(amqp_uri, db_url, workdir, sample, args.rpc_calls)
        elif args.rpc_calls:
            print(f"RPC part skipped: no broker at {amqp_uri}")
        print(f"load average {os.getloadavg()[0]:.1f} at the end")
    finally:
        from swms.db import dispose_engine
        dispose_engine(db_url)
        if args.keep:
            print(f"kept: {db_url}")
        else:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()
        subprocess.run(["rm", "-rf", str(workdir)], check=False)
    return 0


def rpc_figures(amqp_uri: str, db_url: str, workdir: Path, sample, calls: int) -> None:
    from nameko.standalone.rpc import ClusterRpcProxy

    from bench.registration_burst import own_vhost
    from tools.localstack import NAMEKO, LocalStack

    # A virtual host of this run's own: its identity must not answer a demo's or a deployment's
    # calls on the same broker ('' in RABBIT_MANAGEMENT_URL: $AMQP_URI's virtual host as it is).
    amqp_uri, remove_vhost = own_vhost(amqp_uri, os.environ.get("RABBIT_MANAGEMENT_URL", "http://127.0.0.1:15672"))
    stack = LocalStack(workdir=workdir / "stack", amqp_uri=amqp_uri,
                       db_urls={name: db_url for name in ("identity", "profile", "registration", "review",
                                                          "certificate", "notification")})
    stack.start_infrastructure()
    stack.start_service("identity")
    stack._spawn("bench_empty", [NAMEKO, "run", "--broker", amqp_uri, "bench.empty_service"])
    try:
        with ClusterRpcProxy({"AMQP_URI": amqp_uri}, timeout=30) as cluster:
            deadline = time.monotonic() + 90
            while True:
                try:
                    cluster.identity.health(), cluster.bench_empty.ping()
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
            rng = random.Random(5)
            empty = timed(cluster.bench_empty.ping, calls, lambda: ())

            def args():
                name, number = sample[rng.randrange(len(sample))]
                return ({"name": name, "id_number": number},)

            lookup = timed(cluster.identity.check_passer, calls, args)
        print(f"empty RPC (baseline)         {figures(empty)}")
        print(f"identity.check_passer (RPC)  {figures(lookup)}")
    finally:
        stack.stop()
        remove_vhost()


if __name__ == "__main__":
    sys.exit(main())
