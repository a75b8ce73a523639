"""The per-process ops endpoint (/healthz, /readyz, /metrics) and correlation ids in logs."""
from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request

import pytest
from nameko.rpc import RpcProxy, rpc

from services.identity.models import outbox
from swms.contracts.events import FeedbackSubmitted
from swms.errors import SwmsError
from swms.logs import JsonFormatter
from swms.ops import OpsEndpoint
from tests.support import rpc_client, run_until_exit, session_for
from swms.config import REPO_ROOT
from tools.localstack import NAMEKO, free_port

pytestmark = pytest.mark.integration
log = logging.getLogger("ops_probe")


class OpsProbe:
    """A minimal service carrying the ops endpoint over identity's database (for its outbox table)."""
    name = "ops_probe"
    ops = OpsEndpoint(outbox)
    downstream = RpcProxy("ops_echo")

    @rpc(expected_exceptions=SwmsError)
    def ok(self):
        return 1

    @rpc(expected_exceptions=SwmsError)
    def refuse(self):
        raise SwmsError("SOME_RULE", "不允许")

    @rpc
    def crash(self):
        raise ValueError("bug")

    @rpc
    def chain(self):
        log.info("probe calls echo")
        return self.downstream.echo()


class OpsEcho:
    name = "ops_echo"
    ops = OpsEndpoint()

    @rpc
    def echo(self):
        logging.getLogger("ops_echo").info("echo answers")
        return "echo"


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def probe(service_config, container_factory):
    port = free_port()
    config = service_config("identity", OPS_PORT=port)
    container_factory(OpsProbe, config).start()
    return port, config


def test_liveness_readiness_and_metrics(probe, amqp_uri):
    port, config = probe
    assert get(port, "/healthz") == (200, "ok\n")
    assert get(port, "/readyz") == (200, "ready\n")
    with session_for(config["DB_URL"]) as session:  # one event committed, no relay in this service
        outbox.add(session, FeedbackSubmitted(feedback_id="f", region_code="110105", applicant_name_masked="李**",
                                              submitted_at="2026-11-26T00:00:00Z"))
        session.commit()
    with rpc_client(amqp_uri) as client:
        client.ops_probe.ok()
        client.ops_probe.ok()
        for method in (client.ops_probe.refuse, client.ops_probe.crash):
            with pytest.raises(Exception):
                method()
    status, metrics = get(port, "/metrics")
    assert status == 200
    assert 'swms_entrypoint_calls_total{entrypoint="ok",outcome="ok",service="ops_probe"} 2.0' in metrics
    assert 'swms_entrypoint_calls_total{entrypoint="refuse",outcome="refused",service="ops_probe"} 1.0' in metrics
    assert 'swms_entrypoint_calls_total{entrypoint="crash",outcome="error",service="ops_probe"} 1.0' in metrics
    assert 'swms_outbox_backlog{service="ops_probe"} 1.0' in metrics
    assert 'swms_rpc_queue_depth{service="ops_probe"} 0.0' in metrics
    assert 'swms_entrypoint_seconds_count{entrypoint="ok",service="ops_probe"} 2.0' in metrics
    assert get(port, "/nothing")[0] == 404


def test_not_ready_when_the_database_is_unreachable(service_config, container_factory):
    port = free_port()
    config = service_config("identity", OPS_PORT=port, DB_URL="postgresql+psycopg2://nobody@127.0.0.1:1/none")
    container_factory(OpsProbe, config).start()
    status, body = get(port, "/readyz")
    assert status == 503 and "database" in body
    assert get(port, "/healthz")[0] == 200  # alive all the same: no restart for a database outage


def test_one_correlation_id_across_services(probe, service_config, container_factory, amqp_uri):
    echo_config = service_config("identity", OPS_PORT=free_port())
    container_factory(OpsEcho, echo_config).start()
    lines = []

    class Keep(logging.Handler):
        def emit(self, record):
            lines.append(json.loads(JsonFormatter().format(record)))

    handler = Keep()
    logging.getLogger().addHandler(handler)
    previous = logging.getLogger().level
    logging.getLogger().setLevel(logging.INFO)
    try:
        with rpc_client(amqp_uri) as client:
            assert client.ops_probe.chain() == "echo"
    finally:
        logging.getLogger().removeHandler(handler)
        logging.getLogger().setLevel(previous)
    ours = {line["logger"]: line for line in lines if line["logger"] in ("ops_probe", "ops_echo")}
    assert set(ours) == {"ops_probe", "ops_echo"}
    assert ours["ops_probe"]["correlation_id"] == ours["ops_echo"]["correlation_id"] is not None
    assert ours["ops_probe"]["call_id"] != ours["ops_echo"]["call_id"]


def test_a_process_whose_service_died_exits_even_when_an_extension_hangs(tmp_path, rabbit_config):
    """Without the exit guard this process stays alive after its container died, answering nothing,
    and nothing restarts it (compose and tools.localstack restart processes that exit)."""
    config = tmp_path / "config.yaml"
    config.write_text(f"AMQP_URI: {rabbit_config['AMQP_URI']}\nserializer: json\nEXIT_AFTER_DEATH_SECONDS: 3\n")
    status, output = run_until_exit([NAMEKO, "run", "--config", str(config), "tests.integration.dying_service"],
                                    {**os.environ, "PYTHONPATH": str(REPO_ROOT)}, timeout=90, cwd=REPO_ROOT)
    assert status == 1, output[-3000:]
    assert "service dying_probe died; the process had not ended 3 s later and exits now" in output, output[-3000:]
