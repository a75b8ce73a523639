"""From events to jobs, and from jobs to messages.

``tasks_for(event)`` says which jobs an event gives (one per audience, so that an officer lookup
that fails does not hold back the applicant's email). ``plan(job, lookups, settings)`` looks the
recipients up and returns the :class:`~services.notification.domain.Outgoing` messages; the
lookups are identity's service-only RPCs (``get_person``, ``get_feedback_contact``,
``get_password_reset_message``, ``list_officer_contacts``) behind the small :class:`Lookups`
protocol, so this module is plain Python and testable without a broker.

The bus never carries an email address or a reset code: both are fetched here, when composing.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Callable, Protocol

from pydantic import BaseModel
from sqlalchemy.orm import Session

from services.notification import domain
from services.notification.domain import (
    CHAIN_UNKNOWN,
    NO_RECIPIENTS,
    Outgoing,
    Settings,
)
from services.notification.models import (
    CANCELLED,
    HELD,
    OFFICER,
    PERSON,
    SCHEDULED,
    Job,
)
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
    CertificateStatusChanged,
    CertificateSuspended,
    EmailConfirmationRequested,
    Event,
    FeedbackDecided,
    FeedbackSubmitted,
    PasswordResetRequested,
)
from swms.contracts.identity import Contact, EmailConfirmationMessage, PasswordResetMessage

ONE_TIME_CODE_PRIORITY = 10   # password-reset and email-confirmation codes go before other mail


class ComposeError(Exception):
    """A job cannot be composed now (``permanent=False``: retried with backoff) or ever."""

    def __init__(self, code: str, field: str | None, detail: str, permanent: bool):
        super().__init__(code, field, detail, permanent)
        self.code, self.field, self.detail, self.permanent = code, field, detail, permanent

    def __str__(self) -> str:
        return f"{self.code} [{self.field}]: {self.detail}"


class Lookups(Protocol):
    """Identity's lookups; each raises ComposeError when it fails."""

    def person(self, person_id: str) -> Contact: ...
    def feedback_contact(self, feedback_id: str) -> Contact: ...
    def password_reset(self, reset_id: str) -> PasswordResetMessage: ...
    def email_confirmation(self, confirmation_id: str) -> EmailConfirmationMessage: ...
    def officers(self, region_code: str, level: str | None) -> list[Contact]: ...


# ---- officers' levels from the review chains --------------------------------------------------

def chain_for(chains: dict, kind: str, region_code: str) -> list[str]:
    chain = (chains.get(region_code[:2]) or {}).get(kind) or (chains.get("default") or {}).get(kind)
    if not chain:
        raise ComposeError(CHAIN_UNKNOWN, "kind", f"no review chain for {kind!r} in region {region_code}",
                           permanent=True)
    return list(chain)


def level_after(chains: dict, kind: str, region_code: str, stage: str | None) -> str | None:
    """The officer level whose queue gets the application next: the chain's first level for a
    submission, the level after ``stage`` for an approval (None after the last)."""
    chain = chain_for(chains, kind, region_code)
    step = 0 if stage is None else {"initial": 1, "intermediate": 2}.get(stage, len(chain))
    return chain[step] if step < len(chain) else None


# ---- tasks -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Task:
    name: str
    model: type[Event]
    plan: Callable[[Event, Lookups, Settings], list[Outgoing]]
    applies: Callable[[Event], bool] = lambda event: True


def _person(contact: Contact, kind: str, values: dict, reference: str | None, person_id: str | None = None,
            **extra) -> Outgoing:
    return Outgoing(audience=PERSON, person_id=contact.person_id or person_id, to_address=contact.email,
                    kind=kind, values={"name": contact.name, **values}, reference=reference, **extra)


def _officers(contacts: list[Contact], kind: str, values: dict, reference: str | None,
              region_code: str, level: str | None) -> list[Outgoing]:
    if not contacts:
        raise ComposeError(NO_RECIPIENTS, "region_code",
                           f"no officer covers region {region_code} at level {level or 'any'}", permanent=True)
    seen, out = set(), []
    for contact in contacts:
        if contact.email.lower() in seen:
            continue
        seen.add(contact.email.lower())
        out.append(Outgoing(audience=OFFICER, person_id=contact.person_id, to_address=contact.email, kind=kind,
                            values={"officer_name": contact.name, **values}, reference=reference))
    return out


def plan_certificate_issued(event: CertificateIssued, lookups: Lookups, settings: Settings) -> list[Outgoing]:
    holder = lookups.person(event.person_id)
    return [_person(holder, "certificate_issued", {
        "certificate_number": event.certificate_number, "id_number_masked": event.id_number_masked,
        "level": event.level.value, "valid_from_date": event.valid_from.isoformat(),
        "valid_until_date": event.valid_until.isoformat(), "authority": event.authority,
        "application_kind": (event.kind.value if event.kind else "first_registration"),
        "portal_url": settings.portal_url}, event.certificate_number, event.person_id)]


