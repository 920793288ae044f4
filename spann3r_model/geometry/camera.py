"""Camera geometry on pointmaps: focal, PnP pose, intrinsics, pixel grid, depth.

Conventions: pixel ``(u, v)`` has its centre at integer coordinates, ``u`` along the columns.
Cameras use the OpenCV optical frame (x right, y down, z forward). Poses are ``[4, 4]``
camera-to-world matrices ``T_world_cam`` (world = the first camera's optical frame for Spann3R
outputs). The principal point defaults to ``(W / 2, H / 2)`` as in the official demo.
"""

from __future__ import annotations

import logging
from typing import Optional

import cv2
import numpy as np

LOG = logging.getLogger(__name__)


def _check_pointmap(pts3d: np.ndarray) -> np.ndarray:
    pts3d = np.asarray(pts3d)
    if pts3d.ndim != 3 or pts3d.shape[2] != 3:
        raise ValueError(f'pointmap must be [H, W, 3], got {pts3d.shape}')
    return pts3d


def _principal_point(pp: Optional[tuple[float, float]], width: int, height: int
                     ) -> tuple[float, float]:
    return (width / 2.0, height / 2.0) if pp is None else (float(pp[0]), float(pp[1]))


def _usable(pts3d: np.ndarray, mask: Optional[np.ndarray]) -> np.ndarray:
    """Return ``[H, W]`` bool: finite points inside ``mask``; raise for a mask of another size."""
    height, width = pts3d.shape[:2]
    keep = np.isfinite(pts3d).all(axis=2)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (height, width):
            raise ValueError(f'mask must be [{height}, {width}], got {mask.shape}')
        keep &= mask
    return keep


def even_subset(index: np.ndarray, max_points: Optional[int]) -> np.ndarray:
    """Return at most ``max_points`` of ``index``, at an even stride so they stay spread out.

    :param index: ``[N]`` indices (e.g. of the usable pixels, in image order).
    :param max_points: the cap; None keeps every index.
    """
    if max_points is None or len(index) <= max_points:
        return index
    return index[np.linspace(0, len(index) - 1, max_points).astype(np.int64)]


def pixel_grid(width: int, height: int) -> np.ndarray:
    """Return ``[H, W, 2]`` float64 pixel coordinates ``(u, v)``."""
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    return np.stack([u, v], axis=-1)


