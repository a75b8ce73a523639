"""Webhooks for agencies: rules in plain Python over a SQLAlchemy session (no network here).

Four tables (models.py): ``webhook_endpoints`` (an agency's URL, event types, encrypted secret),
``agency_events`` (every certificate event agencies may receive, kept ``WEBHOOK_EVENT_RETENTION_DAYS``),
``webhook_deliveries`` (one event to one endpoint) and ``webhook_attempts`` (every HTTP attempt:
outcome, status code, latency; never a body).

- An event is logged and its deliveries are created in ONE transaction, together with the
  notification inbox row (outbox-like: a crash loses nothing, a redelivered event adds nothing).
- Deliveries to one endpoint go out in log order (``event_seq``): only the oldest pending delivery of
  an endpoint is attempted; while it fails, the later ones wait behind it. A delivery that dies
  (``WEBHOOK_GIVE_UP_SECONDS`` after it was created) stops blocking; the agency replays it.
- Retries: exponential backoff with jitter (:func:`backoff_seconds`); an endpoint whose deliveries
  have failed without a single success for ``WEBHOOK_DISABLE_AFTER_SECONDS`` is disabled and its
  administrator emailed.
- Signing follows Standard Webhooks: ``webhook-id`` (the event id), ``webhook-timestamp``,
  ``webhook-signature`` = ``v1,`` + base64(HMAC-SHA256(key, "<id>.<timestamp>.<body>")) where the key
  is the base64 part of the ``whsec_…`` secret.
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import random
import secrets
import urllib.parse
import uuid
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import and_, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.notification.models import (
    ACTIVE,
    DEAD,
    DELIVERED,
    DISABLED,
    PENDING,
    AgencyEvent,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    audit,
)
from swms import errors
from swms.outbox import utcnow

# The events agencies receive (docs/events-for-agencies.md): certificate lifecycle, nothing personal.
AGENCY_EVENT_TYPES = ("certificate_issued", "certificate_suspended", "certificate_reinstated",
                      "certificate_revoked", "certificate_expired", "certificate_reissued")
AGENCY_EVENT_SOURCE = "certificate"
SECRET_PREFIX = "whsec_"
DISABLED_BY_FAILURES = "连续失败超过时限，已自动停用"
# Standard Webhooks: a receiver answering 410 Gone asks not to be called again.
DISABLED_BY_GONE = "接收端答复 410 Gone（不再接收），已自动停用"
ACTOR = "notification"
MAX_ERROR = 300


@dataclass(frozen=True)
class WebhookSettings:
    retry_base_seconds: float = 5.0             # first retry after about this long
    retry_max_seconds: float = 6 * 3600.0       # no single wait longer than this
    give_up_after: dt.timedelta = dt.timedelta(days=3)
    disable_after: dt.timedelta = dt.timedelta(days=1)
    retention: dt.timedelta = dt.timedelta(days=90)
    allow_http_loopback: bool = False           # development and tests only
    lease: dt.timedelta = dt.timedelta(seconds=60)


# ---- signing -----------------------------------------------------------------------------------

def new_secret() -> str:
    """A fresh signing secret in the Standard Webhooks form: ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def secret_key(secret: str) -> bytes:
    return base64.b64decode(secret[len(SECRET_PREFIX):] if secret.startswith(SECRET_PREFIX) else secret)


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(secret_key(secret), signed, hashlib.sha256).digest()).decode("ascii")


def verify(secret: str, message_id: str, timestamp: str | int, body: bytes, signature_header: str) -> bool:
    """What a receiver does (docs/webhooks.md): any ``v1,`` entry matching, compared in constant time."""
    expected = sign(secret, message_id, int(timestamp), body)
    return any(hmac.compare_digest(expected, candidate) for candidate in signature_header.split())


def headers_for(secret: str, event_id: str, body: bytes, now: float) -> dict[str, str]:
    timestamp = int(now)
    return {"content-type": "application/json", "webhook-id": event_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secret, event_id, timestamp, body)}


