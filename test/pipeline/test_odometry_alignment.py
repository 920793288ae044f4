"""Sim(3) fit of reconstruction camera poses to odometry poses, and when the aligner accepts it.

The data are built from a known similarity: odometry (metric) camera poses first, then the
reconstruction's poses as that similarity's inverse applied by hand, so every expected value
comes from the construction, not from the code under test.
"""

import numpy as np
import pytest

from spann3r_ros.pipeline.odometry_alignment import (
    AlignmentThresholds,
    fit_odometry_sim3,
    OdometryAligner,
)

#: The known map -> odom similarity of the tests (a 3-D rotation, not only a yaw).
SCALE = 2.5
AXIS = (0.3, -0.5, 0.8)
ANGLE_DEG = 73.0
T_SIM = np.array([1.5, -0.7, 0.25])


def rotation(axis, deg):
    """Rodrigues' rotation by ``deg`` degrees about ``axis``."""
    k = np.asarray(axis, dtype=np.float64)
    k = k / np.linalg.norm(k)
    K = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    a = np.radians(deg)
    return np.eye(3) + np.sin(a) * K + (1.0 - np.cos(a)) * K @ K


def angle_deg(R):
    """Rotation angle of one ``[3, 3]`` matrix, degrees."""
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0))))


def pose(R, c):
    """``[4, 4]`` rigid pose with rotation ``R`` and centre ``c``."""
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = c
    return T


def known_sim3():
    """``(scale, R, t)`` of the known map -> odom similarity."""
    return SCALE, rotation(AXIS, ANGLE_DEG), T_SIM.copy()


def to_map(T_odom, scale, R, t):
    """Reconstruction poses ``T_map_cam`` whose image under ``(scale, R, t)`` is ``T_odom``."""
    T_odom = np.asarray(T_odom, dtype=np.float64)
    out = np.tile(np.eye(4), T_odom.shape[:-2] + (1, 1))
    out[..., :3, :3] = R.T @ T_odom[..., :3, :3]
    out[..., :3, 3] = (T_odom[..., :3, 3] - t) @ R / scale
    return out


def odometry_path(n, step=0.1, yaw_deg=3.0):
    """Odometry camera poses of a camera driving a gentle 3-D curve while turning."""
    base = rotation((0.2, 1.0, 0.1), 25.0)
    poses = []
    for i in range(n):
        c = np.array([step * i, 0.3 * np.sin(0.3 * i), 0.05 * i ** 1.5 * step])
        poses.append(pose(rotation((0.1, 0.2, 1.0), yaw_deg * i) @ base, c))
    return np.stack(poses)


def straight_path(n, step=0.1, turn_deg=0.0):
    """Collinear odometry centres ``step`` apart; the camera turns ``turn_deg`` per frame."""
    base = rotation((1.0, 0.0, 0.0), -90.0)
    return np.stack([pose(rotation((0.0, 0.0, 1.0), turn_deg * i) @ base,
                          np.array([step * i, 2.0 * step * i, 0.0])) for i in range(n)])


def spin_in_place(n, turn_deg=10.0, centre=(1.0, 2.0, 0.5)):
    """The camera rotating on the spot: one centre, the orientation turning."""
    return np.stack([pose(rotation((0.1, 0.3, 1.0), turn_deg * i), np.asarray(centre))
                     for i in range(n)])


def assert_sim3(sim3, scale, R, t, tol=1e-9):
    assert sim3.scale == pytest.approx(scale, abs=tol)
    np.testing.assert_allclose(sim3.R, R, atol=tol)
    np.testing.assert_allclose(sim3.t, t, atol=tol)


# -- fit_odometry_sim3 -----------------------------------------------------------------------
def test_noise_free_pairs_recover_the_known_similarity_exactly():
    scale, R, t = known_sim3()
    T_odom = odometry_path(20)
    fit = fit_odometry_sim3(to_map(T_odom, scale, R, t), T_odom)
    assert_sim3(fit.sim3, scale, R, t)
    assert fit.inliers.dtype == bool and fit.inliers.all() and fit.used == 20
    assert fit.residual_m < 1e-9 and fit.rotation_residual_deg < 1e-5
    centres = T_odom[:, :3, 3]
    spread = np.sqrt(np.mean(np.sum((centres - centres.mean(axis=0)) ** 2, axis=1)))
    assert fit.baseline_m == pytest.approx(spread, rel=1e-12)


