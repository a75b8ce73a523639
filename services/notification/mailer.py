"""Sends recorded messages over SMTP, retrying with backoff; a managed loop of the container.

Delivery is at least once: a message is marked sent only after the relay accepted it, so a crash
between the relay's "250 OK" and that commit sends it again after the claim's lease ends (the
Message-ID header stays the same, so mail clients can tell). Everything else is exactly once.

SMTP outcomes:
- 5xx for the recipient (``RECIPIENT_REFUSED``) or the message (``SMTP_REJECTED``): failed for good,
  visible to operators (``list_failures``), who may ``retry_message`` after fixing the cause;
- 4xx, a refused or broken connection, TLS or login failure (``SMTP_UNAVAILABLE``): retried with
  exponential backoff (2 s … 10 min) until ``MAIL_GIVE_UP_HOURS`` after recording (``GAVE_UP``);
- while the relay cannot be reached the loop pauses (backoff up to a minute) instead of burning
  attempts of the whole backlog.
"""
from __future__ import annotations

import datetime as dt
import email.utils
import logging
import smtplib
import socket
import ssl
import time
from dataclasses import dataclass
from email.message import EmailMessage

from sqlalchemy.orm import sessionmaker

from services.notification import domain
from services.notification.models import Message
from swms.background import BackgroundLoop
from swms.config import required
from swms.db import engine_from_config
from swms.outbox import utcnow

log = logging.getLogger(__name__)

LEASE = dt.timedelta(seconds=60)
MESSAGE_INVALID = "MESSAGE_INVALID"


def _flag(value) -> bool:
    return str(value or "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    sender: str
    user: str | None = None
    password: str | None = None
    starttls: bool = False
    implicit_tls: bool = False
    ca_file: str | None = None
    timeout: float = 30.0

    @classmethod
    def from_config(cls, config: dict) -> "SmtpSettings":
        return cls(host=required(config, "SMTP_HOST"), port=domain.NUMBERS.get(config, "SMTP_PORT"),
                   sender=required(config, "MAIL_FROM"), user=config.get("SMTP_USER") or None,
                   password=config.get("SMTP_PASSWORD") or None, starttls=_flag(config.get("SMTP_STARTTLS")),
                   implicit_tls=_flag(config.get("SMTP_SSL")), ca_file=config.get("SMTP_CA_BUNDLE") or None,
                   )

    @property
    def sender_address(self) -> str:
        return email.utils.parseaddr(self.sender)[1]

    @property
    def sender_domain(self) -> str:
        return self.sender_address.rpartition("@")[2] or "swms"


class SmtpTransport:
    """Opens authenticated, verified connections as configured. TLS always verifies the server's
    certificate and host name (``SMTP_CA_BUNDLE`` adds a private CA); a login is refused on a
    connection that is not encrypted, unless the relay is on loopback."""

    def __init__(self, settings: SmtpSettings):
        self.settings = settings

    def tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.settings.ca_file)

    def connect(self) -> smtplib.SMTP:
        s = self.settings
        if s.implicit_tls:
            smtp = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout, context=self.tls_context())
        else:
            smtp = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
        try:
            if s.starttls and not s.implicit_tls:
                smtp.starttls(context=self.tls_context())
            if s.user:
                encrypted = s.implicit_tls or s.starttls
                if not encrypted and s.host not in ("127.0.0.1", "localhost", "::1"):
                    raise smtplib.SMTPException("refusing to send the SMTP password over an unencrypted "
                                                "connection: set SMTP_STARTTLS or SMTP_SSL")
                smtp.login(s.user, s.password or "")
        except BaseException:
            smtp.close()
            raise
        return smtp


def build_email(message: Message, settings: SmtpSettings) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = settings.sender
    mail["To"] = message.to_address
    mail["Subject"] = message.subject
    mail["Date"] = email.utils.format_datetime(dt.datetime.now(dt.timezone.utc))
    mail["Message-ID"] = f"<{message.message_id}@{settings.sender_domain}>"
    mail["Auto-Submitted"] = "auto-generated"           # RFC 3834: no auto-replies, please
    mail["Content-Language"] = message.language
    mail["X-SWMS-Kind"] = message.kind
    mail.set_content(message.body_text, cte="base64")  # 7-bit safe: no relay needs 8BITMIME
    mail.add_alternative(message.body_html, subtype="html", cte="base64")
    return mail


@dataclass(frozen=True)
class Outcome:
    code: str
    detail: str
    permanent: bool
    field: str | None = None
    connection_broken: bool = False


