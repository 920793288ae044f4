"""The map-frame convention: points and poses agree, quaternions are those TF expects."""

import numpy as np
import pytest

from spann3r_model.geometry.camera import optical_to_rep103_points, optical_to_rep103_pose
from spann3r_ros.formats import frames


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
    q = frames.quaternion_xyzw(R)
    assert np.linalg.norm(q) == pytest.approx(1.0)
    for v in rng.normal(size=(5, 3)):
        np.testing.assert_allclose(_rotate(q, v), R @ v, atol=1e-12)


def test_first_camera_has_the_standard_optical_frame_rotation():
    # A camera at the origin of its own optical world sits in the map with the rotation ROS
    # gives every *_optical_frame: (x, y, z, w) = (-0.5, 0.5, -0.5, 0.5), up to sign.
    q = frames.quaternion_xyzw(optical_to_rep103_pose(np.eye(4))[:3, :3])
    q = q if q[3] > 0 else -q
    np.testing.assert_allclose(q, [-0.5, 0.5, -0.5, 0.5], atol=1e-12)
    # Looking along the optical axis is looking along map +x; image down is map -z.
    np.testing.assert_array_equal(optical_to_rep103_points(np.array([0.0, 1.0, 2.0])),
                                  [2.0, 0.0, -1.0])
