"""Sends webhook deliveries to agencies over HTTP(S); a managed loop of the notification container.

Each pass claims endpoints whose oldest pending delivery is due (a lease on the endpoint, so one
sender per endpoint across replicas: that is what keeps an endpoint's deliveries in order), and
sends each endpoint's queue in order, endpoints side by side (``WEBHOOK_CONCURRENCY`` green
threads). The first failure ends that endpoint's pass; its next try comes with backoff. Each
outcome is committed before the next delivery goes out, so a crash re-sends at most the one in
flight (same ``webhook-id``: a duplicate the agency recognises).

HTTP goes through ``requests``, which is green under Nameko's eventlet monkey-patching (a slow
agency never blocks the hub), always with connect and read timeouts, never following redirects.
"""
from __future__ import annotations

import datetime as dt
import logging
import time

import eventlet
import requests
from sqlalchemy.orm import sessionmaker

from services.notification import domain, webhooks
from services.notification.domain import Outgoing as Email
from swms.background import BackgroundLoop
from swms.db import engine_from_config
from swms.outbox import utcnow

log = logging.getLogger(__name__)

PRUNE_EVERY_SECONDS = 3600.0


def _flag(value) -> bool:
    return str(value or "").strip().lower() in ("1", "true", "yes", "on")


def webhook_settings(config: dict) -> webhooks.WebhookSettings:
    get = domain.NUMBERS.get
    return webhooks.WebhookSettings(
        retry_base_seconds=float(get(config, "WEBHOOK_RETRY_BASE_SECONDS")),
        retry_max_seconds=float(get(config, "WEBHOOK_RETRY_MAX_SECONDS")),
        give_up_after=dt.timedelta(seconds=get(config, "WEBHOOK_GIVE_UP_SECONDS")),
        disable_after=dt.timedelta(seconds=get(config, "WEBHOOK_DISABLE_AFTER_SECONDS")),
        retention=dt.timedelta(days=get(config, "WEBHOOK_EVENT_RETENTION_DAYS")),
        allow_http_loopback=_flag(config.get("WEBHOOK_ALLOW_HTTP_LOOPBACK")),
        lease=dt.timedelta(seconds=max(30.0, 3 * float(get(config, "WEBHOOK_TIMEOUT_SECONDS")))))


def disabled_email(endpoint, error: str) -> Email:
    """To the agency's administrator: the endpoint was disabled for failing (template webhook_endpoint_disabled)."""
    return Email(audience="agency", person_id=None, to_address=endpoint.admin_email, kind="webhook_endpoint_disabled",
                 reference=endpoint.endpoint_id[:64],
                 values={"agency": endpoint.agency, "url": endpoint.url, "endpoint_id": endpoint.endpoint_id,
                         "failing_since_time": endpoint.failing_since.replace(tzinfo=dt.timezone.utc).isoformat(),
                         "last_error": error})


