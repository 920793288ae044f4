"""The synthetic robot's odometry and depth sensor: noise and drift as documented."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from spann3r_ros.synthetic.odometry import (
    base_poses,
    odometry_poses,
    OdometryNoise,
    optical_poses,
    path_lengths,
    pose_variances,
    T_BASE_CAMERA_LINK,
)
from spann3r_ros.synthetic.sensor_noise import degrade_depth


def _drive(n=1000, step=0.1):
    """A robot driving forward ``n * step`` metres on a gently winding, slightly bumpy road."""
    s = np.arange(n) * step
    yaw = 0.2 * np.sin(s / 15.0)
    T = np.tile(np.eye(4), (n, 1, 1))
    T[:, :3, :3] = Rotation.from_euler('zyx', np.stack([yaw, 0.02 * np.sin(s), 0.01 * np.cos(s)],
                                                       axis=1)).as_matrix()
    heading = np.stack([np.cos(yaw), np.sin(yaw)], axis=1)
    T[:, :2, 3] = np.concatenate([[[0.0, 0.0]], np.cumsum(heading[:-1] * step, axis=0)])
    T[:, 2, 3] = 0.02 * np.sin(s / 3.0)
    return T


def _camera_path(scene, seconds, n):
    return base_poses(np.stack([scene.pose_at(t) for t in np.linspace(0, seconds, n)]))


def test_no_noise_and_no_drift_is_the_truth(tiny_scene):
    T = _camera_path(tiny_scene, 30.0, 300)
    assert np.abs(odometry_poses(T, OdometryNoise()) - T).max() < 1e-9
    # The integration itself is exact: a vanishing drift still reproduces the truth.
    assert np.abs(odometry_poses(T, OdometryNoise(drift=1e-15)) - T).max() < 1e-9
    assert np.abs(odometry_poses(_drive(), OdometryNoise(drift=1e-15)) - _drive()).max() < 1e-9


def test_one_percent_drift_is_about_one_percent_of_the_path():
    T = _drive()
    L = path_lengths(T)[-1]
    assert L == pytest.approx(99.9, rel=0.01)
    odo = odometry_poses(T, OdometryNoise(drift=0.01))
    assert np.array_equal(odo[0], T[0])  # odom coincides with the world at the first sample
    err = np.linalg.norm(odo[:, :3, 3] - T[:, :3, 3], axis=1)
    assert 0.005 * L <= err[-1] <= 0.02 * L, err[-1] / L
    assert np.all(np.diff(err[::50]) > 0)  # drift accumulates
    # The heading bias: 0.01 * drift rad per metre.
    yaw_err = Rotation.from_matrix(np.swapaxes(T[-1, :3, :3], 0, 1) @ odo[-1, :3, :3])
    assert yaw_err.as_rotvec()[2] == pytest.approx(1e-4 * L, rel=0.05)
    # Twice the drift, about twice the error; the white noise does not accumulate on top.
    err2 = np.linalg.norm(odometry_poses(T, OdometryNoise(drift=0.02))[-1, :3, 3] - T[-1, :3, 3])
    assert err2 == pytest.approx(2 * err[-1], rel=0.1)
    noisy = odometry_poses(T, OdometryNoise(drift=0.01, noise_m=0.01))
    assert np.abs(noisy[:, :3, 3] - odo[:, :3, 3]).max() < 0.06


def test_white_noise_has_the_requested_spread_and_is_not_integrated(tiny_scene):
    T = _camera_path(tiny_scene, 200.0, 20000)
    odo = odometry_poses(T, OdometryNoise(noise_m=0.05, noise_rad=0.01, seed=7))
    d_pos = odo[:, :3, 3] - T[:, :3, 3]
    d_rot = Rotation.from_matrix(np.swapaxes(T[:, :3, :3], 1, 2) @ odo[:, :3, :3]).as_rotvec()
    for residual, sigma in ((d_pos, 0.05), (d_rot, 0.01)):
        assert np.all(np.abs(residual.std(axis=0) / sigma - 1) < 0.2)
        assert np.all(np.abs(residual.mean(axis=0)) < 0.1 * sigma)
        # White: the second half spreads like the first, neighbours are uncorrelated.
        half = len(residual) // 2
        assert residual[half:].std() == pytest.approx(residual[:half].std(), rel=0.1)
        assert abs(np.corrcoef(residual[:-1, 0], residual[1:, 0])[0, 1]) < 0.05
    assert np.allclose(np.swapaxes(odo[:, :3, :3], 1, 2) @ odo[:, :3, :3], np.eye(3),
                       atol=1e-9)


def test_the_same_seed_gives_the_same_odometry(tiny_scene):
    T = _camera_path(tiny_scene, 10.0, 100)
    noise = OdometryNoise(noise_m=0.02, noise_rad=0.01, drift=0.05, seed=3)
    assert np.array_equal(odometry_poses(T, noise), odometry_poses(T, noise))
    other = odometry_poses(T, OdometryNoise(noise_m=0.02, noise_rad=0.01, drift=0.05, seed=4))
    assert not np.allclose(other, odometry_poses(T, noise))


def test_the_mount_and_the_base_poses():
    # Forward, left, up; the camera looks forward and 5 degrees down.
    assert np.allclose(T_BASE_CAMERA_LINK[:3, 3], [0.2, 0.05, 0.35])
    z_optical = optical_poses(np.eye(4)[None])[0, :3, 2]
    assert np.allclose(z_optical, [np.cos(np.deg2rad(5)), 0.0, -np.sin(np.deg2rad(5))])
    T = _drive(20)
    assert np.allclose(base_poses(optical_poses(T)), T, atol=1e-12)
    with pytest.raises(ValueError, match=r'\[N, 4, 4\]'):
        base_poses(np.eye(4))


def test_pose_variances_grow_with_the_distance():
    T = _drive(100)
    var = pose_variances(T, OdometryNoise(noise_m=0.1, noise_rad=0.02, drift=0.01))
    assert var.shape == (100, 6)
    assert np.allclose(var[0], [0.01] * 3 + [0.0004] * 3)
    assert np.all(np.diff(var[:, 0]) > 0) and np.all(np.diff(var[:, 5]) > 0)
    assert np.allclose(var[:, 3:5], 0.0004)
    assert np.array_equal(pose_variances(T, OdometryNoise()), np.zeros((100, 6)))


@pytest.mark.parametrize('kwargs', [{'noise_m': -0.1}, {'noise_rad': float('nan')},
                                    {'drift': 0.5}, {'drift': -0.01}])
def test_bad_noise_is_refused(kwargs):
    with pytest.raises(ValueError):
        OdometryNoise(**kwargs)


def test_depth_noise_and_invalid_pixels_have_the_requested_statistics():
    depth = np.random.default_rng(0).uniform(0.5, 5.0, (240, 320)).astype(np.float32)
    out = degrade_depth(depth, 0.02, 0.1, seed=1, index=5)
    assert out.dtype == np.float32 and out.shape == depth.shape
    valid = out > 0
    assert np.mean(~valid) == pytest.approx(0.1, abs=0.005)
    rel = out[valid] / depth[valid] - 1
    assert rel.std() == pytest.approx(0.02, rel=0.05) and abs(rel.mean()) < 1e-3
    assert np.array_equal(out, degrade_depth(depth, 0.02, 0.1, seed=1, index=5))
    assert not np.array_equal(out, degrade_depth(depth, 0.02, 0.1, seed=1, index=6))
    assert not np.array_equal(out, degrade_depth(depth, 0.02, 0.1, seed=2, index=5))
    # No degradation is the depth itself; invalid pixels stay invalid.
    assert np.array_equal(degrade_depth(depth, 0.0, 0.0, 1, 5), depth)
    holes = depth.copy()
    holes[:10] = 0
    assert np.all(degrade_depth(holes, 0.05, 0.0, 1, 5)[:10] == 0)
    for relative, invalid in ((-0.1, 0.0), (1.0, 0.0), (0.0, 1.5)):
        with pytest.raises(ValueError):
            degrade_depth(depth, relative, invalid, 1, 5)
