"""Hostile bytes on the RPC wire, published by a plain AMQP client (kombu, no Nameko) to the real
identity service: every request is answered with one error shape (SwmsError, exc_args
[code, message, field, details]), acked, counted, and logged in one bounded line with ID numbers
masked; the service keeps answering."""
from __future__ import annotations

import json
import logging
import socket
import time
import urllib.request
import uuid

import pytest
from kombu import Connection, Exchange, Queue

from tests.support import valid_id
from tools.localstack import free_port

pytestmark = pytest.mark.integration

ID_NUMBER = valid_id("11010519900307123")
MASKED = ID_NUMBER[:3] + "*" * 11 + ID_NUMBER[-4:]
LOG_LINE_MAX_BYTES = 1024


def request(payload: bytes) -> bytes:
    return b'{"args": [' + payload + b'], "kwargs": {}}'


def arrays(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def objects(depth: int) -> bytes:
    return b'{"a": ' * depth + b"1" + b"}" * depth


DIGITS_5000 = b"9" * 5000
NOT_UTF8 = request(b'{"name": "' + "李明华".encode("gb18030") + b'", "id_number": "' + ID_NUMBER.encode() + b'"}')

# (label, routing key, body, content type, code, reason in details[0] or None)
UNREADABLE = "body_undecodable"
CASES = [
    ("arrays 1,000 deep", "identity.check_passer", request(arrays(1_000)), "application/json", "VALIDATION_FAILED", UNREADABLE),
    ("objects 1,000 deep", "identity.check_passer", request(objects(1_000)), "application/json", "VALIDATION_FAILED", UNREADABLE),
    ("arrays 100,000 deep", "identity.check_passer", request(arrays(100_000)), "application/json", "VALIDATION_FAILED", UNREADABLE),
    ("objects 100,000 deep", "identity.check_passer", request(objects(100_000)), "application/json", "VALIDATION_FAILED", UNREADABLE),
    ("a 5,000-digit integer", "identity.check_passer",
     request('{"name": "李明华", "id_number": '.encode() + DIGITS_5000 + b"}"), "application/json", "VALIDATION_FAILED", UNREADABLE),
    ("bytes that are not UTF-8", "identity.check_passer", NOT_UTF8, "application/json", "VALIDATION_FAILED", UNREADABLE),
    ("a content type the service refuses", "identity.check_passer", b"\x80\x04K\x01.", "application/x-python-serialize",
     "VALIDATION_FAILED", UNREADABLE),
    ("no content type", "identity.check_passer", request(b"{}"), None, "VALIDATION_FAILED", "body_malformed"),
    ("a JSON array, not the request object", "identity.check_passer", b"[]", "application/json", "VALIDATION_FAILED",
     "body_malformed"),
    ("kwargs missing", "identity.check_passer", b'{"args": [{}]}', "application/json", "VALIDATION_FAILED",
     "body_malformed"),
    ("args not a list", "identity.check_passer", b'{"args": "ab", "kwargs": {}}', "application/json",
     "VALIDATION_FAILED", "body_malformed"),
    ("two positional arguments", "identity.check_passer", b'{"args": [{}, {}], "kwargs": {}}', "application/json",
     "VALIDATION_FAILED", "signature"),
    ("the payload twice", "identity.check_passer", b'{"args": [{}], "kwargs": {"payload": {}}}', "application/json",
     "VALIDATION_FAILED", "signature"),
    ("an unknown method", "identity.no_such_method", request(b"{}"), "application/json", "METHOD_NOT_FOUND", None),
    ("the profile service too", "profile.save_basic_info", request(objects(100_000)), "application/json",
     "VALIDATION_FAILED", UNREADABLE),
]


class RawClient:
    """A client that is not Nameko: publishes the given bytes as they are, and reads replies raw."""

    def __init__(self, amqp_uri: str):
        self.connection = Connection(amqp_uri)
        self.reply_to = f"raw-client-{uuid.uuid4().hex}"
        exchange = Exchange("nameko-rpc", type="topic", durable=True)
        queue = Queue(self.reply_to, exchange=exchange, routing_key=self.reply_to, exclusive=True)
        self.replies: dict[str, object] = {}
        self.consumer = self.connection.Consumer([queue], on_message=self._on_reply, no_ack=True)
        self.consumer.consume()
        self.channel = self.connection.default_channel

    def _on_reply(self, message):
        self.replies[message.properties.get("correlation_id")] = message

    def call(self, routing_key: str, body: bytes, content_type: str | None = "application/json",
             timeout: float = 20.0):
        """The reply message (raw), or None when none came within ``timeout``."""
        correlation_id = uuid.uuid4().hex
        message = self.channel.prepare_message(
            body, content_type=content_type, content_encoding="utf-8" if content_type else None,
            properties={"reply_to": self.reply_to, "correlation_id": correlation_id})
        self.channel.basic_publish(message, exchange="nameko-rpc", routing_key=routing_key)
        deadline = time.monotonic() + timeout
        while correlation_id not in self.replies and time.monotonic() < deadline:
            try:
                self.connection.drain_events(timeout=0.2)
            except socket.timeout:
                pass
        return self.replies.pop(correlation_id, None)

    def close(self):
        self.consumer.cancel()
        self.connection.release()


def error_of(reply) -> dict:
    """The error of a raw reply (JSON, no result), or a stand-in when no reply came."""
    if reply is None:
        return {"exc_type": "no reply: the caller waits out its timeout", "exc_path": None, "exc_args": []}
    assert reply.content_type == "application/json"
    body = json.loads(reply.body)
    assert body["result"] is None
    return body["error"]


@pytest.fixture
def services(start_service):
    port = free_port()
    config = start_service("identity", IDENTITY_S3_BUCKET=f"identity-{uuid.uuid4().hex[:12]}", OPS_PORT=port)
    start_service("profile", PROFILE_S3_BUCKET=f"profile-{uuid.uuid4().hex[:12]}")
    return config, port


@pytest.fixture
def client(amqp_uri):
    client = RawClient(amqp_uri)
    yield client
    client.close()


def test_every_unreadable_request_is_answered_with_one_error_shape(services, client, amqp_uri, caplog):
    caplog.set_level(logging.INFO)
    answers, expected = [], []
    for label, routing_key, body, content_type, code, reason in CASES:
        error = error_of(client.call(routing_key, body, content_type))
        code_, message, field, details = (error["exc_args"] + [None, "", None, []])[:4]  # nameko's have one
        answers.append((label, error["exc_type"], error["exc_path"], code_, field, message[:6],
                        [d.get("reason") for d in details]))
        expected.append((label, "SwmsError", "swms.errors.SwmsError", code, "",
                         "无法读取请求" if code == "VALIDATION_FAILED" else "没有这个接口",
                         [reason] if reason else []))
    assert answers == expected

    lines = [record.getMessage() for record in caplog.records]
    assert lines, "nothing was logged"
    too_long = [line[:120] for line in lines if len(line.encode()) > LOG_LINE_MAX_BYTES]
    assert too_long == []
    assert not any("Can't decode message body" in line for line in lines)
    assert not any(ID_NUMBER in line for line in lines)
    refused = [line for line in lines if line.startswith(("unreadable RPC request", "RPC request"))]
    assert len(refused) == len(CASES)
    assert any(MASKED in line for line in refused), "the non-UTF-8 body's excerpt shows the ID number masked"

    # every message was acked: nothing waits in the RPC queues, and the service still answers
    with Connection(amqp_uri) as conn:
        for queue in ("rpc-identity", "rpc-profile"):
            declared = conn.default_channel.queue_declare(queue, passive=True)
            assert (declared.message_count, declared.consumer_count) == (0, 1), queue
    error = error_of(client.call("identity.check_passer", request(json.dumps(
        {"name": "李明华", "id_number": ID_NUMBER}).encode())))
    assert error["exc_args"][0] == "PASSER_NOT_FOUND" and len(error["exc_args"]) == 4

    config, port = services
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        metrics = response.read().decode()
    identity_cases = [case for case in CASES if case[1].startswith("identity.")]
    for kind, reason in (("undecodable", UNREADABLE), ("malformed", "body_malformed"), ("signature", "signature")):
        count = sum(1 for case in identity_cases if case[5] == reason)
        assert f'swms_unreadable_messages_total{{kind="rpc",reason="{kind}",service="identity"}} {count}.0' in metrics
    assert 'swms_unreadable_messages_total{kind="rpc",reason="method_not_found",service="identity"} 1.0' in metrics


@pytest.mark.parametrize("body", [b'{"args": [{}], "kwargs": {}}', b'{"args": [], "kwargs": {}}',
                                  b'{"args": [null], "kwargs": {}}'])
def test_a_method_without_arguments_takes_an_empty_object_or_nothing(services, client, body):
    reply = client.call("identity.health", body)
    assert reply is not None
    answer = json.loads(reply.body)
    assert answer["error"] is None and answer["result"]["service"] == "identity"


def test_a_method_without_arguments_refuses_fields(services, client):
    error = error_of(client.call("identity.health", request(b'{"verbose": true}')))
    assert error["exc_args"][:3] == ["VALIDATION_FAILED", "此接口不接受参数", "payload"]
