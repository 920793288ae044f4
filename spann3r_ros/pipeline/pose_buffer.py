"""Recent odometry poses of the camera, looked up at image stamps (ROS-free, thread-safe).

The node's odometry callbacks add ``T_odom_cam`` samples (an Odometry or PoseStamped topic
composed with the fixed ``base_link -> camera`` transform); the output stage asks for the pose
at each frame's stamp. A lookup interpolates between the two samples that bracket the stamp
(linear in translation, spherical-linear in rotation) and answers with a state instead of a
guess when it cannot:

* ``ok``: bracketed, or within ``tolerance`` of the newest or oldest sample;
* ``waiting``: no sample yet;
* ``stale``: the newest sample is older than the stamp by more than ``timeout`` (odometry
  stopped or lags);
* ``gap``: the stamp lies between two samples further apart than ``timeout``, or before the
  oldest sample kept.

A sample older than the newest one (odometry jumping backwards in time) is not added; it is
counted in :attr:`PoseBuffer.backwards`. A jump back by more than ``restart_after`` seconds
(a bag played again, a simulator reset) clears the buffer instead, counted in
:attr:`PoseBuffer.restarts`.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from dataclasses import dataclass
import threading
from typing import Optional

import numpy as np

#: Lookup states (see the module docstring).
LOOKUP_STATES = ('ok', 'waiting', 'stale', 'gap')


@dataclass(frozen=True)
class PoseLookup:
    """The answer to one lookup.

    :param state: one of :data:`LOOKUP_STATES`.
    :param T: ``[4, 4]`` pose when ``state == 'ok'``, else None.
    :param age: seconds from the newest sample to the stamp (negative when newer), or NaN.
    """

    state: str
    T: Optional[np.ndarray]
    age: float


def _axis_angle(R: np.ndarray) -> tuple[np.ndarray, float]:
    """Return the unit axis and the angle (radians) of a rotation matrix."""
    angle = float(np.arccos(np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0)))
    if angle < 1e-12:
        return np.array([1.0, 0.0, 0.0]), 0.0
    skew = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    if angle > np.pi - 1e-6:  # the skew part vanishes: the axis is a column of R + I
        M = R + np.eye(3)
        axis = M[:, int(np.argmax(np.linalg.norm(M, axis=0)))]
        axis = axis if axis @ skew >= 0 else -axis  # the sign the skew part still gives
        return axis / np.linalg.norm(axis), angle
    return skew / np.linalg.norm(skew), angle


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues' formula."""
    K = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]],
                  [-axis[1], axis[0], 0.0]])
    return np.eye(3) + np.sin(angle) * K + (1.0 - np.cos(angle)) * (K @ K)


def interpolate(t0: float, T0: np.ndarray, t1: float, T1: np.ndarray, t: float) -> np.ndarray:
    """Interpolate a rigid pose between two stamped samples (``t0 <= t <= t1``).

    The centre linearly, the rotation along the shorter arc (spherical linear interpolation,
    as the relative rotation's axis and a fraction of its angle).
    """
    if t1 <= t0:
        return T1.copy()
    w = (t - t0) / (t1 - t0)
    out = np.eye(4)
    out[:3, 3] = (1.0 - w) * T0[:3, 3] + w * T1[:3, 3]
    R0 = T0[:3, :3]
    axis, angle = _axis_angle(R0.T @ T1[:3, :3])
    out[:3, :3] = R0 @ _rotation(axis, w * angle)
    return out


class PoseBuffer:
    """The newest stamped poses of one frame in another.

    :param timeout: seconds after which the newest sample is stale, and the largest gap
        between two samples that is interpolated.
    :param tolerance: seconds a stamp may lie beyond the newest or oldest sample (that sample
        is used).
    :param max_samples: samples kept (oldest dropped).
    :param restart_after: a sample this many seconds older than the newest clears the buffer.
    """

    def __init__(self, timeout: float = 0.5, tolerance: float = 0.05,
                 max_samples: int = 2000, restart_after: float = 5.0) -> None:
        self.timeout = timeout
        self.tolerance = tolerance
        self.restart_after = restart_after
        self._lock = threading.Lock()
        self._stamps: deque[float] = deque(maxlen=max_samples)
        self._poses: deque[np.ndarray] = deque(maxlen=max_samples)
        #: Samples refused because they were older than the newest one.
        self.backwards = 0
        #: Times a large jump back in time cleared the buffer.
        self.restarts = 0
        #: Samples added.
        self.added = 0

    def clear(self) -> None:
        """Forget every sample."""
        with self._lock:
            self._stamps.clear()
            self._poses.clear()

    def add(self, stamp: float, T: np.ndarray) -> bool:
        """Add ``T`` at ``stamp`` seconds.

        :return: False when the sample was refused (older than the newest one).
        :raises ValueError: for a non-finite stamp or pose.
        """
        T = np.asarray(T, dtype=np.float64)
        if not np.isfinite(stamp) or T.shape != (4, 4) or not np.isfinite(T).all():
            raise ValueError('odometry sample with a non-finite stamp or pose')
        with self._lock:
            if self._stamps and stamp <= self._stamps[-1]:
                if self._stamps[-1] - stamp > self.restart_after:
                    self._stamps.clear()
                    self._poses.clear()
                    self.restarts += 1
                else:
                    self.backwards += 1
                    return False
            self._stamps.append(float(stamp))
            self._poses.append(T)
            self.added += 1
            return True

    @property
    def newest_stamp(self) -> Optional[float]:
        """Stamp of the newest sample, or None."""
        with self._lock:
            return self._stamps[-1] if self._stamps else None

    def lookup(self, stamp: float) -> PoseLookup:
        """Return the pose at ``stamp`` (see the module docstring for the states)."""
        with self._lock:
            if not self._stamps:
                return PoseLookup('waiting', None, float('nan'))
            newest, oldest = self._stamps[-1], self._stamps[0]
            age = stamp - newest
            if stamp > newest:
                if age <= self.tolerance:
                    return PoseLookup('ok', self._poses[-1].copy(), age)
                return PoseLookup('stale' if age > self.timeout else 'waiting', None, age)
            if stamp < oldest:
                if oldest - stamp <= self.tolerance:
                    return PoseLookup('ok', self._poses[0].copy(), age)
                return PoseLookup('gap', None, age)
            i = bisect_left(self._stamps, stamp)
            if self._stamps[i] == stamp:
                return PoseLookup('ok', self._poses[i].copy(), age)
            t0, t1 = self._stamps[i - 1], self._stamps[i]
            if t1 - t0 > self.timeout:
                return PoseLookup('gap', None, age)
            return PoseLookup('ok', interpolate(t0, self._poses[i - 1], t1, self._poses[i],
                                                stamp), age)
