"""Identity's admin command line (runs against the service's own database, not over RPC).

  python -m services.identity.cli import-passers FILE.csv
  python -m services.identity.cli create-officer --name N --email E --password P --region 110105 --level county
  python -m services.identity.cli mint-service-token NAME   (prints a 365-day token for a service)
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

from sqlalchemy.orm import sessionmaker

from services.identity import domain
from swms.auth import SERVICE, Caller, issue_token
from swms.config import load_config, service_config_path
from swms.db import engine_for
from swms.errors import SwmsError


def _session(config):
    return sessionmaker(engine_for(config["DB_URL"]))()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="services.identity.cli")
    parser.add_argument("--config", default=str(service_config_path("identity")))
    sub = parser.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import-passers", help="load the exam authority's CSV into the registry")
    imp.add_argument("file")
    off = sub.add_parser("create-officer", help="create a civil-affairs officer account")
    for flag in ("--name", "--email", "--password", "--region"):
        off.add_argument(flag, required=True)
    off.add_argument("--level", required=True, choices=["county", "city", "province"])
    mint = sub.add_parser("mint-service-token")
    mint.add_argument("service")
    args = parser.parse_args(argv)
    config = load_config(args.config)

    if args.command == "mint-service-token":
        private_key = Path(config["AUTH_PRIVATE_KEY_FILE"]).read_bytes()
        token, _ = issue_token(private_key, Caller(subject=args.service, role=SERVICE), dt.timedelta(days=365))
        print(token)
        return 0

    with _session(config) as session:
        try:
            if args.command == "import-passers":
                rows = domain.read_registry_file(Path(args.file).read_bytes())
                report = domain.import_passers(session, rows)
                session.commit()
                print(f"added {report.added}, unchanged {report.unchanged}, rejected {len(report.rejected)}")
                for line, reason in report.rejected:
                    print(f"  line {line}: {reason}")
            elif args.command == "create-officer":
                password_hash = domain.password_hasher.hash(args.password)
                account = domain.create_officer(session, args.name, args.email, password_hash,
                                                args.region, args.level)
                session.commit()
                print(f"officer {account.person_id} ({args.level}, {args.region})")
        except SwmsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
