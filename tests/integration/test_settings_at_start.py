"""A service process started with a bad numeric setting exits at once, non-zero, with a log line
naming the environment variable (before it connects to anything)."""
from __future__ import annotations

import os

import pytest

from swms.config import REPO_ROOT
from tests.support import run_until_exit
from tools.localstack import NAMEKO, free_port

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("service, variable, value, expected", [
    ("certificate", "CERT_VALIDITY_YEARS", "-1", "CERT_VALIDITY_YEARS must be a whole number from 1 to 10, not -1"),
    ("profile", "PROFILE_PHOTO_MAX_BYTES", "lots", "PROFILE_PHOTO_MAX_BYTES must be a whole number"),
])
def test_a_process_with_a_bad_setting_refuses_to_start(tmp_path, service, variable, value, expected):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), variable: value,
           # Were the value accepted, the service would find no broker and no shared files here.
           "AMQP_URI": f"pyamqp://guest:guest@127.0.0.1:{free_port()}/",
           f"{service.upper()}_DB_URL": f"sqlite:///{tmp_path / 'service.db'}"}
    status, output = run_until_exit([NAMEKO, "run", "--config", f"services/{service}/config.yaml",
                                     f"services.{service}.service"], env, timeout=60, cwd=REPO_ROOT)
    assert status != 0
    refusals = [line for line in output.splitlines() if "refuses to start" in line]
    assert len(refusals) == 1 and expected in refusals[0], output[-2000:]
