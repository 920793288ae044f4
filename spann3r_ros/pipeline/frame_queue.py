"""A bounded "latest frame" queue between the ROS callbacks and the inference worker (ROS-free).

Each camera has one slot that holds only its newest frame: a frame that arrives before the
worker took the previous one replaces it and is counted as dropped, so slow inference never backs
up the camera and memory never grows. With several cameras the worker takes the pending frame
with the oldest stamp, which interleaves the cameras by stamp.
"""

from __future__ import annotations

from dataclasses import dataclass
import threading
from typing import Any, Optional


@dataclass
class Frame:
    """One decoded input frame.

    :param camera: index of the camera (position in ``image_topics``).
    :param stamp: header stamp in seconds.
    :param rgb: ``[H, W, 3]`` uint8 image.
    :param header: the original message header (returned with the outputs).
    :param received: monotonic time the callback received it, for latency statistics.
    :param K: ``[3, 3]`` intrinsics of ``rgb`` from the camera's camera_info, when known.
    :param depth: ``[h, w]`` float32 metres of an aligned depth image of the same stamp, when
        one had arrived (the metric depth source).
    """

    camera: int
    stamp: float
    rgb: Any
    header: Any = None
    received: float = 0.0
    K: Any = None
    depth: Any = None


class LatestFrameQueue:
    """Thread-safe newest-frame-per-camera queue with drop counting."""

    def __init__(self) -> None:
        self._slots: dict[int, Frame] = {}
        self._cond = threading.Condition()
        self._closed = False
        self.dropped = 0
        self.enqueued = 0

    def put(self, frame: Frame) -> bool:
        """Store ``frame`` in its camera's slot.

        :return: True when an older, unprocessed frame was replaced (and counted as dropped).
        """
        with self._cond:
            replaced = frame.camera in self._slots
            if replaced:
                self.dropped += 1
            self._slots[frame.camera] = frame
            self.enqueued += 1
            self._cond.notify()
            return replaced

    def get(self, timeout: Optional[float] = None) -> Optional[Frame]:
        """Take the pending frame with the oldest stamp, waiting up to ``timeout`` seconds.

        :return: the frame, or None on timeout or after :meth:`close`.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: self._slots or self._closed, timeout):
                return None
            if self._closed:
                return None
            camera = min(self._slots, key=lambda c: (self._slots[c].stamp, c))
            return self._slots.pop(camera)

    def clear(self) -> int:
        """Discard pending frames (not counted as drops); return how many there were."""
        with self._cond:
            n = len(self._slots)
            self._slots.clear()
            return n

    def close(self) -> None:
        """Wake every waiter; later :meth:`get` calls return None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._slots)
