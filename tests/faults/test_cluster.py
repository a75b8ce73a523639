"""Node losses in a three-node RabbitMQ cluster during a stream of first registrations.

The test starts its own cluster on loopback (tools/rabbitmq_cluster.py: node names n1..n3@localhost,
own ports, data directories, cookie and epmd; the machine's broker on 5672 is never touched) and
tears it down at the end. The six services run as processes with AMQP_URI listing the three nodes.
While 30 first registrations go from submission to certificate and email, it stops (``stop_app``)
the node that holds most queue leaders, waits, brings it back, then SIGKILLs the node that holds
most leaders after that, and restarts it.

With quorum queues nothing may be lost or duplicated and every service answers while a node is
down. The same stream and faults with classic queues (in a virtual host of their own) show what
quorum queues buy: their figures are printed, and while the node holding the classic queues is down
no service answers (its RPC queue is on that node).

Run alone: ``bin/test tests/faults/test_cluster.py -rP``. Figures: lost applications, duplicate
certificates, lost / duplicate events and emails, unpublished outbox rows, seconds to recover after
each node loss, messages dead-lettered.
"""
from __future__ import annotations

import time

import eventlet
import pytest
from kombu import Connection

from swms.devkeys import SERVICES
from swms.queues import dead_letter_queue
from tests.faults.workload import Deadlines, assert_nothing_lost_or_duplicated, every_service_healthy, run_stream
from tools.localstack import LocalStack
from tools.rabbitmq_cluster import LoopbackCluster

pytestmark = [pytest.mark.faults, pytest.mark.cluster,
              pytest.mark.parametrize("db_backend", ["postgresql"], indirect=True)]

REGISTRATIONS = 30
PACE_SECONDS = 1.5          # one submission every 1.5 s: the stream flows through both node losses
HOLD_SECONDS = 5            # a node stays down this long after the services answered again
CLASSIC_DOWN_SECONDS = 20   # how long the classic run keeps its node down waiting for an answer


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = LoopbackCluster(tmp_path_factory.mktemp("rabbitmq-cluster") / "nodes")
    try:
        cluster.up()
        yield cluster
    finally:
        cluster.down()   # raises if a node or the private epmd is still alive


@pytest.fixture
def cluster_stack(cluster, tmp_path, make_database):
    """``start(queue_type, vhost)``: the six services on the cluster, each on its own PostgreSQL database."""
    stacks = []

    def start(queue_type: str, vhost: str) -> LocalStack:
        cluster.restore_all()   # after a previous test that failed half-way
        stack = LocalStack(workdir=tmp_path / f"stack-{queue_type}", amqp_uri=cluster.amqp_uri(vhost),
                           db_urls={name: make_database(name) for name in SERVICES}, queue_type=queue_type)
        stacks.append(stack)
        stack.start_infrastructure()
        stack.start_services()
        return stack

    yield start
    for stack in stacks:
        stack.stop()


def recovery(stack: LocalStack, began: float, timeout: float) -> float | None:
    """Seconds from ``began`` until every service answers its health RPC, or None within ``timeout``."""
    try:
        every_service_healthy(stack, timeout=max(1.0, began + timeout - time.monotonic()))
    except TimeoutError:
        return None
    return round(time.monotonic() - began, 1)


def node_losses(cluster: LoopbackCluster, stack: LocalStack, vhost: str, record: dict, down_at_most: float):
    """stop_app of the node holding most queues, back after a while; then SIGKILL of the node holding
    most queues then, restarted after a while. Records which nodes, how many queues each held, the
    seconds until every service answered again (from the moment the node stopped taking
    connections) and whether that happened while the node was still down."""
    record.update(queues_per_node={}, recover_seconds={}, answered_while_down={}, nodes={})

    def lose(fault: str, node: int, act, restore) -> None:
        record["nodes"][fault] = f"n{node}"
        acting = eventlet.spawn(act, node)   # rabbitmqctl may take seconds to return; the node stops at once
        cluster.wait_until_not_listening(node)
        began = time.monotonic()
        seconds = recovery(stack, began, down_at_most)
        record["answered_while_down"][fault] = seconds is not None
        acting.wait()
        eventlet.sleep(HOLD_SECONDS if seconds is not None else 0)
        restore(node)
        record["recover_seconds"][fault] = seconds if seconds is not None else recovery(stack, began, 180)

    def disturb():
        eventlet.sleep(3)
        held = cluster.queues_per_node(vhost)
        first = cluster.busiest(vhost)
        record["queues_per_node"]["before stop_app"] = {f"n{i}": n for i, n in sorted(held.items())}
        lose("stop_app", first, cluster.stop_app, cluster.start_app)
        eventlet.sleep(3)
        held = cluster.queues_per_node(vhost)
        second = cluster.busiest(vhost, exclude={first})
        record["queues_per_node"]["before SIGKILL"] = {f"n{i}": n for i, n in sorted(held.items())}
        lose("SIGKILL", second, cluster.kill, cluster.start)

    return disturb


def dead_lettered(stack: LocalStack) -> int:
    """Messages in swms.dead-letter (0 if no service ever declared it)."""
    with Connection(stack.amqp_uri) as conn:
        try:
            return dead_letter_queue({"AMQP_QUEUE_TYPE": stack.queue_type})(conn.channel()).queue_declare(
                passive=True).message_count
        except Exception:
            return 0


def test_quorum_queues_lose_nothing_when_the_node_holding_the_leaders_stops_and_another_is_killed(
        cluster, cluster_stack):
    stack = cluster_stack("quorum", "/")
    record: dict = {}
    figures = run_stream(stack, REGISTRATIONS, node_losses(cluster, stack, "/", record, down_at_most=60),
                         pace_s=PACE_SECONDS)
    figures.update(record, dead_lettered=dead_lettered(stack), queue_type="quorum")
    assert figures["answered_while_down"] == {"stop_app": True, "SIGKILL": True}, figures
    assert figures["dead_lettered"] == 0, figures
    assert_nothing_lost_or_duplicated(figures)


def test_classic_queues_for_contrast_stall_while_their_node_is_down(cluster, cluster_stack):
    cluster.add_vhost("classic")
    stack = cluster_stack("classic", "classic")
    record: dict = {}
    figures = run_stream(stack, REGISTRATIONS,
                         node_losses(cluster, stack, "classic", record, down_at_most=CLASSIC_DOWN_SECONDS),
                         deadlines=Deadlines(call=60, approvals=180, certificates=120, emails=60), stall_ok=True,
                         pace_s=PACE_SECONDS)
    figures.update(record, dead_lettered=dead_lettered(stack), queue_type="classic")
    print("\nclassic-queue figures (for contrast; losses and stalls here are what quorum queues prevent):", figures)
    # Every durable queue lived on the stopped node: no RPC could reach a service until it returned.
    assert figures["answered_while_down"]["stop_app"] is False, figures
