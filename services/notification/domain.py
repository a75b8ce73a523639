"""Notification rules in plain Python over a SQLAlchemy session.

Three tables carry all state (see models.py): jobs (what to notify about, until the recipients are
known), messages (every email, recorded before it is sent) and reminders (re-registration,
scheduled from the certificate's validity). Each function here changes rows inside the caller's
transaction; nothing here talks to the network.

Errors recorded against one message or job carry a stable code (below), the field at fault and a
sentence for operators; they never stop other messages.
"""
from __future__ import annotations

import calendar
import datetime as dt
import hashlib
import json
import random
import re
import uuid
from dataclasses import dataclass, field

from sqlalchemy import case, func, insert, or_, select, true, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.notification.models import (
    CANCELLED,
    DONE,
    ENQUEUED,
    FAILED,
    HELD,
    PENDING,
    SCHEDULED,
    SENT,
    SKIPPED,
    Job,
    Message,
    Reminder,
    audit,
)
from services.notification.templates import (
    BEIJING,
    DEFAULT_LANGUAGES,
    RenderError,
    Templates,
)
from swms import errors
from swms.config import Number, Numbers
from swms.outbox import utcnow

ACTOR = "notification"

# ---- codes recorded against a message or a job (stable: operators and dashboards branch on them)
ADDRESS_INVALID = "ADDRESS_INVALID"            # the address cannot be sent to (field to_address)
RECIPIENT_REFUSED = "RECIPIENT_REFUSED"        # the mail server refused the address for good (5xx)
SMTP_REJECTED = "SMTP_REJECTED"                # the mail server refused the message for good (5xx)
SMTP_UNAVAILABLE = "SMTP_UNAVAILABLE"          # connection or temporary (4xx) failure: retried
DELIVERY_EXPIRED = "DELIVERY_EXPIRED"          # a time-limited message (reset code) could not go out in time
GAVE_UP = "GAVE_UP"                            # transient failures went on past the retry window
CONTACT_NOT_FOUND = "CONTACT_NOT_FOUND"        # identity does not know the person / feedback / reset
UPSTREAM_UNAVAILABLE = "UPSTREAM_UNAVAILABLE"  # identity did not answer (or refused): retried
EVENT_INVALID = "EVENT_INVALID"                # the event does not match its contract
NO_RECIPIENTS = "NO_RECIPIENTS"                # no officer covers the region at that level
CHAIN_UNKNOWN = "CHAIN_UNKNOWN"                # no review chain for that kind: the next level is unknown
RETRYABLE_BY_OPERATOR = (RECIPIENT_REFUSED, SMTP_REJECTED, GAVE_UP)

REDACTED = "[内容已在发送后删除 / removed after delivery]"
MAX_BACKOFF_SECONDS = 600
WINDOW_OPEN, ONE_MONTH = "reregistration_window_open", "reregistration_reminder"
REMINDER_HOUR_BEIJING = 9
# Notification's numeric settings, checked at start (swms.settings.CheckedNumbers in the service).
NUMBERS = Numbers("notification", {
    "SMTP_PORT": Number(8025, 1, 65535),
    "SMTP_CONNECTIONS": Number(2, 1, 50),
    "MAIL_GIVE_UP_HOURS": Number(48, 0.1, 24 * 30, whole=False),
    "NOTIFICATION_POLL_SECONDS": Number(5, 0.1, 3600, whole=False),
    "NOTIFICATION_LEASE_SECONDS": Number(60, 1, 3600, whole=False),
    "REREGISTRATION_WINDOW_MONTHS": Number(3, 1, 24),
    "REREGISTRATION_REMINDER_MONTHS": Number(1, 1, 24),
    # webhooks for agencies (webhooks.py, docs/webhooks.md)
    "WEBHOOK_RETRY_BASE_SECONDS": Number(5, 0.01, 3600, whole=False),
    "WEBHOOK_RETRY_MAX_SECONDS": Number(21600, 0.01, 86400, whole=False),
    "WEBHOOK_GIVE_UP_SECONDS": Number(259200, 1, 2592000, whole=False),
    "WEBHOOK_DISABLE_AFTER_SECONDS": Number(86400, 1, 2592000, whole=False),
    "WEBHOOK_EVENT_RETENTION_DAYS": Number(90, 90, 3650),
    "WEBHOOK_TIMEOUT_SECONDS": Number(10, 0.5, 60, whole=False),
    "WEBHOOK_POLL_SECONDS": Number(1, 0.05, 60, whole=False),
    "WEBHOOK_CONCURRENCY": Number(10, 1, 200),
    "WEBHOOK_BATCH": Number(100, 1, 1000),
})


