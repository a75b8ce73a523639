"""A throwaway three-node RabbitMQ cluster on loopback, for the cluster fault test and benchmarks.

Drives ``tools/rabbitmq_cluster.sh`` (which starts, clusters and tears down the nodes). Each node
has its own node name (n1..n3@localhost), AMQP, distribution and CLI ports on 127.0.0.1 and its own
data directory under ``scratch``, a private Erlang cookie and a private epmd, so the machine's own
RabbitMQ (rabbit@localhost on 5672) neither sees nor is touched by it. Ports are picked free at
start, so two of these can run side by side.

    with LoopbackCluster(scratch) as cluster:        # up (about 25-45 s), down on exit
        cluster.add_vhost("bench")
        uri = cluster.amqp_uri("bench")               # "pyamqp://…:p1/bench;pyamqp://…:p2/bench;…"
        cluster.stop_app(1); cluster.start_app(1)     # a graceful node loss and return
        cluster.kill(2); cluster.start(2)             # SIGKILL of the node's VM, then a restart
"""
from __future__ import annotations

import collections
import os
import random
import socket
import subprocess
import time
from pathlib import Path

from swms.config import REPO_ROOT

SCRIPT = REPO_ROOT / "tools" / "rabbitmq_cluster.sh"
NODES = 3


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pick_ports(rng: random.Random) -> dict[str, int]:
    """Bases such that every port the script derives from them is free (node i: base + i)."""
    for _ in range(200):
        base = rng.randrange(21000, 29000, 100)
        ports = {"AMQP_BASE": base, "DIST_BASE": base + 10, "EPMD_PORT": base + 20, "CTL_DIST_BASE": base + 30}
        wanted = ([base + i for i in range(1, NODES + 1)] + [base + 10 + i for i in range(1, NODES + 1)]
                  + [base + 20] + list(range(base + 30, base + 81)))
        if all(_free(port) for port in wanted):
            return ports
    raise RuntimeError("no free block of ports for a loopback RabbitMQ cluster")


class LoopbackCluster:
    def __init__(self, scratch: Path, seed: int | None = None):
        # bin/test names the directory (SWMS_CLUSTER_SCRATCH), to tear down whatever a killed run left
        self.scratch = Path(os.environ.get("SWMS_CLUSTER_SCRATCH") or scratch)
        self.ports = _pick_ports(random.Random(seed))
        self.env = {**os.environ, **{key: str(value) for key, value in self.ports.items()},
                    "NODES": str(NODES), "MGMT": "0"}
        self.down_nodes: dict[int, str] = {}   # node -> "app" (stop_app) or "vm" (killed)
        self.started = False

    # ---- life cycle ---------------------------------------------------------------------------

    def _script(self, command: str, *args: str, timeout: float = 300) -> str:
        result = subprocess.run([str(SCRIPT), command, str(self.scratch), *map(str, args)], env=self.env,
                                capture_output=True, text=True, timeout=timeout)
        if result.returncode:
            raise RuntimeError(f"rabbitmq_cluster.sh {command} {' '.join(map(str, args))}: exit {result.returncode}\n"
                               f"{result.stderr[-2000:]}")
        return result.stdout

    def up(self) -> "LoopbackCluster":
        self.started = True
        self._script("up")
        return self

    def down(self) -> None:
        """Stops every node and the private epmd (by PID), then removes the scratch directory;
        fails if anything it started is still alive."""
        if self.started:
            self._script("down")
            self.started = False

    def __enter__(self):
        return self.up()

    def __exit__(self, *exc):
        self.down()

    # ---- addresses ----------------------------------------------------------------------------

    def port(self, node: int) -> int:
        return self.ports["AMQP_BASE"] + node

    def amqp_uri(self, vhost: str = "/") -> str:
        """Every node, first to last: kombu's failover list, as AMQP_URI takes it."""
        path = "/" if vhost == "/" else f"/{vhost}"
        return ";".join(f"pyamqp://guest:guest@127.0.0.1:{self.port(i)}{path}" for i in range(1, NODES + 1))

    def beam_pids(self) -> list[int]:
        """The Erlang VM of each node that runs (for CPU accounting)."""
        pids = []
        for node in range(1, NODES + 1):
            try:
                pids.append(int((self.scratch / f"n{node}" / "beam.pid").read_text().strip()))
            except (OSError, ValueError):
                pass
        return pids

    def listening(self, node: int) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port(node)), timeout=1):
                return True
        except OSError:
            return False

    # ---- administration (rabbitmqctl takes about a second of CPU per call: call it rarely) ------

    def ctl(self, *args: str, node: int | None = None) -> str:
        nodes = [node] if node else [i for i in range(1, NODES + 1) if i not in self.down_nodes]
        last = None
        for each in nodes:
            try:
                return self._script("ctl", str(each), *args, timeout=120)
            except RuntimeError as exc:
                last = exc
        raise RuntimeError(f"no live node answered rabbitmqctl {' '.join(args)}: {last}")

    def add_vhost(self, vhost: str) -> None:
        self.ctl("add_vhost", vhost)
        self.ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")

    def queues_per_node(self, vhost: str = "/") -> collections.Counter:
        """How many queues of ``vhost`` each node holds: a quorum queue's leader, a classic queue's home."""
        out = self.ctl("list_queues", "-p", vhost, "-q", "--no-table-headers", "name", "pid")
        counts: collections.Counter = collections.Counter()
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[-1].startswith("<n"):
                counts[int(parts[-1][2:].split("@", 1)[0])] += 1
        return counts

    def busiest(self, vhost: str = "/", exclude: set[int] = frozenset()) -> int:
        counts = self.queues_per_node(vhost)
        candidates = [i for i in range(1, NODES + 1) if i not in exclude and i not in self.down_nodes]
        return max(candidates, key=lambda i: (counts[i], -i))

    # ---- faults -------------------------------------------------------------------------------

    def wait_until_not_listening(self, node: int, timeout: float = 60) -> float:
        """Seconds until the node's AMQP port refuses connections (the node is gone for clients)."""
        began = time.monotonic()
        while self.listening(node):
            if time.monotonic() - began > timeout:
                raise TimeoutError(f"n{node} still accepts connections after {timeout} s")
            time.sleep(0.05)
        return time.monotonic() - began

    def stop_app(self, node: int) -> None:
        self.down_nodes[node] = "app"
        self._script("stop-app", str(node))

    def start_app(self, node: int) -> None:
        self._script("start-app", str(node))
        self.down_nodes.pop(node, None)

    def kill(self, node: int) -> None:
        self.down_nodes[node] = "vm"
        self._script("kill", str(node))

    def start(self, node: int) -> None:
        self._script("start", str(node))
        self.down_nodes.pop(node, None)

    def restore_all(self) -> None:
        """Brings back every node stopped or killed through this object."""
        for node, how in sorted(self.down_nodes.items()):
            (self.start_app if how == "app" else self.start)(node)
