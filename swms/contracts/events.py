"""Event payloads. Each is published on the topic exchange ``<source>.events`` with routing key
``event_type``, JSON body, persistent, ``message_id`` = ``event_id`` (consumers de-duplicate on it).

No event carries a full resident ID number, a password hash or an email address.
"""
from __future__ import annotations

import datetime as dt
import uuid
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from swms.contracts.common import ApplicationKind, Level
from swms.contracts.review import Stage


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Event(BaseModel):
    # Consumers must accept fields they do not know (schema evolution adds fields).
    model_config = ConfigDict(extra="ignore")
    source: ClassVar[str]
    event_type: ClassVar[str]

    event_id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    schema_version: int = 1
    occurred_at: dt.datetime = Field(default_factory=_now)


class FileHold(BaseModel):
    """Files of a person's 个人信息表 (photo, proofs) that ``holder`` needs kept until ``held_until``,
    even after they leave the form: profile keeps them, and deletes them once no hold lasts
    (docs/operations.md, 文件保留)."""
    holder: str = Field(max_length=80)
    file_keys: list[str]
    held_until: dt.datetime


class ApplicationSubmitted(Event):
    source: ClassVar[str] = "registration"
    event_type: ClassVar[str] = "application_submitted"
    application_id: str
    person_id: str
    kind: ApplicationKind
    region_code: str
    applicant_name_masked: str
    submitted_at: dt.datetime
    resubmission: bool = False
    round: int = 1                    # 1 for the first submission, +1 for each resubmission
    level: Level | None = None        # the level applied for (an upgrade: the new level)
    # The photo and proofs this version's copy of the 个人信息表 names, held by
    # ``submission:<application_id>:<round>`` for the version's retention period (profile records
    # the hold). In this event rather than a files_held of its own: one message per submission.
    files_held: FileHold | None = None


class FilesHeld(Event, FileHold):
    """Registration needs these files of a person's 个人信息表 (photo, proofs) until ``held_until``
    (the fields of :class:`FileHold`). Sent when a certificate is issued (``certificate:<number>``,
    its photo until the end of its validity) and when holds are announced again (``python -m
    services.registration.cli announce-file-holds``). A submission's own hold travels in
    ``application_submitted.files_held``; registrations before that sent it as this event."""
    source: ClassVar[str] = "registration"
    event_type: ClassVar[str] = "files_held"
    person_id: str


class ApplicationApproved(Event):
    source: ClassVar[str] = "review"
    event_type: ClassVar[str] = "application_approved"
    application_id: str
    person_id: str
    kind: ApplicationKind
    region_code: str
    stage: Stage
    final: bool
    decided_by: str
    decided_at: dt.datetime
    level: str | None = None          # the officer level that decided: county / city / province
    next_level: str | None = None     # where the application waits now (None when final)
    round: int | None = None          # the submission round decided (ApplicationSubmitted.round)
    next_stage: Stage | None = None   # the stage of next_level (intermediate or final; None when final)


class ReviewRefusal(Event):
    """Base of the two refusals a reviewer gives, with the reason the applicant sees."""
    application_id: str
    person_id: str
    kind: ApplicationKind
    region_code: str
    stage: Stage
    reason: str
    decided_by: str
    decided_at: dt.datetime
    level: str | None = None          # the officer level that decided: county / city / province
    round: int | None = None          # the submission round decided (ApplicationSubmitted.round)


class ApplicationRejected(ReviewRefusal):
    source: ClassVar[str] = "review"
    event_type: ClassVar[str] = "application_rejected"


class CertificateIssued(Event):
    """For other agencies too: masked ID only, plus a keyed hash an authorised agency can match."""
    source: ClassVar[str] = "certificate"
    event_type: ClassVar[str] = "certificate_issued"
    certificate_number: str
    application_id: str
    person_id: str
    holder_name_masked: str
    id_number_masked: str
    level: Level
    authority: str
    region_code: str
    valid_from: dt.date
    valid_until: dt.date
    issued_at: dt.datetime
    sha256: str
    # Added within schema_version 1 (issue 7):
    id_number_hash: str | None = Field(default=None, description=(
        "HMAC-SHA256 (hex) of 'swms-id-v1:' + the 18-character ID number (upper-case X), keyed with "
        "the secret the operators give to authorised agencies; match it, never reverse it"))
    id_number_hash_key_id: str | None = Field(default=None, description="names the key of id_number_hash")
    kind: ApplicationKind | None = None           # what the certificate was issued for
    issued_on: dt.date | None = None
    supersedes: str | None = None                 # re-issue: the certificate this one replaces
    original_certificate_no: str | None = None    # replacement: the paper certificate's NO


