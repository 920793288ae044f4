"""The hand-over between the worker's model stage and its output stage.

:class:`Step` is what one model step passes on; :class:`StepQueue` is the bounded FIFO between
the two threads, whose one producer waits for room before each step.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
import threading
from typing import Optional

from spann3r_model.geometry.align import Sim3
from spann3r_model.results import FrameResult, MemoryStats
from spann3r_ros.pipeline.frame_queue import Frame


@dataclass
class Step:
    """What one model step hands to the output stage.

    :param generation: :meth:`~spann3r_ros.pipeline.worker.ReconstructionWorker.reset` count
        when the step ran.
    :param refined: the refined result to map (None when there is none or it is a re-run).
    :param shown: the result to publish (refined or provisional), if any.
    :param shown_frame: the input frame of ``shown``.
    :param memory: memory bookkeeping after the step.
    :param model_time: seconds in the session step.
    :param segment: segment number of the results.
    :param segment_to_world: their segment's transform.
    """

    generation: int
    refined: Optional[FrameResult]
    shown: Optional[FrameResult]
    shown_frame: Optional[Frame]
    memory: MemoryStats
    model_time: float
    segment: int
    segment_to_world: Sim3


class StepQueue:
    """FIFO of steps between the two stages; its one producer waits for room before each step."""

    def __init__(self, size: int) -> None:
        self._items: deque[Step] = deque()
        self._size = size
        self._cond = threading.Condition()
        self._busy = 0  # steps put and not yet finished (queued or being handled)
        self._closed = False

    def wait_room(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until a step fits; False on timeout or once closed."""
        with self._cond:
            self._cond.wait_for(lambda: len(self._items) < self._size or self._closed, timeout)
            return len(self._items) < self._size and not self._closed

    def put(self, step: Step) -> None:
        """Append ``step`` (the producer has seen room with :meth:`wait_room`; nothing is lost)."""
        with self._cond:
            self._busy += 1
            self._items.append(step)
            self._cond.notify_all()

    def get(self, timeout: float) -> Optional[Step]:
        """Take the oldest step, waiting up to ``timeout`` seconds (None when there is none)."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._items, timeout):
                return None
            return self._items.popleft()

    def done(self) -> None:
        """Mark a step taken with :meth:`get` as handled."""
        with self._cond:
            self._busy -= 1
            self._cond.notify_all()

    def close(self) -> None:
        """Wake every waiter; :meth:`wait_room` returns False from now on."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def clear(self) -> int:
        """Discard the queued steps; return how many there were."""
        with self._cond:
            n = len(self._items)
            self._items.clear()
            self._busy -= n
            self._cond.notify_all()
            return n

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every step put is handled; return False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._busy == 0, timeout)

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)
