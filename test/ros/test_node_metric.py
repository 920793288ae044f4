"""Metric outputs over real rclpy: odometry from a topic or TF, scale from depth, and faults.

Each test first runs the node with ``metric_source: none`` over a few frames to get its poses and
depths in its own frame. The same frames then go through a node with a metric source whose
odometry (or depth) is a known similarity of those poses (or a known multiple of those depths):
the node must find that similarity and publish every output in the odometry frame, in metres.
The node is deterministic on the CPU, so both runs see the same reconstruction.
"""

import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseStamped, TransformStamped
from nav_msgs.msg import Odometry
from node_harness import Harness, image_msg
import numpy as np
import pytest
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import CameraInfo, Image
from std_srvs.srv import Trigger
from test_node import make_node
from tf2_msgs.msg import TFMessage

from spann3r_ros.node.player import cloud_arrays, float_image

SIZE = 112
FRAMES = 10
#: The known map -> odom similarity the odometry is made from.
SCALE = 2.5
R_TRUE = Rotation.from_rotvec([0.1, -0.2, 0.3]).as_matrix()
T_TRUE = np.array([1.0, -2.0, 0.5])
#: base_link -> camera optical frame of the robot: 0.1 m forward, 0.3 m up, optical axes.
MOUNT = [0.1, 0.0, 0.3, -0.5, 0.5, -0.5, 0.5]
METRIC = {'image_size': SIZE, 'alignment_min_frames': 4, 'alignment_min_baseline': 0.0,
          'diagnostics_rate': 20.0}


def frames():
    """Square frames (the model crop is the identity) of a pattern moving right and down."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    return [np.stack([(xx * 3 + 7 * i) % 256, (yy * 2 + 3 * i) % 256, (xx + yy) % 256],
                     -1).astype(np.uint8) for i in range(FRAMES)]


def _stamp(header):
    return header.stamp.sec + header.stamp.nanosec * 1e-9


def _pose(msg):
    T = np.eye(4)
    o = msg.pose.orientation
    T[:3, :3] = Rotation.from_quat([o.x, o.y, o.z, o.w]).as_matrix()
    T[:3, 3] = [msg.pose.position.x, msg.pose.position.y, msg.pose.position.z]
    return T


def _matrix(xyzq):
    T = np.eye(4)
    T[:3, :3] = Rotation.from_quat(xyzq[3:]).as_matrix()
    T[:3, 3] = xyzq[:3]
    return T


def _true_odom(T_map_cam):
    T = np.eye(4)
    T[:3, :3] = R_TRUE @ T_map_cam[:3, :3]
    T[:3, 3] = SCALE * R_TRUE @ T_map_cam[:3, 3] + T_TRUE
    return T


def _set_pose(pose, T):
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in T[:3, 3])
    q = Rotation.from_matrix(T[:3, :3]).as_quat()
    o = pose.orientation
    o.x, o.y, o.z, o.w = (float(v) for v in q)


def _diag(live):
    live.clear()
    live.wait_for(lambda: len(live.msgs('/diagnostics')) >= 2, 10, 'fresh diagnostics')
    return {kv.key: kv.value for kv in live.msgs('/diagnostics')[-1].status[0].values}


@pytest.fixture(scope='module')
def reference(ros, checkpoint, tmp_path_factory):
    """Poses and depths the node publishes in its own frame, by frame index."""
    live = Harness(make_node(checkpoint, tmp_path_factory.mktemp('ref'), **METRIC))
    try:
        stamps = live.feed(frames(), start_stamp=100.0)
        live.wait_for(lambda: len(live.msgs('pose')) == FRAMES - 1, 10, 'reference poses')
        index = {s: i for i, s in enumerate(stamps)}
        poses = {index[round(_stamp(m.header), 6)]: _pose(m) for m in live.msgs('pose')}
        depths = {index[round(_stamp(m.header), 6)]: float_image(m) for m in live.msgs('depth')}
    finally:
        live.close()
    centres = np.stack([T[:3, 3] for T in poses.values()])
    # The check below is meaningless if the reference camera did not move.
    assert np.linalg.norm(centres - centres.mean(axis=0), axis=1).max() > 1e-3
    return poses, depths


def _feed(live, stamps_from=100.0):
    return live.feed(frames(), start_stamp=stamps_from)


def _outputs(live, topic):
    return {round(_stamp(m.header), 6): m for m in live.msgs(topic)}


class Publishers:
    """Odometry, TF and depth publishers on the harness's probe node."""

    def __init__(self, live):
        probe = live.probe
        self.odom = probe.create_publisher(Odometry, 'odom', 100)
        self.tf = probe.create_publisher(TFMessage, '/tf', 100)
        self.tf_static = probe.create_publisher(TFMessage, '/tf_static', QoSProfile(
            depth=10, reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL))
        self.depth = probe.create_publisher(Image, 'aligned_depth/image_raw', 10)
        self.depth_info = probe.create_publisher(CameraInfo, 'aligned_depth/camera_info', 10)
        self.tf_listened = []
        probe.create_subscription(TFMessage, '/tf', self.tf_listened.append, 100)

    def odometry(self, stamp, T_odom_base, frame_id='odom'):
        msg = Odometry()
        msg.header.frame_id, msg.child_frame_id = frame_id, 'base_link'
        msg.header.stamp = image_msg(np.zeros((1, 1, 3), np.uint8), stamp).header.stamp
        _set_pose(msg.pose.pose, T_odom_base)
        self.odom.publish(msg)


