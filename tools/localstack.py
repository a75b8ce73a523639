"""Starts the whole system on this machine as separate processes, for the demo and e2e tests.

Each of the six services runs alone under ``nameko run`` with its own config, database and
environment, exactly as in deployment; next to them an S3-compatible server (moto) and an SMTP
sink on loopback. RabbitMQ is not started here: it must already answer on ``AMQP_URI``
(bin/demo and bin/test make sure of that).

Only ``python -m tools.localstack`` (local use) restarts a process that dies, as compose's
``restart: unless-stopped`` would; the demo and the tests use :class:`LocalStack` directly, where a
death stays a death (the fault tests kill processes on purpose and watch what follows).
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from swms.config import REPO_ROOT
from swms.devkeys import SERVICES, ensure_dev_keys
from swms.migrations import upgrade

PYTHON = sys.executable
NAMEKO = str(Path(PYTHON).with_name("nameko"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout: float = 20.0, interval: float = 0.1, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


@dataclass
class LocalStack:
    workdir: Path
    amqp_uri: str
    db_urls: dict[str, str] | None = None   # default: one SQLite file per service under workdir
    queue_type: str | None = None           # AMQP_QUEUE_TYPE; None: the config.yaml default (classic)
    s3_port: int = field(default_factory=free_port)
    gateway_port: int = field(default_factory=free_port)
    smtp_port: int = field(default_factory=free_port)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    commands: dict[str, tuple[list[str], dict[str, str]]] = field(default_factory=dict)   # to restart one
    mail_dir: Path = None
    log_dir: Path = None

    def __post_init__(self):
        self.workdir = Path(self.workdir).resolve()
        self.mail_dir = self.workdir / "mail"
        self.log_dir = self.workdir / "logs"
        self.keys_dir = self.workdir / "keys"
        if self.db_urls is None:
            self.db_urls = {name: f"sqlite:///{self.workdir / 'data' / f'{name}.db'}" for name in SERVICES}

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "PYTHONPATH": str(REPO_ROOT),
            "AMQP_URI": self.amqp_uri,
            "AUTH_PUBLIC_KEY_FILE": str(self.keys_dir / "token-signing.pub.pem"),
            "AUTH_PRIVATE_KEY_FILE": str(self.keys_dir / "token-signing.pem"),
            "IDENTITY_ID_HASH_KEY_FILE": str(self.keys_dir / "id-hash.key"),
            "WEBHOOK_SECRETS_KEY_FILE": str(self.keys_dir / "webhook-secrets.key"),   # agencies' webhook secrets
            "S3_ENDPOINT_URL": f"http://127.0.0.1:{self.s3_port}",
            "S3_ACCESS_KEY": "swms-dev", "S3_SECRET_KEY": "swms-dev-secret",
            "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(self.smtp_port),
            # The QR code on each certificate leads to this stack's gateway (services/gateway/public.py).
            "VERIFY_BASE_URL": f"http://127.0.0.1:{self.gateway_port}/verify",
        })
        if self.queue_type:
            env["AMQP_QUEUE_TYPE"] = self.queue_type
        for name in SERVICES:
            env[f"{name.upper()}_DB_URL"] = self.db_urls[name]
            env[f"{name.upper()}_SERVICE_TOKEN_FILE"] = str(self.keys_dir / f"{name}.service-token")
        return env

    def _spawn(self, name: str, argv: list[str], extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{name}.log", "ab")
        process = subprocess.Popen(argv, cwd=REPO_ROOT, env={**self.environment(), **(extra_env or {})}, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        self.processes[name] = process
        self.commands[name] = (argv, dict(extra_env or {}))
        return process

    def restart(self, name: str) -> subprocess.Popen:
        """Starts a process again with the command and environment it was first started with."""
        argv, extra_env = self.commands[name]
        return self._spawn(name, argv, extra_env)

    def start_infrastructure(self) -> None:
        ensure_dev_keys(self.keys_dir)
        self._spawn("s3", [PYTHON, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.s3_port)])
        self._spawn("smtp", [PYTHON, "-m", "tools.mailsink", "--port", str(self.smtp_port),
                             "--dir", str(self.mail_dir)])
        wait_for_port(self.s3_port)
        wait_for_port(self.smtp_port)

    def migrate(self) -> None:
        for name in SERVICES:
            upgrade(name, self.db_urls[name])

    def start_service(self, name: str, instance: str | None = None,
                      extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        """Starts one process of a service; more than one ``instance`` of a service share its queues."""
        return self._spawn(instance or name, [NAMEKO, "run", "--config", f"services/{name}/config.yaml",
                                              f"services.{name}.service"], extra_env)

    def start_services(self) -> None:
        for name in SERVICES:
            self.start_service(name)
        self.wait_healthy()

    def start_gateway(self, extra_env: dict[str, str] | None = None, timeout: float = 30.0,
                      name: str = "gateway", port: int | None = None) -> str:
        """Starts the HTTP gateway (``python -m services.gateway``) on loopback and waits until its
        /readyz answers (AMQP connected, reply queue consumed). Returns its base URL. More gateways
        (another ``name`` and ``port``, other settings) can run in front of the same services."""
        import urllib.request

        port = port or self.gateway_port
        env = {"GATEWAY_HOST": "127.0.0.1", "GATEWAY_PORT": str(port), **(extra_env or {})}
        self._spawn(name, [PYTHON, "-m", "services.gateway"], env)
        base_url = f"http://127.0.0.1:{port}"

        def ready():
            self.check_alive(name)
            try:
                with urllib.request.urlopen(f"{base_url}/readyz", timeout=2) as response:
                    return response.status == 200
            except OSError:
                return False
        wait_until(ready, timeout=timeout, interval=0.2, what="the gateway's /readyz")
        return base_url

    def wait_healthy(self, timeout: float = 90.0) -> None:
        """Every service answers its health RPC (so its queues, event bindings included, exist)."""
        import logging

        from nameko.standalone.rpc import ClusterRpcProxy

        # Health calls that time out while a service starts leave publisher confirms in flight;
        # py-amqp logs each one at WARNING when the proxy closes its channel. Harmless here.
        logging.getLogger("amqp").setLevel(logging.ERROR)

        deadline = time.monotonic() + timeout
        pending = set(SERVICES)
        with ClusterRpcProxy({"AMQP_URI": self.amqp_uri}, timeout=2) as cluster:
            while pending and time.monotonic() < deadline:
                for name in sorted(pending):
                    self.check_alive(name)
                    try:
                        if getattr(cluster, name).health()["status"] == "ok":
                            pending.discard(name)
                    except Exception:
                        pass
                if pending:
                    time.sleep(0.5)
        if pending:
            raise RuntimeError(f"services not healthy after {timeout} s: {sorted(pending)}; see {self.log_dir}")

    def check_alive(self, name: str) -> None:
        process = self.processes.get(name)
        if process is not None and process.poll() is not None:
            tail = (self.log_dir / f"{name}.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{tail}")

    def stop(self, name: str | None = None, sig: int = signal.SIGTERM, timeout: float = 15.0) -> dict[str, int]:
        """Signals the processes and waits up to ``timeout`` for each, then SIGKILLs it. Returns each
        process's exit code (-9 where it had to be killed)."""
        names = [name] if name else list(self.processes)
        for each in names:
            process = self.processes.get(each)
            if process is not None and process.poll() is None:
                os.killpg(process.pid, sig)
        exit_codes = {}
        for each in names:
            process = self.processes.pop(each, None)
            if process is None:
                continue
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            exit_codes[each] = process.returncode
        return exit_codes

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def reset(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


@dataclass
class Restarter:
    """``restart: unless-stopped`` for the local runner: a process that exits is started again,
    and the log says so. Like Docker, the wait before a restart doubles while a process keeps
    dying soon after its start (1 s up to 60 s), and is forgotten once it stays up a while."""
    stack: LocalStack
    say: Callable[[str], None] = print
    first_delay: float = 1.0
    max_delay: float = 60.0
    stable_after: float = 30.0
    clock: Callable[[], float] = time.monotonic
    _delay: dict[str, float] = field(default_factory=dict)
    _due: dict[str, float] = field(default_factory=dict)
    _started: dict[str, float] = field(default_factory=dict)

    def check(self) -> list[str]:
        """Restarts what is due; returns the names restarted."""
        now = self.clock()
        restarted = []
        for name, process in list(self.stack.processes.items()):
            if process.poll() is None:
                if now - self._started.get(name, now) >= self.stable_after:
                    self._delay.pop(name, None)
                continue
            if name not in self._due:
                delay = self._delay.get(name, 0.0)
                self._delay[name] = min(self.max_delay, delay * 2 if delay else self.first_delay)
                self._due[name] = now + self._delay[name]
                self.say(f"{name} exited with {process.returncode} ({_exit_reason(process.returncode)}); "
                         f"restarting it in {self._delay[name]:g} s (restart: unless-stopped); "
                         f"last lines in {self.stack.log_dir / f'{name}.log'}")
            if now >= self._due[name]:
                del self._due[name]
                process = self.stack.restart(name)
                self._started[name] = now
                restarted.append(name)
                note = " (moto keeps objects in memory: files stored before are gone)" if name == "s3" else ""
                self.say(f"{name} restarted, pid {process.pid}{note}")
        return restarted


def _exit_reason(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return "error" if returncode else "stopped"


def main(argv: list[str] | None = None) -> None:
    """Run all six services together for local use until Ctrl-C: ``python -m tools.localstack``.
    A process that dies is restarted (``Restarter``), as compose's ``restart: unless-stopped`` does."""
    import eventlet

    eventlet.monkey_patch()
    parser = argparse.ArgumentParser(prog="python -m tools.localstack", description=main.__doc__)
    parser.add_argument("--workdir", type=Path, default=REPO_ROOT / "var" / "local",
                        help="databases, keys, mail and logs (default: var/local)")
    args = parser.parse_args(argv)
    stack = LocalStack(workdir=args.workdir,
                       amqp_uri=os.environ.get("AMQP_URI", "pyamqp://guest:guest@127.0.0.1:5672/"))
    with stack:
        stack.start_infrastructure()
        stack.migrate()
        stack.start_services()
        environment = stack.environment()
        pids = ", ".join(f"{name} {process.pid}" for name, process in stack.processes.items())
        print(f"six services up on {stack.amqp_uri}\n"
              f"  S3 (moto):   {environment['S3_ENDPOINT_URL']}\n"
              f"  SMTP sink:   127.0.0.1:{stack.smtp_port}, mail kept in {stack.mail_dir}\n"
              f"  databases:   {stack.workdir / 'data'}\n  logs:        {stack.log_dir}\n"
              f"  keys:        {stack.keys_dir} (identity CLI: services.identity.cli)\n"
              f"  processes:   {pids}\n"
              "A process that exits is restarted. Ctrl-C stops them all.", flush=True)
        restarter = Restarter(stack, say=lambda line: print(line, flush=True))
        try:
            while True:
                restarter.check()
                time.sleep(1)
        except KeyboardInterrupt:
            print("stopping", flush=True)


if __name__ == "__main__":
    main()
