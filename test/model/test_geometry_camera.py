"""Camera geometry (focal, PnP pose, depth) on synthetic cameras with known K and pose."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from spann3r_model.geometry.align import transform_points
from spann3r_model.geometry.camera import (
    depth_from_pointmap,
    estimate_focal,
    estimate_focal_posed,
    estimate_pose_pnp,
    invert_pose,
)

W, H, F = 64, 48, 55.0


def _depth(width: int = W, height: int = H) -> np.ndarray:
    # A tilted plane with a bump: depth varies, so focal and pose are well determined.
    u, v = np.meshgrid(np.arange(width), np.arange(height))
    return 2.0 + 0.01 * u + 0.02 * v + 0.3 * np.exp(-((u - 30) ** 2 + (v - 20) ** 2) / 80.0)


def _camera_points(depth: np.ndarray, focal: float, pp: tuple) -> np.ndarray:
    # Back-projection written out independently of the code under test.
    height, width = depth.shape
    u, v = np.meshgrid(np.arange(width, dtype=float), np.arange(height, dtype=float))
    x = (u - pp[0]) / focal * depth
    y = (v - pp[1]) / focal * depth
    return np.stack([x, y, depth], axis=-1)


def _pose(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(rng.normal(scale=0.3, size=3)).as_matrix()
    T[:3, 3] = rng.normal(size=3)
    return T


def test_focal_is_recovered_exactly_from_clean_points() -> None:
    pts = _camera_points(_depth(), F, (W / 2, H / 2))
    assert estimate_focal(pts) == pytest.approx(F, rel=1e-9)


def test_focal_with_custom_principal_point() -> None:
    pp = (30.5, 20.25)
    pts = _camera_points(_depth(), F, pp)
    assert estimate_focal(pts, pp=pp) == pytest.approx(F, rel=1e-9)
    # The wrong principal point gives a different answer: the pp is really used.
    assert abs(estimate_focal(pts) - F) > 1e-3


def test_focal_is_robust_to_noise_and_outliers() -> None:
    rng = np.random.default_rng(0)
    pts = _camera_points(_depth(), F, (W / 2, H / 2))
    pts = pts * (1 + rng.normal(scale=0.002, size=pts.shape))
    outliers = rng.random((H, W)) < 0.1
    pts[outliers] = rng.uniform(-1, 1, size=(outliers.sum(), 3)) + (0, 0, 3)
    robust = estimate_focal(pts)
    assert robust == pytest.approx(F, rel=0.02)
    assert estimate_focal(pts, mask=~outliers) == pytest.approx(F, rel=0.005)


def test_focal_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r'\[H, W, 3\]'):
        estimate_focal(np.zeros((4, 4)))
    with pytest.raises(ValueError, match='no usable'):
        estimate_focal(np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match='mask'):
        estimate_focal(np.ones((4, 4, 3)), mask=np.ones((3, 3), bool))


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_pnp_recovers_the_camera_pose(seed: int) -> None:
    T_world_cam = _pose(seed)
    pts_world = transform_points(T_world_cam, _camera_points(_depth(), F, (W / 2, H / 2)))
    T = estimate_pose_pnp(pts_world, F)
    assert T is not None
    assert np.abs(T - T_world_cam).max() < 1e-6


def test_pnp_uses_the_mask_and_survives_outliers() -> None:
    rng = np.random.default_rng(5)
    T_world_cam = _pose(7)
    pts_world = transform_points(T_world_cam, _camera_points(_depth(), F, (W / 2, H / 2)))
    bad = rng.random((H, W)) < 0.3
    pts_world[bad] += rng.normal(scale=2.0, size=(bad.sum(), 3))
    T = estimate_pose_pnp(pts_world, F)
    # Outliers that happen to land within the 8 px threshold bias the refinement a little.
    assert T is not None and np.abs(T - T_world_cam).max() < 2e-2
    T = estimate_pose_pnp(pts_world, F, reprojection_error=0.5)
    assert T is not None and np.abs(T - T_world_cam).max() < 1e-3
    T = estimate_pose_pnp(pts_world, F, mask=~bad, max_points=500)
    assert T is not None and np.abs(T - T_world_cam).max() < 1e-6


def test_pnp_returns_none_without_enough_points() -> None:
    pts_world = _camera_points(_depth(), F, (W / 2, H / 2))
    mask = np.zeros((H, W), bool)
    mask[0, :3] = True
    assert estimate_pose_pnp(pts_world, F, mask=mask) is None
    nan = np.full((H, W, 3), np.nan)
    assert estimate_pose_pnp(nan, F) is None
    with pytest.raises(ValueError, match='focal'):
        estimate_pose_pnp(pts_world, -1.0)


def test_focal_then_pose_then_depth_chain() -> None:
    # The node's chain: focal from the first camera, pose per frame, depth from pose.
    depth = _depth()
    T_world_cam = _pose(3)
    pts_cam = _camera_points(depth, F, (W / 2, H / 2))
    focal = estimate_focal(pts_cam)
    T = estimate_pose_pnp(transform_points(T_world_cam, pts_cam), focal)
    recovered = depth_from_pointmap(transform_points(T_world_cam, pts_cam), T)
    assert recovered.dtype == np.float32 and recovered.shape == (H, W)
    np.testing.assert_allclose(recovered, depth, rtol=1e-5)


def _camera_points_K(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    # Back-projection through a full K (fx != fy, off-centre principal point).
    height, width = depth.shape
    u, v = np.meshgrid(np.arange(width, dtype=float), np.arange(height, dtype=float))
    y = (v - K[1, 2]) / K[1, 1]
    x = (u - K[0, 2] - K[0, 1] * y) / K[0, 0]
    return np.stack([x * depth, y * depth, depth], axis=-1)


@pytest.mark.parametrize('seed', [0, 4])
def test_pnp_with_a_known_K_recovers_the_pose(seed: int) -> None:
    K = np.array([[52.0, 0.0, 27.5], [0.0, 58.0, 26.0], [0.0, 0.0, 1.0]])
    T_world_cam = _pose(seed)
    pts_world = transform_points(T_world_cam, _camera_points_K(_depth(), K))
    T = estimate_pose_pnp(pts_world, K[0, 0], pp=(K[0, 2], K[1, 2]), fy=K[1, 1])
    assert T is not None and np.abs(T - T_world_cam).max() < 1e-6
    # With one focal and the centred principal point the same points give a wrong pose.
    T_square = estimate_pose_pnp(pts_world, K[0, 0])
    assert T_square is None or np.abs(T_square - T_world_cam).max() > 1e-2
    with pytest.raises(ValueError, match='fy'):
        estimate_pose_pnp(pts_world, K[0, 0], fy=0.0)


@pytest.mark.parametrize('seed', [1, 2, 6])
def test_focal_of_a_posed_camera_is_recovered_from_world_points(seed: int) -> None:
    T_world_cam = _pose(seed)
    pts_world = transform_points(T_world_cam, _camera_points(_depth(), F, (W / 2, H / 2)))
    assert estimate_focal_posed(pts_world) == pytest.approx(F, rel=1e-3)
    # The first-frame estimate assumes the camera is the world, which it is not here.
    assert abs(estimate_focal(pts_world) - F) > 0.05 * F


def test_focal_of_a_posed_camera_uses_the_mask_and_principal_point() -> None:
    rng = np.random.default_rng(3)
    pp = (30.0, 21.0)
    pts_world = transform_points(_pose(8), _camera_points(_depth(), F, pp))
    bad = rng.random((H, W)) < 0.2
    pts_world[bad] += rng.normal(scale=2.0, size=(bad.sum(), 3))
    assert estimate_focal_posed(pts_world, mask=~bad, pp=pp) == pytest.approx(F, rel=1e-3)
    # A minority of outliers moves the median-based estimate only a little.
    assert estimate_focal_posed(pts_world, pp=pp) == pytest.approx(F, rel=0.05)
    with pytest.raises(ValueError, match='usable'):
        estimate_focal_posed(pts_world, mask=np.zeros((H, W), bool))


def test_invert_pose() -> None:
    T = _pose(4)
    np.testing.assert_allclose(T @ invert_pose(T), np.eye(4), atol=1e-12)
    np.testing.assert_allclose(invert_pose(invert_pose(T)), T, atol=1e-12)
    with pytest.raises(ValueError):
        invert_pose(np.eye(3))
