"""A RabbitMQ address list, as ``AMQP_URI`` holds it: one broker, or a cluster's nodes separated by
``;`` (kombu's failover syntax). Free of nameko and eventlet, so the asyncio gateway reads it too."""
from __future__ import annotations

import re

_PASSWORD = re.compile(r"(://[^:/@;]*:)[^@;]*@")


def broker_urls(amqp_uri: str) -> list[str]:
    """The brokers of an ``AMQP_URI``, in the order a client tries them."""
    return [url.strip() for url in amqp_uri.split(";") if url.strip()]


def redact(amqp_uri: str) -> str:
    """Every password of a broker list masked (nameko's own sanitize_url masks only the first)."""
    return _PASSWORD.sub(r"\1********@", amqp_uri)
