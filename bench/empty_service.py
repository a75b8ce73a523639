"""The baseline for bench/rpc.py: a Nameko service whose RPC does nothing."""
from nameko.rpc import rpc


class EmptyService:
    name = "bench_empty"

    @rpc
    def ping(self):
        return None