@dataclass
class Settings:
    """What the rules need from config (built once per container)."""
    portal_url: str = "https://swms.example.gov.cn"
    languages: tuple[str, ...] = DEFAULT_LANGUAGES
    give_up_after: dt.timedelta = dt.timedelta(hours=48)
    window_months: int = 3           # re-registration accepted this many months before expiry
    reminder_months: int = 1         # the second reminder, this many months before expiry
    chains: dict = field(default_factory=dict)      # review chains (who reviews next)
    feedback_officer_level: str | None = "county"
    templates: Templates = field(default_factory=Templates)
    # how long a claimed job or message stays with the replica that claimed it; after a crash,
    # another replica (or the restarted one) takes it over when the lease ends
    lease: dt.timedelta = dt.timedelta(seconds=60)


class AddressError(ValueError):
    pass


# ---- addresses ---------------------------------------------------------------------------------

_ATEXT = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def normalise_address(raw: object) -> str:
    """The address as it goes on the wire (domain in IDNA form), or AddressError saying why not.

    Stricter than a sign-up form: one ``@``, a dot-atom local part in ASCII (SMTPUTF8 relays are
    not assumed), a domain of at least two valid labels, nothing that could break a header.
    """
    if not isinstance(raw, str) or not raw.strip():
        raise AddressError("the address is empty")
    address = raw.strip()
    if len(address) > 254:
        raise AddressError(f"the address has {len(address)} characters; at most 254 are allowed")
    if any(ch.isspace() or ord(ch) < 32 or ch in "<>(),;:\\\"[]" for ch in address):
        raise AddressError("the address contains spaces, brackets, quotes or separators")
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or "@" in local:
        raise AddressError("the address must have exactly one @ with text on both sides")
    if len(local) > 64 or not _ATEXT.match(local):
        raise AddressError("the part before @ is not a valid mailbox name (ASCII letters, digits, "
                           "dots not at the ends and not doubled)")
    try:
        ascii_domain = domain.rstrip(".").encode("idna").decode("ascii")
    except UnicodeError:
        raise AddressError("the domain is not a valid (internationalised) domain name") from None
    labels = ascii_domain.split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels) or labels[-1].isdigit():
        raise AddressError("the domain is not a valid domain name")
    return f"{local}@{ascii_domain.lower()}"


def mask_address(address: str) -> str:
    local, _, domain_part = address.partition("@")
    return f"{local[:1]}***@{domain_part}" if domain_part else "***"


def recipient_key(person_id: str | None, address: str) -> str:
    return person_id or "e" + hashlib.sha256(address.strip().lower().encode()).hexdigest()[:32]


def backoff(attempts: int) -> dt.timedelta:
    """2, 4, 8 … s, capped at 10 minutes, with ±20 % jitter so that retries of a burst spread out."""
    seconds = min(MAX_BACKOFF_SECONDS, 2 ** min(attempts, 20))
    return dt.timedelta(seconds=seconds * random.uniform(0.8, 1.2))


# ---- messages ----------------------------------------------------------------------------------

@dataclass
class Outgoing:
    """One email to record: who, what kind, the template values."""
    audience: str
    person_id: str | None
    to_address: str
    kind: str
    values: dict[str, object]
    reference: str | None = None
    priority: int = 0
    expires_at: dt.datetime | None = None
    sensitive: bool = False

    @property
    def recipient(self) -> str:
        return recipient_key(self.person_id, self.to_address)


