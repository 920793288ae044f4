"""The map-frame convention: points and poses agree, quaternions are those TF expects."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from spann3r_model.geometry.align import transform_points
from spann3r_model.geometry.frames import (
    optical_to_rep103_points,
    optical_to_rep103_pose,
    quaternion_xyzw,
    R_BODY_OPTICAL,
)


def _rotate(q_xyzw, v):
    """Rotate ``v`` by the unit quaternion ``q`` (Hamilton product q v q*)."""
    x, y, z, w = q_xyzw
    u = np.array([x, y, z])
    return v + 2.0 * np.cross(u, np.cross(u, v) + w * v)


def test_points_and_poses_agree():
    rng = np.random.default_rng(1)
    angle = 0.7
    T = np.eye(4)
    T[:3, :3] = [[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]]
    T[:3, 3] = [0.3, -0.2, 1.5]
    p_cam = rng.normal(size=(10, 3))
    p_world = p_cam @ T[:3, :3].T + T[:3, 3]
    T_map = optical_to_rep103_pose(T)
    np.testing.assert_allclose(p_cam @ T_map[:3, :3].T + T_map[:3, 3],
                               optical_to_rep103_points(p_world), atol=1e-12)


def test_quaternion_rotates_vectors_as_its_matrix():
    rng = np.random.default_rng(2)
    angle = 1.1
    axis = np.array([0.3, -0.5, 0.8]) / np.linalg.norm([0.3, -0.5, 0.8])
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    R = np.eye(3) + np.sin(angle) * K + (1 - np.cos(angle)) * K @ K
    q = quaternion_xyzw(R)
    assert np.linalg.norm(q) == pytest.approx(1.0)
    for v in rng.normal(size=(5, 3)):
        np.testing.assert_allclose(_rotate(q, v), R @ v, atol=1e-12)


def test_first_camera_has_the_standard_optical_frame_rotation():
    # A camera at the origin of its own optical world sits in the map with the rotation ROS
    # gives every *_optical_frame: (x, y, z, w) = (-0.5, 0.5, -0.5, 0.5), up to sign.
    q = quaternion_xyzw(optical_to_rep103_pose(np.eye(4))[:3, :3])
    q = q if q[3] > 0 else -q
    np.testing.assert_allclose(q, [-0.5, 0.5, -0.5, 0.5], atol=1e-12)
    # Looking along the optical axis is looking along map +x; image down is map -z.
    np.testing.assert_array_equal(optical_to_rep103_points(np.array([0.0, 1.0, 2.0])),
                                  [2.0, 0.0, -1.0])


def test_rep103_axes() -> None:
    forward, down, right = np.eye(3)[2], np.eye(3)[1], np.eye(3)[0]
    np.testing.assert_allclose(optical_to_rep103_points(forward), [1, 0, 0])
    np.testing.assert_allclose(optical_to_rep103_points(down), [0, 0, -1])
    np.testing.assert_allclose(optical_to_rep103_points(right), [0, -1, 0])
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec([0.2, -0.4, 0.3]).as_matrix()
    T[:3, 3] = [0.5, -1.0, 2.0]
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


def test_the_points_helper_is_the_product_with_the_rotation() -> None:
    np.testing.assert_allclose(R_BODY_OPTICAL @ R_BODY_OPTICAL.T, np.eye(3))
    assert np.linalg.det(R_BODY_OPTICAL) == pytest.approx(1.0)
    pts = np.random.default_rng(8).normal(size=(7, 3))
    np.testing.assert_allclose(optical_to_rep103_points(pts), pts @ R_BODY_OPTICAL.T, atol=0)