def classify(exc: BaseException) -> Outcome:
    """What an exception from sending one message means for it, and for the connection."""
    name = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()] or [550]
        permanent = all(500 <= code < 600 for code in codes)
        return Outcome(domain.RECIPIENT_REFUSED if permanent else domain.SMTP_UNAVAILABLE,
                       f"recipient refused: {exc.recipients}", permanent, "to_address")
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return Outcome(domain.SMTP_UNAVAILABLE, name, False, connection_broken=True)
    if isinstance(exc, smtplib.SMTPSenderRefused):
        # A refused sender is the relay's configuration (affects every message): retried, except
        # 552 (this message is too large).
        permanent = exc.smtp_code == 552
        return Outcome(domain.SMTP_REJECTED if permanent else domain.SMTP_UNAVAILABLE, name, permanent)
    if isinstance(exc, smtplib.SMTPResponseException):
        permanent = 500 <= exc.smtp_code < 600
        return Outcome(domain.SMTP_REJECTED if permanent else domain.SMTP_UNAVAILABLE, name, permanent,
                       connection_broken=exc.smtp_code == 421)
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return Outcome(domain.SMTP_REJECTED, name, True)
    if isinstance(exc, (OSError, smtplib.SMTPException, socket.timeout)):
        return Outcome(domain.SMTP_UNAVAILABLE, name, False, connection_broken=True)
    return Outcome(MESSAGE_INVALID, name, True)


class Mailer(BackgroundLoop):
    """``get_dependency`` gives workers ``wake()``: call it after committing new messages.

    ``SMTP_CONNECTIONS`` loops run side by side, each with its own connection and its own claimed
    batch, so that one connection's waits (the relay's replies, the commits) overlap the others'."""
    poll_seconds = 2.0
    batch_size = 50
    max_pause_seconds = 60.0

    def setup(self):
        config = self.container.config
        self.loops = domain.NUMBERS.get(config, "SMTP_CONNECTIONS")
        super().setup()
        self.sessions = sessionmaker(engine_from_config(config), expire_on_commit=False)
        self.smtp = SmtpSettings.from_config(config)
        self.transport = SmtpTransport(self.smtp)
        self.lease = dt.timedelta(seconds=domain.NUMBERS.get(config, "NOTIFICATION_LEASE_SECONDS"))
        self._failures_in_a_row = 0
        self._paused_until = 0.0
        if self.smtp.user and not (self.smtp.starttls or self.smtp.implicit_tls):
            log.warning("SMTP_USER is set but neither SMTP_STARTTLS nor SMTP_SSL: the login is refused "
                        "unless the relay is on loopback")

    def get_dependency(self, worker_ctx):
        return self.wake

    def run_once(self) -> int:
        if time.monotonic() < self._paused_until:
            return 0
        with self.sessions.begin() as session:
            token, messages = domain.claim_due_messages(session, self.batch_size, self.lease)
        if not messages:
            return 0
        claimed_at = time.monotonic()
        try:
            smtp = self.transport.connect()
        except Exception as exc:
            self._pause(f"{type(exc).__name__}: {exc}")
            with self.sessions.begin() as session:
                for message in messages:
                    domain.mark_attempt_failed(session, message, token, domain.SMTP_UNAVAILABLE,
                                               f"connect to {self.smtp.host}:{self.smtp.port}: "
                                               f"{type(exc).__name__}: {exc}", permanent=False)
            return 0
        self._failures_in_a_row = 0
        try:
            for index, message in enumerate(messages):
                if not self.running:  # stopping: hand the rest back for the next process (see BackgroundLoop)
                    with self.sessions.begin() as session:
                        domain.release(session, token, [m.message_id for m in messages[index:]])
                    return 0
                if time.monotonic() - claimed_at > self.lease.total_seconds() / 2:
                    with self.sessions.begin() as session:
                        domain.extend_lease(session, token, self.lease)
                    claimed_at = time.monotonic()
                outcome = self._send(smtp, message)
                with self.sessions.begin() as session:
                    if outcome is None:
                        if not domain.mark_sent(session, message.message_id, token):
                            log.warning("message %s was sent but its claim had been taken over", message.message_id)
                    else:
                        domain.mark_attempt_failed(session, message, token, outcome.code, outcome.detail,
                                                   permanent=outcome.permanent, field=outcome.field)
                if outcome is not None and outcome.connection_broken:
                    self._pause(outcome.detail)
                    with self.sessions.begin() as session:
                        domain.release(session, token, [m.message_id for m in messages[index + 1:]])
                    return 0
        finally:
            try:
                smtp.quit()
            except Exception:
                smtp.close()
        return len(messages)

    def _send(self, smtp: smtplib.SMTP, message: Message) -> Outcome | None:
        if message.expires_at is not None and utcnow() >= message.expires_at:
            return Outcome(domain.DELIVERY_EXPIRED, "the message expired before it could be sent", True, "expires_at")
        try:
            mail = build_email(message, self.smtp)
        except Exception as exc:
            return Outcome(MESSAGE_INVALID, f"cannot build the email: {type(exc).__name__}: {exc}", True)
        try:
            smtp.send_message(mail, from_addr=self.smtp.sender_address, to_addrs=[message.to_address])
        except Exception as exc:
            return classify(exc)
        return None

    def _pause(self, reason: str) -> None:
        self._failures_in_a_row += 1
        pause = min(self.max_pause_seconds, 2 ** self._failures_in_a_row)
        self._paused_until = time.monotonic() + pause
        log.warning("SMTP relay %s:%s unavailable (%s); pausing %.0f s", self.smtp.host, self.smtp.port, reason, pause)