def intrinsics(focal: float, width: int, height: int,
               pp: Optional[tuple[float, float]] = None, fy: Optional[float] = None
               ) -> np.ndarray:
    """Return the ``[3, 3]`` pinhole matrix with principal point ``pp``.

    :param focal: ``fx`` in pixels (also ``fy`` unless given: square pixels).
    :param fy: the vertical focal length, when the pixels are not square.
    """
    cx, cy = _principal_point(pp, width, height)
    fy = focal if fy is None else fy
    return np.array([[focal, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def estimate_focal(pts3d: np.ndarray, pp: Optional[tuple[float, float]] = None,
                   mask: Optional[np.ndarray] = None, iterations: int = 10) -> float:
    """Estimate the focal length of a camera-frame pointmap (Weiszfeld, as the official demo).

    Minimises ``sum |pixel - pp - f * (x, y) / z|`` over the pixels: a least-squares start
    followed by iteratively re-weighted least squares with weights ``1 / residual``.

    :param pts3d: ``[H, W, 3]`` points in the camera's own frame.
    :param pp: principal point ``(cx, cy)``; defaults to ``(W / 2, H / 2)``.
    :param mask: optional ``[H, W]`` bool, pixels to use.
    :param iterations: re-weighting iterations (the official code uses 10).
    :return: focal length in pixels.
    :raises ValueError: for a malformed pointmap or when no pixel is usable.
    """
    pts3d = _check_pointmap(pts3d).astype(np.float64)
    height, width = pts3d.shape[:2]
    cx, cy = _principal_point(pp, width, height)
    pixels = (pixel_grid(width, height) - (cx, cy)).reshape(-1, 2)
    points = pts3d.reshape(-1, 3)
    with np.errstate(divide='ignore', invalid='ignore'):
        xy_over_z = points[:, :2] / points[:, 2:3]
    # Points on the z = 0 plane carry no focal information; the official code zeroes them too.
    xy_over_z = np.nan_to_num(xy_over_z, nan=0.0, posinf=0.0, neginf=0.0)
    keep = np.isfinite(points).all(axis=1)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (height, width):
            raise ValueError(f'mask must be [{height}, {width}], got {mask.shape}')
        keep &= mask.reshape(-1)
    pixels, xy_over_z = pixels[keep], xy_over_z[keep]
    dot_xy_px = (xy_over_z * pixels).sum(axis=1)
    dot_xy_xy = (xy_over_z * xy_over_z).sum(axis=1)
    if not len(pixels) or dot_xy_xy.sum() <= 0:
        raise ValueError('no usable points to estimate the focal length')
    focal = dot_xy_px.mean() / dot_xy_xy.mean()
    for _ in range(iterations):
        residual = np.linalg.norm(pixels - focal * xy_over_z, axis=1)
        weight = 1.0 / np.maximum(residual, 1e-8)
        focal = (weight * dot_xy_px).mean() / (weight * dot_xy_xy).mean()
    return float(focal)


def estimate_pose_pnp(pts3d: np.ndarray, focal: float, mask: Optional[np.ndarray] = None,
                      pp: Optional[tuple[float, float]] = None, *,
                      fy: Optional[float] = None, reprojection_error: float = 8.0,
                      iterations: int = 100, max_points: Optional[int] = None,
                      min_points: int = 6) -> Optional[np.ndarray]:
    """Camera-to-world pose of a world-frame pointmap by PnP-RANSAC against the pixel grid.

    The official demo solves ``cv2.solvePnPRansac`` between every pixel's predicted world point
    and its pixel coordinate with ``K(focal, pp)``; this does the same on the masked pixels
    (for example the confident ones).

    :param pts3d: ``[H, W, 3]`` points in the world frame.
    :param focal: focal length in pixels (``fx``; also ``fy`` unless that is given).
    :param mask: optional ``[H, W]`` bool, pixels to use.
    :param pp: principal point; defaults to ``(W / 2, H / 2)``.
    :param fy: vertical focal length in pixels, for a camera with non-square pixels.
    :param reprojection_error: RANSAC inlier threshold in pixels (OpenCV's default).
    :param iterations: RANSAC iterations.
    :param max_points: optional cap on correspondences (an even stride through the usable
        pixels, see :func:`even_subset`).
    :param min_points: fewer usable pixels than this give None.
    :return: ``[4, 4]`` ``T_world_cam``, or None when PnP fails.
    :raises ValueError: for a malformed pointmap, mask or focal.
    """
    pts3d = _check_pointmap(pts3d)
    height, width = pts3d.shape[:2]
    for name, value in (('focal', focal), ('fy', focal if fy is None else fy)):
        if not np.isfinite(value) or value <= 0:
            raise ValueError(f'{name} must be positive and finite, got {value}')
    index = even_subset(np.flatnonzero(_usable(pts3d, mask)), max_points)
    object_points = pts3d.reshape(-1, 3)[index].astype(np.float64)
    image_points = pixel_grid(width, height).reshape(-1, 2)[index]
    if len(object_points) < min_points:
        return None
    K = intrinsics(focal, width, height, pp, fy)
    try:
        ok, rvec, tvec, inliers = cv2.solvePnPRansac(
            object_points, image_points, K, np.zeros(4), iterationsCount=iterations,
            reprojectionError=reprojection_error)
    except cv2.error as err:
        LOG.debug('solvePnPRansac failed: %s', err)
        return None
    if not ok or inliers is None or len(inliers) < min_points:
        return None
    T_cam_world = np.eye(4)
    T_cam_world[:3, :3] = cv2.Rodrigues(rvec)[0]
    T_cam_world[:3, 3] = tvec.reshape(3)
    return invert_pose(T_cam_world)


def estimate_focal_posed(pts3d: np.ndarray, mask: Optional[np.ndarray] = None,
                         pp: Optional[tuple[float, float]] = None, *,
                         bounds: tuple[float, float] = (0.1, 10.0), max_points: int = 2048,
                         steps: int = 40, reprojection_error: float = 8.0,
                         iterations: int = 100) -> float:
    """Estimate the focal length of a world-frame pointmap whose camera pose is unknown.

    :func:`estimate_focal` needs the points in the camera's own frame, which only the first
    frame of a reconstruction has (its frame is the world). For any other camera the focal and
    the pose are found together: a golden-section search over ``log f`` for the focal whose
    PnP-RANSAC pose leaves the smallest median reprojection error. RANSAC and the median keep
    a minority of wrong points from steering the search.

    :param pts3d: ``[H, W, 3]`` points in the world frame.
    :param mask: optional ``[H, W]`` bool, pixels to use.
    :param pp: principal point; defaults to ``(W / 2, H / 2)``.
    :param bounds: the search range, in multiples of ``max(W, H)``.
    :param max_points: at most this many pixels (see :func:`even_subset`).
    :param steps: golden-section steps (each shrinks the range by 0.618).
    :param reprojection_error: RANSAC inlier threshold in pixels.
    :param iterations: RANSAC iterations per focal tried.
    :return: focal length in pixels.
    :raises ValueError: for a malformed pointmap or mask, or fewer than 6 usable pixels.
    """
    pts3d = _check_pointmap(pts3d)
    height, width = pts3d.shape[:2]
    index = even_subset(np.flatnonzero(_usable(pts3d, mask)), max_points)
    if len(index) < 6:
        raise ValueError(f'{len(index)} usable points, need 6 to estimate the focal length')
    object_points = pts3d.reshape(-1, 3)[index].astype(np.float64)
    image_points = pixel_grid(width, height).reshape(-1, 2)[index]

    def cost(log_focal: float) -> float:
        K = intrinsics(float(np.exp(log_focal)), width, height, pp)
        try:
            ok, rvec, tvec, _ = cv2.solvePnPRansac(
                object_points, image_points, K, None, iterationsCount=iterations,
                reprojectionError=reprojection_error)
        except cv2.error:
            return float('inf')
        if not ok:
            return float('inf')
        projected = cv2.projectPoints(object_points, rvec, tvec, K, None)[0].reshape(-1, 2)
        return float(np.median(np.linalg.norm(projected - image_points, axis=1)))

    side = max(width, height)
    lo, hi = np.log(bounds[0] * side), np.log(bounds[1] * side)
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    a, b = lo + (1 - ratio) * (hi - lo), lo + ratio * (hi - lo)
    cost_a, cost_b = cost(a), cost(b)
    for _ in range(steps):
        if cost_a <= cost_b:
            hi, b, cost_b = b, a, cost_a
            a = lo + (1 - ratio) * (hi - lo)
            cost_a = cost(a)
        else:
            lo, a, cost_a = a, b, cost_b
            b = lo + ratio * (hi - lo)
            cost_b = cost(b)
    return float(np.exp((lo + hi) / 2.0))


def invert_pose(T: np.ndarray) -> np.ndarray:
    """Invert a rigid ``[4, 4]`` transform (uses ``R^T``, not a general inverse)."""
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4):
        raise ValueError(f'pose must be [4, 4], got {T.shape}')
    out = np.eye(4)
    out[:3, :3] = T[:3, :3].T
    out[:3, 3] = -T[:3, :3].T @ T[:3, 3]
    return out


def depth_from_pointmap(pts3d: np.ndarray, T_world_cam: np.ndarray) -> np.ndarray:
    """Depth (z in the camera frame) of each pixel of a world-frame pointmap.

    :param pts3d: ``[H, W, 3]`` points in the world frame.
    :param T_world_cam: ``[4, 4]`` camera-to-world pose of the pointmap's camera.
    :return: ``[H, W]`` float32 depth (NaN where the point is not finite).
    """
    pts3d = _check_pointmap(pts3d)
    T_cam_world = invert_pose(T_world_cam)
    # Only the z row is needed: z = r3 . p + t3.
    depth = pts3d.astype(np.float64) @ T_cam_world[2, :3] + T_cam_world[2, 3]
    return depth.astype(np.float32)


def backproject(depth: np.ndarray, K: np.ndarray, T_world_cam: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """Back-project a z-depth map to world points, the ground truth of evaluation and training.

    Invalid depths are 0, negative, NaN and +/-inf: a pixel is valid only where its depth is
    finite and positive. Invalid pixels are back-projected as depth 0, so their points land
    exactly on the camera centre ``T_world_cam[:3, 3]``: every returned point is finite (no NaN
    or inf leaks into a loss or metric that weights points by the mask) and none lies behind
    the camera. Use the returned mask, never the points, to tell the pixels apart.

    :param depth: ``[H, W]`` z-depth in metres.
    :param K: ``[3, 3]`` intrinsics of ``depth``.
    :param T_world_cam: ``[4, 4]`` camera-to-world pose.
    :return: ``[H, W, 3]`` float32 world points and the ``[H, W]`` bool valid mask
        (``isfinite(depth) & (depth > 0)``).
    :raises ValueError: if ``depth`` is not ``[H, W]``.
    """
    depth = np.asarray(depth, dtype=np.float32)
    if depth.ndim != 2:
        raise ValueError(f'depth must be [H, W], got {depth.shape}')
    valid = np.isfinite(depth) & (depth > 0)
    depth = np.where(valid, depth, np.float32(0.0))
    height, width = depth.shape
    u, v = np.meshgrid(np.arange(width), np.arange(height))
    K = np.asarray(K)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    x = ((u - cx) * depth / fx).astype(np.float32)
    y = ((v - cy) * depth / fy).astype(np.float32)
    cam = np.stack([x, y, depth], axis=-1)
    T = np.asarray(T_world_cam, dtype=np.float32)
    world = np.einsum('ik,vuk->vui', T[:3, :3], cam) + T[:3, 3]
    return world.astype(np.float32), valid