def record(session: Session, outgoing: Outgoing, *, key: str, job_id: str | None, settings: Settings,
           now: dt.datetime | None = None, fresh: bool = False) -> Message | None:
    """Record one message before any attempt to send it; None if ``key`` was recorded already.

    A message that cannot be sent (bad address, template problem, subject too long, already
    expired) is recorded as failed with the reason, so that operators see it; it never raises.
    ``fresh``: the caller holds the event's inbox row in this transaction, so the key cannot exist
    (no look-up, no savepoint; the unique index still guards).
    """
    if not fresh and session.execute(select(Message.message_id).where(Message.idempotency_key == key)).first():
        return None
    now = now or utcnow()
    error: tuple[str, str, str] | None = None
    address = outgoing.to_address if isinstance(outgoing.to_address, str) else str(outgoing.to_address)
    subject, text, body_html, language = outgoing.kind, "", "", settings.languages[0]
    try:
        address = normalise_address(outgoing.to_address)
        rendered = settings.templates.render(outgoing.kind, outgoing.values, settings.languages)
        subject, text, body_html, language = rendered.subject, rendered.text, rendered.html, rendered.language
    except AddressError as exc:
        error = (ADDRESS_INVALID, "to_address", f"malformed address: {exc}")
    except RenderError as exc:
        error = (exc.code, exc.field, exc.detail)
    if error is None and outgoing.expires_at is not None and outgoing.expires_at <= now:
        error = (DELIVERY_EXPIRED, "expires_at", "the message expired before it could be sent")
    message = Message(
        message_id=str(uuid.uuid4()), idempotency_key=key, job_id=job_id, person_id=outgoing.person_id,
        audience=outgoing.audience, reference=outgoing.reference, kind=outgoing.kind, language=language,
        to_address=address[:254], subject=subject[:200], body_text=text, body_html=body_html,
        status=PENDING, priority=outgoing.priority, attempts=0, next_attempt_at=now,
        give_up_at=now + settings.give_up_after, sensitive=outgoing.sensitive, expires_at=outgoing.expires_at,
        created_at=now)
    if error is not None:
        message.status = FAILED
        message.error_code, message.error_field, message.last_error = error[0], error[1], error[2][:2000]
        if message.sensitive:
            message.body_text = message.body_html = REDACTED
    if fresh:
        session.add(message)
    else:
        try:
            with session.begin_nested():
                session.add(message)
        except IntegrityError:  # a concurrent composition of the same job recorded it first
            return None
    detail = {"kind": outgoing.kind, "audience": outgoing.audience}
    if error is not None:
        detail["error_code"] = error[0]
    audit.record(session, ACTOR, "message.failed" if error else "message.recorded", "message",
                 message.message_id, detail)
    return message


def claim_due_messages(session: Session, limit: int, lease: dt.timedelta,
                       now: dt.datetime | None = None) -> tuple[str, list[Message]]:
    """Claim up to ``limit`` due messages with a lease (several mailers never send the same row
    at once: PostgreSQL skips rows another transaction locked; the lease keeps them off the list
    until it ends, after which a crashed mailer's rows become due again)."""
    now = now or utcnow()
    token = str(uuid.uuid4())
    messages = session.execute(
        select(Message).where(Message.status == PENDING, Message.next_attempt_at <= now)
        .order_by(Message.priority.desc(), Message.created_at).limit(limit)
        .with_for_update(skip_locked=True)).scalars().all()
    if messages:
        session.execute(update(Message).where(Message.message_id.in_([m.message_id for m in messages]))
                        .values(next_attempt_at=now + lease, claim_token=token)
                        .execution_options(synchronize_session=False))
    return token, list(messages)


def extend_lease(session: Session, token: str, lease: dt.timedelta, now: dt.datetime | None = None) -> None:
    now = now or utcnow()
    session.execute(update(Message).where(Message.claim_token == token, Message.status == PENDING)
                    .values(next_attempt_at=now + lease).execution_options(synchronize_session=False))


