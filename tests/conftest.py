"""Fixtures for real infrastructure: RabbitMQ (a fresh vhost per test, nameko's rabbit_config),
SQLite and PostgreSQL databases (fresh per test, migrated), an S3 server (moto) and an SMTP sink
on loopback. Run through ``bin/test`` (``nameko test``), which monkey-patches before pytest starts.
"""
from __future__ import annotations

import eventlet

eventlet.monkey_patch()  # harmless if already patched; required before boto3/ssl (stack-notes trap 1)

import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

from swms.config import REPO_ROOT, load_config, service_config_path  # noqa: E402
from swms.devkeys import SERVICES, ensure_dev_keys  # noqa: E402
from swms.migrations import upgrade  # noqa: E402
from tools.localstack import LocalStack, free_port, wait_for_port  # noqa: E402

PG_ADMIN_URL = os.environ.get("SWMS_TEST_PG_URL", "postgresql+psycopg2://postgres:postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session")
def keys_dir(tmp_path_factory) -> Path:
    return ensure_dev_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """moto's S3-compatible server on loopback: the same boto3 code path as MinIO."""
    port = free_port()
    log = open(tmp_path_factory.mktemp("s3") / "moto.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=log, stderr=subprocess.STDOUT)
    wait_for_port(port)
    yield {"S3_ENDPOINT_URL": f"http://127.0.0.1:{port}", "S3_ACCESS_KEY": "test", "S3_SECRET_KEY": "test-secret",
           "S3_REGION": "us-east-1"}
    process.terminate()
    process.wait(10)


class MailSink:
    def __init__(self, directory: Path, port: int, process: subprocess.Popen):
        self.directory, self.port, self.process = directory, port, process

    def messages(self):
        import email
        import email.policy
        return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
                for p in sorted(self.directory.glob("*.eml"))]


@pytest.fixture
def smtp_sink(tmp_path):
    """tools.mailsink (aiosmtpd) on loopback, keeping each message as a file."""
    port = free_port()
    directory = tmp_path / "mail"
    process = subprocess.Popen([sys.executable, "-m", "tools.mailsink", "--port", str(port), "--dir", str(directory)],
                               cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    wait_for_port(port)
    yield MailSink(directory, port, process)
    process.terminate()
    process.wait(10)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_backend(request):
    return request.param


@pytest.fixture
def make_database(db_backend, tmp_path):
    """Returns ``make(service) -> URL`` of a fresh database migrated to head; dropped afterwards."""
    created = []
    # pre-ping: the fault tests restart PostgreSQL, which kills pooled connections
    admin = (create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
             if db_backend == "postgresql" else None)

    def make(service: str) -> str:
        if db_backend == "sqlite":
            url = f"sqlite:///{tmp_path / f'{service}.db'}"
        else:
            name = f"swms_test_{service}_{uuid.uuid4().hex[:10]}"
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            created.append(name)
            url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
        upgrade(service, url)
        return url

    yield make
    from swms.db import _engines, dispose_engine
    for url in list(_engines):
        dispose_engine(url)
    if admin is not None:
        with admin.connect() as conn:
            for name in created:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def service_config(rabbit_config, keys_dir, make_database, s3_server):
    """``build(service, **overrides)``: the service's own config.yaml, pointed at the test's broker
    vhost, a fresh database and the loopback S3 server."""
    urls: dict[str, str] = {}

    def build(service: str, **overrides):
        config = load_config(service_config_path(service))
        if service not in urls:
            urls[service] = make_database(service)
        config.update(s3_server)
        config.update({
            "AMQP_URI": rabbit_config["AMQP_URI"], "DB_URL": urls[service],
            "AUTH_PUBLIC_KEY_FILE": str(keys_dir / "token-signing.pub.pem"),
            "AUTH_PRIVATE_KEY_FILE": str(keys_dir / "token-signing.pem"),
            "SERVICE_TOKEN_FILE": str(keys_dir / f"{service}.service-token"),
        })
        config.pop("LOGGING", None)
        if service == "review":
            config["REVIEW_CHAINS_FILE"] = str(REPO_ROOT / "services" / "review" / "chains.yaml")
        config.update(overrides)
        return config

    build.urls = urls
    return build


@pytest.fixture
def start_service(service_config, container_factory):
    # Fixture order matters: containers (set up last) stop before the databases are dropped.
    """``start(name, **config_overrides) -> config``: runs the real service class in a container
    connected to this test's broker vhost and databases."""
    from tests.support import service_class

    def start(name: str, **overrides):
        config = service_config(name, **overrides)
        container = container_factory(service_class(name), config)
        container.start()
        return config

    return start


@pytest.fixture
def amqp_uri(rabbit_config):
    return rabbit_config["AMQP_URI"]


@pytest.fixture
def stack(tmp_path, amqp_uri, make_database):
    """The six services as separate ``nameko run`` processes (end-to-end and fault tests), with an
    S3 server and an SMTP sink on loopback, each service on its own database of this backend."""
    stack = LocalStack(workdir=tmp_path / "stack", amqp_uri=amqp_uri,
                       db_urls={name: make_database(name) for name in SERVICES})
    try:
        stack.start_infrastructure()
        stack.start_services()
        yield stack
    finally:
        stack.stop()
