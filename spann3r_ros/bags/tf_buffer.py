"""A small offline TF buffer: chained lookups, static transforms and interpolation in time.

Dynamic edges are interpolated between the two samples that bracket the query stamp (linear in
translation, spherical-linear in rotation), as tf2 does; a query outside an edge's samples fails
unless it lies within ``tolerance`` of the first or last sample.
"""

from __future__ import annotations

from collections import defaultdict, deque
from typing import Optional

import numpy as np
from scipy.spatial.transform import Rotation, Slerp


class TfLookupError(ValueError):
    """The requested transform cannot be resolved."""


class TfBuffer:
    """Collects ``T_parent_child`` samples and answers ``lookup(parent, child, t)``.

    :param tolerance: seconds a query may lie outside an edge's samples (nearest is used).
    """

    def __init__(self, tolerance: float = 0.0) -> None:
        self.tolerance = tolerance
        self._static: dict[tuple[str, str], np.ndarray] = {}
        self._samples: dict[tuple[str, str], list[tuple[float, np.ndarray]]] = defaultdict(list)
        self._sorted: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
        self._neighbours: dict[str, set[str]] = defaultdict(set)
        self._parent: dict[str, str] = {}

    def add(self, parent: str, child: str, stamp: float, T: np.ndarray, static: bool) -> None:
        """Add ``T_parent_child`` at ``stamp`` seconds."""
        parent, child = parent.lstrip('/'), child.lstrip('/')
        if static:
            self._static[(parent, child)] = np.asarray(T, dtype=np.float64)
        else:
            self._samples[(parent, child)].append((stamp, np.asarray(T, dtype=np.float64)))
            self._sorted.pop((parent, child), None)
        self._neighbours[parent].add(child)
        self._neighbours[child].add(parent)
        # A frame has one parent in a TF tree; a second one (a malformed tree) is not followed.
        self._parent.setdefault(child, parent)

    @property
    def frames(self) -> list[str]:
        """All frame names seen."""
        return sorted(self._neighbours)

    def root_chain(self, frame: str) -> list[str]:
        """Frames from the root of ``frame``'s tree down to ``frame`` (``[frame]`` for a root).

        :raises TfLookupError: when ``frame`` never appears in TF.
        """
        frame = frame.lstrip('/')
        if frame not in self._neighbours:
            raise TfLookupError(f'frame {frame!r} never appears in TF; known frames: '
                                f'{self.frames}')
        chain = [frame]
        while chain[-1] in self._parent and self._parent[chain[-1]] not in chain:
            chain.append(self._parent[chain[-1]])
        return chain[::-1]

    def is_static(self, parent: str, child: str) -> bool:
        """Tell whether the edge ``parent -> child`` only ever came from static TF."""
        key = (parent.lstrip('/'), child.lstrip('/'))
        return key in self._static and key not in self._samples

    def sample_span(self, parent: str, child: str) -> Optional[tuple[float, float]]:
        """First and last stamp (seconds) of the dynamic edge ``parent -> child``, if any."""
        samples = self._samples.get((parent.lstrip('/'), child.lstrip('/')))
        if not samples:
            return None
        stamps = [s[0] for s in samples]
        return min(stamps), max(stamps)

    def _path(self, source: str, target: str) -> list[str]:
        previous: dict[str, Optional[str]] = {source: None}
        queue = deque([source])
        while queue:
            node = queue.popleft()
            if node == target:
                break
            for nxt in self._neighbours[node]:
                if nxt not in previous:
                    previous[nxt] = node
                    queue.append(nxt)
        if target not in previous:
            raise TfLookupError(f'no TF chain between {source!r} and {target!r}; known frames: '
                                f'{self.frames}')
        path = [target]
        while path[-1] != source:
            path.append(previous[path[-1]])  # type: ignore[arg-type]
        return path[::-1]

    def _edge(self, parent: str, child: str, t: float) -> np.ndarray:
        if (parent, child) in self._static:
            return self._static[(parent, child)]
        key = (parent, child)
        if key not in self._sorted:
            samples = sorted(self._samples[key], key=lambda s: s[0])
            self._sorted[key] = (np.array([s[0] for s in samples]),
                                 np.stack([s[1] for s in samples]))
        stamps, mats = self._sorted[key]
        i = int(np.searchsorted(stamps, t))
        if i < len(stamps) and stamps[i] == t:
            return mats[i]
        if i == 0 or i == len(stamps):
            j = 0 if i == 0 else len(stamps) - 1
            if abs(stamps[j] - t) <= self.tolerance:
                return mats[j]
            raise TfLookupError(f'{parent} -> {child} at {t:.6f} s lies outside its samples '
                                f'[{stamps[0]:.6f}, {stamps[-1]:.6f}] (extrapolation)')
        t0, t1 = stamps[i - 1], stamps[i]
        alpha = (t - t0) / (t1 - t0)
        slerp = Slerp([0.0, 1.0], Rotation.from_matrix(mats[i - 1:i + 1, :3, :3]))
        T = np.eye(4)
        T[:3, :3] = slerp([alpha]).as_matrix()[0]
        T[:3, 3] = (1 - alpha) * mats[i - 1, :3, 3] + alpha * mats[i, :3, 3]
        return T

    def check_chain(self, parent: str, child: str) -> list[str]:
        """Return the frames linking ``parent`` to ``child``.

        :raises TfLookupError: when a frame is unknown or the two are not connected.
        """
        parent, child = parent.lstrip('/'), child.lstrip('/')
        for name in (parent, child):
            if name not in self._neighbours:
                raise TfLookupError(f'frame {name!r} never appears in TF; known frames: '
                                    f'{self.frames}')
        return self._path(parent, child)

    def lookup(self, parent: str, child: str, t: float) -> np.ndarray:
        """``[4, 4]`` ``T_parent_child`` at time ``t`` (pose of ``child`` in ``parent``).

        :raises TfLookupError: when the frames are not connected or a dynamic edge cannot be
            evaluated at ``t``.
        """
        path = self.check_chain(parent, child)
        T = np.eye(4)
        for a, b in zip(path[:-1], path[1:]):
            if (a, b) in self._static or (a, b) in self._samples:
                T = T @ self._edge(a, b, t)
            else:
                T = T @ np.linalg.inv(self._edge(b, a, t))
        return T
