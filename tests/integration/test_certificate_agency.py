"""The agency example, run as it ships: ``examples/agency_subscriber.py`` as a separate process (a
plain pika client), receiving certificate_issued from the real certificate service; its durable
queue keeps an event published while the subscriber is away; the keyed ID hash matches."""
from __future__ import annotations

import json
import subprocess
import sys
import urllib.parse
import uuid

import eventlet
import pytest

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
