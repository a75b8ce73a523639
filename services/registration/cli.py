"""Registration's admin command line (runs against the service's own database, not over RPC).

  python -m services.registration.cli import-ce-records FILE.csv [--source learning] [--report REJECTED.csv]
  python -m services.registration.cli sweep-proofs [--older-than-hours 24]
  python -m services.registration.cli announce-file-holds
  python -m services.registration.cli export-event-schema [DIR]

``import-ce-records`` loads continuing-education records (线上学时) from a platform's export; the
columns are described in services/registration/ce_import.py. Use the same ``--source`` as the
platform's events (default ``learning``) so a record that arrives both ways is counted once.

``announce-file-holds`` tells profile again which photos and proofs each submitted version (within
its retention period) and each valid certificate needs (events ``files_held``, sent by the
running service's outbox): once after upgrading to file holds, and after profile's database is
restored to an earlier point (docs/operations.md, 文件保留).

Exit status: 0 done, 2 refused (the reason on stderr).
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import sys
from pathlib import Path

from sqlalchemy.orm import sessionmaker

from services.registration import ce_import, domain, proofs
from services.registration.models import audit
from swms.config import REPO_ROOT, load_config, service_config_path
from swms.contracts.registration import ContinuingEducationRecorded
from swms.db import engine_for
from swms.storage import bucket_from_config

INBOUND_SCHEMA_DIR = REPO_ROOT / "docs" / "schemas" / "inbound"


def event_schema_text() -> str:
    schema = ContinuingEducationRecorded.model_json_schema()
    schema["x-exchange"] = f"{ContinuingEducationRecorded.source}.events"
    schema["x-routing-key"] = ContinuingEducationRecorded.event_type
    return json.dumps(schema, ensure_ascii=False, indent=2) + "\n"


def event_schema_path(directory: Path = INBOUND_SCHEMA_DIR) -> Path:
    model = ContinuingEducationRecorded
    return directory / f"{model.source}.{model.event_type}.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="services.registration.cli")
    parser.add_argument("--config", default=str(service_config_path("registration")))
    sub = parser.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import-ce-records", help="load continuing-education records from a CSV export")
    imp.add_argument("file")
    imp.add_argument("--source", default=ContinuingEducationRecorded.source,
                     help="name of the platform the file comes from (default: learning)")
    imp.add_argument("--report", help="write the rejected rows (line, reason) to this CSV file")
    sweep = sub.add_parser("sweep-proofs", help="delete proof files left unattached (also runs in the service)")
    sweep.add_argument("--older-than-hours", type=float, default=None)
    sub.add_parser("announce-file-holds", help="send profile the file holds of every submitted version and certificate")
    schema = sub.add_parser("export-event-schema", help="write the JSON Schema of learning.course_completed")
    schema.add_argument("directory", nargs="?", default=str(INBOUND_SCHEMA_DIR))
    args = parser.parse_args(argv)

    if args.command == "export-event-schema":
        path = event_schema_path(Path(args.directory))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(event_schema_text(), encoding="utf-8")
        print(path)
        return 0

    config = load_config(args.config)
    engine = engine_for(config["DB_URL"])
    if args.command == "import-ce-records":
        if not 1 <= len(args.source) <= 40:
            print("--source: 1 to 40 characters", file=sys.stderr)
            return 2
        try:
            rows = ce_import.read_file(Path(args.file).read_bytes())
        except (OSError, ValueError) as exc:
            print(f"{args.file}: {exc}", file=sys.stderr)
            return 2
        with sessionmaker(engine)() as session, session.begin():
            report = ce_import.import_records(session, rows, args.source, actor=f"import:{Path(args.file).name}"[:100])
        print(report)
        for line, reason in report.rejected:
            print(f"line {line}: {reason}", file=sys.stderr)
        if args.report:
            with open(args.report, "w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerow(["line", "reason"])
                writer.writerows(report.rejected)
        return 0
    if args.command == "sweep-proofs":
        hours = args.older_than_hours if args.older_than_hours is not None else float(config["PROOF_ORPHAN_HOURS"])
        bucket = bucket_from_config(config, "REGISTRATION_S3_BUCKET")
        total = 0
        while True:
            count = proofs.sweep_orphans(engine, bucket, dt.timedelta(hours=hours),
                                         retention_years=domain.retention_years(config))
            total += count
            if count < 100:
                break
        print(f"{total} proof files deleted (on no form, or past their retention)")
        return 0
    if args.command == "announce-file-holds":
        sessions, years = sessionmaker(engine), domain.retention_years(config)
        versions = certificates = 0
        after_id: int | None = 0
        while after_id is not None:
            with sessions() as session, session.begin():
                count, after_id = domain.announce_version_holds(session, years, after_id)
            versions += count
        after_number: str | None = ""
        while after_number is not None:
            with sessions() as session, session.begin():
                count, after_number = domain.announce_certificate_holds(session, after_number)
            certificates += count
        with sessions() as session, session.begin():
            audit.record(session, "cli", "files.holds_announced", "file_holds", "all",
                         {"versions": versions, "certificates": certificates})
        print(f"holds announced: {versions} submitted versions, {certificates} certificates")
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
