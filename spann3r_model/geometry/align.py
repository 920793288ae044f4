"""Similarity transforms: the Umeyama fit, Sim(3) matrices and applying them to points.

A Sim(3) maps ``x -> scale * R @ x + t`` with a proper rotation ``R`` and a positive scale; with
``scale = 1`` it is a rigid transform. ``[4, 4]`` matrices act on ``[..., 3]`` row-vector points.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool = True
            ) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity ``dst ~ s * R @ src + t`` (Umeyama 1991).

    :param src: ``[N, 3]`` source points.
    :param dst: ``[N, 3]`` corresponding target points.
    :param with_scale: estimate ``s``; otherwise ``s = 1`` (rigid alignment).
    :return: ``(s, R [3, 3], t [3])``; ``R`` is a proper rotation (no reflection).
    :raises ValueError: for mismatched shapes, fewer than 3 points, or source points that all
        coincide when the scale is estimated (it is undefined then; a rigid fit of such points
        is the translation onto the target centroid).
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 3 or src.shape != dst.shape:
        raise ValueError(f'src and dst must both be [N, 3], got {src.shape} and {dst.shape}')
    if len(src) < 3:
        raise ValueError(f'need at least 3 correspondences, got {len(src)}')
    mu_src, mu_dst = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - mu_src, dst - mu_dst
    var_src = (src_c ** 2).sum() / len(src)
    if with_scale and var_src <= 0:
        raise ValueError('source points are all identical')
    cov = dst_c.T @ src_c / len(src)
    U, D, Vt = np.linalg.svd(cov)
    S = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        S[2, 2] = -1.0
    R = U @ S @ Vt
    scale = float(np.trace(np.diag(D) @ S) / var_src) if with_scale else 1.0
    t = mu_dst - scale * R @ mu_src
    return scale, R, t


def sim3_matrix(scale: float, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Return the ``[4, 4]`` matrix of ``x -> scale * R @ x + t``."""
    out = np.eye(4)
    out[:3, :3] = scale * np.asarray(R)
    out[:3, 3] = t
    return out


def transform_points(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a ``[4, 4]`` transform to ``[..., 3]`` points (float64)."""
    T = np.asarray(T, dtype=np.float64)
    return np.asarray(points, dtype=np.float64) @ T[:3, :3].T + T[:3, 3]


@dataclass
class Sim3:
    """``x -> scale * R @ x + t``, e.g. a segment frame to the reconstruction's world frame."""

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
        """Return True for the identity (nothing to apply)."""
        return self.scale == 1.0 and not self.t.any() and np.array_equal(self.R, np.eye(3))

    def apply_pose(self, T_seg_cam: np.ndarray) -> np.ndarray:
        """Return the ``[4, 4]`` rigid camera pose in the target frame.

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