# ---- identity ---------------------------------------------------------------------------------

class PasserLevelRaised(Event):
    """A registered person passed a higher level: certificate marks the holder 已出证待升级."""
    source: ClassVar[str] = "identity"
    event_type: ClassVar[str] = "passer_level_raised"
    person_id: str
    previous_level: Level
    new_level: Level
    management_number: str
    exam_year: int


class FeedbackSubmitted(Event):
    """反馈: a person not found in the registry asked to be added (officers of the region review it)."""
    source: ClassVar[str] = "identity"
    event_type: ClassVar[str] = "feedback_submitted"
    feedback_id: str
    region_code: str
    applicant_name_masked: str
    submitted_at: dt.datetime


class FeedbackDecided(Event):
    """The officer's decision on a feedback; notification emails the person (address fetched by RPC)."""
    source: ClassVar[str] = "identity"
    event_type: ClassVar[str] = "feedback_decided"
    feedback_id: str
    approved: bool
    reason: str | None = None
    decided_by: str
    decided_at: dt.datetime


class EmailConfirmationRequested(Event):
    """Sign-up (or a request for a new code): notification fetches the code over RPC and mails it."""
    source: ClassVar[str] = "identity"
    event_type: ClassVar[str] = "email_confirmation_requested"
    confirmation_id: str
    person_id: str
    expires_at: dt.datetime


class PasswordResetRequested(Event):
    """Notification fetches the one-time code from identity over RPC (the code never rides the bus)."""
    source: ClassVar[str] = "identity"
    event_type: ClassVar[str] = "password_reset_requested"
    reset_id: str
    person_id: str
    expires_at: dt.datetime


# ---- profile ----------------------------------------------------------------------------------

class ProfileChanged(Event):
    """Parts of a 个人信息表 changed; registration refreshes forms not yet submitted."""
    source: ClassVar[str] = "profile"
    event_type: ClassVar[str] = "profile_changed"
    person_id: str
    parts: list[str]          # any of: basic_info, work_experience, honours, photo
    revision: int             # increases with every change of this person's form


# ---- review -----------------------------------------------------------------------------------

class ApplicationReturned(ReviewRefusal):
    """Returned for correction (退回修改): the applicant edits and resubmits."""
    source: ClassVar[str] = "review"
    event_type: ClassVar[str] = "application_returned"


class ApplicationAccepted(Event):
    """Review accepted a submission round: it waits at the first level of its chain (the chain is
    review's configuration; registration shows the applicant where the application is)."""
    source: ClassVar[str] = "review"
    event_type: ClassVar[str] = "application_accepted"
    application_id: str
    person_id: str
    kind: ApplicationKind
    region_code: str
    round: int                        # the submission round (ApplicationSubmitted.round)
    level: str                        # the officer level reviewing it now: county / city / province
    stage: Stage                      # initial
    accepted_at: dt.datetime


# ---- certificate lifecycle (also for other agencies) ------------------------------------------

class CertificateStatusChanged(Event):
    """Base of the lifecycle events; ``reason`` where an officer gave one."""
    source: ClassVar[str] = "certificate"
    certificate_number: str
    person_id: str
    holder_name_masked: str
    id_number_masked: str
    level: Level
    region_code: str
    reason: str | None = None
    changed_by: str
    changed_at: dt.datetime
    # Added within schema_version 1 (issue 7), as in certificate_issued:
    id_number_hash: str | None = None
    id_number_hash_key_id: str | None = None
    status: str | None = None                     # the certificate's status after the change
    valid_until: dt.date | None = None


class CertificateRevoked(CertificateStatusChanged):
    event_type: ClassVar[str] = "certificate_revoked"


class CertificateSuspended(CertificateStatusChanged):
    event_type: ClassVar[str] = "certificate_suspended"


class CertificateReinstated(CertificateStatusChanged):
    event_type: ClassVar[str] = "certificate_reinstated"


class CertificateExpired(CertificateStatusChanged):
    event_type: ClassVar[str] = "certificate_expired"


class CertificateReissued(CertificateStatusChanged):
    """A new certificate replaced this one (upgrade to a higher level, or replacement)."""
    event_type: ClassVar[str] = "certificate_reissued"
    new_certificate_number: str
