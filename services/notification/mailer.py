"""Sends recorded messages over SMTP, retrying with backoff; a managed loop of the container."""
from __future__ import annotations

import datetime as dt
import smtplib

from sqlalchemy import select, update
from sqlalchemy.orm import sessionmaker

from services.notification import domain
from services.notification.models import PENDING, Message
from swms.background import BackgroundLoop
from swms.config import required
from swms.db import engine_for
from swms.outbox import utcnow

LEASE = dt.timedelta(seconds=60)


class Mailer(BackgroundLoop):
    poll_seconds = 2.0
    batch_size = 50

    def setup(self):
        super().setup()
        config = self.container.config
        self.sessions = sessionmaker(engine_for(required(config, "DB_URL")), expire_on_commit=False)
        self.host = required(config, "SMTP_HOST")
        self.port = int(required(config, "SMTP_PORT"))
        self.user = config.get("SMTP_USER") or None
        self.password = config.get("SMTP_PASSWORD") or None
        self.starttls = str(config.get("SMTP_STARTTLS", "false")).lower() == "true"
        self.sender = required(config, "MAIL_FROM")

    def get_dependency(self, worker_ctx):
        return self.wake  # workers that record a message wake the sender after commit

    def run_once(self) -> int:
        now = utcnow()
        with self.sessions.begin() as session:  # claim with a lease, as the outbox relay does
            messages = session.execute(
                select(Message).where(Message.status == PENDING, Message.next_attempt_at <= now)
                .order_by(Message.created_at).limit(self.batch_size).with_for_update(skip_locked=True)
            ).scalars().all()
            ids = [m.message_id for m in messages]
            if ids:
                session.execute(update(Message).where(Message.message_id.in_(ids))
                                .values(next_attempt_at=now + LEASE))
        if not messages:
            return 0
        try:
            smtp = self._connect()
        except (OSError, smtplib.SMTPException) as exc:
            with self.sessions.begin() as session:
                for message in messages:
                    message = session.merge(message)
                    domain.mark_failed_attempt(message, f"SMTP connect: {exc}", permanent=False)
            return len(messages)
        with smtp:
            for message in messages:
                try:
                    smtp.send_message(domain.build_email(message, self.sender))
                    outcome = None
                except smtplib.SMTPRecipientsRefused as exc:
                    outcome = (f"recipient refused: {exc.recipients}", True)
                except (smtplib.SMTPException, OSError, ValueError) as exc:
                    permanent = isinstance(exc, smtplib.SMTPResponseException) and 500 <= exc.smtp_code < 600
                    outcome = (f"{type(exc).__name__}: {exc}", permanent)
                with self.sessions.begin() as session:
                    message = session.merge(message)
                    if outcome is None:
                        domain.mark_sent(message)
                    else:
                        domain.mark_failed_attempt(message, *outcome)
        return len(messages)

    def _connect(self) -> smtplib.SMTP:
        smtp = smtplib.SMTP(self.host, self.port, timeout=30)
        if self.starttls:
            smtp.starttls()
        if self.user:
            smtp.login(self.user, self.password or "")
        return smtp
