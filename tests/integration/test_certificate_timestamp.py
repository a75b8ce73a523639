"""PAdES B-T over the real pipeline: the certificate service with ``CERT_TSA_URL`` pointing at an
RFC 3161 time-stamping authority on loopback (tools/dev_tsa.py), its render worker asking it over
HTTP. While the TSA does not answer, the approval stays pending and is retried (never issued
without the token, never lost); once it answers, the certificate is issued once, time-stamped.
SQLite only: the database plays no part in what is checked here."""
from __future__ import annotations

import datetime as dt

import pytest

from services.certificate import signing
from tests.integration.test_certificate import call
from tests.integration.test_certificate_support import (
    application,
    approve,
    certificate,
    issue_request,
    running_certificate,
    snapshot,
    stored_pdf,
)
from tests.support import EventTap, wait_until
from tools.dev_tsa import DevTsa

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)]


def test_a_tsa_that_is_down_defers_the_issue_and_the_certificate_comes_time_stamped(
        service_config, container_factory, amqp_uri):
    with DevTsa() as tsa, running_certificate(service_config, container_factory, CERT_TSA_URL=tsa.url,
                                              CERT_TSA_TIMEOUT_SECONDS=2) as config:
        tsa.stop()                                   # the TSA goes away before the approval comes
        application_id = application(snapshot())
        tap = EventTap(amqp_uri, "certificate", "certificate_issued")
        try:
            approve(amqp_uri, application_id)
            def deferred_twice():
                request = issue_request(config, application_id)
                return (request is not None and request.attempts >= 2
                        and request.last_error_code == "TIMESTAMP_UNAVAILABLE" and request)

            request = wait_until(deferred_twice, timeout=30, what="two attempts deferred for the TSA")
            assert request.status == "pending"
            assert tap.collect(1, timeout=0.5) == []  # nothing issued without the token
            tsa.start()                              # back, on the same address
            [event] = tap.collect(1, timeout=30)
        finally:
            tap.close()
        assert event["application_id"] == application_id
        assert issue_request(config, application_id).status == "done"
        assert certificate(config, event["certificate_number"]).status == "issued"
        published = call(amqp_uri, None, "get_signing_certificates", None)
        report = signing.validate_pdf(stored_pdf(config, event["certificate_number"]),
                                      published["chain_pem"].encode(), tsa.roots_pem)
        assert report.ok and report.timestamp_ok is True, report
        assert abs(report.timestamped_at - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=2)
        assert tsa.requests >= 1
