"""Group commit for green threads: concurrent calls of one process run together, as one group.

The first caller in becomes the leader: it yields once (so callers already running can join), takes
up to ``max_size`` waiting calls, its own first, and runs ``run_group(items)`` in its own worker
(its own database session). Each caller gets its own outcome: the value ``run_group`` returned for
its item, raised if it is an exception. Calls that arrived meanwhile wait; when the leader is done
the first of them leads the next group. A call alone is a group of one, run at once.

What it saves: one transaction, and one statement per table and per read, for many calls instead of
one each (the CPU of a statement through SQLAlchemy and the driver is mostly per statement, not per
row)."""
from __future__ import annotations

from collections import deque
from typing import Any, Callable, Sequence

import eventlet
from eventlet.event import Event
from nameko.extensions import DependencyProvider

_LEAD = object()     # sent to a waiting call: lead the next group


class _Call:
    __slots__ = ("item", "done")

    def __init__(self, item: Any):
        self.item = item
        self.done = Event()


class GroupCommit:
    def __init__(self, max_size: int = 50):
        self.max_size = max_size
        self._waiting: deque[_Call] = deque()
        self._leading = False

    def run(self, item: Any, run_group: Callable[[Sequence[Any]], Sequence[Any]]) -> Any:
        """``run_group(items)`` returns one outcome per item, in order: a value, or an exception
        for that item alone. An exception it raises is every item's."""
        call = _Call(item)
        if self._leading:
            self._waiting.append(call)
            outcome = call.done.wait()
            if outcome is not _LEAD:
                return _unwrap(outcome)
        self._leading = True
        group = [call]
        try:
            eventlet.sleep(0)     # calls that are running now join this group
            while self._waiting and len(group) < self.max_size:
                group.append(self._waiting.popleft())
            try:
                outcomes = list(run_group([c.item for c in group]))
                if len(outcomes) != len(group):
                    raise RuntimeError(f"run_group answered {len(outcomes)} outcomes for {len(group)} items")
            except BaseException as exc:
                outcomes = [exc] * len(group)
            for other, outcome in zip(group[1:], outcomes[1:]):
                other.done.send(_Failed(outcome) if isinstance(outcome, BaseException) else outcome)
            mine = outcomes[0]
        finally:
            # Whatever happened (even this green thread killed), the next waiting call leads.
            for other in group[1:]:
                if not other.done.ready():
                    other.done.send(_Failed(RuntimeError("the group's leader stopped")))
            if self._waiting:
                self._waiting.popleft().done.send(_LEAD)
            else:
                self._leading = False
        if isinstance(mine, BaseException):
            raise mine
        return mine


class _Failed:
    __slots__ = ("error",)

    def __init__(self, error: BaseException):
        self.error = error


def _unwrap(outcome: Any) -> Any:
    if isinstance(outcome, _Failed):
        raise outcome.error
    return outcome


class Grouped(DependencyProvider):
    """A :class:`GroupCommit` shared by the workers of one service container (never across
    containers: a leader runs its group on its own container's database)."""

    def __init__(self, max_size: int = 50):
        self.max_size = max_size

    def setup(self):
        self.group_commit = GroupCommit(self.max_size)

    def get_dependency(self, worker_ctx) -> GroupCommit:
        return self.group_commit
