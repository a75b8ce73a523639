"""A container-managed loop that wakes on a signal or every ``poll_seconds``, and processes a batch.

The outbox relay, the mail sender and the sweepers are all this: work rows are committed by
workers, the loop picks up whatever is due. A failed pass (broker or database away) is logged and
retried later.

Stopping is graceful. Nameko kills managed threads as soon as ``stop`` returns, so ``stop`` waits
(at most ``stop_wait_seconds``) for each loop to finish the item in hand: a pass checks
``running`` between items, records what it finished and hands the rest back. Without the wait an
event could be published or an email sent and never marked, and go out again from the next process.
The wait is bounded so that the process still exits inside the shortest grace period (Compose's
30 s; 60 s in deploy/k8s); what is cut off then is redone by the next process (at least once).
"""
from __future__ import annotations

import logging

import eventlet
from eventlet.queue import Empty, Full, LightQueue
from nameko.extensions import DependencyProvider

log = logging.getLogger(__name__)


class BackgroundLoop(DependencyProvider):
    poll_seconds: float = 1.0
    batch_size: int = 100
    loops: int = 1                    # side by side, each with its own wake signal (the mailer: one per connection)
    stop_wait_seconds: float = 20.0

    def setup(self):
        self._signals = [LightQueue(maxsize=1) for _ in range(self.loops)]
        self._threads = []
        self._running = False

    @property
    def running(self) -> bool:
        """False once the container stops: a pass finishes the item in hand and hands back the rest."""
        return self._running

    def start(self):
        self._running = True
        name = type(self).__name__
        self._threads = [
            self.container.spawn_managed_thread(lambda index=index: self._run(index),
                                                identifier=name if self.loops == 1 else f"{name}-{index}")
            for index in range(self.loops)]

    def stop(self):
        self._running = False
        self.wake()
        with eventlet.Timeout(self.stop_wait_seconds, False):
            for thread in self._threads:
                try:
                    thread.wait()
                except BaseException:  # a loop that died already has nothing to finish
                    pass

    def kill(self):
        self._running = False

    def wake(self) -> None:
        for signal in self._signals:
            try:
                signal.put_nowait(True)
            except Full:
                pass

    def run_once(self) -> int:
        """Process one batch; return how many rows it took (a full batch means: go again)."""
        raise NotImplementedError

    def _run(self, index: int) -> None:
        signal = self._signals[index]
        while self._running:
            try:
                while self._running and self.run_once() >= self.batch_size:
                    eventlet.sleep(0)  # let workers run between full batches
            except Exception:
                log.exception("%s pass failed; will retry", type(self).__name__)
            try:
                signal.get(timeout=self.poll_seconds)
            except Empty:
                pass
