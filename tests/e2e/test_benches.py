"""Every benchmark under bench/ runs, at a small size, and passes its own checks.

Benchmarks are not timed here (their figures vary with the machine; they are read, not asserted).
What this catches is a benchmark that no longer runs, or whose own correctness check fails:
both have happened (a bench kept seeding names identity's rules had since refused; one counted the
sign-up confirmation emails added after it was written). Each bench exits non-zero when its own
check fails; the lines asserted below are its figures next to the baseline of the same run.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from swms.config import REPO_ROOT
from tests.conftest import PG_ADMIN_URL

pytestmark = pytest.mark.e2e

BENCHES = {
    "registration_burst": (["--submissions", "300", "--empty-calls", "300", "--clients", "10",
                            "--pg-url", PG_ADMIN_URL],
                           ["empty RPC (baseline, same clients)", "floor, grouped, token + rule reads",
                            "guarded floor refusals: none, events relayed 300 of 300",
                            "nothing lost: 300 accepted = 300 application rows = 300 submitted versions = "
                            "300 application_submitted events, 300 published = 300 holds profile recorded "
                            "(0 events not yet published): OK"]),
    "certificate_issue": (["--certificates", "20", "--warmup", "2", "--bare-count", "5"],
                          ["issued 20 (distinct numbers 20", "bare WeasyPrint renders", "render + PAdES sign",
                           "floor: render pool driven directly", "ratio end to end / floor",
                           "by CPU (the wall-clock ratios", "By CPU without it (S3 on cores of its own",
                           "RabbitMQ (every beam.smp on the machine"]),
    "certificate_hub_steps": (["--certificates", "20", "--warmup", "2"],
                              ["approval recorded + claimed", "relay pass"]),
    "notification_throughput": (["--events", "100", "--baseline-sends", "50"],
                                ["baseline: raw smtplib to the same sink",
                                 "checks: 100 emails at the sink, 100 distinct Message-IDs, 100 messages marked sent"]),
    "identity_registry": (["--passers", "20000", "--lookups", "500", "--rpc-calls", "100", "--pg-url", PG_ADMIN_URL],
                          ["bare SELECT 1 (baseline)", "verification, registered", "empty RPC (baseline)",
                           "identity.check_passer (RPC)"]),
    "review_queue": (["--pending", "2000", "--calls", "50"],
                     ["approved 1,000, refused 0", "(1,000 distinct applications)"]),
    "profile": (["--people", "3", "--photos", "1", "--calls", "50"],
                ["empty RPC (baseline)", "profile.check_completeness", "photo uploads in parallel: 3 in"]),
    "profile:held": (["--held", "100", "--people", "10", "--admin-url", PG_ADMIN_URL],
                     ["CPU per event, first delivery", "(expected 770, 110); redeliveries wrote nothing"]),
    "profile:held-grouped": (["--held", "100", "--people", "10", "--admin-url", PG_ADMIN_URL, "--concurrency", "10"],
                             ["10 at a time", "(expected 770, 110); redeliveries wrote nothing"]),
    "gateway": (["--calls", "100", "--concurrency", "20", "--passers", "200", "--rounds", "1"],
                ["direct = the gateway's own aio-pika RPC client", "identity.check_passer: HTTP/direct p50",
                 "public verification (QR token): HTTP/direct p50",
                 "checks: every answer right (status 200, the passer's management number, the certificate current): OK"]),
    "webhook_delivery": (["--events", "100", "--endpoints", "2", "--timeout", "180"],
                         ["baseline: raw requests POSTs to the receiver", "AMQP agency: first publish → Nth event",
                          "webhooks: first publish → Nth delivery",
                          "checks: [100, 100] delivered of 100 per endpoint, 0 bad signature(s), log order kept: True"]),
    "rpc": (["--calls", "200", "--passers", "500"],
            ["empty RPC (baseline)", "identity.check_passer", "ratio check_passer/empty"]),
    # its own three-node RabbitMQ cluster; bench.rpc and registration_burst on it with each queue type
    "cluster_compare": (["--rpc-calls", "20", "--concurrency", "5", "--submissions", "20", "--clients", "2",
                         "--pg-url", PG_ADMIN_URL],
                        ["classic queues on 3 broker node(s)", "quorum queues on 3 broker node(s)",
                         "burst: submit_re_registration", "CPU of the three RabbitMQ nodes per RPC"]),
}


@pytest.mark.parametrize("bench", sorted(BENCHES))
def test_the_bench_runs_and_passes_its_own_checks(bench):
    arguments, expected_lines = BENCHES[bench]
    result = subprocess.run([sys.executable, "-m", f"bench.{bench.split(':')[0]}", *arguments], cwd=REPO_ROOT,
                            env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)), capture_output=True, text=True,
                            timeout=600)
    print(result.stdout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    for line in expected_lines:
        assert line in result.stdout, (line, result.stdout[-3000:])
