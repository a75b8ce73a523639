"""The local runner's restart policy (tools.localstack.Restarter), without a broker: fake processes
and a fake clock. The real thing (a service killed under ``python -m tools.localstack`` comes
back) is tests/e2e/test_localstack.py."""
from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

from tools.localstack import LocalStack, Restarter


class FakeProcess:
    _pids = iter(range(1000, 2000))

    def __init__(self):
        self.pid = next(self._pids)
        self.returncode = None

    def poll(self):
        return self.returncode


class FakeStack:
    def __init__(self, *names):
        self.processes = {name: FakeProcess() for name in names}
        self.log_dir = Path("/logs")
        self.restarts: list[str] = []

    def restart(self, name):
        self.restarts.append(name)
        self.processes[name] = FakeProcess()
        return self.processes[name]


def test_a_dead_process_is_restarted_with_a_log_line_and_a_growing_delay():
    stack, lines, now = FakeStack("identity", "review"), [], [100.0]
    restarter = Restarter(stack, say=lines.append, clock=lambda: now[0])
    assert restarter.check() == [] and lines == []

    stack.processes["review"].returncode = -signal.SIGKILL
    assert restarter.check() == []          # waits first_delay before starting it again
    assert lines == ["review exited with -9 (killed by SIGKILL); restarting it in 1 s "
                     "(restart: unless-stopped); last lines in /logs/review.log"]
    now[0] += 1
    assert restarter.check() == ["review"]
    assert lines[-1] == f"review restarted, pid {stack.processes['review'].pid}"
    assert stack.processes["identity"].returncode is None and stack.restarts == ["review"]

    # Dying again soon after the restart doubles the wait (Docker's policy), up to max_delay.
    for expected in (2, 4, 8, 16, 32, 60, 60):
        stack.processes["review"].returncode = 1
        restarter.check()
        assert f"review exited with 1 (error); restarting it in {expected} s" in lines[-1]
        now[0] += expected
        assert restarter.check() == ["review"]
    # Up for a while: the next death is restarted after the first delay again.
    now[0] += 30
    restarter.check()
    stack.processes["review"].returncode = 0
    restarter.check()
    assert "review exited with 0 (stopped); restarting it in 1 s" in lines[-1]


def test_s3_restart_says_what_was_lost():
    stack, lines = FakeStack("s3"), []
    restarter = Restarter(stack, say=lines.append, first_delay=0, clock=lambda: 0.0)
    stack.processes["s3"].returncode = -signal.SIGTERM
    assert restarter.check() == ["s3"]
    assert "files stored before are gone" in lines[-1]


def test_without_the_restarter_a_death_stays_a_death(tmp_path):
    """The demo, e2e and fault tests use LocalStack directly: a dead process is reported, not revived."""
    stack = LocalStack(workdir=tmp_path, amqp_uri="memory://")
    process = stack._spawn("short", [sys.executable, "-c", "raise SystemExit(3)"])
    process.wait(30)
    with pytest.raises(RuntimeError, match="short exited with 3"):
        stack.check_alive("short")
    assert stack.processes["short"] is process