def plan_submitted_applicant(event: ApplicationSubmitted, lookups: Lookups, settings: Settings) -> list[Outgoing]:
    applicant = lookups.person(event.person_id)
    kind = "application_resubmitted" if event.resubmission else "application_submitted"
    return [_person(applicant, kind, {"application_kind": event.kind.value,
                                      "submitted_time": event.submitted_at.isoformat(),
                                      "portal_url": settings.portal_url}, event.application_id, event.person_id)]


def _review_item_values(event, stage: str, settings: Settings) -> dict:
    return {"application_kind": event.kind.value, "stage": stage, "applicant_name_masked": event.applicant_name_masked,
            "region_code": event.region_code, "submitted_time": event.submitted_at.isoformat(),
            "portal_url": settings.portal_url}


def plan_submitted_officers(event: ApplicationSubmitted, lookups: Lookups, settings: Settings) -> list[Outgoing]:
    level = level_after(settings.chains, event.kind.value, event.region_code, None)
    contacts = lookups.officers(event.region_code, level)
    return _officers(contacts, "officer_review_item", _review_item_values(event, "initial", settings),
                     event.application_id, event.region_code, level)


def plan_approved_applicant(event: ApplicationApproved, lookups: Lookups, settings: Settings) -> list[Outgoing]:
    applicant = lookups.person(event.person_id)
    kind = "application_approved_final" if event.final else "application_approved"
    return [_person(applicant, kind, {"application_kind": event.kind.value, "stage": event.stage.value},
                    event.application_id, event.person_id)]


def plan_approved_officers(event: ApplicationApproved, lookups: Lookups, settings: Settings) -> list[Outgoing]:
    level = level_after(settings.chains, event.kind.value, event.region_code, event.stage.value)
    if level is None:
        return []
    chain = chain_for(settings.chains, event.kind.value, event.region_code)
    next_stage = "final" if chain.index(level) == len(chain) - 1 else "intermediate"
    contacts = lookups.officers(event.region_code, level)
    values = {"application_kind": event.kind.value, "stage": next_stage, "previous_stage": event.stage.value,
              "applicant_name_masked": getattr(event, "applicant_name_masked", None) or "",
              "region_code": event.region_code, "forwarded_time": event.decided_at.isoformat(),
              "portal_url": settings.portal_url}
    return _officers(contacts, "officer_review_item_forwarded", values, event.application_id, event.region_code,
                     level)


def _decision_plan(kind: str):
    def plan(event, lookups: Lookups, settings: Settings) -> list[Outgoing]:
        applicant = lookups.person(event.person_id)
        return [_person(applicant, kind, {"application_kind": event.kind.value, "stage": event.stage.value,
                                          "reason": event.reason, "portal_url": settings.portal_url},
                        event.application_id, event.person_id)]
    return plan


def _status_plan(kind: str):
    def plan(event: CertificateStatusChanged, lookups: Lookups, settings: Settings) -> list[Outgoing]:
        holder = lookups.person(event.person_id)
        return [_person(holder, kind, {"certificate_number": event.certificate_number, "reason": event.reason,
                                       "changed_time": event.changed_at.isoformat(),
                                       "valid_until_date": event.valid_until.isoformat() if event.valid_until else None,
                                       "portal_url": settings.portal_url},
                        event.certificate_number, event.person_id)]
    return plan


def plan_feedback_officers(event: FeedbackSubmitted, lookups: Lookups, settings: Settings) -> list[Outgoing]:
    level = settings.feedback_officer_level
    contacts = lookups.officers(event.region_code, level)
    return _officers(contacts, "officer_feedback", {
        "applicant_name_masked": event.applicant_name_masked, "region_code": event.region_code,
        "submitted_time": event.submitted_at.isoformat(), "portal_url": settings.portal_url},
        event.feedback_id, event.region_code, level)


def plan_feedback_decided(event: FeedbackDecided, lookups: Lookups, settings: Settings) -> list[Outgoing]:
    submitter = lookups.feedback_contact(event.feedback_id)
    kind = "feedback_approved" if event.approved else "feedback_rejected"
    return [_person(submitter, kind, {"reason": event.reason, "portal_url": settings.portal_url}, event.feedback_id)]


def _code_mail(message: PasswordResetMessage | EmailConfirmationMessage, kind: str, ref: str) -> list[Outgoing]:
    """A one-time code: sent before other mail, never after it expires, its body not kept."""
    expires = message.expires_at
    expires_naive = (expires.astimezone(dt.timezone.utc).replace(tzinfo=None) if expires.tzinfo else expires)
    contact = Contact(person_id=message.person_id, name=message.name, email=message.email)
    return [_person(contact, kind, {"code": message.code, "expires_time": expires.isoformat()},
                    ref, priority=ONE_TIME_CODE_PRIORITY, expires_at=expires_naive, sensitive=True)]


