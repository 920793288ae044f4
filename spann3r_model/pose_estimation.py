"""Intrinsics and camera pose of a session's results: the camera's K or an estimated focal, PnP.

A result gets its camera's own K when the frame came with one, else the focal estimated from
that camera's first frame without K; the pose then comes from PnP-RANSAC on its pointmap.
"""

from __future__ import annotations

import logging
from typing import Optional

import numpy as np

from spann3r_model.results import FrameResult

_LOG = logging.getLogger(__name__)

#: Pixels with ``(conf - 1) / conf`` at or below this are left out of pose estimation
#: (the official demo's default confidence threshold).
POSE_CONF_THRESH = 1e-3
#: PnP-RANSAC uses at most this many of those pixels, taken at an even stride through them so
#: they stay spread over the image (see ``benchmarks/pnp_subsample.py`` for the accuracy).
PNP_MAX_POINTS = 2048


def attach_pose(result: FrameResult, K: Optional[np.ndarray], focals: dict[int, float],
                first_index: dict[int, int], *, defer_pnp: bool = False,
                max_points: Optional[int] = PNP_MAX_POINTS) -> None:
    """Set the intrinsics of ``result`` and, unless ``defer_pnp``, its PnP pose.

    :param result: a refined or provisional result of a session.
    :param K: ``[3, 3]`` intrinsics of the model image from the camera's calibration, or None
        for the focal estimated from the camera's first frame without K.
    :param focals: per camera, the focal estimated so far; the estimate of a camera's first
        frame is added.
    :param first_index: per camera, the index of its first frame without K; no focal is
        estimated from another frame.
    :param defer_pnp: attach the intrinsics only (the caller runs :func:`attach_pnp_pose`).
    :param max_points: see :func:`attach_pnp_pose`.
    """
    from spann3r_model.geometry import camera as geometry
    if K is not None:
        result.K, result.focal, result.intrinsics = K.copy(), float(K[0, 0]), 'camera_info'
    else:
        focal = focals.get(result.camera)
        try:
            if focal is None:
                if result.index != first_index.get(result.camera):
                    return
                if result.index == 0:
                    # The first frame's points are in its own camera frame (the world).
                    focal = float(geometry.estimate_focal(result.pts3d))
                else:
                    focal = geometry.estimate_focal_posed(result.pts3d,
                                                          mask=pnp_mask(result.conf))
                focals[result.camera] = focal
        except ValueError as exc:
            # A degenerate pointmap (e.g. non-finite values) must not stop the
            # reconstruction.
            _LOG.warning('focal of frame %d not estimated: %s', result.index, exc)
            return
        size = result.pts3d.shape[1], result.pts3d.shape[0]
        result.K = geometry.intrinsics(focal, *size)
        result.focal, result.intrinsics = focal, 'estimated'
    if not defer_pnp:
        attach_pnp_pose(result, max_points)


def pnp_mask(conf: np.ndarray) -> np.ndarray:
    """Return the ``[H, W]`` bool mask of the confident pixels pose estimation may use.

    :param conf: ``[H, W]`` confidence.
    """
    return (conf - 1.0) / conf > POSE_CONF_THRESH


def attach_pnp_pose(result: FrameResult, max_points: Optional[int] = PNP_MAX_POINTS) -> None:
    """Set ``result.T_world_cam`` by PnP-RANSAC from its pointmap and intrinsics (thread-safe).

    Uses ``result.K`` (fx, fy and principal point) when set, else ``result.focal`` with the
    principal point at the centre. Does nothing for a result without a focal; a degenerate
    pointmap leaves the pose None.

    :param result: a result of a session with ``estimate_pose``.
    :param max_points: at most this many confident pixels, at an even stride through them
        (None: all of them, as the official demo does).
    """
    if result.focal is None:
        return
    from spann3r_model.geometry import camera as geometry
    K = result.K
    pp = fy = None
    if K is not None:
        pp, fy = (float(K[0, 2]), float(K[1, 2])), float(K[1, 1])
    try:
        result.T_world_cam = geometry.estimate_pose_pnp(result.pts3d, result.focal,
                                                        mask=pnp_mask(result.conf),
                                                        pp=pp, fy=fy, max_points=max_points)
    except ValueError as exc:
        _LOG.warning('pose of frame %d not estimated: %s', result.index, exc)


def check_K(K: np.ndarray) -> np.ndarray:
    """Return ``K`` as ``[3, 3]`` float64 after checking it is a pinhole matrix.

    :raises ValueError: for another shape, non-finite values or focal lengths that are not
        positive.
    """
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3) or not np.isfinite(K).all():
        raise ValueError(f'K must be a finite [3, 3] matrix, got shape {K.shape}')
    if K[0, 0] <= 0 or K[1, 1] <= 0 or not np.allclose(K[2], (0.0, 0.0, 1.0)):
        raise ValueError(f'K is not a pinhole matrix [fx 0 cx; 0 fy cy; 0 0 1] with fx, fy > 0: '
                         f'{K.ravel().tolist()}')
    return K
