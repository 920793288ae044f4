"""The Sim(3) from the reconstruction's map frame to the robot's odometry frame, fitted online.

Spann3R's camera poses ``T_map_cam`` are right up to one similarity: an unknown scale and the
pose of the first camera. The robot's odometry gives the same cameras' poses ``T_odom_cam`` in
metres, with noise and drift. :func:`fit_odometry_sim3` finds ``S`` with
``T_odom_cam ~ S.apply_pose(T_map_cam)`` from such pairs:

1. where the camera centres span a plane (a trajectory that turns or bends), one Umeyama fit of
   the reconstruction's camera centres onto the odometry's gives scale, rotation and translation
   (with a known scale, from depth, only rotation and translation);
2. where they lie on a line (a straight drive), the rotation about that line is not determined
   by the centres: it is the chordal mean of ``R_odom_cam @ R_map_cam^T`` over the pairs instead,
   and scale and translation are the least-squares fit of the centres given that rotation;
3. either way the centres must spread (baseline), and pairs whose centre residual or rotation
   residual is far above the others are dropped and the fit repeated (a few rounds), so a bad
   PnP pose or an odometry glitch does not move it.

:class:`OdometryAligner` keeps the newest pairs, refits as frames arrive and decides when the
trajectory determines the fit (enough pairs, baseline and rotation) and when the two agree well
enough to use it (centre residual, scale uncertainty, and the camera orientations: a fit from the
centres alone can be rotated about them when the reconstruction's path is poor).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from spann3r_model.geometry.align import Sim3, umeyama

#: The centres span a plane when their second principal spread is at least this fraction of the
#: first; then they fix the rotation, otherwise the camera orientations do.
PLANAR_RATIO = 0.1
#: Rounds of outlier rejection after the first fit.
ROBUST_ROUNDS = 3
#: A pair is an outlier when its residual exceeds this many robust standard deviations.
OUTLIER_SIGMAS = 3.0
#: Residuals below these never make a pair an outlier (metres, degrees).
RESIDUAL_FLOOR_M = 0.01
ROTATION_FLOOR_DEG = 2.0


@dataclass(frozen=True)
class AlignmentFit:
    """One fit of the map-to-odometry Sim(3).

    :param sim3: ``map -> odom``: ``T_odom_cam ~ sim3.apply_pose(T_map_cam)``.
    :param inliers: ``[N]`` bool, pairs kept by the robust fit.
    :param residual_m: RMS distance of the inlier camera centres after the fit, metres.
    :param scale_error: the scale's relative standard error, estimated as ``residual_m`` over
        ``baseline_m * sqrt(used)`` (infinite without baseline).
    :param rotation_residual_deg: RMS rotation residual of the inliers, degrees.
    :param baseline_m: RMS spread of the inlier odometry camera centres about their mean.
    :param rotation_deg: largest rotation of an inlier camera from the first inlier, degrees.
    :param map_centroid: ``[3]`` mean of the inlier reconstruction camera centres, which the fit
        carries onto the mean of their odometry centres.
    """

    sim3: Sim3
    inliers: np.ndarray
    residual_m: float
    scale_error: float
    rotation_residual_deg: float
    baseline_m: float
    rotation_deg: float
    map_centroid: np.ndarray

    @property
    def used(self) -> int:
        """Pairs the fit kept."""
        return int(self.inliers.sum())

    def with_scale(self, scale: float) -> Sim3:
        """Return this fit's rotation with another scale, still centred on the same cameras.

        Used when the scale comes from elsewhere (depth) and has moved on since this fit.
        """
        s = self.sim3
        t = s.t + (s.scale - scale) * (s.R @ self.map_centroid)
        return Sim3(scale=float(scale), R=s.R, t=t)


def _project_rotation(M: np.ndarray) -> np.ndarray:
    U, _, Vt = np.linalg.svd(M)
    D = np.eye(3)
    D[2, 2] = np.sign(np.linalg.det(U @ Vt)) or 1.0
    return U @ D @ Vt


def _trace_angle_deg(trace: np.ndarray) -> np.ndarray:
    """Rotation angles in degrees from the traces of rotation matrices."""
    return np.degrees(np.arccos(np.clip((trace - 1.0) / 2.0, -1.0, 1.0)))


def spans_plane(centres: np.ndarray) -> bool:
    """Return True when ``[N, 3]`` points spread in two directions, not along a line only."""
    if len(centres) < 3:
        return False
    spread = np.linalg.svd(centres - centres.mean(axis=0), compute_uv=False)
    return bool(spread[0] > 0 and spread[1] >= PLANAR_RATIO * spread[0])


def _fit(R_map: np.ndarray, c_map: np.ndarray, R_odom: np.ndarray, c_odom: np.ndarray,
         scale: Optional[float]) -> Sim3:
    if spans_plane(c_map) and spans_plane(c_odom):
        if scale is None:
            fitted, R, t = umeyama(c_map, c_odom)
            return Sim3(scale=float(fitted), R=R, t=t)
        _, R, t = umeyama(scale * c_map, c_odom, with_scale=False)
        return Sim3(scale=float(scale), R=R, t=t)
    R = _project_rotation(np.tensordot(R_odom, R_map, axes=([0, 2], [0, 2])))
    mu_map, mu_odom = c_map.mean(axis=0), c_odom.mean(axis=0)
    rotated = (c_map - mu_map) @ R.T
    if scale is None:
        spread = float((rotated ** 2).sum())
        scale = float((rotated * (c_odom - mu_odom)).sum() / spread) if spread > 0 else 0.0
    return Sim3(scale=float(scale), R=R, t=mu_odom - scale * R @ mu_map)


def _robust_limit(values: np.ndarray, floor: float) -> float:
    median = float(np.median(values))
    mad = float(np.median(np.abs(values - median)))
    return max(floor, median + OUTLIER_SIGMAS * 1.4826 * mad)


def fit_odometry_sim3(T_map_cam: np.ndarray, T_odom_cam: np.ndarray,
                      scale: Optional[float] = None) -> AlignmentFit:
    """Fit ``S: map -> odom`` to camera pose pairs, robust to outlying pairs.

    :param T_map_cam: ``[N, 4, 4]`` reconstruction poses (any consistent scale).
    :param T_odom_cam: ``[N, 4, 4]`` odometry poses of the same cameras, metres.
    :param scale: a known scale (from depth): only rotation and translation are fitted.
    :return: the fit; its scale is 0 or negative when the centres do not spread (the caller's
        baseline threshold rejects such a fit).
    :raises ValueError: for mismatched shapes or fewer than 2 pairs.
    """
    T_map_cam = np.asarray(T_map_cam, dtype=np.float64)
    T_odom_cam = np.asarray(T_odom_cam, dtype=np.float64)
    if T_map_cam.ndim != 3 or T_map_cam.shape[1:] != (4, 4) or \
            T_map_cam.shape != T_odom_cam.shape:
        raise ValueError(f'pose pairs must both be [N, 4, 4], got {T_map_cam.shape} and '
                         f'{T_odom_cam.shape}')
    if len(T_map_cam) < 2:
        raise ValueError(f'need at least 2 pose pairs, got {len(T_map_cam)}')
    R_map, c_map = T_map_cam[:, :3, :3], T_map_cam[:, :3, 3]
    R_odom, c_odom = T_odom_cam[:, :3, :3], T_odom_cam[:, :3, 3]
    keep = np.ones(len(T_map_cam), dtype=bool)
    sim3 = _fit(R_map, c_map, R_odom, c_odom, scale)
    for _ in range(ROBUST_ROUNDS):
        dist, angle = _residuals(sim3, R_map, c_map, R_odom, c_odom)
        new_keep = (dist <= _robust_limit(dist[keep], RESIDUAL_FLOOR_M)) & \
            (angle <= _robust_limit(angle[keep], ROTATION_FLOOR_DEG))
        if new_keep.sum() < 2 or np.array_equal(new_keep, keep):
            break
        keep = new_keep
        sim3 = _fit(R_map[keep], c_map[keep], R_odom[keep], c_odom[keep], scale)
    dist, angle = _residuals(sim3, R_map, c_map, R_odom, c_odom)
    centres = c_odom[keep]
    baseline = float(np.sqrt(((centres - centres.mean(axis=0)) ** 2).sum(axis=1).mean()))
    first = np.flatnonzero(keep)[0]
    turned = _trace_angle_deg((R_odom[keep] * R_odom[first]).sum(axis=(1, 2)))
    residual = float(np.sqrt(np.mean(dist[keep] ** 2)))
    used = int(keep.sum())
    # The scale's relative standard error: centre noise over the spread it is measured across.
    scale_error = residual / (baseline * np.sqrt(used)) if baseline > 0 else float('inf')
    return AlignmentFit(sim3=sim3, inliers=keep, residual_m=residual,
                        scale_error=float(scale_error),
                        rotation_residual_deg=float(np.sqrt(np.mean(angle[keep] ** 2))),
                        baseline_m=baseline, rotation_deg=float(turned.max()),
                        map_centroid=c_map[keep].mean(axis=0))


def _residuals(sim3: Sim3, R_map: np.ndarray, c_map: np.ndarray, R_odom: np.ndarray,
               c_odom: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    predicted = sim3.scale * c_map @ sim3.R.T + sim3.t
    dist = np.linalg.norm(predicted - c_odom, axis=1)
    angle = _trace_angle_deg((np.matmul(sim3.R, R_map) * R_odom).sum(axis=(1, 2)))
    return dist, angle


@dataclass(frozen=True)
class AlignmentThresholds:
    """When the trajectory determines the map-to-odometry Sim(3).

    :param min_frames: pose pairs needed.
    :param min_baseline: RMS spread of the odometry camera centres needed, metres (not needed
        when the scale is known).
    :param min_rotation_deg: rotation of the camera needed, degrees (0: the rotation comes from
        the camera orientations, so a straight drive determines it).
    :param max_residual: RMS centre residual above which a fit is not used, metres.
    :param max_scale_error: a fit whose scale's relative standard error is larger is not used
        (more baseline is needed); not used when the scale is known.
    :param max_rotation_residual_deg: RMS angle between the fitted and the odometry camera
        orientations above which a fit is not used, degrees: a fit whose centres agree but whose
        cameras look elsewhere would publish a rotated map.
    :param window: newest pairs kept for the fit.
    """

    min_frames: int = 10
    min_baseline: float = 0.08
    min_rotation_deg: float = 0.0
    max_residual: float = 0.1
    max_scale_error: float = 0.02
    max_rotation_residual_deg: float = 10.0
    window: int = 300


class OdometryAligner:
    """Collects ``(T_map_cam, T_odom_cam)`` pairs and keeps the current Sim(3) fit.

    :param thresholds: when a fit is accepted.
    """

    def __init__(self, thresholds: AlignmentThresholds) -> None:
        self.thresholds = thresholds
        # Ring buffers of the newest pairs (their order does not matter to the fit).
        self._map = np.zeros((thresholds.window, 4, 4))
        self._odom = np.zeros((thresholds.window, 4, 4))
        self._count = 0
        #: The newest accepted fit, or None.
        self.fit: Optional[AlignmentFit] = None
        #: The newest fit tried (accepted or not), for diagnostics.
        self.last_try: Optional[AlignmentFit] = None
        #: Why the newest fit was not accepted ('' when it was).
        self.waiting_for = 'frames'

    def __len__(self) -> int:
        """Pairs held."""
        return min(self._count, self.thresholds.window)

    def clear(self) -> None:
        """Forget every pair and the fit (a new reconstruction)."""
        self._count = 0
        self.fit = self.last_try = None
        self.waiting_for = 'frames'

    def add(self, T_map_cam: np.ndarray, T_odom_cam: np.ndarray,
            scale: Optional[float] = None) -> Optional[AlignmentFit]:
        """Add one pair and refit.

        :param scale: a known map-to-metres scale (from depth), or None to fit it.
        :return: the accepted fit, which may be an earlier one when the new fit is not accepted.
        """
        th = self.thresholds
        slot = self._count % th.window
        self._map[slot], self._odom[slot] = T_map_cam, T_odom_cam
        self._count += 1
        held = len(self)
        if held < max(2, th.min_frames):
            self.waiting_for = 'frames'
            return self.fit
        fit = fit_odometry_sim3(self._map[:held], self._odom[:held], scale)
        self.last_try = fit
        if scale is None and fit.baseline_m < th.min_baseline:
            self.waiting_for = 'baseline'
        elif fit.rotation_deg < th.min_rotation_deg:
            self.waiting_for = 'rotation'
        elif fit.used < th.min_frames:
            self.waiting_for = 'frames'
        elif not fit.sim3.scale > 0 or fit.residual_m > th.max_residual or \
                fit.rotation_residual_deg > th.max_rotation_residual_deg:
            self.waiting_for = 'consistent motion'
        elif scale is None and fit.scale_error > th.max_scale_error:
            self.waiting_for = 'baseline'
        else:
            self.waiting_for = ''
            self.fit = fit
        return self.fit
