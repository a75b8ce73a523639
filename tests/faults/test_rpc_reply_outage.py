"""An RPC reply that meets a RabbitMQ outage must not kill the service.

nameko 2.14's own entrypoint sends the reply with three quick retries and lets the failure escape
from the worker, which kills the container: a service caught mid-reply by a broker restart exits
instead of reconnecting. ``swms.rpc.rpc`` (every service's entrypoint) retries longer and, if the
broker stays away, gives up the reply and keeps running.

Deterministic: the handler is held until the broker is stopped (``rabbitmqctl stop_app``), then
answers into the outage; the broker stays down longer than nameko's retries last, then comes back.
The stock entrypoint is run too, as the control that shows the defect this guards against.
"""
from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request

import eventlet
import pytest
from eventlet.event import Event
from nameko.rpc import rpc as nameko_rpc
from nameko.standalone.rpc import ClusterRpcProxy

from swms.rpc import rpc as swms_rpc
from tools.localstack import wait_until

pytestmark = pytest.mark.faults

OUTAGE_SECONDS = 16   # nameko's reply retries give up after about 2 + 4 + 6 = 12 s


def service_with(entrypoint):
    class HeldReply:
        name = "held_reply"
        running, release = Event(), Event()

        @entrypoint
        def answer_when_released(self):
            if not HeldReply.running.ready():   # the broker may redeliver the request later
                HeldReply.running.send(True)
            HeldReply.release.wait()
            return "answered"

        @entrypoint
        def ping(self):
            return "pong"

    return HeldReply


def management_api_answers() -> bool:
    try:
        with urllib.request.urlopen("http://127.0.0.1:15672/api/overview", timeout=2):
            return True
    except urllib.error.HTTPError:
        return True   # 401 without credentials: it is listening
    except OSError:
        return False


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)


@pytest.mark.parametrize("entrypoint, survives", [(swms_rpc, True), (nameko_rpc, False)],
                         ids=["swms-rpc", "stock-nameko-rpc-control"])
def test_a_reply_into_a_broker_outage_leaves_the_service_running(container_factory, rabbit_config,
                                                                 entrypoint, survives):
    service = service_with(entrypoint)
    container = container_factory(service, dict(rabbit_config))
    container.start()

    caller = ClusterRpcProxy(dict(rabbit_config), timeout=5)
    proxy = caller.start()
    proxy.held_reply.answer_when_released.call_async()
    service.running.wait()
    try:
        caller.stop()
    except Exception:
        pass

    rabbitmqctl("stop_app")
    try:
        service.release.send(True)          # the handler answers while the broker is down
        eventlet.sleep(OUTAGE_SECONDS)
    finally:
        rabbitmqctl("start_app")
        rabbitmqctl("await_startup")
        # the management API (used to delete this test's vhost afterwards) listens a little later
        wait_until(management_api_answers, timeout=60, interval=0.5, what="RabbitMQ's management API")

    def answers() -> bool:
        try:
            with ClusterRpcProxy(dict(rabbit_config), timeout=3) as cluster:
                return cluster.held_reply.ping() == "pong"
        except Exception:
            return False

    if survives:
        assert not container._died.ready()
        wait_until(answers, timeout=90, interval=1, what="the service answering after the outage")
        assert not container._died.ready()
    else:
        started = time.monotonic()
        while not container._died.ready() and time.monotonic() - started < 30:
            eventlet.sleep(0.5)
        assert container._died.ready(), "the stock entrypoint survived: the control no longer shows the defect"
