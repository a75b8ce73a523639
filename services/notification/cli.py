"""Notification's operator command line for agencies' webhooks (runs against the service's own database,
with the same rules as the RPCs; every change is audited under ``cli:<--actor>``).

  python -m services.notification.cli register-webhook --agency 北京市人社局 \\
      --url https://hr.example.gov.cn/swms/events --admin-email ops@hr.example.gov.cn \\
      [--event-type certificate_issued ...]          (default: every agency event type)
      prints the endpoint id and the signing secret (whsec_…): shown this once, give it to the agency.
  python -m services.notification.cli list-webhooks
  python -m services.notification.cli enable-webhook ENDPOINT_ID --reason …   (disable-webhook likewise)
  python -m services.notification.cli replay-webhook ENDPOINT_ID (--since-event-id ID | --since 2026-12-01T00:00:00Z)
  python -m services.notification.cli webhook-deliveries ENDPOINT_ID [--status dead] [--limit 50]

The running service picks changes up at its next poll (``WEBHOOK_POLL_SECONDS``). Defaults come from
services/notification/config.yaml (so from the environment). Exit status: 0 fine, 2 refused (the
reason on stderr).
"""
from __future__ import annotations

import argparse
import datetime as dt
import getpass
import sys

from sqlalchemy.orm import sessionmaker

from services.notification import webhooks
from services.notification.webhook_sender import webhook_settings
from swms.config import ConfigError, load_config, service_config_path
from swms.db import engine_for
from swms.errors import SwmsError


def _since(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value.astimezone(dt.timezone.utc).replace(tzinfo=None) if value.tzinfo else value


def main(argv: list[str] | None = None, out=print) -> int:
    parser = argparse.ArgumentParser(prog="services.notification.cli")
    parser.add_argument("--config", default=str(service_config_path("notification")))
    parser.add_argument("--actor", default=getpass.getuser(), help="who you are, for the audit log")
    sub = parser.add_subparsers(dest="command", required=True)
    register = sub.add_parser("register-webhook", help="register an agency's endpoint; prints its secret once")
    register.add_argument("--agency", required=True)
    register.add_argument("--url", required=True)
    register.add_argument("--admin-email", required=True)
    register.add_argument("--event-type", action="append", choices=webhooks.AGENCY_EVENT_TYPES)
    sub.add_parser("list-webhooks", help="every endpoint and its status")
    for name in ("enable-webhook", "disable-webhook"):
        change = sub.add_parser(name)
        change.add_argument("endpoint_id")
        change.add_argument("--reason", required=True)
    replay = sub.add_parser("replay-webhook", help="deliver again every event since an event id or a time")
    replay.add_argument("endpoint_id")
    start = replay.add_mutually_exclusive_group(required=True)
    start.add_argument("--since-event-id")
    start.add_argument("--since", type=_since, help="ISO 8601 time (UTC if no offset)")
    deliveries = sub.add_parser("webhook-deliveries", help="an endpoint's recent deliveries and attempts")
    deliveries.add_argument("endpoint_id")
    deliveries.add_argument("--status", choices=("pending", "delivered", "dead"))
    deliveries.add_argument("--limit", type=int, default=50)
    args = parser.parse_args(argv)
    actor = f"cli:{args.actor}"
    try:
        config = load_config(args.config)
        settings = webhook_settings(config)
        sessions = sessionmaker(engine_for(config["DB_URL"]), expire_on_commit=False)
        with sessions.begin() as session:
            if args.command == "register-webhook":
                box = webhooks.SecretBox.from_file(config.get("WEBHOOK_SECRETS_KEY_FILE"))
                endpoint, secret = webhooks.register_endpoint(
                    session, agency=args.agency, url=args.url, admin_email=args.admin_email,
                    event_types=args.event_type or list(webhooks.AGENCY_EVENT_TYPES), actor=actor, box=box,
                    settings=settings)
                out(f"endpoint {endpoint.endpoint_id} registered for {endpoint.agency}: {endpoint.url}")
                out(f"signing secret (shown once; give it to the agency over a secure channel): {secret}")
            elif args.command == "list-webhooks":
                for e in webhooks.list_endpoints(session):
                    out(f"{e.endpoint_id}  {e.status:8}  {e.agency}  {e.url}  {e.event_types}"
                        + (f"  disabled {e.disabled_at:%Y-%m-%d %H:%M}Z: {e.disabled_reason}" if e.disabled_at and
                           e.status == "disabled" else ""))
            elif args.command in ("enable-webhook", "disable-webhook"):
                e = webhooks.set_endpoint_status(session, args.endpoint_id, args.command == "enable-webhook",
                                                 args.reason, actor, settings)
                out(f"endpoint {e.endpoint_id} is {e.status}")
            elif args.command == "replay-webhook":
                result = webhooks.replay(session, args.endpoint_id, since_event_id=args.since_event_id,
                                         since=args.since, actor=actor, settings=settings)
                out(f"replay {result.replay_id}: {result.count} event(s) queued"
                    + (f", {result.first_event_id} … {result.last_event_id}" if result.count else ""))
            else:
                for d, attempts in webhooks.list_deliveries(session, args.endpoint_id, args.status, args.limit):
                    out(f"{d.event_id}  {d.event_type:22}  {d.status:9}  attempts {d.attempts}"
                        + (f"  last: {d.last_error}" if d.last_error else ""))
                    for a in attempts:
                        out(f"    {a.attempted_at:%Y-%m-%d %H:%M:%S}Z  {a.outcome:11}  {a.status_code or '-'}  "
                            f"{a.latency_ms} ms  {a.error or ''}")
    except SwmsError as exc:
        print(f"error: {exc.field or ''} {exc.message}".replace("  ", " "), file=sys.stderr)
        return 2
    except (ConfigError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
