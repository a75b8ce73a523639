"""Profile's admin command line (runs against the service's own database, not over RPC).

  python -m services.profile.cli import-organisations FILE.csv
      Loads the directory of registered social-work service organisations (社会工作服务机构) from
      the registration authorities' list: UTF-8 or GB18030 CSV with the columns
      credit_code (统一社会信用代码, required), name (机构名称, required), region_code (所在地区代码,
      optional: defaults to characters 3–8 of the credit code), status (状态, optional: 正常/存续 or
      注销/撤销). Idempotent: adds new codes, updates changed rows, reports each rejected line.

  python -m services.profile.cli release-legacy-holds
      Ends the "legacy" holds the upgrade to file holds (migration 0004) gave every file a snapshot
      had named. Run it once registration's ``announce-file-holds`` has been taken (profile has
      handled every files_held event): files no submitted version or certificate holds are then
      deleted by housekeeping (docs/operations.md, 文件保留).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sqlalchemy.orm import sessionmaker

from services.profile import domain
from swms.config import load_config, service_config_path
from swms.db import engine_for
from swms.errors import SwmsError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="services.profile.cli")
    parser.add_argument("--config", default=str(service_config_path("profile")))
    sub = parser.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import-organisations", help="load the directory of 社会工作服务机构 from a CSV")
    imp.add_argument("file")
    sub.add_parser("release-legacy-holds", help="end the holds migration 0004 gave files snapshotted before")
    args = parser.parse_args(argv)
    config = load_config(args.config)

    if args.command == "release-legacy-holds":
        with sessionmaker(engine_for(config["DB_URL"]))() as session, session.begin():
            count = domain.release_legacy_holds(session, actor="cli")
        print(f"released {count} legacy holds")
        return 0

    with sessionmaker(engine_for(config["DB_URL"]))() as session:
        try:
            rows = domain.read_directory_file(Path(args.file).read_bytes())
            report = domain.import_organisations(session, rows, actor="cli")
            session.commit()
        except SwmsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    print(f"added {report.added}, updated {report.updated}, unchanged {report.unchanged}, "
          f"rejected {len(report.rejected)}")
    for line, reason in report.rejected:
        print(f"  line {line}: {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