def test_collinear_centres_still_determine_the_rotation():
    scale, R, t = known_sim3()
    T_odom = straight_path(12)
    fit = fit_odometry_sim3(to_map(T_odom, scale, R, t), T_odom)
    assert_sim3(fit.sim3, scale, R, t)
    assert fit.rotation_deg == pytest.approx(0.0, abs=1e-5)


def test_known_scale_fits_only_rotation_and_translation():
    scale, R, t = known_sim3()
    T_odom = odometry_path(15)
    T_map = to_map(T_odom, scale, R, t)
    assert_sim3(fit_odometry_sim3(T_map, T_odom, scale=scale).sim3, scale, R, t)
    # A given scale is used as it is: the rotation still comes from the orientations and the
    # translation maps the mean centre onto the mean odometry centre.
    wrong = fit_odometry_sim3(T_map, T_odom, scale=2.0).sim3
    assert wrong.scale == 2.0
    np.testing.assert_allclose(wrong.R, R, atol=1e-9)
    mu_map, mu_odom = T_map[:, :3, 3].mean(axis=0), T_odom[:, :3, 3].mean(axis=0)
    np.testing.assert_allclose(wrong.t, mu_odom - 2.0 * R @ mu_map, atol=1e-9)


def test_with_scale_keeps_the_cameras_centred_and_the_rotation():
    scale, R, t = known_sim3()
    T_odom = odometry_path(15)
    T_map = to_map(T_odom, scale, R, t)
    fit = fit_odometry_sim3(T_map, T_odom)
    np.testing.assert_allclose(fit.map_centroid, T_map[:, :3, 3].mean(axis=0), atol=1e-12)
    moved = fit.with_scale(2.0 * scale)
    assert moved.scale == 2.0 * scale
    np.testing.assert_allclose(moved.R, R, atol=1e-9)
    # The mean reconstruction centre still lands on the mean odometry centre.
    np.testing.assert_allclose(moved.scale * R @ fit.map_centroid + moved.t,
                               T_odom[:, :3, 3].mean(axis=0), atol=1e-9)


def test_cameras_looking_elsewhere_make_the_fit_inconsistent():
    """Centres that agree with orientations 30 degrees off (a wrong camera mount rotation)."""
    T_odom = odometry_path(12, step=0.2)
    T_map = to_map(T_odom, *known_sim3())
    T_wrong = T_odom.copy()
    T_wrong[:, :3, :3] = T_odom[:, :3, :3] @ rotation((0.0, 1.0, 0.0), 30.0)
    strict = OdometryAligner(AlignmentThresholds(min_frames=5))
    fits = [strict.add(a, b) for a, b in zip(T_map, T_wrong)]
    assert fits == [None] * 12 and strict.waiting_for == 'consistent motion'
    assert strict.last_try.rotation_residual_deg == pytest.approx(30.0, abs=1e-6)
    assert strict.last_try.residual_m == pytest.approx(0.0, abs=1e-9)
    tolerant = OdometryAligner(AlignmentThresholds(min_frames=5, max_rotation_residual_deg=31.0))
    assert [tolerant.add(a, b) for a, b in zip(T_map, T_wrong)][-1] is not None
    assert_sim3(tolerant.fit.sim3, *known_sim3())