def _transform(stamp, parent, child, T):
    t = TransformStamped()
    t.header.frame_id, t.child_frame_id = parent, child
    t.header.stamp = image_msg(np.zeros((1, 1, 3), np.uint8), stamp).header.stamp
    t.transform.translation.x, t.transform.translation.y, t.transform.translation.z = (
        float(v) for v in T[:3, 3])
    q = Rotation.from_matrix(T[:3, :3]).as_quat()
    r = t.transform.rotation
    r.x, r.y, r.z, r.w = (float(v) for v in q)
    return t


def _check_aligned(live, poses, stamps, frame='odom'):
    """Every published pose is the known similarity of the reference pose; nothing before."""
    published = _outputs(live, 'pose')
    points = _outputs(live, 'points')
    assert published, 'no pose was published'
    assert {m.header.frame_id for m in published.values()} == {frame}
    assert {m.header.frame_id for m in points.values()} == {frame}
    for i, stamp in enumerate(stamps):
        msg = published.get(round(stamp, 6))
        if msg is None:
            continue
        np.testing.assert_allclose(_pose(msg)[:3, 3], _true_odom(poses[i])[:3, 3], atol=2e-4)
        np.testing.assert_allclose(_pose(msg)[:3, :3], _true_odom(poses[i])[:3, :3],
                                   atol=2e-4)
    # The first outputs precede the alignment (min_frames): no pose, no points for them.
    assert round(stamps[0], 6) not in published and round(stamps[0], 6) not in points
    assert len(_outputs(live, 'confidence')) == FRAMES - 1
    return published


def test_odometry_topic_aligns_every_output_to_the_odometry_frame(ros, checkpoint, reference,
                                                                    tmp_path):
    poses, _ = reference
    live = Harness(make_node(checkpoint, tmp_path, metric_source='odometry',
                             odometry_source='odometry_topic', base_to_camera=MOUNT, **METRIC))
    try:
        pubs = Publishers(live)
        live.wait_for(lambda: pubs.odom.get_subscription_count() > 0, 10, 'odometry match')
        T_base_cam = _matrix(MOUNT)
        stamps = [200.0 + 0.1 * i for i in range(FRAMES)]
        for i, stamp in enumerate(stamps[:-1]):
            pubs.odometry(stamp, _true_odom(poses[i]) @ np.linalg.inv(T_base_cam))
        pubs.odometry(stamps[-1] + 0.05, _true_odom(poses[FRAMES - 2]) @ np.linalg.inv(
            T_base_cam))
        live.wait_for(lambda: live.node._pose_buffer.added == FRAMES, 10, 'odometry received')
        _feed(live, 200.0)
        live.wait_for(lambda: len(_outputs(live, 'confidence')) == FRAMES - 1, 10, 'outputs')
        published = _check_aligned(live, poses, stamps)
        assert len(published) == FRAMES - 1 - 3  # aligned from the 4th frame with odometry
        # The map and the path are in the odometry frame too.
        live.wait_for(lambda: live.msgs('map'), 10, 'map')
        assert live.msgs('map')[-1].header.frame_id == 'odom'
        assert len(cloud_arrays(live.msgs('map')[-1])[0]) > 0
        live.wait_for(lambda: live.msgs('path'), 10, 'path')
        path = live.msgs('path')[-1]
        assert path.header.frame_id == 'odom' and {p.header.frame_id for p in path.poses} == \
            {'odom'}
        np.testing.assert_allclose(_pose(path.poses[0])[:3, 3],
                                   _true_odom(poses[0])[:3, 3], atol=2e-4)
        # TF: odom -> the node's camera frame, equal to the published pose.
        broadcast = [t for m in pubs.tf_listened for t in m.transforms
                     if t.child_frame_id == 'spann3r_camera_optical']
        assert broadcast and {t.header.frame_id for t in broadcast} == {'odom'}
        last = broadcast[-1]
        pose = published[round(_stamp(last.header), 6)]
        assert last.transform.translation.x == pytest.approx(pose.pose.position.x)
        values = _diag(live)
        assert values['metric_state'] == 'aligned' and values['metric_frame'] == 'odom'
        assert float(values['metric_scale']) == pytest.approx(SCALE, rel=1e-4)
        assert float(values['metric_residual_m']) < 1e-3
    finally:
        live.close()


