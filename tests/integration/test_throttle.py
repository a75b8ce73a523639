"""swms.throttle with several processes on one database (SQLite file and PostgreSQL): however the
requests of four processes interleave, exactly the limit gets through (the certificate service's
verification limits, identity's sign-up and reset limits)."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from swms.config import REPO_ROOT

pytestmark = pytest.mark.integration

PROCESSES, EACH, LIMIT = 4, 25, 37

HAMMER = """
import datetime as dt, json, sys, time
from sqlalchemy.orm import sessionmaker
from services.certificate.models import throttle
from swms.db import engine_for
from swms.errors import SwmsError
from swms.throttle import Limit

url, start, each, limit = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
window = dt.timedelta(minutes=10)
per_address, in_all = Limit("verify-src", 1000, window, window), Limit("verify-number", limit, window, window)
sessions = sessionmaker(engine_for(url))
while time.time() < start:
    time.sleep(0.001)
answered = refused = 0
for _ in range(each):
    session = sessions()
    try:
        with session.begin():
            throttle.take(session, [("verify-src:me", per_address), ("verify-number:all", in_all)],
                          dt.datetime.utcnow(), "certificate_number")
        answered += 1
    except SwmsError as exc:
        assert exc.code == "RATE_LIMITED", exc
        refused += 1
    finally:
        session.close()
print(json.dumps([answered, refused]))
"""


def test_several_processes_together_let_exactly_the_limit_through(make_database):
    url = make_database("certificate")
    start = time.time() + 3   # all four begin at once, after their imports
    processes = [subprocess.Popen([sys.executable, "-c", HAMMER, url, str(start), str(EACH), str(LIMIT)],
                                  cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(PROCESSES)]
    outcomes = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        outcomes.append(json.loads(out.strip().splitlines()[-1]))
    assert sum(answered for answered, _ in outcomes) == LIMIT
    assert sum(refused for _, refused in outcomes) == PROCESSES * EACH - LIMIT
