"""A live TF tree: the newest transforms of ``/tf`` and ``/tf_static``, chained (ROS-free).

The node feeds it from its ``/tf`` and ``/tf_static`` subscriptions and asks for
``T_odom_cam`` at each frame's stamp. Every moving edge keeps its newest samples in a
:class:`~spann3r_ros.pipeline.pose_buffer.PoseBuffer` (so memory is bounded and lookups
interpolate and report ``stale`` / ``gap`` / ``waiting`` the same way the odometry topics do);
static edges are single transforms. A lookup walks both frames up to their common ancestor.
A frame that gets a second parent (a malformed tree) keeps its first, counted in
:attr:`LiveTf.reparented`.
"""

from __future__ import annotations

import threading
from typing import Callable

import numpy as np

from spann3r_ros.pipeline.pose_buffer import PoseBuffer, PoseLookup

#: Longest chain followed (a loop in a malformed tree stops here).
MAX_DEPTH = 64


class LiveTf:
    """Transforms by ``(parent, child)``, looked up along the tree.

    :param timeout: see :class:`PoseBuffer` (per moving edge).
    :param tolerance: see :class:`PoseBuffer`.
    :param max_samples: samples kept per moving edge.
    """

    def __init__(self, timeout: float = 0.5, tolerance: float = 0.05,
                 max_samples: int = 2000) -> None:
        self.timeout = timeout
        self.tolerance = tolerance
        self.max_samples = max_samples
        self._lock = threading.Lock()
        self._parent: dict[str, str] = {}
        self._static: dict[str, np.ndarray] = {}
        self._moving: dict[str, PoseBuffer] = {}
        #: Transforms ignored because their child already had another parent.
        self.reparented = 0

    def add(self, parent: str, child: str, stamp: float, T: np.ndarray, static: bool) -> bool:
        """Add ``T_parent_child``; return False when it was not used (see the module)."""
        parent, child = parent.lstrip('/'), child.lstrip('/')
        if not parent or not child or parent == child:
            raise ValueError(f'transform with invalid frames {parent!r} -> {child!r}')
        with self._lock:
            known = self._parent.get(child)
            if known is not None and known != parent:
                self.reparented += 1
                return False
            self._parent[child] = parent
            if static:
                self._static[child] = np.asarray(T, dtype=np.float64)
                self._moving.pop(child, None)
                return True
            # A frame is static or moving, whichever it was last published as (as in tf2).
            self._static.pop(child, None)
            edge = self._moving.get(child)
            if edge is None:
                edge = self._moving[child] = PoseBuffer(self.timeout, self.tolerance,
                                                        self.max_samples)
        return edge.add(stamp, T)

    @property
    def backwards(self) -> int:
        """Moving-edge samples refused because they went back in time."""
        with self._lock:
            return sum(edge.backwards for edge in self._moving.values())

    def _chain(self, frame: str) -> list[str]:
        chain = [frame]
        while chain[-1] in self._parent and len(chain) < MAX_DEPTH:
            chain.append(self._parent[chain[-1]])
        return chain

    def lookup(self, target: str, source: str, stamp: float) -> PoseLookup:
        """Return ``T_target_source`` at ``stamp`` (the pose of ``source`` in ``target``).

        :return: ``waiting`` when the frames are not (yet) connected; otherwise the state of
            the first moving edge on the way that is not ``ok``, or the pose when all are.
        """
        target, source = target.lstrip('/'), source.lstrip('/')
        with self._lock:
            up_source, up_target = self._chain(source), self._chain(target)
            common = next((f for f in up_source if f in up_target), None)
            if common is None:
                return PoseLookup('waiting', None, float('nan'))
            # Each side as (child frame, its static transform or its moving edge), upwards.
            sides = [[(f, self._static.get(f), self._moving.get(f))
                      for f in chain[:chain.index(common)]] for chain in (up_source, up_target)]
        poses, ages = [], []
        for side in sides:
            T_common_frame = np.eye(4)
            for _, static, moving in side:
                if static is not None:
                    T_edge = static
                else:
                    found = moving.lookup(stamp)
                    if found.state != 'ok':
                        return found
                    T_edge, _ = found.T, ages.append(found.age)
                T_common_frame = T_edge @ T_common_frame
            poses.append(T_common_frame)
        T_common_source, T_common_target = poses
        return PoseLookup('ok', np.linalg.inv(T_common_target) @ T_common_source,
                          max(ages) if ages else 0.0)


def lookup_fn(tf: LiveTf, target: str) -> Callable[[float, str], PoseLookup]:
    """Return ``lookup(stamp, source) -> PoseLookup`` of ``T_target_source`` in ``tf``."""
    def lookup(stamp: float, source: str) -> PoseLookup:
        return tf.lookup(target, source, stamp)
    return lookup
