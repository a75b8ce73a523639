"""A service for tests/integration/test_ops.py's exit test, run by ``nameko run``: a thread of it
dies of an error two seconds after start, and one extension hangs when killed, as a connection or a
child process that does not answer would."""
from __future__ import annotations

import eventlet
from nameko.extensions import DependencyProvider

from swms.ops import OpsEndpoint
from swms.rpc import rpc


class DiesSoon(DependencyProvider):
    def start(self):
        def die():
            eventlet.sleep(2)
            raise ConnectionResetError(104, "Connection reset by peer (simulated)")
        self.container.spawn_managed_thread(die, identifier="dies_soon")


class HangsWhenKilled(DependencyProvider):
    def kill(self):
        eventlet.Event().wait()   # never returns


class DyingService:
    name = "dying_probe"
    ops = OpsEndpoint()
    dies = DiesSoon()
    hangs = HangsWhenKilled()

    @rpc
    def ping(self):
        return "pong"
