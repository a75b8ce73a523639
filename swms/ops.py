"""Per-process operations endpoint: liveness, readiness and Prometheus metrics over plain HTTP.

``ops = OpsEndpoint(outbox)`` in a service class starts a small eventlet WSGI server on ``OPS_PORT``
(0 or unset: off). It is not a Nameko ``@http`` entrypoint, so it does not collide with the
one-HTTP-service-per-process rule, and it answers for THIS process (an RPC health call may be
answered by any replica):

- ``/healthz``  200 while the process's event loop runs (a blocked hub cannot answer): liveness.
- ``/readyz``   200 when the database and the broker answer and every queue consumer of this
  process consumes: readiness.
- ``/metrics``  requests, errors and latency per entrypoint, outbox backlog, RPC queue depth, and
  messages refused before any entrypoint ran (``count_unreadable``).

It also sets the correlation id of each worker for the JSON log formatter (swms.logs).
"""
from __future__ import annotations

import logging
import os
import sys
import time
import weakref

import eventlet
import eventlet.wsgi
from kombu import Connection
from nameko.constants import AMQP_URI_CONFIG_KEY
from nameko.extensions import DependencyProvider
from nameko.messaging import QueueConsumer
from nameko.rpc import Rpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sqlalchemy import text

from swms import logs
from swms.config import SHARED
from swms.db import engine_for

log = logging.getLogger(__name__)


def _under_nameko_run() -> bool:
    return os.path.basename(sys.argv[0]) == "nameko" and sys.argv[1:2] == ["run"]


def exit_when_still_running(seconds: float, why: str, status: int = 1) -> None:
    """Exit the process with ``status`` after ``seconds`` unless it has ended by then. A native
    thread: it runs even when the eventlet hub is stuck, and it logs without eventlet's locks."""
    threading, time_ = eventlet.patcher.original("threading"), eventlet.patcher.original("time")

    def guard():
        time_.sleep(seconds)
        os.write(2, f"{why}; the process had not ended {seconds:g} s later and exits now "
                    f"(status {status}, EXIT_AFTER_DEATH_SECONDS)\n".encode())
        os._exit(status)
    threading.Thread(target=guard, name="swms-exit-guard", daemon=True).start()


def consumers_not_yet_consuming(container) -> list[str]:
    """This process's queue consumers that have not started consuming yet.

    Nameko runs the RPC consumer and swms.deadletter's event consumer on separate connections
    (each is its own shared extension), so the process can answer an RPC before its event queues
    are declared and bound; an event published in that gap is refused (no exchange) or, with a
    bound-nowhere exchange, dropped. "Ready" must wait for both."""
    return sorted(type(extension).__name__ for extension in container.shared_extensions.values()
                  if isinstance(extension, QueueConsumer) and not extension._consumers_ready.ready())


def count_unreadable(container, kind: str, reason: str) -> None:
    """One more message refused before any entrypoint ran (``kind`` rpc or event; ``reason``
    undecodable, malformed, signature, method_not_found): swms.rpc and swms.deadletter call this."""
    for dependency in container.dependencies:
        if isinstance(dependency, OpsEndpoint):
            dependency.unreadable.labels(dependency.service, kind, reason).inc()


