"""Exactly once in effect, shown by killing the service: the certificate service runs as a real
``nameko run`` process and is SIGKILLed mid-issue, first between render and store, then between
store and the issued event, and restarted each time. Nothing is lost (the certificate is issued and
announced) and nothing is duplicated (one number used, one stored PDF, one event).

The process stops at a named step through an environment-enabled test hook
(``SWMS_TEST_PAUSE_AT=<step>``, services/certificate/issuing.py), which writes a marker file and
waits there until killed: the kill lands exactly between the two steps, not by chance.
"""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import uuid
from pathlib import Path

import pytest

from services.certificate import signing
from swms.config import REPO_ROOT
from tests.integration.test_certificate_support import (
    application,
    approve,
    certificates,
    objects,
    outbox_rows,
    serials,
    snapshot,
    start_stand_ins,
    stored_pdf,
)
from tests.support import EventTap, healthy, rpc_client, wait_until
from tools.localstack import NAMEKO

pytestmark = pytest.mark.integration


class ServiceProcess:
    def __init__(self, env: dict, log: Path):
        self.env, self.log = env, log
        self.process: subprocess.Popen | None = None

    def start(self, pause_at: str | None, marker: Path) -> None:
        env = dict(self.env)
        env.pop("SWMS_TEST_PAUSE_AT", None)
        if pause_at:
            env.update(SWMS_TEST_PAUSE_AT=pause_at, SWMS_TEST_PAUSE_MARKER=str(marker))
        marker.unlink(missing_ok=True)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [NAMEKO, "run", "--config", "services/certificate/config.yaml", "services.certificate.service"],
                cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_healthy(self, amqp_uri: str) -> None:
        def up():
            if self.process.poll() is not None:
                raise AssertionError(f"certificate exited: {self.log.read_text(errors='replace')[-3000:]}")
            return healthy(amqp_uri, "certificate")
        wait_until(up, timeout=60, interval=0.5, what="the certificate process to answer")

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)  # no clean-up of any kind, render workers included
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def service(service_config, container_factory, tmp_path, amqp_uri, keys_dir):
    stand_ins = start_stand_ins(service_config, container_factory)
    config = service_config("certificate", CERTIFICATE_S3_BUCKET=f"certs-{uuid.uuid4().hex[:12]}")
    env = dict(os.environ)
    env.update({
        "PYTHONPATH": str(REPO_ROOT), "AMQP_URI": amqp_uri, "CERTIFICATE_DB_URL": config["DB_URL"],
        "S3_ENDPOINT_URL": config["S3_ENDPOINT_URL"], "S3_ACCESS_KEY": config["S3_ACCESS_KEY"],
        "S3_SECRET_KEY": config["S3_SECRET_KEY"], "CERTIFICATE_S3_BUCKET": config["CERTIFICATE_S3_BUCKET"],
        "AUTH_PUBLIC_KEY_FILE": str(keys_dir / "token-signing.pub.pem"),
        "CERTIFICATE_SERVICE_TOKEN_FILE": str(keys_dir / "certificate.service-token"),
        "CERT_RENDER_PROCESSES": "1", "CERT_ISSUE_LEASE_SECONDS": "2", "CERT_RETRY_POLL_SECONDS": "1",
        "CERT_RETRY_MAX_SECONDS": "2", "LOG_LEVEL": "INFO",
    })
    process = ServiceProcess(env, tmp_path / "certificate.log")
    yield process, config
    process.stop()
    for container in stand_ins:
        container.stop()  # before the test databases are dropped


def test_killed_between_render_and_store_and_between_store_and_event_loses_and_duplicates_nothing(
        service, amqp_uri, tmp_path):
    process, config = service
    marker = tmp_path / "paused-at"
    snap = snapshot()
    application_id = application(snap)
    tap = EventTap(amqp_uri, "certificate", "certificate_issued")
    try:
        # 1. killed after rendering, before storing
        process.start("after_render", marker)
        process.wait_healthy(amqp_uri)
        approve(amqp_uri, application_id)
        wait_until(marker.exists, timeout=60, what="the service to reach after_render")
        process.kill()
        [row] = certificates(config)
        assert row.status == "issuing" and row.sha256 is None
        number = row.certificate_number
        assert objects(config) == [] and outbox_rows(config) == []

        # 2. restarted: the unacknowledged approval comes back; killed after storing, before the event
        process.start("after_store", marker)
        wait_until(marker.exists, timeout=90, what="the service to reach after_store")
        process.kill()
        [row] = certificates(config)
        assert (row.certificate_number, row.status) == (number, "issuing")  # the same number, reused
        assert objects(config) == [f"certificates/{number}.pdf", f"certificates/{number}.vc.jwt"]  # the VC beside it
        first_copy = stored_pdf(config, number)
        assert outbox_rows(config) == []

        # 3. restarted without the hook: finishes with the stored copy, announces once
        process.start(None, marker)
        events = tap.collect(1, timeout=90)
        assert len(events) == 1, "the issued event never came"
        assert tap.collect(1, timeout=5) == []  # and no second one
    finally:
        tap.close()
    event = events[0]
    [row] = certificates(config)
    assert (row.certificate_number, row.status, event["certificate_number"]) == (number, "issued", number)
    assert serials(config) == {number[:7]: 1}  # no number was used up by the crashes
    assert objects(config) == [f"certificates/{number}.pdf", f"certificates/{number}.vc.jwt"]  # the VC beside it
    pdf = stored_pdf(config, number)
    assert pdf == first_copy  # the copy stored before the crash is the certificate: no second render won
    assert hashlib.sha256(pdf).hexdigest() == row.sha256 == event["sha256"]
    assert len(outbox_rows(config, "certificate_issued")) == 1
    with rpc_client(amqp_uri) as client:
        chain = client.certificate.get_signing_certificates()["chain_pem"].encode()
    assert signing.validate_pdf(pdf, chain).ok
    assert not marker.exists()