def plan_password_reset(event: PasswordResetRequested, lookups: Lookups, settings: Settings) -> list[Outgoing]:
    return _code_mail(lookups.password_reset(event.reset_id), "password_reset", event.reset_id)


def plan_email_confirmation(event: EmailConfirmationRequested, lookups: Lookups,
                            settings: Settings) -> list[Outgoing]:
    return _code_mail(lookups.email_confirmation(event.confirmation_id), "email_confirmation",
                      event.confirmation_id)


TASKS: dict[str, Task] = {task.name: task for task in (
    Task("certificate_issued.holder", CertificateIssued, plan_certificate_issued),
    Task("application_submitted.applicant", ApplicationSubmitted, plan_submitted_applicant),
    Task("application_submitted.officers", ApplicationSubmitted, plan_submitted_officers),
    Task("application_approved.applicant", ApplicationApproved, plan_approved_applicant),
    Task("application_approved.officers", ApplicationApproved, plan_approved_officers,
         applies=lambda event: not event.final),
    Task("application_rejected.applicant", ApplicationRejected, _decision_plan("application_rejected")),
    Task("application_returned.applicant", ApplicationReturned, _decision_plan("application_returned")),
    Task("certificate_revoked.holder", CertificateRevoked, _status_plan("certificate_revoked")),
    Task("certificate_suspended.holder", CertificateSuspended, _status_plan("certificate_suspended")),
    Task("certificate_reinstated.holder", CertificateReinstated, _status_plan("certificate_reinstated")),
    Task("certificate_expired.holder", CertificateExpired, _status_plan("certificate_expired")),
    Task("feedback_submitted.officers", FeedbackSubmitted, plan_feedback_officers),
    Task("feedback_decided.submitter", FeedbackDecided, plan_feedback_decided),
    Task("password_reset_requested.person", PasswordResetRequested, plan_password_reset),
    Task("email_confirmation_requested.person", EmailConfirmationRequested, plan_email_confirmation),
)}

# Events consumed only for their effect on reminders (the new certificate's own email follows).
REMINDER_ONLY = (CertificateReissued,)
CONSUMED: tuple[type[Event], ...] = tuple(dict.fromkeys([t.model for t in TASKS.values()] + list(REMINDER_ONLY)))


def tasks_for(event: Event) -> list[Task]:
    return [task for task in TASKS.values() if type(event) is task.model and task.applies(event)]


def job_person_and_reference(event: Event) -> tuple[str | None, str | None]:
    person_id = getattr(event, "person_id", None)
    for attribute in ("application_id", "certificate_number", "feedback_id", "reset_id"):
        if getattr(event, attribute, None):
            return person_id, str(getattr(event, attribute))
    return person_id, None


def payload_of(event: BaseModel) -> dict:
    return event.model_dump(mode="json")


def plan(job: Job, lookups: Lookups, settings: Settings) -> list[Outgoing]:
    """The messages of one job (raises ComposeError)."""
    payload = json.loads(job.payload)
    if job.task.startswith("reminder."):
        return plan_reminder(payload, lookups, settings)
    task = TASKS.get(job.task)
    if task is None:
        raise ComposeError("TASK_UNKNOWN", "task", f"unknown task {job.task!r}", permanent=True)
    return task.plan(task.model.model_validate(payload), lookups, settings)


def plan_reminder(payload: dict, lookups: Lookups, settings: Settings) -> list[Outgoing]:
    holder = lookups.person(payload["person_id"])
    return [_person(holder, payload["kind"], {
        "certificate_number": payload["certificate_number"], "valid_until_date": payload["valid_until"],
        "window_open_date": payload["window_open"], "portal_url": settings.portal_url},
        payload["certificate_number"], payload["person_id"])]


def adjust_reminders(session: Session, event: Event, settings: Settings) -> None:
    """What a certificate event does to the re-registration reminders (in the handler's transaction):
    issued schedules them (and cancels those of the certificate it supersedes), revoked, expired and
    reissued cancel them, suspended holds them, reinstated releases them."""
    if isinstance(event, CertificateIssued):
        if event.supersedes:
            domain.change_reminders(session, event.supersedes, (SCHEDULED, HELD), CANCELLED,
                                    f"superseded by certificate {event.certificate_number}")
        domain.schedule_reminders(session, certificate_number=event.certificate_number, person_id=event.person_id,
                                  valid_until=event.valid_until, settings=settings)
    elif isinstance(event, (CertificateRevoked, CertificateExpired, CertificateReissued)):
        domain.change_reminders(session, event.certificate_number, (SCHEDULED, HELD), CANCELLED,
                                f"certificate {event.event_type.removeprefix('certificate_')}")
    elif isinstance(event, CertificateSuspended):
        domain.change_reminders(session, event.certificate_number, (SCHEDULED,), HELD, "certificate suspended")
    elif isinstance(event, CertificateReinstated):
        domain.change_reminders(session, event.certificate_number, (HELD,), SCHEDULED, "certificate reinstated")