def release(session: Session, token: str, message_ids: list[str], now: dt.datetime | None = None) -> None:
    """Messages claimed but not attempted (the connection broke first, or the process is stopping): due
    again at once."""
    if message_ids:
        session.execute(update(Message).where(Message.message_id.in_(message_ids), Message.claim_token == token,
                                              Message.status == PENDING)
                        .values(next_attempt_at=now or utcnow(), claim_token=None)
                        .execution_options(synchronize_session=False))


def _redacted_body(column):
    return case((Message.sensitive == true(), REDACTED), else_=column)


def mark_sent(session: Session, message_id: str, token: str, now: dt.datetime | None = None) -> bool:
    now = now or utcnow()
    changed = session.execute(
        update(Message).where(Message.message_id == message_id, Message.claim_token == token,
                              Message.status == PENDING)
        .values(status=SENT, sent_at=now, last_attempt_at=now, attempts=Message.attempts + 1,
                error_code=None, error_field=None, last_error=None, claim_token=None,
                body_text=_redacted_body(Message.body_text), body_html=_redacted_body(Message.body_html))
        .execution_options(synchronize_session=False)).rowcount
    if changed:
        audit.record(session, ACTOR, "message.sent", "message", message_id)
    return bool(changed)


def mark_attempt_failed(session: Session, message: Message, token: str, code: str, error: str, *,
                        permanent: bool, field: str | None = None, now: dt.datetime | None = None) -> str:
    """Record a failed attempt; retry later with backoff unless the failure is permanent, the
    message would expire before the next attempt, or its retry window has passed. Returns the
    new status."""
    now = now or utcnow()
    attempts = message.attempts + 1
    next_attempt = now + backoff(attempts)
    status = PENDING
    if permanent:
        status = FAILED
    elif message.expires_at is not None and next_attempt >= message.expires_at:
        status, code, error = FAILED, DELIVERY_EXPIRED, f"expired before it could be delivered; last error: {error}"
    elif message.give_up_at is not None and next_attempt >= message.give_up_at:
        status, code, error = FAILED, GAVE_UP, f"gave up after {attempts} attempts; last error: {error}"
    values = dict(attempts=attempts, last_attempt_at=now, error_code=code, error_field=field,
                  last_error=error[:2000], claim_token=None, status=status)
    if status == PENDING:
        values["next_attempt_at"] = next_attempt
    else:
        values.update(body_text=_redacted_body(Message.body_text), body_html=_redacted_body(Message.body_html))
    changed = session.execute(
        update(Message).where(Message.message_id == message.message_id, Message.claim_token == token,
                              Message.status == PENDING)
        .values(**values).execution_options(synchronize_session=False)).rowcount
    if changed and status == FAILED:
        audit.record(session, ACTOR, "message.failed", "message", message.message_id,
                     {"error_code": code, "attempts": attempts})
    return status


def retry_message(session: Session, message_id: str, actor: str, settings: Settings,
                  now: dt.datetime | None = None) -> Message:
    """An operator sends a failed message again (after fixing the relay or the address's mailbox)."""
    message = session.get(Message, message_id, with_for_update=True)
    if message is None:
        raise errors.not_found("邮件", "message_id")
    if message.status != FAILED or message.error_code not in RETRYABLE_BY_OPERATOR or message.sensitive:
        raise errors.SwmsError(errors.INVALID_STATE, "只有发送失败（邮件服务器拒收或多次重试未成功）的邮件可以重新发送；"
                               "验证码邮件请让本人重新申请", "message_id")
    now = now or utcnow()
    message.status, message.next_attempt_at, message.claim_token = PENDING, now, None
    message.give_up_at = now + settings.give_up_after  # a new retry window
    audit.record(session, actor, "message.retried", "message", message_id, {"previous_error": message.error_code})
    message.error_code = message.error_field = None
    return message


# ---- jobs: what to notify about, until the recipients are known --------------------------------

