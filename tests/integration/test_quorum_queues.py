"""AMQP_QUEUE_TYPE on a real broker: with ``quorum`` every durable queue a service declares (its RPC
queue, event-handler queues, their retry queues, swms.dead-letter) is a quorum queue with a delivery
limit, a poison message that a handler keeps requeueing ends in swms.dead-letter instead of looping
forever, and reply queues stay transient. With ``classic`` (the default) the queues are declared as
before. One RabbitMQ node holds single-member quorum queues; tests/faults/test_cluster.py runs three."""
from __future__ import annotations

import collections

import pytest
from kombu import Connection, Exchange

from swms import queues
from swms.deadletter import event_handler as retrying_event_handler
from swms.deadletter import guarded_event_handler as requeueing_event_handler
from swms.queues import ClusterRpcProxy, RpcProxy
from swms.rpc import rpc
from tests.support import wait_until

pytestmark = pytest.mark.integration

deliveries: collections.Counter = collections.Counter()


class Probe:
    """One of each thing that declares a queue: an RPC entrypoint, a call to another service
    (reply queue), a retrying handler (retry queue, dead-letter queue) and a requeueing one."""
    name = "qq_probe"
    other = RpcProxy("qq_probe")

    @rpc
    def echo(self, value):
        return value

    @rpc
    def echo_through_myself(self, value):
        return self.other.echo(value)

    @retrying_event_handler("qq_source", "flaky")
    def on_flaky(self, payload):
        deliveries[("flaky", payload["id"])] += 1
        raise RuntimeError("always fails")

    @requeueing_event_handler("qq_source", "thing", requeue_on_error=True)
    def on_thing(self, payload):
        deliveries[("thing", payload["id"])] += 1
        if payload.get("poison"):
            raise RuntimeError("this one never succeeds")


def publish(amqp_uri: str, event_type: str, body: dict) -> None:
    exchange = Exchange("qq_source.events", type="topic", durable=True)
    with Connection(amqp_uri) as conn:
        conn.Producer().publish(body, exchange=exchange, routing_key=event_type, serializer="json",
                                declare=[exchange], delivery_mode=2)


def dead_letters(amqp_uri: str, config: dict) -> list[dict]:
    found = []
    with Connection(amqp_uri) as conn:
        queue = queues.dead_letter_queue(config)(conn.default_channel)
        while (message := queue.get(no_ack=True)) is not None:
            found.append(dict(message.headers))
    return found


@pytest.fixture
def probe(container_factory, rabbit_config, request):
    deliveries.clear()
    config = {"AMQP_URI": rabbit_config["AMQP_URI"], "AMQP_QUEUE_TYPE": request.param,
              "EVENT_MAX_ATTEMPTS": 2, "EVENT_RETRY_BASE_SECONDS": 0.2}
    container_factory(Probe, config).start()
    return config


def declared(rabbit_manager, rabbit_config) -> dict[str, dict]:
    return {q["name"]: q for q in rabbit_manager.get_queues(rabbit_config["vhost"])}


@pytest.mark.parametrize("probe", ["quorum"], indirect=True)
def test_every_durable_queue_is_a_quorum_queue_and_reply_queues_stay_transient(probe, rabbit_manager, rabbit_config):
    with ClusterRpcProxy(probe, timeout=20) as client:
        assert client.qq_probe.echo_through_myself("hello") == "hello"
    publish(probe["AMQP_URI"], "flaky", {"id": "f1"})
    wait_until(lambda: len(dead_letters(probe["AMQP_URI"], probe)) == 1 or None, timeout=20,
               what="the flaky event given up (retried once through its .retry queue)")
    assert deliveries[("flaky", "f1")] == 2

    found = declared(rabbit_manager, rabbit_config)
    durable = {name: q for name, q in found.items() if not name.startswith("rpc.reply-")}
    assert set(durable) == {"rpc-qq_probe", "evt-qq_source-flaky--qq_probe.on_flaky",
                            "evt-qq_source-flaky--qq_probe.on_flaky.retry", "evt-qq_source-thing--qq_probe.on_thing",
                            "swms.dead-letter"}
    assert {name: (q["type"], q["durable"]) for name, q in durable.items()} == {
        name: ("quorum", True) for name in durable}
    for name in ("rpc-qq_probe", "evt-qq_source-flaky--qq_probe.on_flaky", "evt-qq_source-thing--qq_probe.on_thing"):
        assert durable[name]["arguments"]["x-delivery-limit"] == queues.DELIVERY_LIMIT, name
        assert durable[name]["arguments"]["x-dead-letter-exchange"] == "swms.dead-letter", name
    replies = [q for name, q in found.items() if name.startswith("rpc.reply-")]
    assert len(replies) == 2   # the service's own (for self.other) and the standalone client's
    assert all(q["type"] == "classic" and q["durable"] is False and q["exclusive"] is False for q in replies)