class SecretBox:
    """Encrypts signing secrets at rest (Fernet: AES-128-CBC + HMAC-SHA256) with the configured key
    (``WEBHOOK_SECRETS_KEY_FILE``). A secret must stay usable for signing, so it cannot be hashed."""

    def __init__(self, key: bytes | str | None):
        self.fernet = Fernet(key) if key else None

    @classmethod
    def from_file(cls, path: str | None) -> "SecretBox":
        """No file configured or present: registration is refused (the service still runs).
        A file that is not a Fernet key: ValueError (the service refuses to start)."""
        from pathlib import Path
        if not path or not Path(path).exists():
            return cls(None)
        text = Path(path).read_text(encoding="ascii").strip()
        try:
            return cls(text.encode())
        except (ValueError, TypeError) as exc:
            raise ValueError(f"WEBHOOK_SECRETS_KEY_FILE {path} does not hold a Fernet key "
                             f"(32 bytes, url-safe base64): {exc}") from None

    def seal(self, secret: str) -> str:
        if self.fernet is None:
            raise errors.SwmsError(errors.INVALID_STATE, "未配置网络回调密钥加密密钥（WEBHOOK_SECRETS_KEY_FILE），无法登记",
                                   "WEBHOOK_SECRETS_KEY_FILE")
        return self.fernet.encrypt(secret.encode()).decode("ascii")

    def open(self, sealed: str) -> str:
        if self.fernet is None:
            raise RuntimeError("WEBHOOK_SECRETS_KEY_FILE is not configured: webhook secrets cannot be read")
        try:
            return self.fernet.decrypt(sealed.encode()).decode()
        except InvalidToken:
            raise RuntimeError("a webhook secret does not decrypt with WEBHOOK_SECRETS_KEY_FILE "
                               "(was the key replaced?)") from None


# ---- retry schedule ----------------------------------------------------------------------------

def backoff_seconds(attempts: int, settings: WebhookSettings, rng: random.Random | None = None) -> float:
    """Wait after the ``attempts``-th failure: base × 2^(attempts-1), capped, times a jitter in
    [0.5, 1.0] (so that an agency's recovery is not met by every retry at the same instant)."""
    rng = rng or random
    ceiling = min(settings.retry_max_seconds, settings.retry_base_seconds * 2 ** min(attempts - 1, 40))
    return ceiling * rng.uniform(0.5, 1.0)


def next_attempt(delivery_created: dt.datetime, give_up_at: dt.datetime, attempts: int, now: dt.datetime,
                 settings: WebhookSettings, rng: random.Random | None = None) -> dt.datetime | None:
    """When to try again after a failure, or None: the delivery is dead. The last try is at the
    give-up time itself, so a delivery gets its full window."""
    if now >= give_up_at:
        return None
    return min(give_up_at, now + dt.timedelta(seconds=backoff_seconds(attempts, settings, rng)))


# ---- endpoints ---------------------------------------------------------------------------------

_LOOPBACK_NAMES = {"localhost"}


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, settings: WebhookSettings) -> str:
    url = (url or "").strip()
    if not url or len(url) > 2048:
        raise errors.validation_error("url", "回调地址不能为空，且不超过 2048 个字符")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise errors.validation_error("url", "回调地址必须是 https:// 开头的完整网址")
    if parts.username or parts.password:
        raise errors.validation_error("url", "回调地址不能包含用户名或密码")
    if parts.fragment:
        raise errors.validation_error("url", "回调地址不能包含 # 片段")
    if parts.scheme == "http" and not (settings.allow_http_loopback and _is_loopback(parts.hostname)):
        raise errors.validation_error("url", "回调地址必须使用 https（仅开发环境允许本机 http）")
    return url


def check_event_types(event_types: list[str]) -> list[str]:
    chosen = list(dict.fromkeys(event_types or []))
    unknown = [t for t in chosen if t not in AGENCY_EVENT_TYPES]
    if not chosen or unknown:
        raise errors.validation_error("event_types", f"事件类型须从 {', '.join(AGENCY_EVENT_TYPES)} 中选择"
                                      + (f"，不认识：{', '.join(unknown)}" if unknown else ""))
    return chosen


