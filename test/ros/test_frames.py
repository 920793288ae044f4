"""The map-frame convention: one definition (spann3r_model.geometry), a fast exact applier."""

import numpy as np
import pytest

from spann3r_model.geometry import optical_to_rep103_points, optical_to_rep103_pose
from spann3r_ros import frames


def test_points_match_the_geometry_definition_exactly():
    rng = np.random.default_rng(0)
    pts = rng.normal(scale=3.0, size=(5, 7, 3)).astype(np.float32)
    fast = frames.points_world_to_map(pts)
    assert fast.dtype == np.float32 and fast.shape == pts.shape
    np.testing.assert_array_equal(fast, optical_to_rep103_points(pts).astype(np.float32))
    # Looking along the optical axis is looking along map +x; image down is map -z.
    np.testing.assert_array_equal(frames.points_world_to_map(np.array([0.0, 1.0, 2.0])),
                                  [2.0, 0.0, -1.0])


def test_a_non_finite_coordinate_stays_in_its_own_axis():
    pts = np.array([[np.inf, 1.0, 2.0], [0.5, np.nan, 3.0]], np.float32)
    out = frames.points_world_to_map(pts)
    np.testing.assert_array_equal(out[0], [2.0, -np.inf, -1.0])
    assert out[1, 0] == 3.0 and out[1, 1] == -0.5 and np.isnan(out[1, 2])


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
                               frames.points_world_to_map(p_world), atol=1e-6)
    q = frames.quaternion_xyzw(T_map[:3, :3])
    assert np.linalg.norm(q) == pytest.approx(1.0)


def test_only_signed_permutations_have_an_axis_form():
    assert frames._signed_axes(np.eye(3)) == ((0, 1.0), (1, 1.0), (2, 1.0))
    with pytest.raises(ValueError, match='signed permutation'):
        frames._signed_axes(np.full((3, 3), 0.5))
