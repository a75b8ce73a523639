"""What a PostgreSQL primary switch does to a service, without restarting the machine's PostgreSQL
(tests/faults does that): every connection the service holds is cut, as when the old primary goes
away, and the service answers and relays its outbox on new connections (swms.db.ping_when_in_doubt, relay retry);
and a DB_URL may list several hosts, of which libpq takes the one that accepts writes (a Patroni
cluster without a virtual IP). docs/operations.md, "PostgreSQL"."""
from __future__ import annotations

import urllib.parse

import pytest
from sqlalchemy import create_engine, text

from tests.integration.test_outbox import submitted, write
from tests.support import EventTap, rpc_client
from tools.localstack import free_port, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("db_backend", ["postgresql"], indirect=True)]


def cut_every_connection(db_url: str) -> int:
    """pg_terminate_backend for every session on the service's database but this one, and wait until
    those backends have exited: a backend told to end sends its FATAL and closes a moment later, and
    a connection used in that moment fails once (the window swms.db.ping_when_in_doubt documents,
    which a real switchover also has). The test is about what comes after the cut."""
    database = urllib.parse.urlsplit(db_url).path.lstrip("/")
    admin = create_engine(db_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            cut = [row.pid for row in conn.execute(text(   # in the select list: run only on the rows kept
                "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = :db AND pid <> pg_backend_pid()"), {"db": database})]
            wait_until(lambda: conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(:pids)"),
                                            {"pids": cut}).scalar_one() == 0,
                       timeout=10, interval=0.02, what="the cut backends gone")
            return len(cut)
    finally:
        admin.dispose()


def works(config, amqp_uri: str, tap: EventTap, index: int = 0) -> None:
    """An event committed to the outbox is relayed, and the health RPC finds the database."""
    event = submitted(index)
    write(config, event)
    assert [b["application_id"] for b in tap.collect(1, timeout=15)] == [event.application_id]
    with rpc_client(amqp_uri) as client:
        assert client.registration.health()["checks"]["database"] == "ok"


def test_a_service_whose_connections_are_cut_answers_and_relays_on_new_ones(start_service, amqp_uri):
    config = start_service("registration")
    tap = EventTap(amqp_uri, "registration", "application_submitted")
    try:
        works(config, amqp_uri, tap)   # the relay and the health check now hold pooled connections
        assert cut_every_connection(config["DB_URL"]) >= 1
        works(config, amqp_uri, tap, 1)
    finally:
        tap.close()


def test_a_database_url_may_list_hosts_and_the_writable_one_is_used(service_config, start_service, amqp_uri):
    url = urllib.parse.urlsplit(service_config("registration")["DB_URL"])
    # nothing listens on the first host: libpq goes on to the next, and keeps one that takes writes
    hosts = f"host=127.0.0.1:{free_port()}&host={url.hostname}:{url.port or 5432}&target_session_attrs=read-write"
    config = start_service("registration", DB_URL=f"{url.scheme}://{url.username}:{url.password}@{url.path}?{hosts}")
    tap = EventTap(amqp_uri, "registration", "application_submitted")
    try:
        works(config, amqp_uri, tap)
    finally:
        tap.close()
