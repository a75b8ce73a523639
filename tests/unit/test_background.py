"""swms.background.BackgroundLoop in a real nameko container (no entrypoints, so no broker): a stop
lets the pass finish the item in hand and hand the rest back, and waits only so long."""
from __future__ import annotations

import time

import eventlet
from nameko.containers import ServiceContainer

from swms.background import BackgroundLoop


class SlowBatch(BackgroundLoop):
    """Takes ten items at a time, each 50 ms of I/O; stops between items as the relay does."""
    poll_seconds = 0.05
    batch_size = 10

    def setup(self):
        super().setup()
        self.done, self.handed_back, self.started = [], [], eventlet.Event()

    def run_once(self) -> int:
        batch = list(range(len(self.done), len(self.done) + self.batch_size))
        for index, item in enumerate(batch):
            if not self.running:
                self.handed_back.extend(batch[index:])
                return 0
            if not self.started.ready():
                self.started.send()
            eventlet.sleep(0.05)
            self.done.append(item)
        return len(batch)


class Stubborn(BackgroundLoop):
    """A pass that never looks at ``running`` (a relay that does not answer)."""
    stop_wait_seconds = 0.5

    def run_once(self) -> int:
        eventlet.sleep(60)
        return 0


class Worker:
    name = "background_probe"
    loop = SlowBatch()


class StubbornWorker:
    name = "stubborn_probe"
    loop = Stubborn()


def loop_of(container) -> BackgroundLoop:
    [dependency] = list(container.dependencies)
    return dependency


def test_a_stop_finishes_the_item_in_hand_and_hands_back_the_rest():
    container = ServiceContainer(Worker, {"AMQP_URI": "memory://"})
    container.start()
    loop = loop_of(container)
    loop.started.wait()
    eventlet.sleep(0.12)              # in the middle of the first batch
    container.stop()
    assert 0 < len(loop.done) < 10
    assert loop.done + loop.handed_back == list(range(10))   # nothing lost, nothing cut off half-way


def test_a_stop_waits_only_stop_wait_seconds_for_a_pass_that_does_not_finish():
    container = ServiceContainer(StubbornWorker, {"AMQP_URI": "memory://"})
    container.start()
    eventlet.sleep(0.05)
    began = time.monotonic()
    container.stop()
    assert 0.4 < time.monotonic() - began < 5
