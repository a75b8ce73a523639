"""A container-managed loop that wakes on a signal or every ``poll_seconds``, and processes a batch.

The outbox relay and the mail sender are both this: work rows are committed by workers, the loop
picks up whatever is due. A failed pass (broker or database away) is logged and retried later.
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

    def setup(self):
        self._signal = LightQueue(maxsize=1)
        self._running = False

    def start(self):
        self._running = True
        self.container.spawn_managed_thread(self._run, identifier=type(self).__name__)

    def stop(self):
        self._running = False
        self.wake()

    def kill(self):
        self.stop()

    def wake(self) -> None:
        try:
            self._signal.put_nowait(True)
        except Full:
            pass

    def run_once(self) -> int:
        """Process one batch; return how many rows it took (a full batch means: go again)."""
        raise NotImplementedError

    def _run(self) -> None:
        while self._running:
            try:
                while self._running and self.run_once() >= self.batch_size:
                    eventlet.sleep(0)  # let workers run between full batches
            except Exception:
                log.exception("%s pass failed; will retry", type(self).__name__)
            try:
                self._signal.get(timeout=self.poll_seconds)
            except Empty:
                pass
