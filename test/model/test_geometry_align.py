"""Similarity alignment: the Umeyama fit, Sim(3) matrices and the Sim3 transform."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from spann3r_model.geometry.align import Sim3, sim3_matrix, transform_points, umeyama


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


def test_rigid_umeyama_of_coincident_points_is_the_translation_onto_the_centroid() -> None:
    src = np.ones((5, 3))
    dst = np.random.default_rng(3).normal(size=(5, 3))
    scale, R, t = umeyama(src, dst, with_scale=False)
    assert scale == 1.0
    np.testing.assert_allclose(R, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(src[0] + t, dst.mean(axis=0), atol=1e-12)


def test_transform_points_keeps_leading_axes_and_returns_float64() -> None:
    T = sim3_matrix(2.0, Rotation.from_rotvec([0.0, 0.0, np.pi / 2]).as_matrix(), [1.0, 0, 0])
    points = np.array([[[1.0, 0.0, 0.0]], [[0.0, 0.0, 1.0]]], dtype=np.float32)
    out = transform_points(T, points)
    assert out.dtype == np.float64 and out.shape == (2, 1, 3)
    np.testing.assert_allclose(out[:, 0], [[1.0, 2.0, 0.0], [1.0, 0.0, 2.0]], atol=1e-12)


def test_sim3_applies_its_matrix_to_points_and_keeps_poses_rigid() -> None:
    R = Rotation.from_rotvec([0.4, 0.1, -0.7]).as_matrix()
    sim = Sim3(scale=1.5, R=R, t=np.array([0.3, -2.0, 1.0]))
    points = np.random.default_rng(4).normal(size=(6, 3))
    out = sim.apply_points(points)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, transform_points(sim3_matrix(sim.scale, sim.R, sim.t), points),
                               rtol=1e-6, atol=1e-6)
    T_seg_cam = np.eye(4)
    T_seg_cam[:3, 3] = points[0]
    T = sim.apply_pose(T_seg_cam)
    np.testing.assert_allclose(T[:3, :3], R, atol=1e-12)
    np.testing.assert_allclose(T[:3, 3], out[0], rtol=1e-6, atol=1e-6)
    assert Sim3().is_identity() and not sim.is_identity()
    back = Sim3.from_list(sim.to_list())
    assert back.scale == sim.scale
    np.testing.assert_array_equal(back.R, sim.R)
    np.testing.assert_array_equal(back.t, sim.t)
    with pytest.raises(ValueError, match='13 numbers'):
        Sim3.from_list([1.0, 2.0])
