"""Analytic checks of the evaluation building blocks."""

import numpy as np
import pytest

from spann3r_model.evaluation.metrics import (
    absolute_trajectory_error,
    align_shift_scale,
    estimate_normals,
    evaluate_pointmaps,
    icp_point_to_point,
    latency_stats,
    lower_median,
    reconstruction_metrics,
)


def _rotation(axis, deg):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    a = np.deg2rad(deg)
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(a) * K + (1 - np.cos(a)) * K @ K


def _box_surface(n, rng):
    """Points on the faces of a 1 x 0.6 x 0.4 box: a shape ICP can lock onto."""
    pts = rng.uniform(-0.5, 0.5, (n, 3)) * [1.0, 0.6, 0.4]
    face = rng.integers(0, 3, n)
    sign = rng.choice([-1, 1], n)
    half = np.array([0.5, 0.3, 0.2])
    pts[np.arange(n), face] = sign * half[face]
    return pts


def test_lower_median_matches_torch_convention():
    assert lower_median(np.array([4.0, 1.0, 3.0, 2.0])) == 2.0
    assert lower_median(np.array([5.0, 1.0, 3.0])) == 3.0
    assert lower_median(np.array([np.nan, 2.0, 1.0])) == 1.0
    with pytest.raises(ValueError):
        lower_median(np.array([np.nan]))


def test_identical_clouds_score_zero_and_unit_normal_consistency():
    rng = np.random.default_rng(0)
    pts = _box_surface(4000, rng)
    m = reconstruction_metrics(pts, pts)
    assert m.acc == 0 and m.comp == 0 and m.acc_med == 0 and m.comp_med == 0
    assert m.nc1 == pytest.approx(1.0) and m.nc2 == pytest.approx(1.0)


def test_known_offset_gives_known_distance():
    # Two parallel planar grids 3 cm apart: every nearest neighbour is straight across.
    u, v = np.meshgrid(np.linspace(0, 1, 41), np.linspace(0, 1, 41))
    plane = np.stack([u.ravel(), v.ravel(), np.zeros(u.size)], axis=1)
    m = reconstruction_metrics(plane + [0, 0, 0.03], plane)
    assert m.acc == pytest.approx(0.03) and m.comp == pytest.approx(0.03)
    assert m.acc_med == pytest.approx(0.03)
    assert m.nc == pytest.approx(1.0)


def test_plane_normals_are_the_plane_normal():
    rng = np.random.default_rng(1)
    R = _rotation([1, 2, 3], 40)
    pts = np.c_[rng.uniform(-1, 1, (3000, 2)), np.zeros(3000)] @ R.T
    n = estimate_normals(pts)
    assert np.allclose(np.abs(n @ R[:, 2]), 1.0, atol=1e-9)
    assert np.allclose(np.linalg.norm(n, axis=1), 1.0)


def test_icp_recovers_known_rigid_motion():
    rng = np.random.default_rng(3)
    target = _box_surface(6000, rng)
    R = _rotation([0.3, -0.5, 0.8], 3.0)
    t = np.array([0.02, -0.015, 0.01])
    source = (target - t) @ R  # target = R source + t
    res = icp_point_to_point(source, target, max_distance=0.1, max_iterations=100)
    assert np.allclose(res.transformation[:3, :3], R, atol=1e-4)
    assert np.allclose(res.transformation[:3, 3], t, atol=1e-4)
    assert res.fitness == pytest.approx(1.0) and res.inlier_rmse < 1e-4


def test_icp_respects_iteration_budget_and_radius():
    rng = np.random.default_rng(4)
    target = _box_surface(2000, rng)
    far = icp_point_to_point(target + 1.0, target, max_distance=0.1)
    assert far.fitness == 0 and far.n_correspondences == 0 and far.iterations == 0
    one = icp_point_to_point(target + 0.01, target, max_iterations=1)
    assert one.iterations == 1


def test_alignment_removes_scale_and_shift():
    rng = np.random.default_rng(5)
    gt = _box_surface(3000, rng) + [0, 0, 2.0]
    gt_maps = gt.reshape(1, 30, 100, 3)
    valid = np.ones((1, 30, 100), bool)
    valid[0, 0, :10] = False
    pred_maps = gt_maps * 0.3
    pred_maps[~valid] = np.nan  # ignored: only ground-truth valid pixels count
    T0 = np.eye(4)
    T0[:3, 3] = [5, 0, 0]
    pred, gt_w, al = align_shift_scale(pred_maps, gt_maps, valid, T0)
    assert al.n_points == valid.sum()
    assert al.factor == pytest.approx(1 / 0.3)
    assert np.allclose(pred, gt_w, atol=1e-9)
    assert np.allclose(gt_w, gt_maps[valid] + [5, 0, 0])
    ev = evaluate_pointmaps(pred_maps, gt_maps, valid, T0)
    assert ev.metrics.acc < 1e-9 and ev.metrics.comp < 1e-9


def test_alignment_rejects_bad_input():
    with pytest.raises(ValueError, match='do not match'):
        align_shift_scale(np.zeros((1, 2, 2, 3)), np.zeros((1, 2, 3, 3)), np.ones((1, 2, 2)),
                          np.eye(4))
    with pytest.raises(ValueError, match='no valid'):
        align_shift_scale(np.zeros((1, 2, 2, 3)), np.zeros((1, 2, 2, 3)), np.zeros((1, 2, 2)),
                          np.eye(4))


def test_ate_is_zero_for_similar_trajectory_and_known_for_offset():
    rng = np.random.default_rng(6)
    gt = rng.normal(size=(20, 3))
    R = _rotation([1, 0, 0], 70)
    est = (0.2 * gt @ R.T) + [3, 3, 3]
    res = absolute_trajectory_error(est, gt)
    assert res['rmse'] < 1e-9 and res['scale'] == pytest.approx(5.0)
    # Without scale a pure 1-unit offset of one pose out of two identical ones cannot be hidden.
    gt2 = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], float)
    res = absolute_trajectory_error(gt2, gt2, with_scale=False)
    assert res['rmse'] < 1e-12
    # A camera that never moved has no scale: it is aligned rigidly, onto the centroid.
    res = absolute_trajectory_error(np.zeros((4, 3)), gt2)
    assert res['scale'] == 1.0
    np.testing.assert_allclose(res['aligned'], np.tile(gt2.mean(axis=0), (4, 1)), atol=1e-12)


def test_latency_stats():
    stats = latency_stats(np.array([0.1] * 9 + [1.0]))
    assert stats['n'] == 10 and stats['fps'] == pytest.approx(10 / 1.9)
    assert stats['p50_ms'] == pytest.approx(100.0) and stats['max_ms'] == pytest.approx(1000.0)
    with pytest.raises(ValueError):
        latency_stats(np.array([]))
