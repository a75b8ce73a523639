"""Container health check of the gateway: ``python -m services.gateway.healthcheck``.

Exits 0 when this container's /readyz answers 200 (AMQP connected, reply queue consumed), else 1.
Asks 127.0.0.1 on GATEWAY_PORT, so it checks this replica, not whichever one a balancer picks.
"""
from __future__ import annotations

import os
import sys
import urllib.request

TIMEOUT = 5


def main() -> int:
    url = f"http://127.0.0.1:{os.environ.get('GATEWAY_PORT', '8080')}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            return 0 if response.status == 200 else 1
    except OSError as exc:   # refused, timed out, or an HTTP error status (HTTPError is an OSError)
        print(f"gateway not ready: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
