"""The agency example, run as it ships: ``examples/agency_subscriber.py`` as a separate process (a
plain pika client), receiving certificate_issued from the real certificate service; its durable
(quorum) queue keeps an event published while the subscriber is away; the keyed ID hash matches;
given several broker nodes it fails over between them."""
from __future__ import annotations

import json
import subprocess
import sys
import urllib.parse
import uuid

import eventlet
import pytest
from kombu import Connection, Exchange, Queue

from swms import idcard
from swms.config import REPO_ROOT
from tests.integration.test_certificate_support import (
    HOLDER_ID,
    application,
    approve,
    dev_key,
    outbox_rows,
    running_certificate,
    snapshot,
)
from tests.support import valid_id, wait_until
from tools.localstack import free_port

pytestmark = pytest.mark.integration
SUBSCRIBER = REPO_ROOT / "examples" / "agency_subscriber.py"


def pika_url(amqp_uri: str) -> str:
    """nameko's pyamqp://user:pass@host:port/vhost → pika's amqp:// with the vhost quoted."""
    parts = urllib.parse.urlsplit(amqp_uri)
    vhost = urllib.parse.unquote(parts.path[1:]) or "/"
    return f"amqp://{parts.netloc}/{urllib.parse.quote(vhost, safe='')}"


class Subscriber:
    def __init__(self, *args: str):
        self.process = subprocess.Popen([sys.executable, str(SUBSCRIBER), *args], stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        with eventlet.Timeout(30):
            ready = self.process.stderr.readline()
        assert ready.startswith("ready:"), ready + self.process.stderr.read()

    def lines(self, count: int, timeout: float = 40) -> list[dict]:
        received = []
        with eventlet.Timeout(timeout):
            while len(received) < count:
                line = self.process.stdout.readline()
                assert line, f"subscriber ended early: {self.process.stderr.read()}"
                received.append(json.loads(line))
        return received

    def finish(self) -> int:
        return self.process.wait(20)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def certificate(service_config, container_factory):
    with running_certificate(service_config, container_factory) as config:
        yield config


def test_agency_subscriber_receives_issued_events_on_its_durable_queue(certificate, amqp_uri, tmp_path):
    config = certificate
    url = pika_url(amqp_uri)
    queue = f"agency-hr-{uuid.uuid4().hex[:8]}"
    key_file = tmp_path / "id-hash.key"
    key_file.write_bytes(dev_key(config, "id_hash_key"))  # handed to the agency by the operators
    state = str(tmp_path / "seen.sqlite")
    common = ["--amqp-url", url, "--queue", queue, "--state-file", state]

    subscriber = Subscriber(*common, "--max-events", "1", "--id-hash-key-file", str(key_file),
                            "--match-id-number", HOLDER_ID)
    try:
        first_id = application(snapshot())
        approve(amqp_uri, first_id)
        [event] = subscriber.lines(1)
        assert subscriber.finish() == 0  # --max-events 1: done
    finally:
        subscriber.kill()
    assert event["event_type"] == "certificate_issued" and event["schema_version"] == 1
    assert event["application_id"] == first_id and len(event["certificate_number"]) == 13
    assert event["id_number_masked"] == idcard.mask(HOLDER_ID)
    assert event["matched_id_number"] == idcard.mask(HOLDER_ID)  # the keyed hash matched
    assert HOLDER_ID not in json.dumps(event, ensure_ascii=False)

    # While the agency is away, another certificate is issued: its event waits in the durable queue.
    second_id = application(snapshot(id_number=valid_id("44030519950612402"), region="440305"))
    approve(amqp_uri, second_id)
    wait_until(lambda: len([row for row in outbox_rows(config, "certificate_issued") if row["published_at"]]) == 2,
               timeout=40, what="the second certificate_issued to be published")
    subscriber = Subscriber(*common, "--max-events", "1")
    try:
        [later] = subscriber.lines(1)
        assert subscriber.finish() == 0
    finally:
        subscriber.kill()
    assert later["application_id"] == second_id and later["certificate_number"].startswith("44")
    assert "matched_id_number" not in later


def publish_certificate_event(amqp_uri: str, event_id: str) -> None:
    exchange = Exchange("certificate.events", type="topic", durable=True)
    with Connection(amqp_uri) as conn:
        conn.Producer().publish({"schema_version": 1, "event_id": event_id, "application_id": event_id},
                                exchange=exchange, routing_key="certificate_issued", serializer="json",
                                declare=[exchange], delivery_mode=2)


def test_agency_subscriber_takes_every_node_keeps_a_quorum_queue_and_reconnects(amqp_uri, rabbit_config,
                                                                                rabbit_manager):
    """Given the cluster's nodes it connects to the first that answers (here the second: nothing
    listens on the first), declares a quorum queue, and when its connection drops (as when a node
    stops) it connects again and goes on; an event published meanwhile waits in its queue."""
    queue = f"agency-hr-{uuid.uuid4().hex[:8]}"
    url = pika_url(amqp_uri)
    dead_node = url.replace(f"@{urllib.parse.urlsplit(url).netloc.split('@')[1]}", f"@127.0.0.1:{free_port()}")
    subscriber = Subscriber("--amqp-url", dead_node, "--amqp-url", url, "--queue", queue, "--max-events", "2")
    try:
        assert rabbit_manager.get_queue(rabbit_config["vhost"], queue)["type"] == "quorum"
        publish_certificate_event(amqp_uri, "first")
        assert [event["event_id"] for event in subscriber.lines(1)] == ["first"]
        # The broker drops the subscriber's connection (the management API lists it after a few seconds).
        [connection] = wait_until(lambda: [c for c in rabbit_manager.get_connections()
                                           if c.get("vhost") == rabbit_config["vhost"]], timeout=30,
                                  what="the subscriber's connection listed")
        rabbit_manager.delete_connection(connection["name"])
        with eventlet.Timeout(30):
            said = [subscriber.process.stderr.readline(), subscriber.process.stderr.readline()]
        assert said[0].startswith("connection lost") and said[1].startswith("ready:"), said
        publish_certificate_event(amqp_uri, "second")
        assert [event["event_id"] for event in subscriber.lines(1)] == ["second"]
        assert subscriber.finish() == 0
    finally:
        subscriber.kill()


def test_agency_subscriber_names_the_type_of_an_existing_classic_queue(amqp_uri):
    queue = f"agency-hr-{uuid.uuid4().hex[:8]}"
    with Connection(amqp_uri) as conn:   # declared classic before, as the example did
        Queue(queue, durable=True)(conn.channel()).declare()
    result = subprocess.run([sys.executable, str(SUBSCRIBER), "--amqp-url", pika_url(amqp_uri), "--queue", queue],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "x-queue-type" in result.stderr and "--queue-type" in result.stderr
