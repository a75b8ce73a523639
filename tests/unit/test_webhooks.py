"""Webhooks for agencies, the rules without a broker: Standard Webhooks signing (against the
reference vector), secrets sealed at rest, URL rules, the retry schedule, order, dead deliveries,
the disable rule, replay and retention (services/notification/webhooks.py)."""
from __future__ import annotations

import datetime as dt
import json
import random
import uuid

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from services.notification import models as m
from services.notification import webhooks as w
from swms.db import sqlite_transactions
from swms.errors import SwmsError

T0 = dt.datetime(2026, 12, 1, 8, 0, 0)
SETTINGS = w.WebhookSettings(retry_base_seconds=5, retry_max_seconds=3600, give_up_after=dt.timedelta(days=3),
                             disable_after=dt.timedelta(days=1))


def session() -> Session:
    engine = sqlite_transactions(create_engine("sqlite://"))
    m.metadata.create_all(engine)
    return Session(engine, expire_on_commit=False)


BOX = w.SecretBox(Fernet.generate_key())


# ---- signing -----------------------------------------------------------------------------------

def test_signature_matches_the_standard_webhooks_reference_vector():
    # The vector of the Standard Webhooks reference libraries (github.com/standard-webhooks/standard-webhooks).
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert w.sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == expected
    assert w.verify(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", body, f"v1,bm9wZQ== {expected}")
    assert not w.verify(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265331", body, expected)
    assert not w.verify(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", body + b" ", expected)


def test_headers_carry_the_event_id_timestamp_and_a_verifiable_signature():
    secret = w.new_secret()
    assert secret.startswith("whsec_") and len(w.secret_key(secret)) == 32
    body = b'{"event_id":"e1","x":"\xe6\x9d\x8e"}'
    headers = w.headers_for(secret, "e1", body, 1_700_000_000.7)
    assert headers["webhook-id"] == "e1" and headers["webhook-timestamp"] == "1700000000"
    assert w.verify(secret, "e1", headers["webhook-timestamp"], body, headers["webhook-signature"])
    assert not w.verify(w.new_secret(), "e1", headers["webhook-timestamp"], body, headers["webhook-signature"])


def test_secrets_are_sealed_at_rest_and_open_only_with_the_key(tmp_path):
    sealed = BOX.seal("whsec_abc")
    assert "whsec_abc" not in sealed and BOX.open(sealed) == "whsec_abc"
    with pytest.raises(RuntimeError, match="does not decrypt"):
        w.SecretBox(Fernet.generate_key()).open(sealed)
    with pytest.raises(SwmsError) as refused:
        w.SecretBox(None).seal("whsec_abc")
    assert refused.value.field == "WEBHOOK_SECRETS_KEY_FILE"
    assert w.SecretBox.from_file(str(tmp_path / "absent")).fernet is None
    (tmp_path / "bad").write_text("not a key")
    with pytest.raises(ValueError, match="Fernet"):
        w.SecretBox.from_file(str(tmp_path / "bad"))


@pytest.mark.parametrize("url, allow, ok", [
    ("https://hr.example.gov.cn/swms/hook", False, True),
    ("http://hr.example.gov.cn/hook", True, False),          # plain http only on loopback
    ("http://127.0.0.1:8080/hook", False, False),           # … and only when allowed
    ("http://127.0.0.1:8080/hook", True, True),
    ("http://[::1]:8080/hook", True, True),
    ("https://user:pw@hr.example.gov.cn/hook", False, False),
    ("ftp://hr.example.gov.cn/hook", False, False),
    ("https:///nohost", False, False),
])
def test_url_rules(url, allow, ok):
    settings = w.WebhookSettings(allow_http_loopback=allow)
    if ok:
        assert w.check_url(url, settings) == url
    else:
        with pytest.raises(SwmsError) as refused:
            w.check_url(url, settings)
        assert refused.value.field == "url"


# ---- retry schedule ----------------------------------------------------------------------------

def test_backoff_doubles_with_jitter_up_to_the_cap():
    rng = random.Random(7)
    for attempts in range(1, 15):
        ceiling = min(3600, 5 * 2 ** (attempts - 1))
        waits = [w.backoff_seconds(attempts, SETTINGS, rng) for _ in range(50)]
        assert all(ceiling * 0.5 <= wait <= ceiling for wait in waits)
        assert len({round(wait, 6) for wait in waits}) > 1      # jittered, not one fixed instant
    # the whole window with these settings (waits capped at an hour): about 105 tries over 3 days,
    # the last at the deadline itself
    now, give_up, attempts = T0, T0 + SETTINGS.give_up_after, 0
    while True:
        attempts += 1
        when = w.next_attempt(T0, give_up, attempts, now, SETTINGS, rng)
        if when is None:
            break
        assert now < when <= give_up
        now = when
    assert now == give_up and 90 < attempts < 125


# ---- the log, order, dead deliveries, the disable rule, replay -----------------------------------

def event(event_type: str = "certificate_issued", **extra) -> dict:
    return {"event_id": str(uuid.uuid4()), "schema_version": 1, "occurred_at": "2026-12-01T08:00:00.000Z",
            "certificate_number": "1120262000001", "holder_name_masked": "李**", **extra}


def register(s: Session, types=("certificate_issued", "certificate_revoked")) -> tuple[m.WebhookEndpoint, str]:
    endpoint, secret = w.register_endpoint(s, agency="北京市人社局", url="https://hr.example.gov.cn/hook",
                                           event_types=list(types), admin_email="ops@hr.example.gov.cn",
                                           actor="admin-1", box=BOX, settings=SETTINGS, now=T0)
    s.commit()
    return endpoint, secret


def test_register_keeps_only_the_sealed_secret_and_audits():
    s = session()
    endpoint, secret = register(s)
    row = s.execute(select(m.WebhookEndpoint)).scalar_one()
    assert secret not in row.secret_encrypted and BOX.open(row.secret_encrypted) == secret
    assert [r["action"] for r in m.audit.for_entity(s, endpoint.endpoint_id)] == ["webhook_endpoint.registered"]
    with pytest.raises(SwmsError) as refused:
        w.register_endpoint(s, agency="x", url="https://a.example/h", event_types=["application_submitted"],
                            admin_email="ops@hr.example.gov.cn", actor="admin-1", box=BOX, settings=SETTINGS)
    assert refused.value.field == "event_types"


def test_events_are_logged_once_and_queued_in_order_for_subscribers_only():
    s = session()
    endpoint, _ = register(s)
    issued, suspended, revoked = event(), event("certificate_suspended"), event("certificate_revoked")
    for event_type, payload in (("certificate_issued", issued), ("certificate_suspended", suspended),
                                ("certificate_revoked", revoked)):
        w.log_event(s, event_type, payload, SETTINGS, now=T0)
    assert w.log_event(s, "certificate_issued", issued, SETTINGS, now=T0) == 0      # redelivered: nothing new
    s.commit()
    _, queue = w.queue_of(s, endpoint.endpoint_id, 10, now=T0)
    assert [item.event_id for item in queue] == [issued["event_id"], revoked["event_id"]]   # not subscribed: suspended
    assert json.loads(queue[0].body) == issued


def test_a_failing_head_blocks_the_rest_then_dies_and_lets_them_through():
    s = session()
    endpoint, _ = register(s)
    first, second = event(), event()
    w.log_event(s, "certificate_issued", first, SETTINGS, now=T0)
    w.log_event(s, "certificate_issued", second, SETTINGS, now=T0)
    s.commit()
    assert w.claim_endpoints(s, 10, SETTINGS, now=T0) == [endpoint.endpoint_id]
    assert w.claim_endpoints(s, 10, SETTINGS, now=T0) == []          # leased to the first sender
    w.release(s, endpoint.endpoint_id)
    _, queue = w.queue_of(s, endpoint.endpoint_id, 10, now=T0)
    outcome = w.record_failure(s, queue[0].delivery_id, status_code=500, latency_ms=12, outcome="http_error",
                               error="HTTP 500", settings=SETTINGS, now=T0, rng=random.Random(1))
    s.commit()
    assert not outcome.dead and not outcome.disabled
    # the head is not due yet: the endpoint is not claimed although the second delivery is due
    assert w.claim_endpoints(s, 10, SETTINGS, now=T0 + dt.timedelta(seconds=1)) == []
    late = T0 + SETTINGS.give_up_after
    outcome = w.record_failure(s, queue[0].delivery_id, status_code=None, latency_ms=3, outcome="unreachable",
                               error="ConnectionError", settings=SETTINGS, now=late)
    assert outcome.dead
    s.commit()
    _, queue = w.queue_of(s, endpoint.endpoint_id, 10, now=late)
    assert [item.event_id for item in queue] == [second["event_id"]]
    (dead, attempts), = w.list_deliveries(s, endpoint.endpoint_id, "dead", 10)
    assert dead.event_id == first["event_id"] and [a.outcome for a in attempts] == ["http_error", "unreachable"]
    assert all(a.error and "certificate" not in a.error for a in attempts)


def test_an_endpoint_failing_for_the_disable_period_is_disabled_and_a_success_resets_the_clock():
    s = session()
    endpoint, _ = register(s)
    payload = event()
    w.log_event(s, "certificate_issued", payload, SETTINGS, now=T0)
    s.commit()
    (delivery_id,) = [item.delivery_id for item in w.queue_of(s, endpoint.endpoint_id, 10, now=T0)[1]]

    def fail(at):
        return w.record_failure(s, delivery_id, status_code=503, latency_ms=5, outcome="http_error",
                                error="HTTP 503", settings=SETTINGS, now=at)

    assert not fail(T0).disabled
    assert not fail(T0 + SETTINGS.disable_after - dt.timedelta(seconds=1)).disabled
    w.record_success(s, delivery_id, 200, 4, now=T0 + dt.timedelta(hours=23, minutes=59, seconds=30))
    assert s.get(m.WebhookEndpoint, endpoint.endpoint_id).failing_since is None   # the clock starts again
    other = event()
    w.log_event(s, "certificate_issued", other, SETTINGS, now=T0)
    s.commit()
    (delivery_id,) = [item.delivery_id for item in w.queue_of(s, endpoint.endpoint_id, 10, now=T0)[1]]
    start = T0 + dt.timedelta(days=1)
    assert not fail(start).disabled
    outcome = fail(start + SETTINGS.disable_after)
    assert outcome.disabled and outcome.endpoint.status == m.DISABLED
    s.commit()
    assert w.claim_endpoints(s, 10, SETTINGS, now=start + dt.timedelta(days=2)) == []   # no sending while disabled
    w.log_event(s, "certificate_issued", event(), SETTINGS, now=start)
    assert len(w.queue_of(s, endpoint.endpoint_id, 10)[1]) == 1        # not queued for a disabled endpoint
    w.set_endpoint_status(s, endpoint.endpoint_id, True, "接收端已修复", "admin-1", SETTINGS,
                          now=start + dt.timedelta(days=2))
    s.commit()
    assert w.claim_endpoints(s, 10, SETTINGS, now=start + dt.timedelta(days=2)) == [endpoint.endpoint_id]
    actions = [r["action"] for r in m.audit.for_entity(s, endpoint.endpoint_id)]
    assert actions == ["webhook_endpoint.registered", "webhook_endpoint.disabled", "webhook_endpoint.enabled"]


def test_a_receiver_answering_410_gone_disables_its_endpoint_at_once():
    s = session()
    endpoint, _ = register(s)
    w.log_event(s, "certificate_issued", event(), SETTINGS, now=T0)
    s.commit()
    (delivery_id,) = [item.delivery_id for item in w.queue_of(s, endpoint.endpoint_id, 10, now=T0)[1]]
    outcome = w.record_failure(s, delivery_id, status_code=410, latency_ms=5, outcome="http_error",
                               error="HTTP 410", settings=SETTINGS, now=T0)
    assert outcome.disabled and not outcome.dead
    assert (outcome.endpoint.status, outcome.endpoint.disabled_reason) == (m.DISABLED, w.DISABLED_BY_GONE)
    s.commit()
    assert w.claim_endpoints(s, 10, SETTINGS, now=T0 + dt.timedelta(hours=1)) == []
    assert s.get(m.WebhookDelivery, delivery_id).status == m.PENDING   # sent again once re-enabled
    [disabled] = [r for r in m.audit.for_entity(s, endpoint.endpoint_id) if r["action"] == "webhook_endpoint.disabled"]
    assert disabled["detail"]["reason"] == w.DISABLED_BY_GONE


def test_replay_since_an_event_or_a_time_queues_the_range_in_order_with_the_same_ids():
    s = session()
    endpoint, _ = register(s, types=("certificate_issued",))
    payloads = [event() for _ in range(5)]
    for index, payload in enumerate(payloads):
        w.log_event(s, "certificate_issued", payload, SETTINGS, now=T0 + dt.timedelta(minutes=index))
    w.log_event(s, "certificate_revoked", event("certificate_revoked"), SETTINGS, now=T0)   # not subscribed
    for delivery_id in [item.delivery_id for item in w.queue_of(s, endpoint.endpoint_id, 10)[1]]:
        w.record_success(s, delivery_id, 204, 3, now=T0)
    s.commit()
    result = w.replay(s, endpoint.endpoint_id, since_event_id=payloads[1]["event_id"], since=None, actor="admin-1",
                      settings=SETTINGS, now=T0)
    assert (result.count, result.first_event_id, result.last_event_id) == (3, payloads[2]["event_id"],
                                                                          payloads[4]["event_id"])
    by_time = w.replay(s, endpoint.endpoint_id, since_event_id=None, since=T0 + dt.timedelta(minutes=4),
                       actor="admin-1", settings=SETTINGS, now=T0)
    assert by_time.count == 1
    s.commit()
    queued = [item.event_id for item in w.queue_of(s, endpoint.endpoint_id, 10)[1]]
    assert queued == [payloads[2]["event_id"], payloads[3]["event_id"], payloads[4]["event_id"],
                      payloads[4]["event_id"]]          # in log order; a duplicate carries the same id
    with pytest.raises(SwmsError) as refused:
        w.replay(s, endpoint.endpoint_id, since_event_id=str(uuid.uuid4()), since=None, actor="admin-1",
                 settings=SETTINGS)
    assert refused.value.field == "since_event_id"


def test_retention_drops_old_events_but_not_those_still_pending():
    s = session()
    endpoint, _ = register(s, types=("certificate_issued",))
    old_done, old_pending, recent = event(), event(), event()
    w.log_event(s, "certificate_issued", old_done, SETTINGS, now=T0)
    w.log_event(s, "certificate_issued", old_pending, SETTINGS, now=T0)
    w.log_event(s, "certificate_issued", recent, SETTINGS, now=T0 + dt.timedelta(days=100))
    first = w.queue_of(s, endpoint.endpoint_id, 10)[1][0]
    w.record_success(s, first.delivery_id, 200, 1, now=T0)
    s.commit()
    assert w.prune(s, SETTINGS, now=T0 + dt.timedelta(days=91)) == 1
    s.commit()
    kept = set(s.execute(select(m.AgencyEvent.event_id)).scalars())
    assert kept == {old_pending["event_id"], recent["event_id"]}


def test_a_sender_keeps_its_lease_while_it_works_through_a_long_queue():
    s = session()
    endpoint, _ = register(s)
    w.log_event(s, "certificate_issued", event(), SETTINGS, now=T0)
    s.commit()
    assert w.claim_endpoints(s, 10, SETTINGS, now=T0) == [endpoint.endpoint_id]
    later = T0 + SETTINGS.lease - dt.timedelta(seconds=1)
    w.extend_lease(s, endpoint.endpoint_id, SETTINGS, now=later)
    s.commit()
    assert w.claim_endpoints(s, 10, SETTINGS, now=T0 + SETTINGS.lease) == []     # not taken over mid-queue
    assert w.claim_endpoints(s, 10, SETTINGS, now=later + SETTINGS.lease) == [endpoint.endpoint_id]
