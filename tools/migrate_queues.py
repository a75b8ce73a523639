"""Moves an existing system's queues to another type (classic -> quorum, or back) without losing
what they hold. RabbitMQ cannot change a queue's type in place: each queue is emptied into a holding
queue, deleted, declared anew as the services will declare it (same arguments, same bindings), and
refilled.

    python -m tools.migrate_queues --amqp-uri "pyamqp://u:p@rabbit-1:5672/swms" \\
        --management-url http://rabbit-1:15672 --to quorum [--dry-run]

Run it with every service stopped (it refuses while any of the queues has a consumer): the outbox
relays then publish nothing, and events and RPC requests that wait in the queues wait in the holding
queue meanwhile. Then start the services with ``AMQP_QUEUE_TYPE`` set to the new type
(docs/operations.md, "Moving to quorum queues").

Which queues: every durable ``rpc-<service>`` (not the transient ``rpc.reply-…``), ``evt-…`` and
``swms.dead-letter`` of the virtual host whose type is not the target. A message is acknowledged
to its old queue only after the broker confirmed its copy (at least once: a crash in between leaves
a duplicate, which handlers ignore). A ``.retry`` queue is emptied into the queue it retries for,
so those events are retried at once instead of after their backoff. Interrupted, the tool can be
run again: it finishes what a holding queue (``<name>.migrating``) still holds.

The queue list and bindings come from the management API (the management plugin: the Compose image
and the Cluster Operator enable it); credentials and virtual host from the first ``--amqp-uri``.
"""
from __future__ import annotations

import argparse
import sys
import urllib.parse

import amqp
import requests
from kombu import Connection, Queue

from swms.deadletter import retry_queue
from swms.queues import DEAD_LETTER_QUEUE, QUEUE_TYPES, broker_urls, dead_letter_queue, durable_queue, redact

HOLDING_SUFFIX = ".migrating"
RETRY_SUFFIX = ".retry"


def is_swms_queue(name: str) -> bool:
    return (name.startswith("evt-") or name == DEAD_LETTER_QUEUE.name
            or (name.startswith("rpc-") and not name.startswith("rpc.reply-")))


def declaration(name: str, queue_type: str) -> Queue:
    """The queue exactly as a service of ``queue_type`` declares it (bindings aside)."""
    config = {"AMQP_QUEUE_TYPE": queue_type}
    if name == DEAD_LETTER_QUEUE.name:
        return dead_letter_queue(config)
    if name.endswith(RETRY_SUFFIX):
        return retry_queue(name[: -len(RETRY_SUFFIX)], config)
    return durable_queue(Queue(name, durable=True), config)


def holding(name: str, queue_type: str) -> Queue:
    return durable_queue(Queue(name + HOLDING_SUFFIX, durable=True), {"AMQP_QUEUE_TYPE": queue_type},
                         dead_letter=False)


class Management:
    def __init__(self, url: str, amqp_uri: str):
        parts = urllib.parse.urlsplit(broker_urls(amqp_uri)[0])
        self.auth = (urllib.parse.unquote(parts.username or "guest"), urllib.parse.unquote(parts.password or "guest"))
        self.vhost = urllib.parse.unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
        self.api = url.rstrip("/") + "/api"

    def _get(self, *path: str):
        url = "/".join([self.api, *(urllib.parse.quote(p, safe="") for p in path)])
        response = requests.get(url, auth=self.auth, timeout=30)
        response.raise_for_status()
        return response.json()

    def queues(self) -> dict[str, dict]:
        return {q["name"]: q for q in self._get("queues", self.vhost)}

    def bindings(self, name: str) -> list[dict]:
        return [b for b in self._get("queues", self.vhost, name, "bindings") if b["source"]]   # not the default exchange


def move(channel, source: str, target: str, keep_expiration: bool = True) -> int:
    """Every message of ``source`` into ``target``: published with a confirm, then acked.

    Through a fanout exchange bound to ``target`` alone, so each message keeps the routing key it
    was published with (nameko picks the RPC method by it; the default exchange would replace it
    with the queue's name)."""
    exchange = f"swms.migrate-to.{target}"
    channel.exchange_declare(exchange, "fanout", durable=False, auto_delete=False)
    channel.queue_bind(target, exchange)
    moved = 0
    try:
        while (message := channel.basic_get(source, no_ack=False)) is not None:
            properties = dict(message.properties)
            if not keep_expiration:
                properties.pop("expiration", None)
            channel.basic_publish(amqp.Message(message.body, **properties), exchange=exchange,
                                  routing_key=message.delivery_info["routing_key"],
                                  mandatory=True)   # confirm mode: returns once the broker has it (or raises)
            channel.basic_ack(message.delivery_tag)
            moved += 1
    finally:
        channel.exchange_delete(exchange)
    return moved


