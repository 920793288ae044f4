"""The live TF tree: chains of moving and static edges, directions, states, malformed trees."""

import numpy as np
import pytest
from test_odometry_alignment import pose, rotation

from spann3r_ros.pipeline.tf_lookup import LiveTf, lookup_fn

Z = (0.0, 0.0, 1.0)
#: odom -> base_link at t = 0 and t = 1: driving 2 m along x while turning 40 degrees.
ODOM_BASE_0 = pose(rotation(Z, 10.0), [1.0, 0.5, 0.0])
ODOM_BASE_1 = pose(rotation(Z, 50.0), [3.0, 0.5, 0.0])
#: ... and its hand-built midpoint.
ODOM_BASE_MID = pose(rotation(Z, 30.0), [2.0, 0.5, 0.0])
BASE_LINK = pose(rotation((0.0, 1.0, 0.0), 15.0), [0.3, 0.0, 0.8])
LINK_OPTICAL = pose(np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]),
                    [0.0, 0.02, 0.0])
BASE_LIDAR = pose(rotation(Z, -90.0), [0.1, 0.0, 1.2])


def robot_tree(timeout=2.0):
    tf = LiveTf(timeout=timeout, tolerance=0.05)
    assert tf.add('odom', 'base_link', 0.0, ODOM_BASE_0, static=False)
    assert tf.add('odom', 'base_link', 1.0, ODOM_BASE_1, static=False)
    assert tf.add('base_link', 'camera_link', 0.0, BASE_LINK, static=True)
    assert tf.add('camera_link', 'camera_optical', 0.0, LINK_OPTICAL, static=True)
    assert tf.add('base_link', 'lidar', 0.0, BASE_LIDAR, static=True)
    return tf


def test_a_chain_is_the_product_of_its_edges():
    found = robot_tree().lookup('odom', 'camera_optical', 0.5)
    assert found.state == 'ok' and found.age == pytest.approx(-0.5)
    np.testing.assert_allclose(found.T, ODOM_BASE_MID @ BASE_LINK @ LINK_OPTICAL, atol=1e-9)
    exact = robot_tree().lookup('odom', 'camera_optical', 1.0)
    np.testing.assert_allclose(exact.T, ODOM_BASE_1 @ BASE_LINK @ LINK_OPTICAL, atol=1e-12)


def test_the_inverse_direction_and_a_sibling_branch():
    tf = robot_tree()
    back = tf.lookup('camera_optical', 'odom', 0.5)
    np.testing.assert_allclose(back.T, np.linalg.inv(ODOM_BASE_MID @ BASE_LINK @ LINK_OPTICAL),
                               atol=1e-9)
    # Only static edges below the common ancestor base_link: no stamp needed.
    sibling = tf.lookup('camera_optical', 'lidar', 123.0)
    assert sibling.state == 'ok' and sibling.age == 0.0
    np.testing.assert_allclose(sibling.T, np.linalg.inv(BASE_LINK @ LINK_OPTICAL) @ BASE_LIDAR,
                               atol=1e-12)
    assert tf.lookup('lidar', 'lidar', 0.5).state == 'ok'
    np.testing.assert_array_equal(tf.lookup('lidar', 'lidar', 0.5).T, np.eye(4))


def test_unconnected_frames_are_waiting():
    tf = robot_tree()
    tf.add('map', 'marker', 0.0, np.eye(4), static=True)
    for target, source in (('odom', 'marker'), ('odom', 'unknown'), ('nothing', 'camera_link')):
        found = tf.lookup(target, source, 0.5)
        assert found.state == 'waiting' and found.T is None


def test_a_stale_moving_edge_makes_the_chain_stale():
    tf = robot_tree(timeout=0.5)
    stale = tf.lookup('odom', 'camera_optical', 1.7)
    assert stale.state == 'stale' and stale.T is None and stale.age == pytest.approx(0.7)
    assert tf.lookup('odom', 'camera_optical', 1.3).state == 'waiting'
    assert tf.lookup('camera_optical', 'odom', 1.7).state == 'stale'
    # The two odometry samples are further apart than the timeout: no interpolation.
    assert tf.lookup('odom', 'camera_optical', 0.5).state == 'gap'


def test_a_second_parent_is_refused_and_counted():
    tf = robot_tree()
    assert not tf.add('map', 'base_link', 0.5, np.eye(4), static=False)
    assert not tf.add('map', 'camera_link', 0.0, np.eye(4), static=True)
    assert tf.reparented == 2
    np.testing.assert_allclose(tf.lookup('odom', 'camera_optical', 0.5).T,
                               ODOM_BASE_MID @ BASE_LINK @ LINK_OPTICAL, atol=1e-9)
    assert tf.lookup('map', 'base_link', 0.5).state == 'waiting'


def test_a_static_edge_is_replaced_by_a_newer_one():
    tf = robot_tree()
    moved = pose(np.eye(3), [0.0, 0.0, 2.0])
    assert tf.add('base_link', 'camera_link', 5.0, moved, static=True)
    np.testing.assert_allclose(tf.lookup('base_link', 'camera_optical', 0.0).T,
                               moved @ LINK_OPTICAL, atol=1e-12)


def test_leading_slashes_are_ignored():
    tf = LiveTf()
    tf.add('/odom', '/base_link', 0.0, ODOM_BASE_0, static=False)
    tf.add('base_link', '/camera_link', 0.0, BASE_LINK, static=True)
    for target, source in (('odom', 'camera_link'), ('/odom', '/camera_link')):
        np.testing.assert_allclose(tf.lookup(target, source, 0.0).T, ODOM_BASE_0 @ BASE_LINK,
                                   atol=1e-12)


@pytest.mark.parametrize('parent, child', [('', 'a'), ('a', ''), ('a', 'a'), ('/a', 'a')])
def test_invalid_frames_raise(parent, child):
    with pytest.raises(ValueError):
        LiveTf().add(parent, child, 0.0, np.eye(4), static=True)


def test_backwards_samples_of_moving_edges_are_counted():
    tf = robot_tree()
    assert not tf.add('odom', 'base_link', 0.5, np.eye(4), static=False)
    assert tf.backwards == 1


def test_lookup_fn_answers_for_its_target():
    lookup = lookup_fn(robot_tree(), 'odom')
    np.testing.assert_allclose(lookup(0.5, 'camera_optical').T,
                               ODOM_BASE_MID @ BASE_LINK @ LINK_OPTICAL, atol=1e-9)
    assert lookup(0.5, 'elsewhere').state == 'waiting'
