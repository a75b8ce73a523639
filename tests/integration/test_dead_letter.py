"""Failing event handlers: transient failures retried with backoff, poison messages dead-lettered
with their reason, and the stream keeps flowing; with classic queues and with quorum queues (whose
.retry queue holds each message for its own time, as a classic one does)."""
from __future__ import annotations

import collections
import json

import pytest
from kombu import Connection, Exchange
from pydantic import BaseModel

from swms.deadletter import event_handler
from swms.queues import dead_letter_queue
from tests.support import wait_until

pytestmark = pytest.mark.integration

handled: list[str] = []
failures: collections.Counter = collections.Counter()


class Thing(BaseModel):
    id: str
    fail_times: int = 0


class FlakyConsumer:
    name = "dl_probe"

    @event_handler("dl_source", "thing")
    def on_thing(self, payload):
        thing = Thing.model_validate(payload)
        if failures[thing.id] < thing.fail_times:
            failures[thing.id] += 1
            raise RuntimeError(f"transient failure {failures[thing.id]} for {thing.id}")
        handled.append(thing.id)


def publish(amqp_uri: str, body, raw: bool = False) -> None:
    with Connection(amqp_uri) as conn:
        producer = conn.Producer()
        exchange = Exchange("dl_source.events", type="topic", durable=True)
        if raw:
            producer.publish(body, exchange=exchange, routing_key="thing", content_type="application/json",
                             content_encoding="utf-8", declare=[exchange])
        else:
            producer.publish(body, exchange=exchange, routing_key="thing", serializer="json", declare=[exchange])


def dead_letters(config: dict) -> list[tuple[dict, bytes]]:
    found = []
    with Connection(config["AMQP_URI"]) as conn:
        queue = dead_letter_queue(config)(conn.default_channel)
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
    assert failures["a"] == 2 and dead_letters(consumer) == []


def test_poison_messages_go_to_the_dead_letter_queue_and_the_stream_flows(consumer, amqp_uri):
    publish(amqp_uri, b"{this is not json", raw=True)
    publish(amqp_uri, {"wrong": "schema"})
    publish(amqp_uri, {"id": "always", "fail_times": 99})
    publish(amqp_uri, {"id": "good"})
    wait_until(lambda: "good" in handled, timeout=15, what="the good event after the poison ones")
    letters: list = []  # each look drains the queue: keep what earlier looks found
    wait_until(lambda: letters.extend(dead_letters(consumer)) or len(letters) >= 3,
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