def delete_empty(channel, name: str) -> None:
    """Deletes ``name`` if it holds nothing (quorum queues refuse queue.delete's if-empty flag)."""
    waiting = channel.queue_declare(name, passive=True).message_count
    if waiting:
        raise SystemExit(f"{name} received {waiting} message(s) while it was being emptied: is a service or "
                         f"publisher still running? Stop it and run this again (nothing was lost)")
    channel.queue_delete(name)


def plan(found: dict[str, dict], target: str) -> list[str]:
    """Queues to migrate, main queues before the .retry queues that empty into them."""
    names = {name for name, q in found.items() if is_swms_queue(name) and q.get("durable")
             and q.get("type", "classic") != target and not name.endswith(HOLDING_SUFFIX)}
    names |= {name[: -len(HOLDING_SUFFIX)] for name in found if name.endswith(HOLDING_SUFFIX)}   # interrupted
    return sorted(names, key=lambda name: (name.endswith(RETRY_SUFFIX), name))


def migrate_one(conn, management: Management, found: dict[str, dict], name: str, target: str) -> str:
    # A fresh channel for each step: RabbitMQ 3.10 crashes a channel that published to a queue, saw it
    # deleted and then publishes to the new queue of that name and another type (its cache keeps the
    # old queue's type).
    old = found.get(name)
    if name.endswith(RETRY_SUFFIX):
        main = name[: -len(RETRY_SUFFIX)]
        with conn.channel() as channel:
            moved = move(channel, name, main, keep_expiration=False) if old else 0
            if old:
                delete_empty(channel, name)
        with conn.channel() as channel:
            declaration(name, target)(channel).declare()
        return f"{name}: {moved} message(s) handed back to {main} (retried at once), declared {target}"
    bindings = management.bindings(name) if old else []
    moved_out = 0
    with conn.channel() as channel:
        hold = holding(name, target)(channel)
        hold.declare()
        if old and old.get("type", "classic") != target:
            moved_out = move(channel, name, hold.name)
            delete_empty(channel, name)
    with conn.channel() as channel:
        declaration(name, target)(channel).declare()
        for binding in bindings:
            channel.queue_bind(name, binding["source"], routing_key=binding["routing_key"],
                               arguments=binding.get("arguments") or {})
        moved_back = move(channel, hold.name, name)
        delete_empty(channel, hold.name)
    return (f"{name}: {old.get('type', 'classic') if old else 'missing'} -> {target}, {moved_back} message(s) kept"
            f" ({moved_out} moved out now), {len(bindings)} binding(s)")


def migrate(amqp_uri: str, management_url: str, target: str, dry_run: bool = False, out=print) -> list[str]:
    management = Management(management_url, amqp_uri)
    found = management.queues()
    names = plan(found, target)
    if not names:
        out(f"nothing to do: every SWMS queue of {management.vhost!r} is {target}")
        return []
    with Connection(amqp_uri, transport_options={"confirm_publish": True}, connect_timeout=10) as conn:
        channel = conn.channel()
        # Counted over AMQP: the management API's figures lag by seconds (a service just stopped
        # still shows its consumer there).
        live = {name: channel.queue_declare(name, passive=True) for name in names if name in found}
        busy = {name: ok.consumer_count for name, ok in live.items() if ok.consumer_count}
        if busy:
            raise SystemExit(f"refused: stop every service first; these queues have consumers: {busy}")
        for name in names:
            if dry_run:
                count = live[name].message_count if name in live else 0
                out(f"would migrate {name}: {found.get(name, {}).get('type', 'classic')} -> {target}, {count} message(s)")
            else:
                out(migrate_one(conn, management, found, name, target))
    if not dry_run:
        out(f"done: {len(names)} queue(s) of {management.vhost!r} on {redact(amqp_uri)} are {target}; "
            f"start the services with AMQP_QUEUE_TYPE={target}")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--amqp-uri", required=True, help="as the services' AMQP_URI (one broker or a ;-list)")
    parser.add_argument("--management-url", default="http://127.0.0.1:15672")
    parser.add_argument("--to", dest="target", choices=QUEUE_TYPES, default="quorum")
    parser.add_argument("--dry-run", action="store_true", help="list what would move, change nothing")
    args = parser.parse_args(argv)
    migrate(args.amqp_uri, args.management_url, args.target, args.dry_run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