@pytest.mark.parametrize("probe", ["quorum"], indirect=True)
def test_a_service_asks_for_replies_on_a_new_queue_after_its_connection_drops(probe, rabbit_manager, rabbit_config):
    """After a node loss the cluster may still hold the old reply queue's record for a while; a
    service that declared the same name again could consume from nothing and time out every call
    it makes (tests/faults/test_cluster.py). Each connection gets a reply queue of a new name."""
    vhost = rabbit_config["vhost"]

    def reply_queues():
        return {q["name"] for q in rabbit_manager.get_queues(vhost)
                if q["name"].startswith("rpc.reply-qq_probe-") and q.get("consumers")}
    with ClusterRpcProxy(probe, timeout=20) as client:
        assert client.qq_probe.echo_through_myself("before") == "before"
    [before] = wait_until(reply_queues, timeout=30, what="the probe's reply queue with its consumer")

    def probe_connections():   # the management API lists a connection after its next statistics tick
        return [c["name"] for c in rabbit_manager.get_connections() if c.get("vhost") == vhost]
    for name in wait_until(probe_connections, timeout=30, what="the probe's connections"):
        rabbit_manager.delete_connection(name)

    def answered_after_the_drop():
        try:
            with ClusterRpcProxy(probe, timeout=5) as client:
                return client.qq_probe.echo_through_myself("after") == "after"
        except Exception:   # the probe is still reconnecting
            return False
    wait_until(answered_after_the_drop, timeout=60, interval=1, what="a call through the probe's own proxy")
    after = wait_until(lambda: reply_queues() - {before}, timeout=30, what="a reply queue of a new name consumed")
    assert len(after) == 1 and before not in after


@pytest.mark.parametrize("probe", ["quorum"], indirect=True)
def test_a_poison_message_is_dead_lettered_after_the_delivery_limit_and_the_stream_flows(probe):
    publish(probe["AMQP_URI"], "thing", {"id": "poison", "poison": True})
    publish(probe["AMQP_URI"], "thing", {"id": "good"})
    letters: list = []
    wait_until(lambda: letters.extend(dead_letters(probe["AMQP_URI"], probe)) or letters, timeout=60,
               what="the poison message in swms.dead-letter")
    [headers] = letters
    assert headers["x-first-death-reason"] == "delivery_limit"
    assert headers["x-first-death-queue"] == "evt-qq_source-thing--qq_probe.on_thing"
    assert deliveries[("thing", "poison")] == queues.DELIVERY_LIMIT + 1
    assert deliveries[("thing", "good")] == 1


@pytest.mark.parametrize("probe", ["classic"], indirect=True)
def test_classic_queues_are_declared_as_before(probe, rabbit_manager, rabbit_config):
    with ClusterRpcProxy(probe, timeout=20) as client:
        assert client.qq_probe.echo_through_myself("hello") == "hello"
    found = declared(rabbit_manager, rabbit_config)
    for name in ("rpc-qq_probe", "evt-qq_source-flaky--qq_probe.on_flaky", "evt-qq_source-thing--qq_probe.on_thing"):
        assert (found[name]["type"], found[name]["durable"], found[name]["arguments"]) == ("classic", True, {}), name