class WebhookSender(BackgroundLoop):
    def __init__(self, mail_settings_provider_name: str = "settings"):
        self.mail_settings_provider_name = mail_settings_provider_name

    def setup(self):
        super().setup()
        config = self.container.config
        self.settings = webhook_settings(config)
        self.box = webhooks.SecretBox.from_file(config.get("WEBHOOK_SECRETS_KEY_FILE"))
        self.timeout = float(domain.NUMBERS.get(config, "WEBHOOK_TIMEOUT_SECONDS"))
        self.poll_seconds = float(domain.NUMBERS.get(config, "WEBHOOK_POLL_SECONDS"))
        self.concurrency = int(domain.NUMBERS.get(config, "WEBHOOK_CONCURRENCY"))
        self.batch = int(domain.NUMBERS.get(config, "WEBHOOK_BATCH"))
        self.batch_size = self.concurrency   # a full claim: go again at once
        self.sessions = sessionmaker(engine_from_config(config), expire_on_commit=False)
        self._last_prune = 0.0

    def _mail_settings(self) -> domain.Settings:
        for extension in self.container.dependencies:
            if getattr(extension, "attr_name", None) == self.mail_settings_provider_name:
                return extension.settings
        raise RuntimeError("notification settings provider not found")

    def run_once(self) -> int:
        if time.monotonic() - self._last_prune > PRUNE_EVERY_SECONDS:
            with self.sessions.begin() as session:
                pruned = webhooks.prune(session, self.settings)
            if pruned:
                log.info("pruned %d agency event(s) past the retention period", pruned)
            self._last_prune = time.monotonic()
        with self.sessions.begin() as session:
            claimed = webhooks.claim_endpoints(session, self.concurrency, self.settings)
        if not claimed:
            return 0
        sent = list(eventlet.GreenPool(self.concurrency).imap(self._serve, claimed))
        # a full claim, or an endpoint with more than one batch waiting: go again at once
        return self.batch_size if max(sent) >= self.batch else len(claimed)

    def _serve(self, endpoint_id: str) -> int:
        try:
            return self.deliver_queue(endpoint_id)
        except Exception:
            log.exception("webhook pass for endpoint %s failed; retried later", endpoint_id)
            return 0
        finally:
            with self.sessions.begin() as session:
                webhooks.release(session, endpoint_id)

    def deliver_queue(self, endpoint_id: str) -> int:
        """Send the endpoint's pending deliveries in order until one fails; returns how many went."""
        with self.sessions.begin() as session:
            endpoint, queue = webhooks.queue_of(session, endpoint_id, self.batch)
            url, secret = endpoint.url, self.box.open(endpoint.secret_encrypted)
        sent = 0
        leased_at = time.monotonic()
        with requests.Session() as http:
            for item in queue:
                if not self.running or not item.due:
                    break
                # a long queue outlasts one lease: renew it (a third of the way in) while still sending
                renew = time.monotonic() - leased_at > self.settings.lease.total_seconds() / 3
                if not self._send(http, endpoint_id, url, secret, item, renew):
                    break
                if renew:
                    leased_at = time.monotonic()
                sent += 1
        return sent

    def _send(self, http: requests.Session, endpoint_id: str, url: str, secret: str, item: webhooks.Outgoing,
              renew_lease: bool = False) -> bool:
        headers = webhooks.headers_for(secret, item.event_id, item.body, time.time())
        headers["user-agent"] = "SWMS-Webhooks/1"
        started = time.monotonic()
        status, outcome, error = None, "delivered", None
        try:
            response = http.post(url, data=item.body, headers=headers, timeout=(self.timeout, self.timeout),
                                 allow_redirects=False)
            status = response.status_code
            response.close()
            if not 200 <= status < 300:
                outcome, error = "http_error", f"HTTP {status}"
        except requests.Timeout as exc:
            outcome, error = "timeout", f"{type(exc).__name__}"
        except requests.RequestException as exc:
            outcome, error = "unreachable", f"{type(exc).__name__}: {str(exc)[:200]}"
        latency_ms = int((time.monotonic() - started) * 1000)
        with self.sessions.begin() as session:
            if outcome == "delivered":
                webhooks.record_success(session, item.delivery_id, status, latency_ms)
                if renew_lease:
                    webhooks.extend_lease(session, endpoint_id, self.settings)
                return True
            result = webhooks.record_failure(session, item.delivery_id, status_code=status, latency_ms=latency_ms,
                                             outcome=outcome, error=error, settings=self.settings)
            if result.disabled:
                self._email_disabled(session, result.endpoint, error)
        log.warning("webhook %s to endpoint %s failed (%s)%s%s", item.event_id, endpoint_id, error,
                    "; delivery dead" if result.dead else "", "; endpoint disabled" if result.disabled else "")
        return False

    def _email_disabled(self, session, endpoint, error: str) -> None:
        """The administrator's email, recorded in the transaction that disables (the mailer sends it)."""
        domain.record(session, disabled_email(endpoint, error),
                      key=f"webhook-disabled:{endpoint.endpoint_id}:{endpoint.disabled_at.isoformat()}", job_id=None,
                      settings=self._mail_settings(), now=utcnow())

    def get_dependency(self, worker_ctx):
        return self      # .settings, .box, .wake() for the service's entrypoints
