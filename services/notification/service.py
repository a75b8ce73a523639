"""Notification: email for every event that concerns a person or an officer.

Flow: an event handler validates the event, looks its recipients up at identity (outside any
transaction), then writes in one transaction the inbox row, the reminder changes and one job per
audience with its rendered messages (or the lookup's error and a retry time), and wakes the mailer.
The timer (``tick``) retries lookups that failed, with backoff, and turns due reminders into jobs.
The mailer (mailer.py) sends recorded messages.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
from pathlib import Path

import eventlet
import yaml
from nameko.dependency_providers import Config
from nameko.extensions import DependencyProvider
from pydantic import ValidationError
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from services.notification import compose, domain, webhooks
from services.notification.compose import ComposeError
from services.notification.mailer import Mailer
from services.notification.models import Job, audit, inbox, outbox
from services.notification.templates import LANGUAGES, Templates
from services.notification.webhook_sender import WebhookSender
from swms import errors, health
from swms import rpc as swms_rpc
from swms.auth import ADMIN, SERVICE, Auth
from swms.config import REPO_ROOT
from swms.contracts.common import HealthResponse
from swms.contracts.events import (
    ApplicationApproved,
    ApplicationRejected,
    ApplicationReturned,
    ApplicationSubmitted,
    CertificateExpired,
    CertificateIssued,
    CertificateReinstated,
    CertificateReissued,
    CertificateRevoked,
    CertificateSuspended,
    EmailConfirmationRequested,
    Event,
    FeedbackDecided,
    FeedbackSubmitted,
    PasswordResetRequested,
)
from swms.contracts.identity import Contact, EmailConfirmationMessage, PasswordResetMessage
from swms.contracts.notification import (
    FailureList,
    FailureOut,
    FailuresRequest,
    MessageList,
    MessageOut,
    MessagesRequest,
    ReminderList,
    ReminderOut,
    RemindersRequest,
    RetryRequest,
    WebhookAttemptOut,
    WebhookDeliveriesRequest,
    WebhookDeliveryList,
    WebhookDeliveryOut,
    WebhookEndpointCreated,
    WebhookEndpointList,
    WebhookEndpointOut,
    WebhookEndpointRequest,
    WebhookEndpointsRequest,
    WebhookEndpointStatusRequest,
    WebhookReplayOut,
    WebhookReplayRequest,
)
from swms.db import Database
from swms.deadletter import event_handler
from swms.ops import OpsEndpoint
from swms.outbox import OutboxRelay, utcnow
from swms.queues import RpcProxy
from swms.rpc import contract, rpc
from swms.settings import CheckedNumbers, config_timer

log = logging.getLogger(__name__)

LOOKUP_CONCURRENCY = 10
TICK_BUDGET_SECONDS = 30.0
BATCH = 100


def _resolve(path: str) -> Path:
    candidate = Path(path)
    return candidate if candidate.is_absolute() or candidate.exists() else REPO_ROOT / candidate


class NotificationSettings(DependencyProvider):
    """domain.Settings from config, built once per container (templates cached, chains loaded)."""

    def setup(self):
        config = self.container.config
        languages = tuple(part.strip() for part in str(config.get("MAIL_LANGUAGES") or "zh-CN").split(",")
                          if part.strip())
        unknown = [language for language in languages if language not in LANGUAGES]
        if unknown or not languages:
            raise RuntimeError(f"MAIL_LANGUAGES: {unknown or 'empty'}; choose from {LANGUAGES}")
        chains_file = config.get("REVIEW_CHAINS_FILE") or "services/review/chains.yaml"
        chains = yaml.safe_load(_resolve(chains_file).read_text(encoding="utf-8")) or {}
        level = str(config.get("FEEDBACK_OFFICER_LEVEL", "county") or "").strip() or None
        if level not in (None, "county", "city", "province"):
            raise RuntimeError("FEEDBACK_OFFICER_LEVEL must be county, city, province or empty")
        templates_dir = config.get("NOTIFICATION_TEMPLATES_DIR") or None
        self.settings = domain.Settings(
            portal_url=str(config.get("PORTAL_URL") or "https://swms.example.gov.cn"),
            languages=languages,
            give_up_after=dt.timedelta(hours=domain.NUMBERS.get(config, "MAIL_GIVE_UP_HOURS")),
            window_months=domain.NUMBERS.get(config, "REREGISTRATION_WINDOW_MONTHS"),
            reminder_months=domain.NUMBERS.get(config, "REREGISTRATION_REMINDER_MONTHS"),
            chains=chains, feedback_officer_level=level,
            lease=dt.timedelta(seconds=domain.NUMBERS.get(config, "NOTIFICATION_LEASE_SECONDS")),
            templates=Templates(_resolve(templates_dir) if templates_dir else None))

    def get_dependency(self, worker_ctx):
        return self.settings




class IdentityLookups:
    """compose.Lookups over identity's RPCs, with the service's own token (set by the caller).

    Replies are read by field name, not validated against the full response model, so identity
    may add fields without breaking this side. NOT_FOUND and VALIDATION_FAILED (no such person,
    feedback or reset) and INVALID_STATE (a reset code already used, replaced or expired) are
    permanent; anything else, including a method identity does not have yet, is retried with backoff.
    """

    def __init__(self, identity):
        self.identity = identity

    def _call(self, method: str, payload: dict, field: str):
        try:
            return swms_rpc.call(getattr(self.identity, method), payload)
        except errors.SwmsError as exc:
            code = {errors.NOT_FOUND: domain.CONTACT_NOT_FOUND, errors.VALIDATION_FAILED: domain.CONTACT_NOT_FOUND,
                    # a reset code used, replaced by a newer one, or expired: nothing to send
                    errors.INVALID_STATE: domain.DELIVERY_EXPIRED}.get(exc.code)
            raise ComposeError(code or domain.UPSTREAM_UNAVAILABLE, field, f"identity.{method}: {exc}",
                               code is not None) from None
        except Exception as exc:
            raise ComposeError(domain.UPSTREAM_UNAVAILABLE, field, f"identity.{method}: {type(exc).__name__}: {exc}",
                               False) from None

    @staticmethod
    def _contact(data: dict, person_id: str | None = None) -> Contact:
        try:
            return Contact(person_id=data.get("person_id") or person_id, name=str(data["name"]),
                           email=str(data["email"]))
        except (KeyError, TypeError, ValidationError) as exc:
            raise ComposeError(domain.UPSTREAM_UNAVAILABLE, None, f"unexpected reply from identity: {exc}",
                               False) from None

    def person(self, person_id: str) -> Contact:
        return self._contact(self._call("get_person", {"person_id": person_id}, "person_id"), person_id)

    def feedback_contact(self, feedback_id: str) -> Contact:
        return self._contact(self._call("get_feedback_contact", {"feedback_id": feedback_id}, "feedback_id"))

    def password_reset(self, reset_id: str) -> PasswordResetMessage:
        return self._message(PasswordResetMessage, self._call("get_password_reset_message", {"reset_id": reset_id},
                                                              "reset_id"))

    def email_confirmation(self, confirmation_id: str) -> EmailConfirmationMessage:
        return self._message(EmailConfirmationMessage, self._call(
            "get_email_confirmation_message", {"confirmation_id": confirmation_id}, "confirmation_id"))

    @staticmethod
    def _message(model, data):
        try:
            return model(**{key: data[key] for key in model.model_fields})
        except (KeyError, TypeError, ValidationError) as exc:
            raise ComposeError(domain.UPSTREAM_UNAVAILABLE, None, f"unexpected reply from identity: {exc}",
                               False) from None

    def officers(self, region_code: str, level: str | None) -> list[Contact]:
        data = self._call("list_officer_contacts", {"region_code": region_code, "level": level}, "region_code")
        return [self._contact(item) for item in (data or {}).get("items", [])]


def _message_out(m) -> MessageOut:
    return MessageOut(message_id=m.message_id, kind=m.kind, to_masked=domain.mask_address(m.to_address),
                      subject=m.subject, status=m.status, attempts=m.attempts, created_at=m.created_at,
                      sent_at=m.sent_at, last_error=m.last_error, audience=m.audience, language=m.language,
                      reference=m.reference, error_code=m.error_code, error_field=m.error_field,
                      last_attempt_at=m.last_attempt_at,
                      next_attempt_at=m.next_attempt_at if m.status == domain.PENDING else None)


def _failure_out(source: str, row) -> FailureOut:
    if source == "message":
        return FailureOut(source="message", id=row.message_id, kind=row.kind, person_id=row.person_id,
                          to_masked=domain.mask_address(row.to_address), reference=row.reference, status=row.status,
                          attempts=row.attempts, error_code=row.error_code, error_field=row.error_field,
                          last_error=row.last_error, created_at=row.created_at, last_attempt_at=row.last_attempt_at,
                          next_attempt_at=row.next_attempt_at if row.status == domain.PENDING else None)
    return FailureOut(source="lookup", id=row.job_id, kind=row.task, person_id=row.person_id, to_masked=None,
                      reference=row.reference, status=row.status, attempts=row.attempts, error_code=row.error_code,
                      error_field=row.error_field, last_error=row.last_error, created_at=row.created_at,
                      last_attempt_at=None, next_attempt_at=row.next_attempt_at if row.status == domain.PENDING else None)


class NotificationService:
    name = "notification"

    config = Config()
    numbers = CheckedNumbers(domain.NUMBERS)   # every numeric setting checked before anything starts
    db = Database()
    auth = Auth()
    settings = NotificationSettings()
    relay = OutboxRelay(outbox)
    ops = OpsEndpoint(outbox)   # /healthz, /readyz, /metrics on OPS_PORT, for this process
    wake_mailer = Mailer()
    webhook_sender = WebhookSender()   # deliveries to agencies' endpoints (webhooks.py)
    identity = RpcProxy("identity")

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(None, HealthResponse)
    def health(self):
        return health.check(self.name, self.db, process=self.ops)

    # ---- events --------------------------------------------------------------------------------
    # One thin method per event type; _accept does the work. An event that does not match its
    # contract is recorded as a failed job (operators see it in list_failures); the only failure
    # left is the database being away, which swms.deadletter retries with backoff and, past
    # EVENT_MAX_ATTEMPTS, dead-letters with the reason (nothing is dropped silently).

    @event_handler(CertificateIssued.source, CertificateIssued.event_type)
    def on_certificate_issued(self, payload):
        self._accept(CertificateIssued, payload)

    @event_handler(ApplicationSubmitted.source, ApplicationSubmitted.event_type)
    def on_application_submitted(self, payload):
        self._accept(ApplicationSubmitted, payload)

    @event_handler(ApplicationApproved.source, ApplicationApproved.event_type)
    def on_application_approved(self, payload):
        self._accept(ApplicationApproved, payload)

    @event_handler(ApplicationRejected.source, ApplicationRejected.event_type)
    def on_application_rejected(self, payload):
        self._accept(ApplicationRejected, payload)

    @event_handler(ApplicationReturned.source, ApplicationReturned.event_type)
    def on_application_returned(self, payload):
        self._accept(ApplicationReturned, payload)

    @event_handler(CertificateRevoked.source, CertificateRevoked.event_type)
    def on_certificate_revoked(self, payload):
        self._accept(CertificateRevoked, payload)

    @event_handler(CertificateSuspended.source, CertificateSuspended.event_type)
    def on_certificate_suspended(self, payload):
        self._accept(CertificateSuspended, payload)

    @event_handler(CertificateReinstated.source, CertificateReinstated.event_type)
    def on_certificate_reinstated(self, payload):
        self._accept(CertificateReinstated, payload)

    @event_handler(CertificateExpired.source, CertificateExpired.event_type)
    def on_certificate_expired(self, payload):
        self._accept(CertificateExpired, payload)

    @event_handler(CertificateReissued.source, CertificateReissued.event_type)
    def on_certificate_reissued(self, payload):
        self._accept(CertificateReissued, payload)

    @event_handler(FeedbackSubmitted.source, FeedbackSubmitted.event_type)
    def on_feedback_submitted(self, payload):
        self._accept(FeedbackSubmitted, payload)

    @event_handler(FeedbackDecided.source, FeedbackDecided.event_type)
    def on_feedback_decided(self, payload):
        self._accept(FeedbackDecided, payload)

    @event_handler(PasswordResetRequested.source, PasswordResetRequested.event_type)
    def on_password_reset_requested(self, payload):
        self._accept(PasswordResetRequested, payload)

    @event_handler(EmailConfirmationRequested.source, EmailConfirmationRequested.event_type)
    def on_email_confirmation_requested(self, payload):
        self._accept(EmailConfirmationRequested, payload)

    def _accept(self, model: type[Event], payload) -> None:
        """Look the recipients up first (outside any transaction), then write everything about the
        event in one transaction: inbox row, reminder changes, one job per audience with its
        messages, or with the lookup's error and a retry time. A crash before the commit leaves the
        event unacknowledged (redelivered); after it, the inbox row makes a redelivery a no-op."""
        try:
            try:
                event = model.model_validate(payload)
            except ValidationError as exc:
                self._record_invalid(model, payload, exc)
                return
            handler = f"{event.source}.{event.event_type}"
            tasks = compose.tasks_for(event)
            self.auth.act_as_service()
            planned = self._plan(event, tasks)
            recorded = queued = 0
            try:
                with self.db.transaction() as session:
                    # First statement of the transaction, so no savepoint is needed: a duplicate
                    # fails the (still empty) transaction, which means "already handled".
                    session.execute(insert(inbox.table).values(event_id=event.event_id, handler=handler,
                                                               handled_at=utcnow()))
                    recorded = self._store(session, event, planned)
                    if event.source == webhooks.AGENCY_EVENT_SOURCE and event.event_type in webhooks.AGENCY_EVENT_TYPES:
                        # the agency event log and its deliveries: same transaction as the inbox row
                        queued = webhooks.log_event(session, event.event_type, payload, self.webhook_sender.settings)
            except IntegrityError:
                if self._handled(event.event_id, handler):
                    log.info("event %s already handled; skipped", event.event_id)
                    return   # delivered again (at-least-once): the lookups were wasted, nothing else
                raise
        except Exception:
            log.exception("%s.%s could not be stored; it will be retried", model.source, model.event_type)
            raise
        if recorded:
            self.wake_mailer()
        if queued:
            self.webhook_sender.wake()

    def _handled(self, event_id: str, handler: str) -> bool:
        table = inbox.table
        found = self.db.session.execute(select(table.c.event_id).where(
            table.c.event_id == event_id, table.c.handler == handler)).first()
        self.db.session.rollback()
        return found is not None

    def _store(self, session, event: Event, planned: list[tuple]) -> int:
        """Reminder changes and one job per audience with its messages (or the lookup's error)."""
        settings = self.settings
        recorded = 0
        compose.adjust_reminders(session, event, settings)
        person_id, reference = compose.job_person_and_reference(event)
        for task, outgoing, error in planned:
            job = domain.add_job(session, key=f"{event.event_id}:{task.name}", task=task.name,
                                 payload=compose.payload_of(event), person_id=person_id, reference=reference,
                                 give_up_after=settings.give_up_after, guard=False)
            if error is None:
                recorded += len(domain.complete_job(session, job, outgoing, settings, fresh=True))
            else:
                self._log_failure(job, error, domain.fail_job(session, job, error.code, error.field,
                                                              error.detail, permanent=error.permanent))
        return recorded

    def _plan(self, event: Event, tasks) -> list[tuple]:
        """[(task, outgoing or None, ComposeError or None)], the tasks' lookups run concurrently."""
        lookups = IdentityLookups(self.identity)

        def one(task):
            try:
                return task, task.plan(event, lookups, self.settings), None
            except ComposeError as exc:
                return task, None, exc
            except Exception as exc:  # noqa: BLE001 - a bug must not lose the event: retried, visible
                log.exception("planning %s for event %s failed", task.name, event.event_id)
                return task, None, ComposeError("COMPOSE_FAILED", None, f"{type(exc).__name__}: {exc}", False)

        if not tasks:
            return []
        return list(eventlet.GreenPool(len(tasks)).imap(one, tasks))

    @staticmethod
    def _log_failure(job: Job, error: ComposeError, status: str) -> None:
        log.log(logging.ERROR if status == domain.FAILED else logging.WARNING, "job %s (%s) %s: %s",
                job.job_id, job.task, "failed" if status == domain.FAILED else "will be retried", error)

    def _record_invalid(self, model: type[Event], payload, exc: ValidationError) -> None:
        text = json.dumps(payload, ensure_ascii=False, default=str)
        event_id = payload.get("event_id") if isinstance(payload, dict) else None
        key = f"invalid:{event_id if isinstance(event_id, str) and len(event_id) <= 64 else ''}" \
              f"{hashlib.sha256(text.encode()).hexdigest()[:32]}"
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'payload'}: {e['msg']}"
                             for e in exc.errors(include_url=False, include_input=False))
        with self.db.transaction() as session:
            domain.record_invalid_event(session, key=key, task=f"{model.event_type}.invalid", payload_text=text,
                                        problem=f"{model.source}.{model.event_type} does not match its contract: "
                                                f"{problems}")
        log.error("%s.%s event does not match its contract; recorded as a failed job: %s",
                  model.source, model.event_type, problems)

    def _compose(self, jobs: list[Job]) -> None:
        """Look up recipients (concurrently, outside any transaction), then record each job's
        messages and mark it done in one transaction; a failed lookup reschedules that job only."""
        lookups = IdentityLookups(self.identity)

        def planned(job: Job):
            try:
                return job, compose.plan(job, lookups, self.settings), None
            except ComposeError as exc:
                return job, None, exc
            except Exception as exc:
                log.exception("composing job %s (%s) failed", job.job_id, job.task)
                return job, None, ComposeError("COMPOSE_FAILED", None, f"{type(exc).__name__}: {exc}", False)

        recorded = 0
        for job, outgoing, error in eventlet.GreenPool(LOOKUP_CONCURRENCY).imap(planned, jobs):
            with self.db.transaction() as session:
                if error is None:
                    recorded += len(domain.complete_job(session, job, outgoing, self.settings))
                else:
                    self._log_failure(job, error, domain.fail_job(session, job, error.code, error.field,
                                                                  error.detail, permanent=error.permanent))
        if recorded:
            self.wake_mailer()

    # ---- timer: retries of lookups, due reminders ------------------------------------------------

    @config_timer(domain.NUMBERS, "NOTIFICATION_POLL_SECONDS", eager=True)
    def tick(self):
        self.auth.act_as_service()
        deadline = time.monotonic() + TICK_BUDGET_SECONDS
        while time.monotonic() < deadline:
            with self.db.transaction() as session:
                taken = domain.enqueue_due_reminders(session, BATCH, self.settings)
            if taken < BATCH:
                break
        while time.monotonic() < deadline:
            with self.db.transaction() as session:
                jobs = domain.claim_due_jobs(session, BATCH, self.settings.lease)
            if not jobs:
                break
            self._compose(jobs)
            if len(jobs) < BATCH:
                break

    def _read_person(self, person_id: str, access_reason: str | None, method: str) -> None:
        """A person's messages show where and when we wrote to them: administrators say why, audited."""
        caller = self.auth.require_reader(person_id, None, access_reason)
        if caller.role == ADMIN:
            with self.db.transaction() as session:
                audit.read_by_admin(session, caller.subject, method, "person", person_id, access_reason)

    # ---- RPC -------------------------------------------------------------------------------------

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(MessagesRequest, MessageList)
    def list_messages(self, request: MessagesRequest):
        """The person themself, services, and admins stating why (audited)."""
        self._read_person(request.person_id, request.access_reason, "list_messages")
        rows = domain.list_messages(self.db.session, request.person_id,
                                    request.status.value if request.status else None, request.limit)
        return MessageList(items=[_message_out(m) for m in rows])

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(FailuresRequest, FailureList)
    def list_failures(self, request: FailuresRequest):
        """Operators (admin) and services: failed and retrying messages, failed lookups."""
        self.auth.require(ADMIN, SERVICE)
        found = domain.list_failures(self.db.session, person_id=request.person_id, email=request.email,
                                     since=request.since.astimezone(dt.timezone.utc).replace(tzinfo=None)
                                     if request.since and request.since.tzinfo else request.since,
                                     include_retrying=request.include_retrying, limit=request.limit)
        return FailureList(items=[_failure_out(source, row) for source, row in found])

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(RetryRequest, MessageOut)
    def retry_message(self, request: RetryRequest):
        """Admin: send a message again that the relay refused or that gave up (audited)."""
        caller = self.auth.require(ADMIN)
        with self.db.transaction() as session:
            message = domain.retry_message(session, request.message_id, caller.subject, self.settings)
            out = _message_out(message)
        self.wake_mailer()
        return out

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(RemindersRequest, ReminderList)
    def list_reminders(self, request: RemindersRequest):
        """The person themself, services, and admins stating why (audited): scheduled re-registration reminders."""
        self._read_person(request.person_id, request.access_reason, "list_reminders")
        return ReminderList(items=[ReminderOut(
            reminder_id=r.reminder_id, certificate_number=r.certificate_number, kind=r.kind, valid_until=r.valid_until,
            due_at=r.due_at, status=r.status, note=r.note) for r in domain.reminders_for(self.db.session, request.person_id)])

    # ---- webhooks for agencies (admin; docs/webhooks.md) -----------------------------------------

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(WebhookEndpointRequest, WebhookEndpointCreated)
    def register_webhook_endpoint(self, request: WebhookEndpointRequest):
        """Admin: register an agency's endpoint; the answer carries the signing secret, this once (audited)."""
        caller = self.auth.require(ADMIN)
        sender = self.webhook_sender
        with self.db.transaction() as session:
            endpoint, secret = webhooks.register_endpoint(
                session, agency=request.agency, url=request.url, event_types=[t.value for t in request.event_types],
                admin_email=request.admin_email, actor=caller.subject, box=sender.box, settings=sender.settings)
            out = _endpoint_out(endpoint)
        return WebhookEndpointCreated(endpoint=out, secret=secret)

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(WebhookEndpointsRequest, WebhookEndpointList)
    def list_webhook_endpoints(self, request: WebhookEndpointsRequest):
        """Admin: every endpoint, with its status (never its secret)."""
        self.auth.require(ADMIN)
        return WebhookEndpointList(items=[_endpoint_out(e) for e in webhooks.list_endpoints(self.db.session)])

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(WebhookEndpointStatusRequest, WebhookEndpointOut)
    def set_webhook_endpoint_status(self, request: WebhookEndpointStatusRequest):
        """Admin: enable again (after the agency fixed its side) or disable, with the reason (audited)."""
        caller = self.auth.require(ADMIN)
        with self.db.transaction() as session:
            out = _endpoint_out(webhooks.set_endpoint_status(session, request.endpoint_id, request.enabled,
                                                             request.reason, caller.subject,
                                                             self.webhook_sender.settings))
        self.webhook_sender.wake()
        return out

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(WebhookDeliveriesRequest, WebhookDeliveryList)
    def list_webhook_deliveries(self, request: WebhookDeliveriesRequest):
        """Admin: an endpoint's deliveries, newest event first, each with its attempts (dead ones too)."""
        self.auth.require(ADMIN)
        found = webhooks.list_deliveries(self.db.session, request.endpoint_id, request.status, request.limit)
        return WebhookDeliveryList(items=[_delivery_out(d, attempts) for d, attempts in found])

    @rpc(expected_exceptions=errors.SwmsError)
    @contract(WebhookReplayRequest, WebhookReplayOut)
    def replay_webhook_events(self, request: WebhookReplayRequest):
        """Admin, for an agency: deliver again every event since an event id or a time, in order (audited)."""
        caller = self.auth.require(ADMIN)
        since = request.since
        if since is not None and since.tzinfo is not None:
            since = since.astimezone(dt.timezone.utc).replace(tzinfo=None)
        with self.db.transaction() as session:
            result = webhooks.replay(session, request.endpoint_id, since_event_id=request.since_event_id, since=since,
                                     actor=caller.subject, settings=self.webhook_sender.settings)
        self.webhook_sender.wake()
        return WebhookReplayOut(replay_id=result.replay_id, count=result.count, first_event_id=result.first_event_id,
                                last_event_id=result.last_event_id)


def _endpoint_out(e) -> WebhookEndpointOut:
    return WebhookEndpointOut(endpoint_id=e.endpoint_id, agency=e.agency, url=e.url, event_types=json.loads(e.event_types),
                              admin_email=e.admin_email, status=e.status, failing_since=e.failing_since,
                              disabled_at=e.disabled_at, disabled_reason=e.disabled_reason, created_by=e.created_by,
                              created_at=e.created_at)


def _delivery_out(d, attempts) -> WebhookDeliveryOut:
    return WebhookDeliveryOut(
        delivery_id=d.delivery_id, event_id=d.event_id, event_type=d.event_type, replay_id=d.replay_id, status=d.status,
        attempts=d.attempts, next_attempt_at=d.next_attempt_at if d.status == domain.PENDING else None,
        give_up_at=d.give_up_at, created_at=d.created_at, delivered_at=d.delivered_at,
        last_status_code=d.last_status_code, last_error=d.last_error,
        attempt_log=[WebhookAttemptOut(attempted_at=a.attempted_at, outcome=a.outcome, status_code=a.status_code,
                                       latency_ms=a.latency_ms, error=a.error) for a in attempts])
