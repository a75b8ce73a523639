"""tools.migrate_queues: an existing system moves from classic to quorum queues (and back) without
losing what its queues hold: events waiting for a stopped service, an event parked in a .retry queue,
RPC requests sent while the service was down, and the dead letters."""
from __future__ import annotations

import pytest
from kombu import Connection, Exchange
from pydantic import BaseModel

from swms.deadletter import event_handler
from swms.queues import ClusterRpcProxy, dead_letter_queue
from swms.rpc import rpc
from tests.support import wait_until
from tools import migrate_queues

pytestmark = pytest.mark.integration

MANAGEMENT_URL = "http://127.0.0.1:15672"
handled: list[str] = []


class Thing(BaseModel):
    id: str
    fail: bool = False


class Waiting:
    name = "mq_probe"

    @rpc
    def double(self, value):
        return value * 2

    @event_handler("mq_source", "thing")
    def on_thing(self, payload):
        thing = Thing.model_validate(payload)   # a payload without an id is dead-lettered at once
        if thing.fail and f"{thing.id}:failed once" not in handled:
            handled.append(f"{thing.id}:failed once")
            raise RuntimeError("fails the first time")
        handled.append(thing.id)


def publish(amqp_uri: str, body: dict) -> None:
    exchange = Exchange("mq_source.events", type="topic", durable=True)
    with Connection(amqp_uri) as conn:
        conn.Producer().publish(body, exchange=exchange, routing_key="thing", serializer="json", declare=[exchange],
                                delivery_mode=2)


def queue_types(rabbit_manager, vhost: str) -> dict[str, str]:
    return {q["name"]: q["type"] for q in rabbit_manager.get_queues(vhost) if not q["name"].startswith("rpc.reply-")}


def config_for(rabbit_config, queue_type: str) -> dict:
    return {"AMQP_URI": rabbit_config["AMQP_URI"], "AMQP_QUEUE_TYPE": queue_type, "EVENT_MAX_ATTEMPTS": 2,
            # the first failure parks its event in .retry for ten minutes: still there when we migrate
            "EVENT_RETRY_BASE_SECONDS": 600}


def test_classic_to_quorum_keeps_every_queued_message(container_factory, rabbit_config, rabbit_manager):
    handled.clear()
    classic = config_for(rabbit_config, "classic")
    uri = classic["AMQP_URI"]
    old = container_factory(Waiting, classic)
    old.start()
    publish(uri, {"id": "retried", "fail": True})      # fails once: parked in the .retry queue
    publish(uri, {"poison": True})                      # not the contract: dead-lettered
    wait_until(lambda: dead_letter_count(rabbit_manager, rabbit_config) == 1, timeout=30,
               what="the poison event in swms.dead-letter")
    old.stop()   # as an operator stops every service before migrating

    for n in range(5):
        publish(uri, {"id": f"waiting-{n}"})             # wait in the handler's queue
    with ClusterRpcProxy(classic, timeout=60) as client:
        replies = [client.mq_probe.double.call_async(n) for n in range(3)]   # wait in rpc-mq_probe
        wait_until(lambda: rabbit_manager.get_queue(rabbit_config["vhost"], "rpc-mq_probe")["messages"] == 3,
                   timeout=20, what="three RPC requests waiting")
        before = queue_types(rabbit_manager, rabbit_config["vhost"])
        assert set(before.values()) == {"classic"}

        report: list[str] = []
        migrated = migrate_queues.migrate(uri, MANAGEMENT_URL, "quorum", out=report.append)
        assert sorted(migrated) == sorted(before), report
        assert queue_types(rabbit_manager, rabbit_config["vhost"]) == {name: "quorum" for name in before}

        quorum = config_for(rabbit_config, "quorum")
        container_factory(Waiting, quorum).start()     # would fail on the classic queues (406 PRECONDITION_FAILED)
        assert [reply.result() for reply in replies] == [0, 2, 4]
    wait_until(lambda: all(f"waiting-{n}" in handled for n in range(5)) and "retried" in handled, timeout=20,
               what="the waiting events and the retried one handled")
    assert sorted(handled) == sorted(["retried:failed once", "retried", *(f"waiting-{n}" for n in range(5))])
    [letter] = take_dead_letters(quorum)
    assert letter["x-swms-reason"].startswith("payload does not match the contract")


def dead_letter_count(rabbit_manager, rabbit_config) -> int:
    found = {q["name"]: q for q in rabbit_manager.get_queues(rabbit_config["vhost"])}
    return found.get("swms.dead-letter", {}).get("messages", 0)


def take_dead_letters(config: dict) -> list[dict]:
    """The dead letters' headers (declaring swms.dead-letter as a service of that type does)."""
    found = []
    with Connection(config["AMQP_URI"]) as conn:
        queue = dead_letter_queue(config)(conn.channel())
        queue.declare()
        while (message := queue.get(no_ack=True)) is not None:
            found.append(dict(message.headers))
    return found


def test_migration_refuses_while_a_service_consumes(container_factory, rabbit_config):
    classic = config_for(rabbit_config, "classic")
    container_factory(Waiting, classic).start()
    with pytest.raises(SystemExit, match="stop every service first"):
        migrate_queues.migrate(classic["AMQP_URI"], MANAGEMENT_URL, "quorum", out=lambda line: None)


def test_a_dry_run_changes_nothing_and_quorum_back_to_classic_works(container_factory, rabbit_config, rabbit_manager):
    quorum = config_for(rabbit_config, "quorum")
    service = container_factory(Waiting, quorum)
    service.start()
    publish(quorum["AMQP_URI"], {"poison": True})
    wait_until(lambda: dead_letter_count(rabbit_manager, rabbit_config) == 1, timeout=30, what="a dead letter")
    service.stop()
    vhost = rabbit_config["vhost"]
    before = queue_types(rabbit_manager, vhost)
    assert migrate_queues.migrate(quorum["AMQP_URI"], MANAGEMENT_URL, "classic", dry_run=True, out=lambda line: None)
    assert queue_types(rabbit_manager, vhost) == before
    migrate_queues.migrate(quorum["AMQP_URI"], MANAGEMENT_URL, "classic", out=lambda line: None)
    assert set(queue_types(rabbit_manager, vhost).values()) == {"classic"}
    # declared exactly as a classic service declares it, and the dead letter kept
    assert len(take_dead_letters({**quorum, "AMQP_QUEUE_TYPE": "classic"})) == 1
