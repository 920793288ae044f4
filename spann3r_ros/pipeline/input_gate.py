"""Per-camera admission of input frames: stamp order and keyframing (ROS-free)."""

from __future__ import annotations

import math
import threading
from typing import Optional

#: Decision codes of :meth:`InputGate.check` other than acceptance.
STAMP_BACKWARDS = 'stamp_backwards'
STAMP_INVALID = 'stamp_invalid'
KEYFRAME_SKIP = 'keyframe_skip'


class InputGate:
    """Decide which received frames reach the worker.

    A frame whose stamp is older than the newest one already seen from the same camera is
    rejected (a replayed or reordered stream would otherwise corrupt the trajectory). Of the
    remaining frames every ``keyframe_every``-th is kept, and only when at least
    ``keyframe_min_interval`` seconds of stamp time passed since the last kept one.

    :param keyframe_every: keep every n-th frame (1 keeps all).
    :param keyframe_min_interval: minimum stamp gap between kept frames, seconds.

    Safe to call from several threads (one subscription callback per camera).
    """

    def __init__(self, keyframe_every: int = 1, keyframe_min_interval: float = 0.0) -> None:
        self._lock = threading.Lock()
        self.configure(keyframe_every, keyframe_min_interval)
        self._last_seen: dict[int, float] = {}
        self._last_kept: dict[int, float] = {}
        self._counter: dict[int, int] = {}

    def configure(self, keyframe_every: int, keyframe_min_interval: float) -> None:
        """Change the keyframing rule (takes effect with the next frame)."""
        if keyframe_every < 1:
            raise ValueError(f'keyframe_every must be >= 1, got {keyframe_every}')
        if keyframe_min_interval < 0:
            raise ValueError(f'keyframe_min_interval must be >= 0, got {keyframe_min_interval}')
        with self._lock:
            self.keyframe_every = keyframe_every
            self.keyframe_min_interval = keyframe_min_interval

    def reset(self) -> None:
        """Forget stamps and counters (a new reconstruction starts)."""
        with self._lock:
            self._last_seen.clear()
            self._last_kept.clear()
            self._counter.clear()

    def check(self, camera: int, stamp: float) -> Optional[str]:
        """Return None to accept the frame, else a decision code.

        :param camera: camera index.
        :param stamp: header stamp in seconds.
        """
        if not math.isfinite(stamp) or stamp < 0:
            return STAMP_INVALID
        with self._lock:
            return self._check(camera, stamp)

    def _check(self, camera: int, stamp: float) -> Optional[str]:
        last = self._last_seen.get(camera)
        if last is not None and stamp < last:
            return STAMP_BACKWARDS
        self._last_seen[camera] = stamp
        count = self._counter.get(camera, 0)
        self._counter[camera] = count + 1
        if count % self.keyframe_every:
            return KEYFRAME_SKIP
        kept = self._last_kept.get(camera)
        if kept is not None and stamp - kept < self.keyframe_min_interval:
            return KEYFRAME_SKIP
        self._last_kept[camera] = stamp
        return None
