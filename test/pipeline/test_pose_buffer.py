"""Stamped odometry poses: interpolation, the lookup states, time going backwards, restarts."""

import threading

import numpy as np
import pytest
from test_odometry_alignment import angle_deg, pose, rotation

from spann3r_ros.pipeline.pose_buffer import interpolate, LOOKUP_STATES, PoseBuffer

R0 = rotation((1.0, 2.0, -0.5), 40.0)
AXIS = (0.2, -0.4, 1.0)
#: Two samples one second apart: the second is the first turned 60 degrees about AXIS.
T0 = pose(R0, [1.0, -2.0, 0.5])
T1 = pose(rotation(AXIS, 60.0) @ R0, [3.0, 0.0, -1.5])


def two_samples(**kwargs):
    buf = PoseBuffer(**{'timeout': 2.0, 'tolerance': 0.05, **kwargs})
    assert buf.add(10.0, T0) and buf.add(11.0, T1)
    return buf


def test_midpoint_is_linear_in_translation_and_half_the_rotation():
    found = two_samples().lookup(10.5)
    assert found.state == 'ok' and found.state in LOOKUP_STATES
    assert found.age == pytest.approx(-0.5)
    np.testing.assert_allclose(found.T[:3, 3], [2.0, -1.0, -0.5], atol=1e-12)
    np.testing.assert_allclose(found.T[:3, :3], rotation(AXIS, 30.0) @ R0, atol=1e-9)
    assert angle_deg(found.T[:3, :3] @ R0.T) == pytest.approx(30.0, abs=1e-6)
    np.testing.assert_array_equal(found.T[3], [0.0, 0.0, 0.0, 1.0])


def test_quarter_point_and_the_function():
    np.testing.assert_allclose(interpolate(0.0, T0, 4.0, T1, 1.0)[:3, :3],
                               rotation(AXIS, 15.0) @ R0, atol=1e-9)
    np.testing.assert_allclose(two_samples().lookup(10.25).T[:3, 3], [1.5, -1.5, 0.0],
                               atol=1e-12)
    # Degenerate interval: the later sample.
    np.testing.assert_array_equal(interpolate(1.0, T0, 1.0, T1, 1.0), T1)


@pytest.mark.parametrize('deg', [0.0, 1e-7, 0.5, 120.0, 179.99999, 180.0 - 1e-4])
def test_interpolation_follows_the_arc_at_every_angle(deg):
    """Halfway along any rotation, down to none and up to nearly half a turn."""
    T_end = pose(rotation(AXIS, deg) @ R0, [0.0, 0.0, 0.0])
    for w in (0.25, 0.5, 0.9):
        R = interpolate(0.0, T0, 1.0, T_end, w)[:3, :3]
        np.testing.assert_allclose(R, rotation(AXIS, w * deg) @ R0, atol=1e-6)
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)


def test_exact_samples_are_returned_as_they_are():
    buf = two_samples()
    np.testing.assert_array_equal(buf.lookup(10.0).T, T0)
    np.testing.assert_array_equal(buf.lookup(11.0).T, T1)
    assert buf.lookup(11.0).age == 0.0 and buf.newest_stamp == 11.0
    # The answer is a copy.
    buf.lookup(11.0).T[0, 3] = 99.0
    np.testing.assert_array_equal(buf.lookup(11.0).T, T1)


def test_tolerance_beyond_the_newest_and_the_oldest():
    buf = two_samples()
    after = buf.lookup(11.04)
    assert after.state == 'ok' and after.age == pytest.approx(0.04)
    np.testing.assert_array_equal(after.T, T1)
    np.testing.assert_array_equal(buf.lookup(9.96).T, T0)
    assert buf.lookup(11.06).state == 'waiting'
    assert buf.lookup(9.94).state == 'gap'


