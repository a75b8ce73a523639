"""``python -m tools.localstack`` (local use) restarts a service process that dies, as compose's
``restart: unless-stopped`` does, and says so in its log; Ctrl-C still stops everything.

The runner runs as its own process on this test's broker vhost and a temporary work directory
(SQLite databases); one service process is killed with SIGKILL."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest

from swms.config import REPO_ROOT
from tests.support import healthy
from tools.localstack import wait_until

pytestmark = pytest.mark.e2e


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"   # a zombie has exited
    except FileNotFoundError:
        return False


def test_the_local_runner_restarts_a_killed_service_and_logs_it(tmp_path, amqp_uri):
    output = tmp_path / "runner.out"
    runner = subprocess.Popen([sys.executable, "-m", "tools.localstack", "--workdir", str(tmp_path / "local")],
                              cwd=REPO_ROOT, env={**os.environ, "AMQP_URI": amqp_uri},
                              stdout=open(output, "wb"), stderr=subprocess.STDOUT)
    pids: dict[str, int] = {}

    def log() -> str:
        return output.read_text(errors="replace")

    try:
        wait_until(lambda: "A process that exits is restarted" in log() or runner.poll() is not None,
                   timeout=240, what="the six services up")
        assert runner.poll() is None, log()
        listed = re.search(r"processes:\s+(.*)", log()).group(1)
        pids = {name: int(pid) for name, pid in (part.split() for part in listed.split(", "))}
        assert set(pids) == {"s3", "smtp", "identity", "profile", "registration", "review", "certificate",
                             "notification"}

        os.kill(pids["review"], signal.SIGKILL)
        restarted = wait_until(lambda: re.search(r"review restarted, pid (\d+)", log()), timeout=60,
                               what="review restarted")
        assert ("review exited with -9 (killed by SIGKILL); restarting it in 1 s (restart: unless-stopped)"
                in log()), log()
        pids["review"] = int(restarted.group(1))
        assert _alive(pids["review"])

        wait_until(lambda: healthy(amqp_uri, "review", timeout=5), timeout=90, interval=1,
                   what="the restarted review to answer")
        # Only the dead one was started again.
        assert log().count(" restarted, pid ") == 1
        assert all(_alive(pid) for pid in pids.values())

        runner.send_signal(signal.SIGINT)     # Ctrl-C
        assert runner.wait(60) == 0, log()
        assert "stopping" in log()
        assert not any(_alive(pid) for pid in pids.values())
    finally:
        if runner.poll() is None:
            runner.send_signal(signal.SIGINT)
            try:
                runner.wait(60)
            except subprocess.TimeoutExpired:
                runner.kill()
                runner.wait()
        for pid in pids.values():             # never leave a service running
            if _alive(pid):
                os.killpg(pid, signal.SIGKILL)