def test_tf_odometry_aligns_through_the_tf_tree(ros, checkpoint, reference, tmp_path):
    poses, _ = reference
    live = Harness(make_node(checkpoint, tmp_path, metric_source='odometry',
                             odometry_source='tf', **METRIC))
    try:
        pubs = Publishers(live)
        live.wait_for(lambda: pubs.tf.get_subscription_count() > 0 and
                      pubs.tf_static.get_subscription_count() > 0, 10, 'TF match')
        T_base_link = _matrix([0.2, 0.05, 0.35, 0.0, 0.04, 0.0, 0.999])
        T_link_cam = _matrix([0.0, 0.0, 0.0, -0.5, 0.5, -0.5, 0.5])
        pubs.tf_static.publish(TFMessage(transforms=[
            _transform(0.0, 'base_link', 'camera_link', T_base_link),
            _transform(0.0, 'camera_link', 'cam', T_link_cam)]))
        stamps = [300.0 + 0.1 * i for i in range(FRAMES)]
        T_cam_base = np.linalg.inv(T_base_link @ T_link_cam)
        for i, stamp in enumerate(stamps[:-1]):
            pubs.tf.publish(TFMessage(transforms=[
                _transform(stamp, 'odom', 'base_link', _true_odom(poses[i]) @ T_cam_base)]))
        live.wait_for(lambda: live.node._live_tf.lookup('odom', 'cam', stamps[-2]).state ==
                      'ok', 10, 'TF received')
        _feed(live, 300.0)
        live.wait_for(lambda: len(_outputs(live, 'confidence')) == FRAMES - 1, 10, 'outputs')
        _check_aligned(live, poses, stamps)
        assert _diag(live)['metric_state'] == 'aligned'
    finally:
        live.close()


