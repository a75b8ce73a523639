"""The baseline for the benchmarks: a Nameko service whose RPC does nothing.

It uses the services' own RPC entrypoint (swms.rpc), so its queue is of the ``AMQP_QUEUE_TYPE``
the run asks for (``command``); ``nameko run --broker URI bench.empty_service`` gives a classic one.
"""
import json
from pathlib import Path

from swms.rpc import rpc


class EmptyService:
    name = "bench_empty"

    @rpc
    def ping(self):
        return None


def command(nameko: str, workdir: Path, amqp_uri: str, queue_type: str) -> list[str]:
    """``nameko run`` of this service on ``amqp_uri`` (one broker or a ;-list) with ``queue_type``."""
    config = Path(workdir) / "bench_empty.yaml"
    config.write_text(json.dumps({"AMQP_URI": amqp_uri, "AMQP_QUEUE_TYPE": queue_type}))   # JSON is YAML
    return [nameko, "run", "--config", str(config), "bench.empty_service"]