def add_job(session: Session, *, key: str, task: str, payload: dict, person_id: str | None = None,
            reference: str | None = None, claimed_for: dt.timedelta | None = None,
            give_up_after: dt.timedelta = dt.timedelta(hours=48), now: dt.datetime | None = None,
            guard: bool = True) -> Job | None:
    """Insert a job; None when ``key`` exists (the same event delivered again). ``claimed_for``:
    the caller composes it at once, so the timer leaves it alone for that long. ``guard=False``:
    the caller holds the event's inbox row in this transaction (no savepoint needed)."""
    now = now or utcnow()
    job = Job(job_id=str(uuid.uuid4()), key=key, task=task, person_id=person_id, reference=reference,
              payload=json.dumps(payload, ensure_ascii=False, default=str), status=PENDING, attempts=0,
              next_attempt_at=now + (claimed_for or dt.timedelta(0)), give_up_at=now + give_up_after,
              created_at=now)
    if not guard:
        session.add(job)
        return job
    try:
        with session.begin_nested():
            session.add(job)
    except IntegrityError:
        return None
    return job


def record_invalid_event(session: Session, *, key: str, task: str, payload_text: str, problem: str,
                         now: dt.datetime | None = None) -> Job | None:
    now = now or utcnow()
    job = add_job(session, key=key, task=task, payload={"raw": payload_text[:10000]}, now=now)
    if job is not None:
        job.status, job.error_code, job.error_field = FAILED, EVENT_INVALID, "payload"
        job.last_error, job.done_at = problem[:2000], now
        audit.record(session, ACTOR, "job.failed", "job", job.job_id, {"task": task, "error_code": EVENT_INVALID})
    return job


def claim_due_jobs(session: Session, limit: int, lease: dt.timedelta, now: dt.datetime | None = None) -> list[Job]:
    now = now or utcnow()
    jobs = session.execute(
        select(Job).where(Job.status == PENDING, Job.next_attempt_at <= now).order_by(Job.next_attempt_at)
        .limit(limit).with_for_update(skip_locked=True)).scalars().all()
    if jobs:
        session.execute(update(Job).where(Job.job_id.in_([j.job_id for j in jobs]))
                        .values(next_attempt_at=now + lease).execution_options(synchronize_session=False))
    return list(jobs)


def complete_job(session: Session, job: Job, outgoing: list[Outgoing], settings: Settings,
                 now: dt.datetime | None = None, fresh: bool = False) -> list[Message]:
    """Record the job's messages and mark it done, in the caller's transaction (``fresh``: the job
    was added in this transaction, under the event's inbox row)."""
    now = now or utcnow()
    recorded = []
    for item in outgoing:
        message = record(session, item, key=f"{job.key}:{item.recipient}", job_id=job.job_id, settings=settings,
                         now=now, fresh=fresh)
        if message is not None:
            recorded.append(message)
    if fresh:
        job.status, job.done_at, job.attempts = DONE, now, job.attempts + 1
        return recorded
    session.execute(update(Job).where(Job.job_id == job.job_id, Job.status == PENDING)
                    .values(status=DONE, done_at=now, attempts=Job.attempts + 1, error_code=None,
                            error_field=None, last_error=None).execution_options(synchronize_session=False))
    return recorded


def fail_job(session: Session, job: Job, code: str, field: str | None, error: str, *, permanent: bool,
             now: dt.datetime | None = None) -> str:
    """A composition failed: retry with backoff, or (permanent, or past the window) fail for good."""
    now = now or utcnow()
    attempts = job.attempts + 1
    next_attempt = now + backoff(attempts)
    status = FAILED if permanent or (job.give_up_at is not None and next_attempt >= job.give_up_at) else PENDING
    if status == FAILED and not permanent:
        code, error = GAVE_UP, f"gave up after {attempts} attempts; last error: {error}"
    values = dict(attempts=attempts, error_code=code, error_field=field, last_error=error[:2000], status=status)
    if status == PENDING:
        values["next_attempt_at"] = next_attempt
    else:
        values["done_at"] = now
    session.execute(update(Job).where(Job.job_id == job.job_id, Job.status == PENDING).values(**values)
                    .execution_options(synchronize_session=False))
    if status == FAILED:
        audit.record(session, ACTOR, "job.failed", "job", job.job_id, {"task": job.task, "error_code": code})
    return status