def test_missing_then_stale_tf_is_stated_and_nothing_is_mislabelled(ros, checkpoint, reference,
                                                                   tmp_path):
    """TF without the odometry edge, then TF for six frames that stops: waiting, aligned, lost."""
    poses, _ = reference
    live = Harness(make_node(checkpoint, tmp_path, metric_source='odometry',
                             odometry_source='tf', odometry_timeout=0.15, **METRIC))
    try:
        pubs = Publishers(live)
        live.wait_for(lambda: pubs.tf.get_subscription_count() > 0 and
                      pubs.tf_static.get_subscription_count() > 0, 10, 'TF match')
        T_base_cam = _matrix(MOUNT)
        pubs.tf_static.publish(TFMessage(transforms=[
            _transform(0.0, 'base_link', 'cam', T_base_cam)]))
        live.wait_for(lambda: 'cam' in live.node._metric_inputs.tf_frames, 10, 'static TF')
        # No odom -> base_link yet: the first frames wait for odometry, nothing metric goes out.
        live.feed(frames()[:3], start_stamp=400.0)
        live.wait_for(lambda: len(_outputs(live, 'confidence')) == 2, 10, 'first outputs')
        assert _outputs(live, 'points') == {} and _outputs(live, 'pose') == {}
        waiting = _diag(live)
        assert waiting['metric_state'] == 'waiting_for_odometry'
        assert int(waiting['metric_fault_odometry_waiting']) >= 2
        assert live.call(Trigger, '/spann3r_node/reset', Trigger.Request()).success
        stamps = [500.0 + 0.1 * i for i in range(FRAMES)]
        for i in range(6):
            pubs.tf.publish(TFMessage(transforms=[
                _transform(stamps[i], 'odom', 'base_link',
                           _true_odom(poses[i]) @ np.linalg.inv(T_base_cam))]))
        live.wait_for(lambda: live.node._live_tf.lookup('odom', 'cam', stamps[5]).state ==
                      'ok', 10, 'TF received')
        _feed(live, 500.0)
        live.wait_for(lambda: round(stamps[8], 6) in _outputs(live, 'points'), 10, 'points')
        points = _outputs(live, 'points')
        values = _diag(live)
        assert values['metric_state'] == 'lost'
        assert int(values['metric_fault_odometry_stale']) >= 2
        # Aligned on the frames with TF; after the TF stopped the alignment is held and said
        # so: every point message is in odom, the later frames too.
        assert {m.header.frame_id for m in points.values()} == {'odom'}
        assert round(stamps[8], 6) in points and round(stamps[0], 6) not in points
        status = live.msgs('/diagnostics')[-1].status[0]
        assert status.level == DiagnosticStatus.WARN and 'metric lost' in status.message
        assert live.node.worker.alive and live.node.worker.error is None
    finally:
        live.close()


def test_depth_gives_metric_scale_in_the_first_camera_frame(ros, checkpoint, reference,
                                                             tmp_path):
    poses, depths = reference
    k = 1.7
    live = Harness(make_node(checkpoint, tmp_path, metric_source='depth', depth_min=1e-6,
                             depth_max=1000.0, **METRIC))
    try:
        pubs = Publishers(live)
        live.wait_for(lambda: pubs.depth.get_subscription_count() > 0, 10, 'depth match')
        stamps = [400.0 + 0.1 * i for i in range(FRAMES)]
        for i, stamp in enumerate(stamps[:-1]):
            sensor = np.nan_to_num(k * depths[i], nan=0.0).astype(np.float32)
            msg = Image(height=SIZE, width=SIZE, encoding='32FC1', step=SIZE * 4,
                        data=sensor.tobytes())
            msg.header = image_msg(sensor, stamp).header
            pubs.depth.publish(msg)
            # Sensor-data QoS keeps few messages: one at a time, as a camera sends them.
            live.wait_for(lambda: live.node._depth_buffer.at(stamp) is not None, 10,
                          f'depth {i} received ({dict(live.node._metric_faults)})')
        _feed(live, 400.0)
        live.wait_for(lambda: len(_outputs(live, 'confidence')) == FRAMES - 1, 10, 'outputs')
        # Frame 0's depth image left the buffer before its output: depth from frame 1 on.
        live.wait_for(lambda: len(_outputs(live, 'depth')) == FRAMES - 2, 10, 'depth out')
        published = _outputs(live, 'depth')
        poses_out = _outputs(live, 'pose')
        values = _diag(live)
        assert values['metric_state'] == 'aligned' and values['metric_frame'] == 'map'
        assert float(values['metric_scale']) == pytest.approx(k, rel=1e-3)
        # The buffer keeps the newest 8 depth images: the first frame's is gone by then.
        for i, stamp in enumerate(stamps[2:-1], start=2):
            out = float_image(published[round(stamp, 6)])
            ok = np.isfinite(depths[i])
            np.testing.assert_allclose(out[ok], k * depths[i][ok], rtol=2e-3, atol=1e-5)
            pose = _pose(poses_out[round(stamp, 6)])
            np.testing.assert_allclose(pose[:3, 3], k * poses[i][:3, 3], rtol=2e-3,
                                       atol=1e-5)
    finally:
        live.close()


