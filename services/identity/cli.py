"""Identity's admin command line (runs against the service's own database, not over RPC).

  python -m services.identity.cli import-passers FILE.csv [--report REJECTED.csv] [--workers N]
  python -m services.identity.cli create-officer --name N --email E --password P --region 110105 --level county
  python -m services.identity.cli create-admin --name N --email E --password P
  python -m services.identity.cli disable-account EMAIL --reason "调离岗位"   (no login; refresh tokens revoked)
  python -m services.identity.cli enable-account EMAIL
  python -m services.identity.cli mint-service-token NAME   (prints a 365-day token for a service)
  python -m services.identity.cli purge-expired             (daily: old throttle counters, tokens, resets)

Passwords may also come from the environment (``--password-env VAR``) so they stay out of shell
history and process listings. Exit status: 0 done, 2 refused (the reason on stderr).
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import getpass
import os
import sys
import time
from pathlib import Path

from sqlalchemy.orm import sessionmaker

from services.identity import domain, passwords
from services.identity import settings as identity_settings
from swms.auth import SERVICE, Caller, issue_token
from swms.config import load_config, service_config_path
from swms.db import engine_for
from swms.errors import SwmsError
from swms.outbox import utcnow


def _session(config):
    return sessionmaker(engine_for(config["DB_URL"]))()


def _password(args) -> str:
    if args.password_env:
        value = os.environ.get(args.password_env)
        if not value:
            raise SwmsError("VALIDATION_FAILED", f"环境变量 {args.password_env} 未设置", "password")
        return value
    if not args.password:
        raise SwmsError("VALIDATION_FAILED", "须提供 --password 或 --password-env", "password")
    return args.password


def _actor() -> str:
    """Who ran the command, for the audit log (the operator's login on the host or pod)."""
    try:
        return f"admin-cli:{getpass.getuser()}"
    except Exception:   # no user name in a bare container
        return "admin-cli"


def _add_staff_arguments(parser) -> None:
    parser.add_argument("--name", required=True)
    parser.add_argument("--email", required=True)
    parser.add_argument("--password")
    parser.add_argument("--password-env", help="read the password from this environment variable")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="services.identity.cli")
    parser.add_argument("--config", default=str(service_config_path("identity")))
    sub = parser.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import-passers", help="load the exam authority's CSV into the registry")
    imp.add_argument("file")
    imp.add_argument("--report", help="write the rejected rows (line, reason) to this CSV file")
    imp.add_argument("--workers", type=int, default=0,
                     help="processes checking rows (default: one per CPU for files over 20 MB, else 1)")
    off = sub.add_parser("create-officer", help="create a civil-affairs officer account")
    _add_staff_arguments(off)
    off.add_argument("--region", required=True, help="6-digit code: 110000 province, 440300 city, 110105 county")
    off.add_argument("--level", required=True, choices=["county", "city", "province"])
    adm = sub.add_parser("create-admin", help="create an administrator account")
    _add_staff_arguments(adm)
    dis = sub.add_parser("disable-account", help="stop an account: no login, refresh or password reset; "
                                                 "its refresh tokens are revoked now")
    dis.add_argument("login", help="the account's email (or a social worker's ID number)")
    dis.add_argument("--reason", required=True, help="why, for the audit log (at most 200 characters)")
    ena = sub.add_parser("enable-account", help="let a disabled account log in again")
    ena.add_argument("login")
    ena.add_argument("--reason", help="why, for the audit log (optional)")
    mint = sub.add_parser("mint-service-token")
    mint.add_argument("service")
    sub.add_parser("purge-expired", help="delete old throttle counters, refresh tokens and reset codes")
    args = parser.parse_args(argv)
    config = load_config(args.config)

    if args.command == "mint-service-token":
        private_key = Path(config["AUTH_PRIVATE_KEY_FILE"]).read_bytes()
        token, _ = issue_token(private_key, Caller(subject=args.service, role=SERVICE), dt.timedelta(days=365))
        print(token)
        return 0

    settings = identity_settings.from_config(config)
    with _session(config) as session:
        try:
            if args.command == "import-passers":
                started = time.perf_counter()
                raw = Path(args.file).read_bytes()
                workers = args.workers or ((os.cpu_count() or 1) if len(raw) > 20_000_000 else 1)
                report = domain.import_file(session, raw, id_hash=settings.id_hash, workers=workers)
                session.commit()
                print(report.summary())
                print(f"  ({report.timing()}, {time.perf_counter() - started:.1f} s in all with the commit)")
                for line, reason in report.rejected[:50]:
                    print(f"  line {line}: {reason}")
                if len(report.rejected) > 50:
                    print(f"  … {len(report.rejected) - 50} more" + ("" if args.report else " (use --report FILE)"))
                if args.report:
                    with open(args.report, "w", newline="", encoding="utf-8") as handle:
                        writer = csv.writer(handle)
                        writer.writerow(["line", "reason"])
                        writer.writerows(report.rejected)
            elif args.command in ("create-officer", "create-admin"):
                password = _password(args)
                passwords.check(password, settings.password_min_length, email=args.email)
                password_hash = passwords.hasher.hash(password)
                if args.command == "create-officer":
                    account = domain.create_officer(session, args.name, args.email, password_hash, args.region,
                                                    args.level)
                    print(f"officer {account.person_id} ({args.level}, {args.region})")
                else:
                    account = domain.create_admin(session, args.name, args.email, password_hash)
                    print(f"admin {account.person_id}")
                session.commit()
            elif args.command in ("disable-account", "enable-account"):
                if args.command == "disable-account":
                    account, changed = domain.disable_account(session, args.login, args.reason, utcnow(), _actor())
                    done = "disabled" if changed else f"already disabled since {account.disabled_at:%Y-%m-%d %H:%M} UTC"
                else:
                    account, changed = domain.enable_account(session, args.login, _actor(), args.reason)
                    done = "enabled" if changed else "was not disabled"
                session.commit()
                print(f"{account.role} {account.person_id}: {done}")
            elif args.command == "purge-expired":
                counts = domain.purge_expired(session, utcnow())
                session.commit()
                print(", ".join(f"{name} {count}" for name, count in counts.items()))
        except SwmsError as exc:
            session.rollback()
            print(f"error: {exc}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