def register_endpoint(session: Session, *, agency: str, url: str, event_types: list[str], admin_email: str,
                      actor: str, box: SecretBox, settings: WebhookSettings,
                      now: dt.datetime | None = None) -> tuple[WebhookEndpoint, str]:
    """Returns the endpoint and its secret in clear, to be shown once; only the sealed form is kept."""
    from services.notification.domain import AddressError, normalise_address
    agency = (agency or "").strip()
    if not agency or len(agency) > 100:
        raise errors.validation_error("agency", "机构名称不能为空，且不超过 100 个字符")
    url = check_url(url, settings)
    chosen = check_event_types(event_types)
    try:
        address = normalise_address(admin_email)
    except AddressError:
        raise errors.validation_error("admin_email", "管理员电子邮箱格式不正确") from None
    secret = new_secret()
    now = now or utcnow()
    endpoint = WebhookEndpoint(endpoint_id=str(uuid.uuid4()), agency=agency, url=url, event_types=json.dumps(chosen),
                               secret_encrypted=box.seal(secret), admin_email=address, status=ACTIVE,
                               created_by=actor, created_at=now)
    session.add(endpoint)
    audit.record(session, actor, "webhook_endpoint.registered", "webhook_endpoint", endpoint.endpoint_id,
                 {"agency": agency, "url": url, "event_types": chosen})
    return endpoint, secret


def get_endpoint(session: Session, endpoint_id: str, lock: bool = False) -> WebhookEndpoint:
    query = select(WebhookEndpoint).where(WebhookEndpoint.endpoint_id == str(endpoint_id))
    endpoint = session.execute(query.with_for_update() if lock else query).scalar_one_or_none()
    if endpoint is None:
        raise errors.not_found("网络回调地址", "endpoint_id")
    return endpoint


def set_endpoint_status(session: Session, endpoint_id: str, enabled: bool, reason: str, actor: str,
                        settings: WebhookSettings, now: dt.datetime | None = None) -> WebhookEndpoint:
    """Enable (again) or disable by hand. Re-enabling gives the deliveries still pending a fresh
    window; events logged while the endpoint was disabled are not queued for it: replay them
    (since ``disabled_at``)."""
    now = now or utcnow()
    endpoint = get_endpoint(session, endpoint_id, lock=True)
    if enabled:
        endpoint.status, endpoint.failing_since, endpoint.disabled_reason = ACTIVE, None, None
        session.execute(update(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.endpoint_id,
                                                      WebhookDelivery.status == PENDING)
                        .values(next_attempt_at=now, give_up_at=now + settings.give_up_after))
    else:
        endpoint.status, endpoint.disabled_at, endpoint.disabled_reason = DISABLED, now, reason[:200]
    audit.record(session, actor, "webhook_endpoint.enabled" if enabled else "webhook_endpoint.disabled",
                 "webhook_endpoint", endpoint.endpoint_id, {"reason": reason})
    return endpoint


def list_endpoints(session: Session) -> list[WebhookEndpoint]:
    return list(session.execute(select(WebhookEndpoint).order_by(WebhookEndpoint.created_at)).scalars())


# ---- the event log and deliveries --------------------------------------------------------------

def _occurred_at(payload: dict) -> dt.datetime | None:
    try:
        value = dt.datetime.fromisoformat(str(payload.get("occurred_at")).replace("Z", "+00:00"))
    except ValueError:
        return None
    return value.astimezone(dt.timezone.utc).replace(tzinfo=None) if value.tzinfo else value


