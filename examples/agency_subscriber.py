#!/usr/bin/env python3
"""Receive SWMS certificate events as another agency would: a plain pika client, no SWMS code.

    python examples/agency_subscriber.py --amqp-url amqp://USER:PASS@HOST:5672/%2F --queue hr-bureau

It declares a DURABLE queue of your own (survives broker restarts and your own downtime: events
published while you are away wait in it), binds it to the topic exchange ``certificate.events``
(all certificate events, or the ones you name with --bind), consumes with manual
acknowledgements, skips an ``event_id`` it has already handled (delivery is at least once), and
prints one JSON line per event on standard output. Standard error says when it is ready.

The SWMS broker is a RabbitMQ cluster: give every node (--amqp-url once per node). The subscriber
connects to the first that answers and, when its connection drops (a node stops), to the next, and
goes on where it was. Its queue is a quorum queue (--queue-type), replicated on the cluster's nodes,
so the events waiting in it survive the loss of a node; ``classic`` keeps a queue declared classic
before (a queue's type cannot change; ask the operators to move it: docs/operations.md).

Payloads are JSON with ``schema_version`` (1); ignore fields you do not know. No event carries a
full ID number: ``id_number_masked`` for people, and ``id_number_hash`` =
HMAC-SHA256(key, "swms-id-v1:" + 18-character ID number, upper-case X), hex, for programs. An
agency given the key (``--id-hash-key-file``) matches a person it knows (``--match-id-number``)
without the number ever travelling. See docs/events-for-agencies.md.

Requires only ``pip install pika``.
"""
from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import sqlite3
import sys
import time

import pika

EXCHANGE = "certificate.events"
EVENT_TYPES = ("certificate_issued", "certificate_revoked", "certificate_suspended", "certificate_reinstated",
               "certificate_expired", "certificate_reissued")
SUPPORTED_SCHEMA_VERSIONS = {1}


def id_hash(key: bytes, id_number: str) -> str:
    return hmac.new(key, b"swms-id-v1:" + id_number.strip().upper().encode("ascii"), hashlib.sha256).hexdigest()


class Seen:
    """Event ids already handled, in a SQLite file (or in memory): redeliveries are skipped."""

    def __init__(self, path: str):
        self.db = sqlite3.connect(path)
        self.db.execute("CREATE TABLE IF NOT EXISTS seen (event_id TEXT PRIMARY KEY)")

    def first_time(self, event_id: str) -> bool:
        try:
            with self.db:
                self.db.execute("INSERT INTO seen (event_id) VALUES (?)", (event_id,))
        except sqlite3.IntegrityError:
            return False
        return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--amqp-url", action="append",
                        help="a broker node (repeat for every node; default amqp://guest:guest@127.0.0.1:5672/%%2F)")
    parser.add_argument("--queue", required=True, help="your durable queue's name (one per agency system)")
    parser.add_argument("--queue-type", choices=("quorum", "classic"), default="quorum",
                        help="quorum (replicated; the default) or classic (a queue declared classic before)")
    parser.add_argument("--bind", action="append", metavar="EVENT_TYPE",
                        help=f"routing key to bind (repeatable; default: all of {', '.join(EVENT_TYPES)})")
    parser.add_argument("--max-events", type=int, default=0, help="exit after this many new events (0: never)")
    parser.add_argument("--state-file", default=":memory:", help="SQLite file remembering handled event ids")
    parser.add_argument("--id-hash-key-file", help="the ID-hash key the operators gave your agency")
    parser.add_argument("--match-id-number", action="append", default=[],
                        help="an ID number you look out for (repeatable; needs --id-hash-key-file)")
    args = parser.parse_args(argv)

    watched = {}
    if args.match_id_number:
        if not args.id_hash_key_file:
            parser.error("--match-id-number needs --id-hash-key-file")
        with open(args.id_hash_key_file, "rb") as handle:
            key = handle.read().strip()
        watched = {id_hash(key, number): number[:3] + "*" * 11 + number[-4:] for number in args.match_id_number}

    seen = Seen(args.state_file)
    nodes = [pika.URLParameters(url) for url in args.amqp_url or ["amqp://guest:guest@127.0.0.1:5672/%2F"]]
    arguments = {"x-queue-type": args.queue_type} if args.queue_type == "quorum" else None
    progress = Progress()
    while True:
        try:
            connection = pika.BlockingConnection(nodes)   # the first node that answers
            channel = connection.channel()
            channel.exchange_declare(EXCHANGE, exchange_type="topic", durable=True)   # as SWMS declares it
            channel.queue_declare(args.queue, durable=True, arguments=arguments)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code == 406:   # PRECONDITION_FAILED: the queue exists with another type
                print(f"queue {args.queue}: {exc.reply_text}; run with the type it has (--queue-type)",
                      file=sys.stderr, flush=True)
                return 2
            raise
        except pika.exceptions.AMQPConnectionError as exc:
            print(f"no broker node answers ({exc!r}); trying again in 5 s", file=sys.stderr, flush=True)
            time.sleep(5)
            continue
        for routing_key in args.bind or EVENT_TYPES:
            channel.queue_bind(args.queue, EXCHANGE, routing_key=routing_key)
        channel.basic_qos(prefetch_count=20)
        print(f"ready: queue {args.queue} bound to {EXCHANGE}", file=sys.stderr, flush=True)
        try:
            exit_code = consume(channel, args, seen, watched, progress)
        except (pika.exceptions.AMQPConnectionError, pika.exceptions.ChannelClosedByBroker) as exc:
            # A node stopped: what was not acked comes again (and is skipped if it was handled).
            print(f"connection lost ({exc!r}); reconnecting", file=sys.stderr, flush=True)
            continue
        if connection.is_open:
            connection.close()
        return exit_code


class Progress:
    received = 0   # new events printed, across reconnections (for --max-events)


def consume(channel, args, seen: Seen, watched: dict, progress: Progress) -> int:
    for method, properties, body in channel.consume(args.queue, auto_ack=False):
        try:
            event = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            print(f"not JSON, set aside: {body[:200]!r}", file=sys.stderr, flush=True)
            channel.basic_nack(method.delivery_tag, requeue=False)  # dead-letter it if you configure one
            continue
        if event.get("schema_version") not in SUPPORTED_SCHEMA_VERSIONS:
            print(f"schema_version {event.get('schema_version')} not understood; left in the queue",
                  file=sys.stderr, flush=True)
            channel.basic_nack(method.delivery_tag, requeue=True)
            channel.cancel()
            return 2
        event_id = event.get("event_id") or properties.message_id
        if seen.first_time(event_id):
            record = {"event_type": method.routing_key, **event}
            if watched and event.get("id_number_hash") in watched:
                record["matched_id_number"] = watched[event["id_number_hash"]]
            print(json.dumps(record, ensure_ascii=False), flush=True)
            progress.received += 1
        channel.basic_ack(method.delivery_tag)  # after handling: a crash before this means redelivery
        if args.max_events and progress.received >= args.max_events:
            break
    channel.cancel()
    return 0


if __name__ == "__main__":
    sys.exit(main())
