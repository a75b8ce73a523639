"""Failing event handlers: transient failures retried with backoff, poison messages dead-lettered
with their reason, and the stream keeps flowing; with classic queues and with quorum queues (whose
.retry queue holds each message for its own time, as a classic one does)."""
from __future__ import annotations

import collections
import json
import logging
import urllib.request

import pytest
from kombu import Connection, Exchange
from pydantic import BaseModel

from swms.deadletter import event_handler, guarded_event_handler
from swms.ops import OpsEndpoint
from swms.queues import dead_letter_queue
from tests.support import valid_id, wait_until
from tools.localstack import free_port

pytestmark = pytest.mark.integration

handled: list[str] = []
failures: collections.Counter = collections.Counter()


class Thing(BaseModel):
    id: str
    fail_times: int = 0


class FlakyConsumer:
    name = "dl_probe"
    ops = OpsEndpoint()

    @event_handler("dl_source", "thing")
    def on_thing(self, payload):
        thing = Thing.model_validate(payload)
        if failures[thing.id] < thing.fail_times:
            failures[thing.id] += 1
            raise RuntimeError(f"transient failure {failures[thing.id]} for {thing.id}")
        handled.append(thing.id)


class RequeueingConsumer:
    """Nameko's requeue_on_error, on the guarded consumer (as certificate's approval handler)."""
    name = "dl_requeue_probe"
    ops = OpsEndpoint()

    @guarded_event_handler("dl_source", "thing", requeue_on_error=True)
    def on_thing(self, payload):
        handled.append(f"requeueing:{Thing.model_validate(payload).id}")


def publish(amqp_uri: str, body, raw: bool = False) -> None:
    with Connection(amqp_uri) as conn:
        producer = conn.Producer()
        exchange = Exchange("dl_source.events", type="topic", durable=True)
        if raw:
            producer.publish(body, exchange=exchange, routing_key="thing", content_type="application/json",
                             content_encoding="utf-8", declare=[exchange])
        else:
            producer.publish(body, exchange=exchange, routing_key="thing", serializer="json", declare=[exchange])


def metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def dead_letters(amqp_uri: str, queue_type: str = "classic") -> list[tuple[dict, bytes]]:
    found = []
    with Connection(amqp_uri) as conn:
        queue = dead_letter_queue({"AMQP_QUEUE_TYPE": queue_type})(conn.default_channel)
        queue.declare()
        while (message := queue.get(no_ack=True)) is not None:
            found.append((dict(message.headers), message.body))
    return found


@pytest.fixture(params=["classic", "quorum"])
def consumer(container_factory, rabbit_config, request):
    handled.clear()
    failures.clear()
    config = {"AMQP_URI": rabbit_config["AMQP_URI"], "EVENT_MAX_ATTEMPTS": 3, "EVENT_RETRY_BASE_SECONDS": 0.2,
              "AMQP_QUEUE_TYPE": request.param}
    container_factory(FlakyConsumer, config).start()
    return config


def test_transient_failures_are_retried_until_handled_once(consumer, amqp_uri):
    publish(amqp_uri, {"id": "a", "fail_times": 2})
    wait_until(lambda: handled == ["a"], timeout=15, what="the retried event")
    assert failures["a"] == 2 and dead_letters(amqp_uri, consumer["AMQP_QUEUE_TYPE"]) == []


def test_poison_messages_go_to_the_dead_letter_queue_and_the_stream_flows(consumer, amqp_uri):
    publish(amqp_uri, b"{this is not json", raw=True)
    publish(amqp_uri, {"wrong": "schema"})
    publish(amqp_uri, {"id": "always", "fail_times": 99})
    publish(amqp_uri, {"id": "good"})
    wait_until(lambda: "good" in handled, timeout=15, what="the good event after the poison ones")
    letters: list = []  # each look drains the queue: keep what earlier looks found
    wait_until(lambda: letters.extend(dead_letters(amqp_uri, consumer["AMQP_QUEUE_TYPE"])) or len(letters) >= 3,
               timeout=20, what="three dead letters")
    assert len(letters) == 3
    reasons = sorted(h["x-swms-reason"] for h, _ in letters)
    assert reasons[0].startswith("failed 3 times, last: RuntimeError")
    assert reasons[1].startswith("malformed message")
    assert reasons[2].startswith("payload does not match the contract")
    # kombu hands back text for a utf-8 body: compare bytes
    bodies = {h["x-swms-reason"].split(":")[0]: body if isinstance(body, bytes) else body.encode()
              for h, body in letters}
    assert bodies["malformed message"] == b"{this is not json"
    assert json.loads(bodies["payload does not match the contract"]) == {"wrong": "schema"}
    assert all(h["x-swms-queue"].startswith("evt-dl_source-thing--dl_probe") for h, _ in letters)
    assert handled == ["good"]


ID_NUMBER = valid_id("11010519900307123")
HOSTILE = [
    b"[" * 1_000 + b"]" * 1_000,
    b'{"a": ' * 100_000 + b"1" + b"}" * 100_000,
    b'{"id": ' + b"9" * 5_000 + b"}",
    b'{"id": "' + "李明华".encode("gb18030") + b'", "id_number": "' + ID_NUMBER.encode() + b'"}',
]


@pytest.mark.parametrize("probe", [FlakyConsumer, RequeueingConsumer])
def test_undecodable_events_are_dead_lettered_with_a_bounded_log_line(probe, container_factory, rabbit_config,
                                                                      amqp_uri, caplog):
    """Deep nesting, a 5,000-digit integer, bytes that are not UTF-8: each dead-lettered once, whole,
    logged in one short line with ID numbers masked, counted; the next event is handled."""
    handled.clear()
    port = free_port()
    container_factory(probe, {"AMQP_URI": amqp_uri, "OPS_PORT": port}).start()
    caplog.set_level(logging.INFO)
    for body in HOSTILE:
        publish(amqp_uri, body, raw=True)
    publish(amqp_uri, {"id": "after"})
    wait_until(lambda: any(item.endswith("after") for item in handled), timeout=15, what="the event after them")
    letters: list = []
    wait_until(lambda: letters.extend(dead_letters(amqp_uri)) or len(letters) >= len(HOSTILE),
               timeout=20, what="the dead letters")
    assert sorted(body if isinstance(body, bytes) else body.encode() for _, body in letters) == sorted(HOSTILE)
    assert all(h["x-swms-reason"].startswith("malformed message: ") and len(h["x-swms-reason"]) < 300
               for h, _ in letters)
    lines = [record.getMessage() for record in caplog.records]
    assert [line[:100] for line in lines if len(line.encode()) > 1024] == []
    assert not any("Can't decode message body" in line or ID_NUMBER in line for line in lines)
    dead_lettered = [line for line in lines if "dead-lettered" in line]
    assert len(dead_lettered) == len(HOSTILE) and any("110***********" in line for line in dead_lettered)
    assert (f'swms_unreadable_messages_total{{kind="event",reason="undecodable",service="{probe.name}"}} '
            f'{len(HOSTILE)}.0') in metrics(port)
