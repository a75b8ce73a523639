"""A loopback SMTP server that keeps every message it accepts as an .eml file.

  python -m tools.mailsink --port 8025 --dir var/mail

Stands in for a real mail relay in local runs and tests (Mailpit in docker-compose).
``--refuse-until EPOCH`` answers 451 (try again later) to every message until that time, so tests
can show that the notification service retries and loses nothing. ``--reply-delay SECONDS`` keeps
each message first and answers 250 that much later, like a slow relay: a sender stopped in between
has had its message accepted without hearing so.
"""
from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from pathlib import Path

from aiosmtpd.controller import Controller


class KeepAsFiles:
    def __init__(self, directory: Path, refuse_until: float, reply_delay: float = 0.0):
        self.directory = directory
        self.refuse_until = refuse_until
        self.reply_delay = reply_delay

    async def handle_DATA(self, server, session, envelope):
        if time.time() < self.refuse_until:
            return "451 4.3.0 Temporarily refusing mail (test mode)"
        name = f"{time.time_ns()}-{uuid.uuid4().hex[:8]}.eml"
        (self.directory / (name + ".part")).write_bytes(envelope.original_content or envelope.content)
        (self.directory / (name + ".part")).rename(self.directory / name)  # readers never see half a file
        if self.reply_delay:
            await asyncio.sleep(self.reply_delay)
        return "250 OK"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument("--dir", default="var/mail")
    parser.add_argument("--refuse-until", type=float, default=0.0)
    parser.add_argument("--reply-delay", type=float, default=0.0)
    args = parser.parse_args()
    directory = Path(args.dir)
    directory.mkdir(parents=True, exist_ok=True)
    controller = Controller(KeepAsFiles(directory, args.refuse_until, args.reply_delay), hostname=args.host, port=args.port)
    controller.start()
    print(f"mailsink listening on {args.host}:{args.port}, keeping mail in {directory}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