# ---- re-registration reminders ------------------------------------------------------------------

def months_before(day: dt.date, months: int) -> dt.date:
    """The same day of the month ``months`` earlier (the month's last day where it is shorter)."""
    index = day.year * 12 + day.month - 1 - months
    year, month = divmod(index, 12)
    month += 1
    return dt.date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def beijing_morning(day: dt.date) -> dt.datetime:
    """09:00 Beijing time on ``day``, as naive UTC (the database's convention)."""
    local = dt.datetime.combine(day, dt.time(REMINDER_HOUR_BEIJING), tzinfo=BEIJING)
    return local.astimezone(dt.timezone.utc).replace(tzinfo=None)


def beijing_today(now: dt.datetime) -> dt.date:
    return now.replace(tzinfo=dt.timezone.utc).astimezone(BEIJING).date()


def schedule_reminders(session: Session, *, certificate_number: str, person_id: str, valid_until: dt.date,
                       settings: Settings, now: dt.datetime | None = None) -> list[Reminder]:
    """Two reminders per certificate: the re-registration window opens (``window_months`` before
    expiry) and one a month before. Idempotent per certificate (the unique constraint guards a
    race, failing the caller's transaction). A newer certificate of the same person cancels the
    older one's reminders; an older one arriving late is kept cancelled."""
    now = now or utcnow()
    known = session.execute(select(Reminder).where(or_(
        Reminder.certificate_number == certificate_number,
        (Reminder.person_id == person_id) & Reminder.status.in_((SCHEDULED, HELD))))).scalars().all()
    existing = {r.kind for r in known if r.certificate_number == certificate_number}
    newer_exists = False
    for other in known:
        if other.certificate_number == certificate_number:
            continue
        if other.valid_until <= valid_until:
            _set_reminder(session, other, CANCELLED, f"superseded by certificate {certificate_number}", now)
        else:
            newer_exists = True
    created = []
    for kind, months in ((WINDOW_OPEN, settings.window_months), (ONE_MONTH, settings.reminder_months)):
        if kind in existing:
            continue   # scheduled by an earlier event about the same certificate
        reminder = Reminder(reminder_id=str(uuid.uuid4()), certificate_number=certificate_number,
                            person_id=person_id, kind=kind, valid_until=valid_until,
                            due_at=beijing_morning(months_before(valid_until, months)), status=SCHEDULED,
                            created_at=now)
        if newer_exists:
            reminder.status, reminder.note, reminder.done_at = CANCELLED, "a newer certificate exists", now
        session.add(reminder)
        created.append(reminder)
    if created:
        session.execute(insert(audit.table), [
            {"at": now, "actor": ACTOR, "action": "reminder.scheduled", "entity_type": "reminder",
             "entity_id": r.reminder_id, "detail": json.dumps(
                 {"certificate_number": certificate_number, "kind": r.kind, "due_at": r.due_at.isoformat(),
                  "status": r.status}, ensure_ascii=False)} for r in created])
    return created


def _set_reminder(session: Session, reminder: Reminder, status: str, note: str, now: dt.datetime) -> None:
    reminder.status, reminder.note = status, note[:200]
    if status in (CANCELLED, SKIPPED, ENQUEUED):
        reminder.done_at = now
    audit.record(session, ACTOR, f"reminder.{status}", "reminder", reminder.reminder_id, {"note": note})


def change_reminders(session: Session, certificate_number: str, from_statuses: tuple[str, ...], to_status: str,
                     note: str, now: dt.datetime | None = None) -> int:
    """Cancel (revoked, expired, reissued), hold (suspended) or release (reinstated) the reminders."""
    now = now or utcnow()
    rows = session.execute(select(Reminder).where(Reminder.certificate_number == certificate_number,
                                                  Reminder.status.in_(from_statuses))).scalars().all()
    for reminder in rows:
        _set_reminder(session, reminder, to_status, note, now)
        if to_status == SCHEDULED:
            reminder.done_at = None
    return len(rows)


