"""The certificate hub's own work per certificate, in one process, without broker, render worker or
S3: the approval recorded and claimed (one transaction), the issue (``Issuer.process`` with the unit
tests' in-memory stand-ins for the RPCs, the render worker and S3: reserve, finish, their commits,
the QR token and the credential), and one outbox relay pass for its event (a stand-in publisher).
CPU and wall ms per certificate for each step, on SQLite.

  .venv/bin/python -m bench.certificate_hub_steps [--certificates 200]

Steadier than ``bench.certificate_issue``'s hub figure on a shared machine (no pings, no eventlet
hub passes that grow with the load). To compare with older code, run it from a checkout of that
code: where ``domain.record_and_claim`` does not exist it records and claims as before.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import tempfile
import time
import uuid

from sqlalchemy.orm import sessionmaker

import tests.unit.test_certificate_issuing as stand_ins
from services.certificate import domain, signing, tokens
from services.certificate.keys import KeyRing
from services.certificate.models import outbox
from swms.contracts.common import ApplicationKind
from swms.contracts.events import ApplicationApproved
from swms.contracts.review import Stage
from swms.db import DatabaseAccess, dispose_engine, engine_for
from swms.migrations import upgrade
from swms.outbox import OutboxRelay, utcnow


class _Publisher:
    """The broker is not measured here: every event confirmed at once."""
    def publish(self, messages, outcome, keep_going=lambda: True):
        outcome.confirmed.update(range(len(messages)))
        outcome.sent = len(messages)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--certificates", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()
    ring = KeyRing(signing.generate_dev_ca("中华人民共和国民政部"), tokens.generate_token_key(), b"k" * 32, ())
    url = f"sqlite:///{tempfile.mkdtemp(prefix='swms-hub-steps-')}/certificate.db"
    upgrade("certificate", url)
    engine = engine_for(url)
    db = DatabaseAccess(sessionmaker(engine, expire_on_commit=False))
    relay = OutboxRelay(outbox)
    relay.engine, relay.publisher, relay.exchange, relay._running = engine, _Publisher(), None, True
    template = stand_ins.approve(db)[1]
    spent: dict[str, list[float]] = {}

    @contextlib.contextmanager
    def timed(step: str):
        cpu, wall = time.process_time(), time.perf_counter()
        yield
        totals = spent.setdefault(step, [0.0, 0.0])
        totals[0] += time.process_time() - cpu
        totals[1] += time.perf_counter() - wall

    for index in range(args.warmup + args.certificates):
        if index == args.warmup:
            spent.clear()
        person_id = str(uuid.uuid4())
        data = dict(template, application_id=str(uuid.uuid4()), snapshot=dict(template["snapshot"], person_id=person_id))
        event = ApplicationApproved(application_id=data["application_id"], person_id=person_id,
                                    kind=ApplicationKind.FIRST_REGISTRATION, region_code="110105", stage=Stage.FINAL,
                                    final=True, decided_by="bench", decided_at=dt.datetime.now(dt.timezone.utc))
        with timed("approval recorded + claimed"), db.transaction() as session:
            if hasattr(domain, "record_and_claim"):
                request = domain.record_and_claim(session, event, utcnow(), 60)
            else:   # older code
                request = domain.record_approval(session, event, utcnow())
                domain.claim(session, event.application_id, utcnow(), 60)
        with timed("issue"):
            issuer = stand_ins.issuer(db, ring, stand_ins.Worker(stand_ins.MemoryBucket()), data)
            if issuer.process(event.application_id, claimed=True, request=request) is None:
                raise SystemExit("FAILED: not issued")
        with timed("relay pass"):
            if relay.relay_once() != 1:
                raise SystemExit("FAILED: the event was not relayed")
    db.close()
    dispose_engine(url)
    print(f"certificate hub steps: {args.certificates} certificates after {args.warmup}, SQLite, "
          f"load average {os.getloadavg()[0]:.2f}; ms per certificate")
    for step, (cpu, wall) in spent.items():
        print(f"  {step:30} CPU {cpu * 1000 / args.certificates:6.2f}   wall {wall * 1000 / args.certificates:6.2f}")
    total_cpu = sum(cpu for cpu, _ in spent.values())
    print(f"  {'all':30} CPU {total_cpu * 1000 / args.certificates:6.2f}")


if __name__ == "__main__":
    main()
