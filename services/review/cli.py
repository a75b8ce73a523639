"""Review's operator command line (runs against the files and the service's own database).

  python -m services.review.cli check-config [--chains FILE] [--calendar FILE]
      checks an edited chains or calendar file exactly as review does at start, and prints what it
      understood: the chain per province and kind, the years the calendar covers, next deadlines.
  python -m services.review.cli recompute-deadlines
      brings the deadlines of pending items in line with the calendar now (review also does this
      at every start).

Defaults come from services/review/config.yaml (so from the environment). Exit status: 0 fine,
2 refused (the reason on stderr).
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys

from sqlalchemy.orm import sessionmaker

from services.review import domain
from services.review.workcalendar import CalendarError, local_date
from swms.config import ConfigError, load_config, service_config_path
from swms.db import engine_for
from swms.outbox import utcnow

load_rules = domain.Rules.from_config   # the same loading and checks as the service at start


def check_config(rules: domain.Rules, out=print) -> None:
    out("review chains:")
    for province, kinds in sorted(rules.chains.items(), key=lambda pair: (pair[0] != "default", pair[0])):
        for kind, levels in kinds.items():
            out(f"  {province:8} {kind:20} {' → '.join(levels)}")
    calendar = rules.calendar
    out(f"working-day calendar {calendar.fingerprint}: years {', '.join(map(str, sorted(calendar.years)))}; "
        f"{len(calendar.holidays)} holidays, {len(calendar.workdays)} make-up working days")
    today = local_date(utcnow())
    for year in (today.year, today.year + 1):
        if not calendar.covers(year):
            out(f"  warning: no holiday list for {year}: weekends and fixed-date holidays only")
    due = calendar.add_working_days(today, rules.working_days)
    out(f"accepted today ({today}), an application is due on {due} "
        f"({rules.working_days} working days; near due from {rules.near_due_working_days} working days left)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="services.review.cli")
    parser.add_argument("--config", default=str(service_config_path("review")))
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check-config", help="check the chains and calendar files")
    check.add_argument("--chains")
    check.add_argument("--calendar")
    sub.add_parser("recompute-deadlines", help="recompute the deadlines of pending items")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    try:
        if args.command == "check-config":
            check_config(load_rules(config, args.chains, args.calendar))
        else:
            rules = load_rules(config)
            factory = sessionmaker(engine_for(config["DB_URL"]), expire_on_commit=False)
            changed = domain.recompute_deadlines(factory.begin, rules)
            print(f"{changed} pending item(s) got a new deadline ({dt.datetime.now():%Y-%m-%d %H:%M})")
    except (domain.ChainsError, CalendarError, ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