def test_odometry_faults_are_stated_and_counted_and_never_mislabel_points(ros, checkpoint,
                                                                           reference, tmp_path):
    poses, _ = reference
    live = Harness(make_node(checkpoint, tmp_path, metric_source='odometry',
                             odometry_source='pose_topic', base_to_camera=MOUNT,
                             odometry_timeout=0.15, **METRIC))
    try:
        probe = live.probe
        pub = probe.create_publisher(PoseStamped, 'odom', 100)
        live.wait_for(lambda: pub.get_subscription_count() > 0, 10, 'pose match')
        T_base_cam = _matrix(MOUNT)

        def send(stamp, T, frame_id='odom'):
            msg = PoseStamped()
            msg.header.frame_id = frame_id
            msg.header.stamp = image_msg(np.zeros((1, 1, 3), np.uint8), stamp).header.stamp
            _set_pose(msg.pose, T @ np.linalg.inv(T_base_cam))
            pub.publish(msg)

        stamps = [500.0 + 0.1 * i for i in range(FRAMES)]
        # Odometry for the first six frames only, then it stops; one sample goes back in time,
        # one is in another frame.
        for i in range(6):
            send(stamps[i], _true_odom(poses[i]))
        send(stamps[2], _true_odom(poses[2]))
        send(stamps[5] + 0.01, _true_odom(poses[5]), frame_id='map')
        broken = PoseStamped()
        broken.header.frame_id = 'odom'
        broken.pose.orientation.w = 0.0  # a zero quaternion is no rotation at all
        broken.header.stamp = image_msg(np.zeros((1, 1, 3), np.uint8), stamps[5] + 0.02
                                        ).header.stamp
        pub.publish(broken)
        buffer = live.node._pose_buffer
        live.wait_for(lambda: buffer.added == 6 and buffer.backwards == 1, 10, 'odometry')
        _feed(live, 500.0)
        live.wait_for(lambda: len(_outputs(live, 'confidence')) == FRAMES - 1, 10, 'outputs')
        live.wait_for(lambda: round(stamps[8], 6) in _outputs(live, 'points'), 10, 'points')
        points = _outputs(live, 'points')
        values = _diag(live)
        assert values['metric_state'] == 'lost'
        assert int(values['metric_fault_odometry_stale']) >= 2
        assert values['odometry_backwards'] == '1'
        assert values['metric_input_odometry_wrong_frame'] == '1'
        assert values['metric_input_odometry_malformed'] == '1'
        # Aligned once, the last alignment is held: every point message is in odom, and the
        # frames after the odometry stopped are still published there.
        assert {m.header.frame_id for m in points.values()} == {'odom'}
        assert round(stamps[8], 6) in points
        status = live.msgs('/diagnostics')[-1].status[0]
        assert status.level == DiagnosticStatus.WARN and 'metric lost' in status.message
        assert live.node.worker.alive and live.node.worker.error is None
    finally:
        live.close()


@pytest.mark.parametrize('motion', ['standing_still', 'pure_rotation'])
def test_a_degenerate_trajectory_waits_and_publishes_nothing_metric(ros, checkpoint, reference,
                                                                     tmp_path, motion):
    poses, _ = reference
    live = Harness(make_node(checkpoint, tmp_path, metric_source='odometry',
                             odometry_source='odometry_topic', base_to_camera=MOUNT,
                             **{**METRIC, 'alignment_min_baseline': 0.05}))
    try:
        pubs = Publishers(live)
        live.wait_for(lambda: pubs.odom.get_subscription_count() > 0, 10, 'odometry match')
        stamps = [600.0 + 0.1 * i for i in range(FRAMES)]
        T_cam_base = np.linalg.inv(_matrix(MOUNT))
        for i, stamp in enumerate(stamps):
            # The camera turns about its own centre (or stands still): no baseline.
            T_odom_cam = _matrix(MOUNT)
            if motion == 'pure_rotation':
                T_odom_cam[:3, :3] = Rotation.from_rotvec([0.0, 0.0, 0.2 * i]).as_matrix() @ \
                    T_odom_cam[:3, :3]
            pubs.odometry(stamp, T_odom_cam @ T_cam_base)
        live.wait_for(lambda: live.node._pose_buffer.added == FRAMES, 10, 'odometry')
        _feed(live, 600.0)
        live.wait_for(lambda: len(_outputs(live, 'confidence')) == FRAMES - 1, 10, 'outputs')
        time.sleep(0.3)
        for topic in ('points', 'pose', 'depth', 'map', 'path'):
            assert not live.msgs(topic), topic
        values = _diag(live)
        assert values['metric_state'] == 'waiting_for_baseline'
        assert 'baseline' in values['metric_detail']
    finally:
        live.close()


