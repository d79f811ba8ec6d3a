"""The event queue in virtual time.

Events run in (time, insertion order): two runs that schedule the same events in the same
order run them identically. Randomness comes only from :meth:`Scheduler.rng`, one
``random.Random`` per named component, seeded from the run's seed and the name (string
seeds are hashed with SHA-512 by ``random``, so they do not depend on ``PYTHONHASHSEED``).
Adding a component therefore does not change the random choices of the others.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from heapq import heappop, heappush

__all__ = ["Handle", "Scheduler", "Timer"]


class Handle:
    """A scheduled event; :meth:`cancel` stops it from running."""

    __slots__ = ("cancelled", "fn", "label", "when")

    def __init__(self, when: float, fn: Callable[[float], None], label: str) -> None:
        self.when = when
        self.fn = fn
        self.label = label
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Scheduler:
    """Virtual clock plus a heap of pending events.

    ``after_step`` callbacks run after every event (the invariant checks).
    """

    def __init__(self, seed: int, start: float = 1_700_000_000.0) -> None:
        self.seed = seed
        self.start = start
        self.now = start
        self.steps = 0
        self._heap: list[tuple[float, int, Handle]] = []
        self._seq = 0
        self.after_step: list[Callable[[float], None]] = []

    def rng(self, name: str) -> random.Random:
        """The random stream of component ``name`` for this seed."""
        return random.Random(f"{self.seed}/{name}")

    def at(self, when: float, fn: Callable[[float], None], label: str = "") -> Handle:
        """Run ``fn(now)`` at virtual time ``when`` (not before the current time)."""
        when = max(when, self.now)
        h = Handle(when, fn, label)
        self._seq += 1
        heappush(self._heap, (when, self._seq, h))
        return h

    def after(self, delay: float, fn: Callable[[float], None], label: str = "") -> Handle:
        return self.at(self.now + max(0.0, delay), fn, label)

    def next_time(self) -> float | None:
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heappop(heap)
        return heap[0][0] if heap else None

    def step(self) -> bool:
        """Run the next event; ``False`` when there is none."""
        heap = self._heap
        while heap:
            when, _seq, h = heappop(heap)
            if h.cancelled:
                continue
            self.now = when
            self.steps += 1
            h.fn(when)
            for check in self.after_step:
                check(when)
            return True
        return False

    def run_until(self, when: float) -> None:
        """Run every event due at or before ``when``; the clock ends at ``when``.

        The same as ``while next_time() <= when: step()``, in one loop."""
        heap = self._heap
        while heap:
            first = heap[0]
            h = first[2]
            if h.cancelled:
                heappop(heap)
                continue
            t = first[0]
            if t > when:
                break
            heappop(heap)
            self.now = t
            self.steps += 1
            h.fn(t)
            for check in self.after_step:
                check(t)
        self.now = max(self.now, when)


class Timer:
    """One re-armable deadline (the "one timer per core" of the net layer)."""

    __slots__ = ("_fn", "_handle", "_label", "_sched")

    def __init__(self, sched: Scheduler, fn: Callable[[float], None], label: str) -> None:
        self._sched = sched
        self._fn = fn
        self._label = label
        self._handle: Handle | None = None

    @property
    def deadline(self) -> float | None:
        h = self._handle
        return None if h is None or h.cancelled else h.when

    def arm(self, deadline: float | None) -> None:
        """Fire at ``deadline`` (``None``: disarm). Re-arming to the same time is free."""
        h = self._handle
        if h is not None and not h.cancelled:
            if deadline is not None and h.when == max(deadline, self._sched.now):
                return
            h.cancel()
        self._handle = None
        if deadline is not None:
            self._handle = self._sched.at(deadline, self._fire, self._label)

    def _fire(self, now: float) -> None:
        self._handle = None
        self._fn(now)

    def cancel(self) -> None:
        self.arm(None)
