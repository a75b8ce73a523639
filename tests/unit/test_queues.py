"""AMQP_QUEUE_TYPE: which queues become quorum queues and with which arguments; broker lists in logs.
No broker here (tests/integration/test_quorum_queues.py declares them on a real one)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from kombu import Exchange, Queue

from swms import queues

QUORUM = {"AMQP_QUEUE_TYPE": "quorum"}
EXCHANGE = Exchange("review.events", type="topic", durable=True)


def handler_queue() -> Queue:   # as nameko's EventHandler builds it
    return Queue("evt-review-application_approved--certificate.on_application_approved", exchange=EXCHANGE,
                 routing_key="application_approved", durable=True, auto_delete=False, exclusive=False)


@pytest.mark.parametrize("config, expected", [({}, "classic"), ({"AMQP_QUEUE_TYPE": ""}, "classic"),
                                              ({"AMQP_QUEUE_TYPE": "Quorum "}, "quorum"),
                                              ({"AMQP_QUEUE_TYPE": "classic"}, "classic")])
def test_queue_type_defaults_to_classic(config, expected):
    assert queues.queue_type(config) == expected


def test_an_unknown_queue_type_names_the_setting():
    with pytest.raises(ValueError, match="AMQP_QUEUE_TYPE='stream'"):
        queues.queue_type({"AMQP_QUEUE_TYPE": "stream"})


def test_classic_queues_are_declared_exactly_as_before():
    queue = handler_queue()
    assert queues.durable_queue(queue, {}) is queue
    assert queues.dead_letter_queue({}) is queues.DEAD_LETTER_QUEUE


def test_a_quorum_queue_has_a_delivery_limit_and_dead_letters_to_swms_dead_letter():
    queue = queues.durable_queue(handler_queue(), QUORUM)
    assert (queue.name, queue.exchange, queue.routing_key) == (handler_queue().name, EXCHANGE, "application_approved")
    assert queue.durable and not queue.auto_delete and not queue.exclusive
    assert queue.queue_arguments == {"x-queue-type": "quorum", "x-delivery-limit": queues.DELIVERY_LIMIT,
                                     "x-dead-letter-exchange": "swms.dead-letter",
                                     "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}


def test_a_retry_queue_keeps_its_own_dead_letter_route():
    retry = Queue("evt-x.retry", durable=True, queue_arguments={"x-dead-letter-exchange": "",
                                                                "x-dead-letter-routing-key": "evt-x"})
    assert queues.durable_queue(retry, QUORUM, dead_letter=False).queue_arguments == {
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "evt-x", "x-queue-type": "quorum",
        "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}


def test_the_dead_letter_queue_itself_dead_letters_nowhere():
    assert queues.dead_letter_queue(QUORUM).queue_arguments == {"x-queue-type": "quorum"}


@pytest.mark.parametrize("flags", [{"auto_delete": True}, {"exclusive": True}, {"durable": False}])
def test_flags_a_quorum_queue_cannot_have_are_refused(flags):
    queue = Queue("evt-x", exchange=EXCHANGE, routing_key="x", **{"durable": True, **flags})
    with pytest.raises(ValueError, match="evt-x"):
        queues.durable_queue(queue, QUORUM)


def test_every_password_of_a_broker_list_is_masked():
    uri = "pyamqp://swms:s3cret@rabbitmq:5672/;pyamqp://swms:s3cret@rabbitmq-2:5672/;amqp://rabbitmq-3//"
    assert queues.redact(uri) == ("pyamqp://swms:********@rabbitmq:5672/;pyamqp://swms:********@rabbitmq-2:5672/;"
                                  "amqp://rabbitmq-3//")
    assert queues.broker_urls(uri + ";") == ["pyamqp://swms:s3cret@rabbitmq:5672/", "pyamqp://swms:s3cret@rabbitmq-2:5672/",
                                             "amqp://rabbitmq-3//"]


def test_reply_queues_are_transient_whatever_the_queue_type():
    listener = queues.TransientReplyListener()
    listener.container = SimpleNamespace(service_name="certificate", config=QUORUM)
    listener.queue_consumer = SimpleNamespace(register_provider=lambda provider: None)
    listener.setup()
    assert listener.queue.name == f"rpc.reply-certificate-{listener.routing_key}"
    assert not listener.queue.durable and not listener.queue.exclusive
    assert listener.queue.queue_arguments == {"x-expires": 300000}


def test_every_connection_declares_a_reply_queue_of_a_new_name():
    listener = queues.TransientReplyListener()
    listener.container = SimpleNamespace(service_name="certificate", config=QUORUM)
    listener.queue_consumer = SimpleNamespace(register_provider=lambda provider: None)
    listener.setup()
    consumer = queues.QueueConsumer()
    consumer.container = SimpleNamespace(config=QUORUM, accept=["json"], max_workers=10)
    consumer._providers = {listener}
    names = []
    for _ in range(3):   # what kombu's ConsumerMixin does on every (re)connection
        built = consumer.get_consumers(lambda queues, **kwargs: SimpleNamespace(queues=queues, qos=lambda **_: None),
                                       channel=None)
        [[queue]] = [c.queues for c in built]
        assert queue is listener.queue and queue.routing_key == listener.routing_key
        names.append(queue.name)
    assert len(set(names)) == 3


class _MessageOnADeadConnection:
    """A message whose connection the broker reset while its handler finished."""
    channel = SimpleNamespace(connection=object())   # nameko settles only when this is set
    delivery_info = {"routing_key": "application_approved"}

    def ack(self):
        raise ConnectionResetError(104, "Connection reset by peer")

    requeue = ack


def test_an_ack_or_requeue_on_a_connection_that_just_died_leaves_the_service_running(caplog):
    consumer = queues.QueueConsumer()
    consumer.ack_message(_MessageOnADeadConnection())
    consumer.requeue_message(_MessageOnADeadConnection())
    assert [r.getMessage().split(",")[0] for r in caplog.records] == [
        "could not ack a message from application_approved", "could not requeue a message from application_approved"]


def test_a_requeue_pause_grows_while_failures_follow_each_other():
    pause = queues.RequeuePause(first=1, longest=30)
    assert [pause.failed() for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    pause.succeeded()
    assert pause.failed() == 1
