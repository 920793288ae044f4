"""Geometry on synthetic cameras with known intrinsics and poses."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from spann3r_model.geometry.camera import (
    depth_from_pointmap,
    estimate_focal,
    estimate_focal_posed,
    estimate_pose_pnp,
    invert_pose,
    optical_to_rep103_points,
    optical_to_rep103_pose,
    sim3_matrix,
    transform_points,
    umeyama,
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


@pytest.mark.parametrize('with_scale', [True, False])
def test_umeyama_recovers_similarity(with_scale: bool) -> None:
    rng = np.random.default_rng(1)
    src = rng.normal(size=(50, 3))
    R = Rotation.from_rotvec([0.3, -1.2, 2.0]).as_matrix()
    s = 2.5 if with_scale else 1.0
    t = np.array([1.0, -2.0, 0.5])
    dst = s * src @ R.T + t
    s_hat, R_hat, t_hat = umeyama(src, dst, with_scale=with_scale)
    assert s_hat == pytest.approx(s, rel=1e-10)
    np.testing.assert_allclose(R_hat, R, atol=1e-10)
    np.testing.assert_allclose(t_hat, t, atol=1e-10)
    np.testing.assert_allclose(transform_points(sim3_matrix(s_hat, R_hat, t_hat), src), dst,
                               atol=1e-10)


def test_umeyama_never_returns_a_reflection() -> None:
    rng = np.random.default_rng(2)
    src = rng.normal(size=(30, 3))
    dst = src * np.array([1.0, 1.0, -1.0])  # a mirror image: best proper rotation only
    _, R, _ = umeyama(src, dst)
    assert np.linalg.det(R) == pytest.approx(1.0)


def test_umeyama_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match='at least 3'):
        umeyama(np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r'\[N, 3\]'):
        umeyama(np.zeros((5, 3)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match='identical'):
        umeyama(np.ones((5, 3)), np.zeros((5, 3)))


def test_rep103_axes() -> None:
    forward, down, right = np.eye(3)[2], np.eye(3)[1], np.eye(3)[0]
    np.testing.assert_allclose(optical_to_rep103_points(forward), [1, 0, 0])
    np.testing.assert_allclose(optical_to_rep103_points(down), [0, 0, -1])
    np.testing.assert_allclose(optical_to_rep103_points(right), [0, -1, 0])
    T = _pose(6)
    p_cam = np.array([0.2, -0.1, 3.0])
    # The same physical point, whichever world axes are used.
    np.testing.assert_allclose(transform_points(optical_to_rep103_pose(T), p_cam),
                               optical_to_rep103_points(transform_points(T, p_cam)))


def test_rep103_points_are_exact_in_the_input_dtype() -> None:
    rng = np.random.default_rng(7)
    for dtype in (np.float32, np.float64):
        pts = rng.normal(scale=5.0, size=(4, 6, 3)).astype(dtype)
        out = optical_to_rep103_points(pts)
        assert out.dtype == dtype and out.shape == pts.shape
        # REP 103 body axes from optical ones, written out: x = z, y = -x, z = -y.
        np.testing.assert_array_equal(out[..., 0], pts[..., 2])
        np.testing.assert_array_equal(out[..., 1], -pts[..., 0])
        np.testing.assert_array_equal(out[..., 2], -pts[..., 1])
    # Integer input becomes float64, as a product with the rotation would make it.
    out = optical_to_rep103_points(np.array([1, 2, 3]))
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, [3.0, -1.0, -2.0])
    with pytest.raises(ValueError, match=r'\[\.\.\., 3\]'):
        optical_to_rep103_points(np.zeros((5, 2)))


def test_rep103_points_keep_a_non_finite_coordinate_in_its_axis() -> None:
    pts = np.array([[np.inf, 1.0, 2.0], [0.5, -np.inf, 3.0], [0.25, 1.5, np.nan]])
    out = optical_to_rep103_points(pts)
    np.testing.assert_array_equal(out[0], [2.0, -np.inf, -1.0])
    np.testing.assert_array_equal(out[1], [3.0, -0.5, np.inf])
    assert np.isnan(out[2, 0]) and out[2, 1] == -0.25 and out[2, 2] == -1.5
