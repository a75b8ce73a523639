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


class ApplicationRejected(Event):
    source: ClassVar[str] = "review"
    event_type: ClassVar[str] = "application_rejected"
    application_id: str
    person_id: str
    kind: ApplicationKind
    region_code: str
    stage: Stage
    reason: str
    decided_by: str
    decided_at: dt.datetime


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