def test_depth_faults_are_counted_and_nothing_metric_is_published(ros, checkpoint, tmp_path):
    live = Harness(make_node(checkpoint, tmp_path, metric_source='depth', **METRIC))
    try:
        pubs = Publishers(live)
        live.wait_for(lambda: pubs.depth_info.get_subscription_count() > 0, 10, 'match')
        info = CameraInfo(width=SIZE, height=SIZE)
        info.k = [100.0, 0.0, 55.5, 0.0, 100.0, 55.5, 0.0, 0.0, 1.0]
        pubs.depth_info.publish(info)
        live.wait_for(lambda: live.node._depth_info == (SIZE, SIZE), 10, 'depth camera_info')
        wrong = np.ones((SIZE - 12, SIZE), np.float32)
        invalid = np.zeros((SIZE, SIZE), np.float32)
        stamps = [700.0 + 0.1 * i for i in range(FRAMES)]
        for i, stamp in enumerate(stamps):
            depth = wrong if i % 2 else invalid
            msg = Image(height=depth.shape[0], width=depth.shape[1], encoding='32FC1',
                        step=depth.shape[1] * 4, data=depth.tobytes())
            msg.header = image_msg(depth, stamp).header
            pubs.depth.publish(msg)
            faults = live.node._metric_faults
            live.wait_for(lambda: sum(faults.values()) == i + 1, 10, f'depth callback {i}')
        _feed(live, 700.0)
        live.wait_for(lambda: len(_outputs(live, 'confidence')) == FRAMES - 1, 10, 'outputs')
        time.sleep(0.3)
        assert not live.msgs('points') and not live.msgs('pose') and not live.msgs('depth')
        values = _diag(live)
        assert values['metric_input_depth_size_mismatch'] == str(FRAMES // 2)
        assert values['metric_input_depth_all_invalid'] == str(FRAMES // 2)
        assert values['metric_state'] == 'waiting_for_depth'
        assert int(values['metric_fault_depth_missing']) == FRAMES - 1
        assert live.node.worker.alive
    finally:
        live.close()


def test_diagnostics_of_the_default_node_say_no_metric_source(ros, checkpoint, tmp_path):
    live = Harness(make_node(checkpoint, tmp_path, diagnostics_rate=20.0))
    try:
        values = _diag(live)
        assert values['metric_source'] == 'none' and values['metric_state'] == 'off'
        assert values['metric_frame'] == 'map'
        assert isinstance(live.msgs('/diagnostics')[-1], DiagnosticArray)
    finally:
        live.close()


def test_a_saved_session_keeps_its_alignment_and_refuses_another_source(ros, checkpoint,
                                                                         reference, tmp_path):
    from std_srvs.srv import Trigger

    poses, _ = reference
    params = dict(metric_source='odometry', odometry_source='odometry_topic',
                  base_to_camera=MOUNT, **METRIC)
    live = Harness(make_node(checkpoint, tmp_path, **params))
    try:
        pubs = Publishers(live)
        live.wait_for(lambda: pubs.odom.get_subscription_count() > 0, 10, 'odometry match')
        stamps = [800.0 + 0.1 * i for i in range(FRAMES)]
        for i, stamp in enumerate(stamps[:-1]):
            pubs.odometry(stamp, _true_odom(poses[i]) @ np.linalg.inv(_matrix(MOUNT)))
        live.wait_for(lambda: live.node._pose_buffer.added == FRAMES - 1, 10, 'odometry')
        _feed(live, 800.0)
        live.wait_for(lambda: live.node.worker.metric.state == 'aligned', 10, 'aligned')
        response = live.call(Trigger, '/spann3r_node/save_session', Trigger.Request())
        assert response.success, response.message
        saved = response.message
        scale = live.node.worker.metric.transform().scale
    finally:
        live.close()
    resumed = Harness(make_node(checkpoint, tmp_path, resume_from=saved, **params))
    try:
        metric = resumed.node.worker.metric
        assert metric.state == 'aligned' and metric.transform().scale == pytest.approx(scale)
        # The resumed map is published in the odometry frame before any new frame.
        resumed.wait_for(lambda: resumed.msgs('map'), 10, 'resumed map')
        assert resumed.msgs('map')[-1].header.frame_id == 'odom'
    finally:
        resumed.close()
    with pytest.raises(ValueError, match='metric_source'):
        make_node(checkpoint, tmp_path, resume_from=saved, image_size=SIZE)