def body_of(payload: dict) -> str:
    """The JSON body agencies receive: the AMQP event's JSON object, every field as received."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


def log_event(session: Session, event_type: str, payload: dict, settings: WebhookSettings,
              now: dt.datetime | None = None) -> int:
    """Log one agency event and queue it for every active endpoint that wants it, in the caller's
    transaction (the notification inbox row guards against a redelivery; the unique event id too).
    Returns how many deliveries were created."""
    now = now or utcnow()
    event = AgencyEvent(event_id=str(payload["event_id"]), event_type=event_type, payload=body_of(payload),
                        occurred_at=_occurred_at(payload), logged_at=now)
    try:
        with session.begin_nested():
            session.add(event)
    except IntegrityError:
        return 0    # logged already (an earlier delivery of the same event)
    wanted = [e for e in session.execute(select(WebhookEndpoint).where(WebhookEndpoint.status == ACTIVE)).scalars()
              if event_type in json.loads(e.event_types)]
    for endpoint in wanted:
        session.add(_delivery(endpoint.endpoint_id, event, None, settings, now))
    return len(wanted)


def _delivery(endpoint_id: str, event: AgencyEvent, replay_id: str | None, settings: WebhookSettings,
              now: dt.datetime) -> WebhookDelivery:
    return WebhookDelivery(delivery_id=str(uuid.uuid4()), endpoint_id=endpoint_id, event_seq=event.seq,
                           event_id=event.event_id, event_type=event.event_type, replay_id=replay_id, status=PENDING,
                           attempts=0, next_attempt_at=now, give_up_at=now + settings.give_up_after, created_at=now)


@dataclass
class ReplayResult:
    replay_id: str
    count: int
    first_event_id: str | None
    last_event_id: str | None


def replay(session: Session, endpoint_id: str, *, since_event_id: str | None, since: dt.datetime | None,
           actor: str, settings: WebhookSettings, now: dt.datetime | None = None) -> ReplayResult:
    """Queue again every event the endpoint subscribes to, after ``since_event_id`` (exclusive) or
    logged at or after ``since``, in log order, with the same ``webhook-id`` as the first time."""
    if (since_event_id is None) == (since is None):
        raise errors.validation_error("since_event_id", "请给出起始事件编号或起始时间（二选一）")
    now = now or utcnow()
    endpoint = get_endpoint(session, endpoint_id)
    if endpoint.status != ACTIVE:
        raise errors.SwmsError(errors.INVALID_STATE, "网络回调地址已停用，请先重新启用再重放", "endpoint_id")
    query = select(AgencyEvent).where(AgencyEvent.event_type.in_(json.loads(endpoint.event_types)))
    if since_event_id is not None:
        start = session.execute(select(AgencyEvent.seq).where(AgencyEvent.event_id == str(since_event_id))
                                ).scalar_one_or_none()
        if start is None:
            raise errors.SwmsError(errors.NOT_FOUND, "该事件不在保留期内的事件记录中，请按时间重放", "since_event_id")
        query = query.where(AgencyEvent.seq > start)
    else:
        query = query.where(AgencyEvent.logged_at >= since)
    replay_id = str(uuid.uuid4())
    events = list(session.execute(query.order_by(AgencyEvent.seq)).scalars())
    for event in events:
        session.add(_delivery(endpoint.endpoint_id, event, replay_id, settings, now))
    audit.record(session, actor, "webhook_endpoint.replay_requested", "webhook_endpoint", endpoint.endpoint_id,
                 {"replay_id": replay_id, "since_event_id": since_event_id,
                  "since": since.isoformat() if since else None, "count": len(events)})
    return ReplayResult(replay_id, len(events), events[0].event_id if events else None,
                        events[-1].event_id if events else None)


# ---- the sender's side -------------------------------------------------------------------------

def _head_due(now: dt.datetime):
    """Endpoints whose oldest pending delivery is due."""
    head = (select(WebhookDelivery.endpoint_id, func.min(WebhookDelivery.event_seq).label("seq"))
            .where(WebhookDelivery.status == PENDING).group_by(WebhookDelivery.endpoint_id).subquery())
    return (select(WebhookDelivery.endpoint_id)
            .join(head, and_(head.c.endpoint_id == WebhookDelivery.endpoint_id, head.c.seq == WebhookDelivery.event_seq))
            .where(WebhookDelivery.status == PENDING, WebhookDelivery.next_attempt_at <= now))


def claim_endpoints(session: Session, limit: int, settings: WebhookSettings, now: dt.datetime | None = None
                    ) -> list[str]:
    """Active endpoints with a due head, not leased by another sender; leased to this one."""
    now = now or utcnow()
    ids = list(session.execute(
        select(WebhookEndpoint.endpoint_id)
        .where(WebhookEndpoint.status == ACTIVE,
               (WebhookEndpoint.lease_until.is_(None)) | (WebhookEndpoint.lease_until <= now),
               WebhookEndpoint.endpoint_id.in_(_head_due(now)))
        .limit(limit).with_for_update(skip_locked=True)).scalars())
    if ids:
        session.execute(update(WebhookEndpoint).where(WebhookEndpoint.endpoint_id.in_(ids))
                        .values(lease_until=now + settings.lease))
    return ids


@dataclass
class Outgoing:
    delivery_id: str
    event_id: str
    event_seq: int
    body: bytes
    due: bool


def queue_of(session: Session, endpoint_id: str, limit: int, now: dt.datetime | None = None
             ) -> tuple[WebhookEndpoint, list[Outgoing]]:
    """The endpoint and its pending deliveries in order (log order, then replay order)."""
    now = now or utcnow()
    endpoint = get_endpoint(session, endpoint_id)
    rows = session.execute(
        select(WebhookDelivery.delivery_id, WebhookDelivery.event_id, WebhookDelivery.event_seq,
               WebhookDelivery.next_attempt_at, AgencyEvent.payload)
        .join(AgencyEvent, AgencyEvent.seq == WebhookDelivery.event_seq)
        .where(WebhookDelivery.endpoint_id == endpoint_id, WebhookDelivery.status == PENDING)
        .order_by(WebhookDelivery.event_seq, WebhookDelivery.created_at, WebhookDelivery.delivery_id)
        .limit(limit)).all()
    return endpoint, [Outgoing(r.delivery_id, r.event_id, r.event_seq, r.payload.encode(), r.next_attempt_at <= now)
                      for r in rows]


def extend_lease(session: Session, endpoint_id: str, settings: WebhookSettings, now: dt.datetime | None = None) -> None:
    """Still sending: keep the endpoint from another sender (a long queue outlasts one lease)."""
    session.execute(update(WebhookEndpoint).where(WebhookEndpoint.endpoint_id == endpoint_id)
                    .values(lease_until=(now or utcnow()) + settings.lease))


def release(session: Session, endpoint_id: str) -> None:
    session.execute(update(WebhookEndpoint).where(WebhookEndpoint.endpoint_id == endpoint_id)
                    .values(lease_until=None))


def _attempt(session: Session, delivery: WebhookDelivery, now: dt.datetime, status_code: int | None,
             latency_ms: int, outcome: str, error: str | None) -> None:
    session.add(WebhookAttempt(delivery_id=delivery.delivery_id, endpoint_id=delivery.endpoint_id, attempted_at=now,
                               status_code=status_code, latency_ms=latency_ms, outcome=outcome,
                               error=error[:MAX_ERROR] if error else None))


def record_success(session: Session, delivery_id: str, status_code: int, latency_ms: int,
                   now: dt.datetime | None = None) -> None:
    now = now or utcnow()
    delivery = session.get(WebhookDelivery, delivery_id)
    delivery.status, delivery.delivered_at, delivery.attempts = DELIVERED, now, delivery.attempts + 1
    delivery.last_status_code, delivery.last_error = status_code, None
    _attempt(session, delivery, now, status_code, latency_ms, "delivered", None)
    session.execute(update(WebhookEndpoint).where(WebhookEndpoint.endpoint_id == delivery.endpoint_id,
                                                  WebhookEndpoint.failing_since.is_not(None))
                    .values(failing_since=None))


@dataclass
class FailureOutcome:
    dead: bool
    disabled: bool
    endpoint: WebhookEndpoint


def record_failure(session: Session, delivery_id: str, *, status_code: int | None, latency_ms: int, outcome: str,
                   error: str, settings: WebhookSettings, now: dt.datetime | None = None,
                   rng: random.Random | None = None) -> FailureOutcome:
    """Log the attempt, schedule the next (or declare the delivery dead), and apply the disable
    rule: failing without a success for ``disable_after`` disables the endpoint (the caller emails
    its administrator in the same transaction)."""
    now = now or utcnow()
    delivery = session.get(WebhookDelivery, delivery_id)
    delivery.attempts += 1
    delivery.last_status_code, delivery.last_error = status_code, error[:MAX_ERROR]
    _attempt(session, delivery, now, status_code, latency_ms, outcome, error)
    when = next_attempt(delivery.created_at, delivery.give_up_at, delivery.attempts, now, settings, rng)
    dead = when is None
    if dead:
        delivery.status = DEAD
        audit.record(session, ACTOR, "webhook_delivery.dead", "webhook_delivery", delivery.delivery_id,
                     {"event_id": delivery.event_id, "attempts": delivery.attempts, "last_error": error[:MAX_ERROR]})
    else:
        delivery.next_attempt_at = when
    endpoint = get_endpoint(session, delivery.endpoint_id)
    reason = None
    if endpoint.failing_since is None:
        endpoint.failing_since = now
    if endpoint.status == ACTIVE:
        if status_code == 410:
            reason = DISABLED_BY_GONE   # at once; the delivery stays pending for a re-enable
        elif now - endpoint.failing_since >= settings.disable_after:
            reason = DISABLED_BY_FAILURES
    if reason is not None:
        endpoint.status, endpoint.disabled_at, endpoint.disabled_reason = DISABLED, now, reason
        audit.record(session, ACTOR, "webhook_endpoint.disabled", "webhook_endpoint", endpoint.endpoint_id,
                     {"reason": reason, "failing_since": endpoint.failing_since.isoformat(),
                      "last_error": error[:MAX_ERROR]})
    return FailureOutcome(dead, reason is not None, endpoint)


# ---- what operators see ------------------------------------------------------------------------

def list_deliveries(session: Session, endpoint_id: str, status: str | None, limit: int
                    ) -> list[tuple[WebhookDelivery, list[WebhookAttempt]]]:
    get_endpoint(session, endpoint_id)
    query = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id)
    if status:
        query = query.where(WebhookDelivery.status == status)
    deliveries = list(session.execute(query.order_by(WebhookDelivery.event_seq.desc(),
                                                     WebhookDelivery.created_at.desc()).limit(limit)).scalars())
    attempts: dict[str, list[WebhookAttempt]] = {d.delivery_id: [] for d in deliveries}
    if deliveries:
        for attempt in session.execute(select(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(list(attempts)))
                                       .order_by(WebhookAttempt.attempt_id)).scalars():
            attempts[attempt.delivery_id].append(attempt)
    return [(d, attempts[d.delivery_id]) for d in deliveries]


def prune(session: Session, settings: WebhookSettings, now: dt.datetime | None = None, limit: int = 1000) -> int:
    """Drop events past the retention period, and finished deliveries and attempts as old."""
    cutoff = (now or utcnow()) - settings.retention
    old = list(session.execute(select(AgencyEvent.seq).where(AgencyEvent.logged_at < cutoff).limit(limit)).scalars())
    if not old:
        return 0
    session.execute(delete(WebhookAttempt).where(WebhookAttempt.attempted_at < cutoff))
    session.execute(delete(WebhookDelivery).where(WebhookDelivery.event_seq.in_(old),
                                                  WebhookDelivery.status != PENDING))
    pending = set(session.execute(select(WebhookDelivery.event_seq).where(WebhookDelivery.event_seq.in_(old))).scalars())
    removable = [seq for seq in old if seq not in pending]
    session.execute(delete(AgencyEvent).where(AgencyEvent.seq.in_(removable)))
    return len(removable)