def test_stale_past_the_timeout_and_waiting_within_it():
    buf = two_samples(timeout=0.5)
    waiting = buf.lookup(11.4)
    assert waiting.state == 'waiting' and waiting.T is None
    assert waiting.age == pytest.approx(0.4)
    stale = buf.lookup(11.6)
    assert stale.state == 'stale' and stale.T is None and stale.age == pytest.approx(0.6)


def test_an_empty_buffer_is_waiting():
    buf = PoseBuffer()
    found = buf.lookup(3.0)
    assert found.state == 'waiting' and found.T is None and np.isnan(found.age)
    assert buf.newest_stamp is None


def test_gap_between_samples_further_apart_than_the_timeout():
    buf = PoseBuffer(timeout=0.5)
    for stamp in (0.0, 0.2, 2.0, 2.3):
        buf.add(stamp, pose(np.eye(3), [stamp, 0.0, 0.0]))
    assert buf.lookup(1.0).state == 'gap' and buf.lookup(1.0).T is None
    assert buf.lookup(0.1).T[0, 3] == pytest.approx(0.1)
    assert buf.lookup(2.15).T[0, 3] == pytest.approx(2.15)
    assert buf.lookup(-1.0).state == 'gap'


def test_backwards_samples_are_refused_and_counted():
    buf = two_samples()
    assert not buf.add(10.5, np.eye(4))
    assert not buf.add(11.0, np.eye(4))
    assert buf.backwards == 2 and buf.added == 2 and buf.restarts == 0
    np.testing.assert_allclose(buf.lookup(10.5).T[:3, 3], [2.0, -1.0, -0.5], atol=1e-12)
    np.testing.assert_array_equal(buf.lookup(11.0).T, T1)


def test_a_large_jump_back_restarts_the_buffer():
    buf = PoseBuffer(timeout=0.5, restart_after=5.0)
    buf.add(100.0, T0)
    buf.add(101.0, T1)
    assert buf.add(20.0, T0)
    assert buf.restarts == 1 and buf.backwards == 0 and buf.newest_stamp == 20.0
    np.testing.assert_array_equal(buf.lookup(20.0).T, T0)
    # The old samples are gone: their stamps now lie far past the newest one.
    assert buf.lookup(100.5).state == 'stale'
    assert buf.lookup(19.0).state == 'gap'


@pytest.mark.parametrize('stamp, T', [
    (float('nan'), np.eye(4)),
    (float('inf'), np.eye(4)),
    (1.0, np.full((4, 4), np.nan)),
    (1.0, np.eye(3)),
])
def test_non_finite_or_malformed_samples_raise(stamp, T):
    buf = PoseBuffer()
    with pytest.raises(ValueError):
        buf.add(stamp, T)
    assert buf.added == 0 and buf.newest_stamp is None


def test_the_oldest_samples_are_dropped_at_max_samples():
    buf = PoseBuffer(timeout=2.0, tolerance=0.01, max_samples=5)
    for i in range(10):
        buf.add(float(i), pose(np.eye(3), [float(i), 0.0, 0.0]))
    assert buf.added == 10
    assert buf.lookup(4.5).state == 'gap'
    assert buf.lookup(5.0).T[0, 3] == 5.0
    assert buf.lookup(8.5).T[0, 3] == pytest.approx(8.5)


def test_concurrent_adds_and_lookups():
    buf = PoseBuffer(timeout=1.0, max_samples=100)
    errors, states = [], set()

    def writer():
        try:
            for i in range(3000):
                buf.add(i * 0.01, pose(np.eye(3), [i * 0.01, 0.0, 0.0]))
        except Exception as exc:  # noqa: BLE001 - any exception fails the test below
            errors.append(exc)

    def reader():
        try:
            for i in range(3000):
                found = buf.lookup(i * 0.01)
                states.add(found.state)
                if found.state == 'ok':
                    assert found.T[0, 3] == pytest.approx(i * 0.01, abs=0.051)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert not errors and not any(thread.is_alive() for thread in threads)
    assert buf.added == 3000 and buf.backwards == 0
    assert states <= set(LOOKUP_STATES)