def test_gross_outliers_are_excluded_and_do_not_move_the_scale():
    scale, R, t = known_sim3()
    rng = np.random.default_rng(3)
    T_odom = odometry_path(30)
    T_map = to_map(T_odom, scale, R, t)
    noisy = T_odom.copy()
    noisy[:, :3, 3] += rng.normal(0.0, 0.001, (30, 3))
    for i in range(30):
        noisy[i, :3, :3] = rotation(rng.normal(size=3), 0.2) @ noisy[i, :3, :3]
    bad = [4, 17, 25]
    noisy[4, :3, 3] += [1.0, 0.0, 0.0]
    noisy[17, :3, 3] += [0.0, -0.6, 0.8]
    noisy[25, :3, :3] = rotation((0.0, 1.0, 0.0), 90.0) @ noisy[25, :3, :3]
    fit = fit_odometry_sim3(T_map, noisy)
    expected = np.ones(30, dtype=bool)
    expected[bad] = False
    np.testing.assert_array_equal(fit.inliers, expected)
    assert abs(fit.sim3.scale / scale - 1.0) < 0.005
    assert angle_deg(fit.sim3.R.T @ R) < 0.5
    assert fit.residual_m < 0.005 and fit.rotation_residual_deg < 0.5


def test_one_percent_scale_error_in_the_odometry_gives_one_percent_scale():
    scale, R, t = known_sim3()
    T_odom = odometry_path(25)
    T_map = to_map(T_odom, scale, R, t)
    drifted = T_odom.copy()
    start = T_odom[0, :3, 3]
    drifted[:, :3, 3] = start + 1.01 * (T_odom[:, :3, 3] - start)
    fit = fit_odometry_sim3(T_map, drifted)
    assert fit.sim3.scale / scale == pytest.approx(1.01, abs=1e-9)
    np.testing.assert_allclose(fit.sim3.R, R, atol=1e-9)
    assert fit.inliers.all()


def test_standing_still_has_no_baseline():
    scale, R, t = known_sim3()
    T_odom = spin_in_place(12, turn_deg=0.0)
    T_map = to_map(T_odom, scale, R, t)
    # The reconstruction sees the camera move a little (its own noise); odometry does not.
    T_map[:, :3, 3] += np.linspace(0.0, 0.05, 12)[:, None]
    fit = fit_odometry_sim3(T_map, T_odom)
    assert fit.baseline_m < 1e-12
    assert fit.sim3.scale <= 1e-9
    assert fit.rotation_deg < 1e-5


@pytest.mark.parametrize('shape_map, shape_odom', [
    ((5, 4, 4), (6, 4, 4)),
    ((5, 3, 4), (5, 3, 4)),
    ((4, 4), (4, 4)),
    ((1, 4, 4), (1, 4, 4)),
    ((0, 4, 4), (0, 4, 4)),
])
def test_malformed_pose_pairs_raise(shape_map, shape_odom):
    with pytest.raises(ValueError):
        fit_odometry_sim3(np.zeros(shape_map), np.zeros(shape_odom))


# -- OdometryAligner -------------------------------------------------------------------------
def feed(aligner, T_odom, scale=None):
    """Add the pairs of ``T_odom`` (reconstruction side built from the known similarity)."""
    T_map = to_map(T_odom, *known_sim3())
    return [aligner.add(a, b, scale) for a, b in zip(T_map, T_odom)]


def test_no_fit_before_min_frames():
    aligner = OdometryAligner(AlignmentThresholds(min_frames=6, min_baseline=0.01))
    fits = feed(aligner, odometry_path(6, step=0.2))
    assert fits[:5] == [None] * 5
    assert fits[5] is not None and aligner.fit is fits[5] and len(aligner) == 6
    assert aligner.waiting_for == ''
    assert_sim3(fits[5].sim3, *known_sim3())


def test_pure_rotation_and_standing_still_wait_for_baseline():
    for T_odom in (spin_in_place(12, turn_deg=8.0), spin_in_place(12, turn_deg=0.0)):
        aligner = OdometryAligner(AlignmentThresholds(min_frames=5))
        assert feed(aligner, T_odom) == [None] * 12
        assert aligner.waiting_for == 'baseline'
        assert aligner.last_try is not None and aligner.last_try.baseline_m < 1e-9


def test_known_scale_does_not_need_a_baseline():
    scale, R, t = known_sim3()
    aligner = OdometryAligner(AlignmentThresholds(min_frames=5))
    fits = feed(aligner, spin_in_place(6, turn_deg=8.0), scale=scale)
    assert fits[-1] is not None and aligner.waiting_for == ''
    assert_sim3(fits[-1].sim3, scale, R, t)


