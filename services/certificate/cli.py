"""The certificate service's operator command line (runs against the service's own database and
bucket, with the service's keys; every change is audited under ``cli:<--actor>``).

  python -m services.certificate.cli add-status-entries [--batch 500]
      certificates issued before the status lists get an entry (bits set from their status) and a
      verifiable credential beside their PDF (services/certificate/backfill.py, docs/trust.md).
  python -m services.certificate.cli repair-credentials [--batch 500]
      stores the credential of every certificate with an entry whose credential is missing
      (after add-status-entries stopped on a storage error).

Safe to run while the service runs, and again: what is done is skipped. Defaults come from
services/certificate/config.yaml (so from the environment). Exit status: 0 fine, 1 failed (the
reason on stderr).
"""
from __future__ import annotations

import argparse
import getpass
import sys

from sqlalchemy.orm import sessionmaker

from services.certificate import backfill, issuing
from services.certificate.keys import load_keys
from swms.config import load_config, service_config_path
from swms.db import engine_from_config
from swms.outbox import utcnow
from swms.storage import bucket_from_config


def main(argv: list[str] | None = None, out=print) -> int:
    parser = argparse.ArgumentParser(prog="services.certificate.cli")
    parser.add_argument("--config", default=str(service_config_path("certificate")))
    parser.add_argument("--actor", default=getpass.getuser(), help="who you are, for the audit log")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, what in (("add-status-entries", "entries and credentials for certificates issued before the lists"),
                       ("repair-credentials", "store the credentials that are missing")):
        command = sub.add_parser(name, help=what)
        command.add_argument("--batch", type=int, default=500, help="certificates per transaction")
    args = parser.parse_args(argv)
    if args.batch < 1:
        parser.error("--batch must be at least 1")
    try:
        config = load_config(args.config)
        verify_base_url = issuing.Settings.from_config(config).verify_base_url
        if not verify_base_url:
            raise RuntimeError("VERIFY_BASE_URL is not set: credentials name their issuer by it")
        keys = load_keys(config)
        bucket = bucket_from_config(config, "CERTIFICATE_S3_BUCKET")
        sessions = sessionmaker(engine_from_config(config), expire_on_commit=False)
        if args.command == "add-status-entries":
            added, stored = backfill.run(sessions, bucket, keys, verify_base_url, f"cli:{args.actor}", utcnow,
                                         args.batch, say=out)
            out(f"done: {added} certificates given a status-list entry, {stored} credentials stored")
        else:
            stored = backfill.repair_credentials(sessions, bucket, keys, verify_base_url, args.batch, say=out)
            out(f"done: {stored} missing credentials stored")
    except Exception as exc:   # an operator's tool: one clear line, not a traceback
        print(f"failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