class OpsEndpoint(DependencyProvider):
    def __init__(self, outbox=None):
        self.outbox = outbox
        self._started: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()

    def setup(self):
        config = self.container.config
        self.port = SHARED.get(config, "OPS_PORT")
        self.amqp_uri = config[AMQP_URI_CONFIG_KEY]
        self.db_url = config.get("DB_URL")
        self.service = self.container.service_name
        self.registry = CollectorRegistry()
        self.requests = Counter("swms_entrypoint_calls", "Entrypoint calls by outcome",
                                ["service", "entrypoint", "outcome"], registry=self.registry)
        self.latency = Histogram("swms_entrypoint_seconds", "Entrypoint duration", ["service", "entrypoint"],
                                 registry=self.registry,
                                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
        self.backlog = Gauge("swms_outbox_backlog", "Events committed but not yet published", ["service"],
                             registry=self.registry)
        self.queue_depth = Gauge("swms_rpc_queue_depth", "Messages waiting in the service's RPC queue",
                                 ["service"], registry=self.registry)
        self.unreadable = Counter("swms_unreadable_messages",
                                  "Messages refused before any entrypoint ran, by kind (rpc, event) and reason",
                                  ["service", "kind", "reason"], registry=self.registry)
        self._children: dict[tuple[str, str], tuple] = {}
        self.server = None

    def start(self):
        if self.port:
            self.server = eventlet.listen(("0.0.0.0", self.port))
            self.container.spawn_managed_thread(self._serve, identifier="ops_endpoint")

    def stop(self):
        if self.server is not None:
            self.server.close()
            self.server = None

    def kill(self):
        # Nameko kills a container when one of its threads dies of an error. The process should
        # then exit and be started again, but an extension that hangs while being killed (a
        # connection or a child process that does not answer) can leave it alive and answering
        # nothing (seen once in tests/faults: "stopping services", then nothing). Only under
        # ``nameko run``: a test process kills its containers at every teardown.
        if _under_nameko_run():
            exit_when_still_running(SHARED.get(self.container.config, "EXIT_AFTER_DEATH_SECONDS"),
                                    f"service {self.service} died")
        self.stop()

    def get_dependency(self, worker_ctx):
        return self   # health.check asks it which consumers still start

    def consumers_not_yet_consuming(self) -> list[str]:
        return consumers_not_yet_consuming(self.container)

    def _serve(self):
        try:
            eventlet.wsgi.server(self.server, self._app, log_output=False)
        except OSError:
            pass  # closed on stop

    # ---- per worker: correlation id and metrics ------------------------------------------------

    def worker_setup(self, worker_ctx):
        self._started[worker_ctx] = time.perf_counter()
        logs.set_correlation(worker_ctx.origin_call_id or worker_ctx.call_id, worker_ctx.call_id)

    def worker_result(self, worker_ctx, result=None, exc_info=None):
        started = self._started.pop(worker_ctx, None)
        if exc_info is None:
            outcome = "ok"
        elif isinstance(exc_info[1], getattr(worker_ctx.entrypoint, "expected_exceptions", ()) or ()):
            outcome = "refused"     # a typed error the caller acts on (validation, auth, state)
        else:
            outcome = "error"
        latency, calls = self._metrics_of(worker_ctx.entrypoint.method_name, outcome)
        if started is not None:
            latency.observe(time.perf_counter() - started)
        calls.inc()

    def _metrics_of(self, entrypoint: str, outcome: str):
        """The entrypoint's latency histogram and its outcome's counter, looked up by label once:
        ``labels()`` checks and stringifies the labels and takes a lock on every call."""
        found = self._children.get((entrypoint, outcome))
        if found is None:
            found = self._children[(entrypoint, outcome)] = (
                self.latency.labels(self.service, entrypoint), self.requests.labels(self.service, entrypoint, outcome))
        return found

    def worker_teardown(self, worker_ctx):
        logs.set_correlation(None, None)

    # ---- HTTP --------------------------------------------------------------------------------

    def _app(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            return self._reply(start_response, "200 OK", b"ok\n")
        if path == "/readyz":
            problems = self.readiness_problems()
            if problems:
                return self._reply(start_response, "503 Service Unavailable", ("\n".join(problems) + "\n").encode())
            return self._reply(start_response, "200 OK", b"ready\n")
        if path == "/metrics":
            self._refresh_gauges()
            return self._reply(start_response, "200 OK", generate_latest(self.registry), CONTENT_TYPE_LATEST)
        return self._reply(start_response, "404 Not Found", b"not found\n")

    @staticmethod
    def _reply(start_response, status: str, body: bytes, content_type: str = "text/plain; charset=utf-8"):
        start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
        return [body]

    def readiness_problems(self) -> list[str]:
        problems = []
        if self.db_url:
            try:
                with engine_for(self.db_url).connect() as conn:
                    conn.execute(text("SELECT 1"))
            except Exception as exc:
                problems.append(f"database: {type(exc).__name__}")
        try:
            with Connection(self.amqp_uri, connect_timeout=3) as conn:
                conn.ensure_connection(max_retries=1)
        except Exception as exc:
            problems.append(f"broker: {type(exc).__name__}")
        problems += [f"consumer starting: {name}" for name in self.consumers_not_yet_consuming()]
        return problems

    def _refresh_gauges(self) -> None:
        if self.outbox is not None and self.db_url:
            try:
                from sqlalchemy.orm import Session
                with Session(engine_for(self.db_url)) as session:
                    self.backlog.labels(self.service).set(self.outbox.pending_count(session))
            except Exception:
                log.warning("could not count the outbox backlog", exc_info=True)
        if any(isinstance(ext, Rpc) for ext in self.container.entrypoints):
            try:
                with Connection(self.amqp_uri, connect_timeout=3) as conn:
                    declared = conn.default_channel.queue_declare(f"rpc-{self.service}", passive=True)
                    self.queue_depth.labels(self.service).set(declared.message_count)
            except Exception:
                log.warning("could not read the RPC queue depth", exc_info=True)
