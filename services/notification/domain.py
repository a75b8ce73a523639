"""Notification rules in plain Python: templates, recording messages, send outcomes."""
from __future__ import annotations

import datetime as dt
import html
import uuid
from email.message import EmailMessage
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.notification.models import FAILED, PENDING, SENT, Message, audit
from swms.outbox import utcnow

TEMPLATES = Path(__file__).parent / "templates"
SUBJECTS = {"certificate_issued": "【全国社会工作信息系统】您的电子登记证书已签发"}
MAX_ATTEMPTS = 8


def render(kind: str, values: dict[str, str], language: str = "zh-CN") -> tuple[str, str, str]:
    """(subject, text, html). A missing template variable raises KeyError: recorded, not sent."""
    text = (TEMPLATES / f"{kind}.{language}.txt").read_text(encoding="utf-8").format(**values)
    escaped = {key: html.escape(str(value)) for key, value in values.items()}
    body_html = (TEMPLATES / f"{kind}.{language}.html").read_text(encoding="utf-8").format(**escaped)
    return SUBJECTS[kind], text, body_html


def record(session: Session, *, idempotency_key: str, person_id: str, kind: str, to_address: str,
           values: dict[str, str]) -> Message | None:
    """Record the message before any attempt to send it; None if this key was recorded already."""
    if session.execute(select(Message.message_id).where(Message.idempotency_key == idempotency_key)).first():
        return None
    subject, text, body_html = render(kind, values)
    now = utcnow()
    message = Message(message_id=str(uuid.uuid4()), idempotency_key=idempotency_key, person_id=person_id,
                      kind=kind, to_address=to_address, subject=subject, body_text=text, body_html=body_html,
                      status=PENDING, attempts=0, next_attempt_at=now, created_at=now)
    try:
        with session.begin_nested():
            session.add(message)
    except IntegrityError:  # a concurrent delivery of the same event recorded it first
        return None
    audit.record(session, "notification", "message.recorded", "message", message.message_id, {"kind": kind})
    return message


def build_email(message: Message, sender: str) -> EmailMessage:
    email = EmailMessage()
    email["From"] = sender
    email["To"] = message.to_address
    email["Subject"] = message.subject
    email["Message-ID"] = f"<{message.message_id}@swms>"
    email.set_content(message.body_text)
    email.add_alternative(message.body_html, subtype="html")
    return email


def mark_sent(message: Message) -> None:
    message.status = SENT
    message.sent_at = utcnow()
    message.attempts += 1
    message.last_error = None


def mark_failed_attempt(message: Message, error: str, permanent: bool) -> None:
    message.attempts += 1
    message.last_error = error[:1000]
    if permanent or message.attempts >= MAX_ATTEMPTS:
        message.status = FAILED
    else:  # exponential backoff: 2 s, 4 s, … capped at 10 minutes
        message.next_attempt_at = utcnow() + dt.timedelta(seconds=min(600, 2 ** message.attempts))