def enqueue_due_reminders(session: Session, limit: int, settings: Settings, now: dt.datetime | None = None) -> int:
    """Turn due reminders into jobs, in the caller's transaction: either a reminder is marked
    enqueued together with its job, or neither happened (a restart mid-run repeats nothing and
    loses nothing). Returns how many reminders were taken."""
    now = now or utcnow()
    due = session.execute(select(Reminder).where(Reminder.status == SCHEDULED, Reminder.due_at <= now)
                          .order_by(Reminder.due_at).limit(limit).with_for_update(skip_locked=True)).scalars().all()
    today = beijing_today(now)
    for reminder in due:
        if today >= reminder.valid_until:
            _set_reminder(session, reminder, SKIPPED, "the certificate expired before the reminder was due", now)
            continue
        if reminder.kind == WINDOW_OPEN and session.execute(select(Reminder.reminder_id).where(
                Reminder.certificate_number == reminder.certificate_number, Reminder.kind == ONE_MONTH,
                Reminder.status == SCHEDULED, Reminder.due_at <= now)).first():
            _set_reminder(session, reminder, SKIPPED, "superseded by the one-month reminder, due too", now)
            continue
        add_job(session, key=f"reminder:{reminder.reminder_id}", task=f"reminder.{reminder.kind}",
                person_id=reminder.person_id, reference=reminder.certificate_number, now=now,
                give_up_after=settings.give_up_after,
                payload={"reminder_id": reminder.reminder_id, "kind": reminder.kind,
                         "certificate_number": reminder.certificate_number, "person_id": reminder.person_id,
                         "valid_until": reminder.valid_until.isoformat(),
                         "window_open": months_before(reminder.valid_until, settings.window_months).isoformat()})
        _set_reminder(session, reminder, ENQUEUED, "due", now)
    return len(due)


# ---- what operators see -------------------------------------------------------------------------

def list_messages(session: Session, person_id: str, status: str | None, limit: int) -> list[Message]:
    query = select(Message).where(Message.person_id == person_id)
    if status:
        query = query.where(Message.status == status)
    return list(session.execute(query.order_by(Message.created_at.desc()).limit(limit)).scalars())


def list_failures(session: Session, *, person_id: str | None, email: str | None, since: dt.datetime | None,
                  include_retrying: bool, limit: int) -> list[tuple[str, Message | Job]]:
    """Failed messages (and, if asked, messages still being retried) and failed jobs, newest first."""
    statuses = [FAILED] + ([PENDING] if include_retrying else [])
    messages = select(Message).where(
        or_(Message.status == FAILED, (Message.status == PENDING) & (Message.attempts > 0))
        if include_retrying else Message.status == FAILED)
    jobs = select(Job).where(Job.status.in_(statuses), or_(Job.status == FAILED, Job.attempts > 0))
    if person_id:
        messages, jobs = messages.where(Message.person_id == person_id), jobs.where(Job.person_id == person_id)
    if email:
        try:
            address = normalise_address(email)
        except AddressError:
            address = email.strip()
        messages = messages.where(func.lower(Message.to_address) == address.lower())
        jobs = None  # jobs do not know addresses (they are looked up when composed)
    if since:
        messages = messages.where(Message.created_at >= since)
        if jobs is not None:
            jobs = jobs.where(Job.created_at >= since)
    found: list[tuple[str, Message | Job]] = [
        ("message", m) for m in session.execute(messages.order_by(Message.created_at.desc()).limit(limit)).scalars()]
    if jobs is not None:
        found += [("job", j) for j in session.execute(jobs.order_by(Job.created_at.desc()).limit(limit)).scalars()]
    found.sort(key=lambda pair: pair[1].created_at, reverse=True)
    return found[:limit]


def reminders_for(session: Session, person_id: str) -> list[Reminder]:
    return list(session.execute(select(Reminder).where(Reminder.person_id == person_id)
                                .order_by(Reminder.due_at)).scalars())
