import eventlet
eventlet.monkey_patch()  # first, before anything imports ssl/urllib3 (stack notes, trap 1)

# Container health check: asks the service's `health` RPC over the broker.
#
#   python deploy/healthcheck.py <service>     (default: $SWMS_SERVICE)
#
# Exits 0 when the reply's status is "ok", 1 when it is anything else or no reply came within
# TIMEOUT seconds, 2 on a usage error. AMQP_URI comes from the environment, as for the service.
# Any replica of the service may answer: with several replicas this reports on the service as a
# whole; a replica whose process dies ends its container, and the restart policy brings it back.
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402

warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

from nameko.standalone.rpc import ClusterRpcProxy  # noqa: E402

TIMEOUT = 5  # seconds for the reply
CONNECT_BUDGET = 10  # seconds for everything else (connecting, declaring the reply queue)
DEFAULT_AMQP_URI = "pyamqp://guest:guest@127.0.0.1:5672/"


def check(service: str) -> dict:
    config = {"AMQP_URI": os.environ.get("AMQP_URI") or DEFAULT_AMQP_URI}
    # The RPC timeout only covers waiting for the reply; bound the whole exchange as well, so an
    # unreachable broker fails the check instead of outliving Docker's own health-check timeout.
    with eventlet.Timeout(TIMEOUT + CONNECT_BUDGET):
        with ClusterRpcProxy(config, timeout=TIMEOUT) as rpc:
            return rpc[service].health()


def main(argv: list[str]) -> int:
    service = argv[1] if len(argv) > 1 else os.environ.get("SWMS_SERVICE", "")
    if not service:
        print("usage: healthcheck.py <service>  (or set SWMS_SERVICE)", file=sys.stderr)
        return 2
    try:
        reply = check(service)
    except (Exception, eventlet.Timeout) as exc:  # eventlet.Timeout is a BaseException
        print(f"{service}: no health reply: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    status = reply.get("status") if isinstance(reply, dict) else None
    print(json.dumps(reply, ensure_ascii=False, default=str))
    return 0 if status == "ok" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