def test_min_rotation_is_waited_for():
    aligner = OdometryAligner(AlignmentThresholds(min_frames=5, min_rotation_deg=20.0))
    # A straight drive without turning: baseline, but no rotation.
    assert feed(aligner, straight_path(10)) == [None] * 10
    assert aligner.waiting_for == 'rotation'
    aligner = OdometryAligner(AlignmentThresholds(min_frames=5, min_rotation_deg=20.0))
    fits = feed(aligner, straight_path(10, turn_deg=3.0))
    # The camera has turned 3 degrees per frame: 21 degrees at the eighth pair.
    assert fits[:7] == [None] * 7 and aligner.fit is not None
    assert fits[7] is not None and fits[7].rotation_deg == pytest.approx(21.0, abs=1e-6)


def test_accepted_once_the_baseline_is_reached():
    # Collinear centres 1 cm apart: the RMS spread of n of them is 0.01 * sqrt((n^2 - 1) / 12),
    # 0.0779 m for 27 and 0.0808 m for 28.
    aligner = OdometryAligner(AlignmentThresholds(min_frames=5, min_baseline=0.08))
    fits = feed(aligner, straight_path(30, step=0.01 / np.sqrt(5.0)))
    assert fits[:27] == [None] * 27
    assert aligner.last_try is not None
    assert all(f is not None for f in fits[27:])
    assert fits[27].baseline_m == pytest.approx(0.01 * np.sqrt((28 ** 2 - 1) / 12), rel=1e-9)
    assert_sim3(fits[-1].sim3, *known_sim3())


def test_a_rejected_refit_keeps_the_previous_fit():
    scale, R, t = known_sim3()
    aligner = OdometryAligner(AlignmentThresholds(min_frames=5, max_residual=0.05))
    T_odom = odometry_path(12, step=0.2)
    accepted = feed(aligner, T_odom[:10])[-1]
    assert accepted is not None
    # A wrong known scale cannot fit the centres: the new fit is rejected, the old one kept.
    T_map = to_map(T_odom[10:], scale, R, t)
    assert aligner.add(T_map[0], T_odom[10], scale=0.5 * scale) is accepted
    assert aligner.waiting_for == 'consistent motion'
    assert aligner.last_try.sim3.scale == 0.5 * scale
    assert aligner.last_try.residual_m > 0.05
    # A consistent pair is accepted again.
    refit = aligner.add(T_map[1], T_odom[11])
    assert refit is not accepted and aligner.waiting_for == ''
    assert_sim3(refit.sim3, scale, R, t)


def test_standing_still_after_an_accepted_fit_keeps_the_last_accepted_one():
    aligner = OdometryAligner(AlignmentThresholds(min_frames=5, window=8))
    T_odom = odometry_path(8, step=0.2)
    T_odom = np.concatenate([T_odom, np.repeat(T_odom[-1:], 8, axis=0)])
    accepted = []
    for T_map, T in zip(to_map(T_odom, *known_sim3()), T_odom):
        aligner.add(T_map, T)
        if aligner.waiting_for == '':
            accepted.append(aligner.last_try)
    # The window ends up holding only the still frames: no baseline, the last fit stays.
    assert accepted and aligner.waiting_for == 'baseline' and len(aligner) == 8
    assert aligner.last_try is not accepted[-1]
    assert aligner.fit is accepted[-1]
    assert_sim3(aligner.fit.sim3, *known_sim3())


def test_clear_forgets_pairs_and_fit():
    aligner = OdometryAligner(AlignmentThresholds(min_frames=5))
    feed(aligner, odometry_path(8, step=0.2))
    assert aligner.fit is not None
    aligner.clear()
    assert len(aligner) == 0 and aligner.fit is None and aligner.last_try is None
    assert aligner.waiting_for == 'frames'
    assert feed(aligner, odometry_path(4, step=0.2)) == [None] * 4
