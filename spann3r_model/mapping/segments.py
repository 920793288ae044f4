"""Sim(3) bookkeeping of memory segments for long runs (ROS-free).

A long or multi-room sequence is split into segments, each reconstructed with a fresh spatial
memory in its own frame (the first camera of the segment). The last few frames of a segment are
re-run at the start of the next one, so both segments predict a pointmap for the *same pixels*
of those frames; a similarity transform fitted to these pixel correspondences
(:func:`spann3r_model.geometry.camera.umeyama`) maps the new segment into the frame of the
first one, and the global map stays continuous.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

#: Correspondences used for the fit, subsampled uniformly above this count.
MAX_CORRESPONDENCES = 20000
#: Fewer valid correspondences than this and the segments are not aligned.
MIN_CORRESPONDENCES = 100


@dataclass
class Sim3:
    """``x -> scale * R @ x + t``: a segment frame to the reconstruction's world frame."""

    scale: float = 1.0
    R: np.ndarray = field(default_factory=lambda: np.eye(3))
    t: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def apply_points(self, points: np.ndarray) -> np.ndarray:
        """Transform ``[..., 3]`` points; returns float32."""
        if self.is_identity():
            return np.asarray(points, dtype=np.float32)
        pts = np.asarray(points, dtype=np.float64)
        return (self.scale * pts @ self.R.T + self.t).astype(np.float32)

    def is_identity(self) -> bool:
        """Return True for the transform of the first segment (nothing to apply)."""
        return self.scale == 1.0 and not self.t.any() and np.array_equal(self.R, np.eye(3))

    def apply_pose(self, T_seg_cam: np.ndarray) -> np.ndarray:
        """Return the ``[4, 4]`` rigid camera pose in the world frame.

        The camera keeps a rigid pose: its rotation is ``R @ R_cam`` and its centre is the
        transformed centre; the scale only moves the centre.
        """
        T = np.eye(4)
        T[:3, :3] = self.R @ T_seg_cam[:3, :3]
        T[:3, 3] = self.scale * self.R @ T_seg_cam[:3, 3] + self.t
        return T

    def to_list(self) -> list[float]:
        """Return ``[scale, R (9, row-major), t (3)]`` for JSON."""
        return [float(self.scale)] + self.R.ravel().tolist() + self.t.ravel().tolist()

    @classmethod
    def from_list(cls, values: list[float]) -> 'Sim3':
        """Inverse of :meth:`to_list`."""
        if len(values) != 13:
            raise ValueError(f'a Sim(3) needs 13 numbers, got {len(values)}')
        arr = np.asarray(values, dtype=np.float64)
        return cls(scale=float(arr[0]), R=arr[1:10].reshape(3, 3), t=arr[10:13])


def correspondences(old_points: list[np.ndarray], old_conf: list[np.ndarray],
                    new_points: list[np.ndarray], new_conf: list[np.ndarray],
                    min_confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Collect matching pixels of frames predicted by two segments.

    :param old_points: per shared frame, ``[H, W, 3]`` points in the world frame.
    :param old_conf: per shared frame, ``[H, W]`` confidence of the old prediction.
    :param new_points: per shared frame, ``[H, W, 3]`` points in the new segment's frame.
    :param new_conf: per shared frame, ``[H, W]`` confidence of the new prediction.
    :param min_confidence: both confidences must reach this.
    :return: ``(src [N, 3], dst [N, 3])`` = (new, old) points of the same pixels.
    """
    src, dst = [], []
    for p_old, c_old, p_new, c_new in zip(old_points, old_conf, new_points, new_conf):
        if p_old.shape != p_new.shape:
            raise ValueError(f'shared frame shapes differ: {p_old.shape} vs {p_new.shape}')
        valid = ((c_old >= min_confidence) & (c_new >= min_confidence)
                 & np.isfinite(p_old).all(-1) & np.isfinite(p_new).all(-1))
        src.append(p_new[valid])
        dst.append(p_old[valid])
    src_all = np.concatenate(src) if src else np.zeros((0, 3))
    dst_all = np.concatenate(dst) if dst else np.zeros((0, 3))
    if len(src_all) > MAX_CORRESPONDENCES:
        keep = np.linspace(0, len(src_all) - 1, MAX_CORRESPONDENCES).astype(np.int64)
        src_all, dst_all = src_all[keep], dst_all[keep]
    return src_all.astype(np.float64), dst_all.astype(np.float64)


def fit_segment(src: np.ndarray, dst: np.ndarray) -> Optional[Sim3]:
    """Fit the Sim(3) taking new-segment points ``src`` onto world points ``dst``.

    :return: the transform, or None when there are too few correspondences or the fit is
        degenerate (non-positive or non-finite scale).
    """
    if len(src) < MIN_CORRESPONDENCES:
        return None
    from spann3r_model.geometry.camera import umeyama

    scale, R, t = umeyama(src, dst, with_scale=True)
    scale = float(scale)
    if not np.isfinite(scale) or scale <= 0 or not np.isfinite(R).all():
        return None
    return Sim3(scale=scale, R=np.asarray(R, np.float64), t=np.asarray(t, np.float64).ravel())
