"""The live node in-process with the real rclpy and the tiny preset: outputs and services."""

import math
import time

from node_harness import Harness, image_msg, smooth_frame
import numpy as np
import pytest
import rclpy
from rclpy.parameter import Parameter
from sensor_msgs.msg import CompressedImage
from std_srvs.srv import SetBool, Trigger

from spann3r_model.io.ply import read_ply
from spann3r_ros.node.node import Spann3rNode


def make_node(checkpoint, out_dir, node_options=None, **overrides):
    params = {'checkpoint': str(checkpoint), 'device': 'cpu', 'min_confidence': 1.0,
              'output_dir': str(out_dir), 'map_voxel_size': 0.001, 'map_publish_rate': 20.0,
              'diagnostics_rate': 5.0, 'num_threads': 1}
    params.update(overrides)
    return Spann3rNode(parameter_overrides=[Parameter(k, value=v) for k, v in params.items()],
                       **(node_options or {}))


@pytest.fixture(scope='module')
def live(ros, checkpoint, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp('out')
    harness = Harness(make_node(checkpoint, out_dir))
    harness.out_dir = out_dir
    yield harness
    harness.close()


def _stamp(header):
    return header.stamp.sec + header.stamp.nanosec * 1e-9


def _diag_keys(live) -> dict:
    msgs = live.msgs('/diagnostics')
    return {kv.key: kv.value for kv in msgs[-1].status[0].values} if msgs else {
        'frames_received': '0'}


def test_outputs_fields_sizes_stamps_and_frames(live):
    node = live.node
    stamps = live.feed([smooth_frame(i) for i in range(6)])
    live.wait_for(lambda: len(live.msgs('pose')) >= 5, 10, 'poses')
    live.wait_for(lambda: live.msgs('map') and live.msgs('map')[-1].width > 0, 10, 'map')
    live.wait_for(lambda: live.msgs('/diagnostics'), 10, 'diagnostics')
    cfg = node.config

    def near_input(header):
        return any(abs(_stamp(header) - s) < 1e-6 for s in stamps)

    for cloud in live.msgs('points'):
        assert cloud.header.frame_id == cfg.map_frame and near_input(cloud.header)
        assert [f.name for f in cloud.fields] == ['x', 'y', 'z', 'rgb', 'confidence']
        assert cloud.point_step == 20 and 0 < cloud.width <= 224 * 224
        assert len(cloud.data) == cloud.width * 20
        xyz = np.frombuffer(bytes(cloud.data), np.float32).reshape(-1, 5)[:, :3]
        assert np.isfinite(xyz).all()
    for topic in ('confidence', 'depth'):
        msgs = live.msgs(topic)
        assert msgs, topic
        for img in msgs:
            assert (img.width, img.height, img.encoding, img.step) == (224, 224, '32FC1', 896)
            assert img.header.frame_id == cfg.camera_frame and near_input(img.header)
    conf = np.frombuffer(bytes(live.msgs('confidence')[-1].data), np.float32)
    assert conf.min() >= 1.0
    info = live.msgs('camera_info')[-1]
    assert info.width == 224 and info.k[0] > 0 and info.k[2] == 112.0
    assert info.header.frame_id == cfg.camera_frame
    poses = live.msgs('pose')
    for pose in poses:
        assert pose.header.frame_id == cfg.map_frame and near_input(pose.header)
        q = pose.pose.orientation
        assert math.isclose(q.x ** 2 + q.y ** 2 + q.z ** 2 + q.w ** 2, 1.0, rel_tol=1e-6)
    # Refined results lag one frame: the first pose belongs to the first input frame.
    assert _stamp(poses[0].header) == pytest.approx(stamps[0])
    path = live.msgs('path')[-1]
    assert path.header.frame_id == cfg.map_frame
    assert [round(_stamp(p.header), 6) for p in path.poses] == [round(s, 6) for s in stamps[
        :len(path.poses)]]
    # The map topic runs on its own timer: wait for the tick after the last frame was fused.
    live.wait_for(lambda: live.msgs('map')[-1].width == len(node.worker.voxel_map), 5,
                  'map with the last frame')
    the_map = live.msgs('map')[-1]
    assert the_map.header.frame_id == cfg.map_frame
    # Diagnostics run on their own timer too: wait for the tick that has counted every frame.
    live.wait_for(lambda: int(_diag_keys(live)['frames_received']) >= 6, 5,
                  'diagnostics counting every frame')
    status = live.msgs('/diagnostics')[-1].status[0]
    keys = {kv.key: kv.value for kv in status.values}
    assert keys['device'] == 'cpu' and int(keys['frames_received']) >= 6
    assert status.name == 'spann3r_node: reconstruction' and keys['node'] == '/spann3r_node'
    assert {'input_rate_hz', 'latency_p50_ms', 'dropped_queue', 'memory_tokens'} <= set(keys)


def test_map_is_transient_local_for_late_subscribers(live):
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import PointCloud2
    # Fed here so the test stands alone: two frames give one refined frame in the map.
    worker = live.node.worker
    live.feed([smooth_frame(i) for i in range(2)], start_stamp=150.0)
    live.wait_for(lambda: len(worker.voxel_map) > 0, 10, 'points in the map')
    live.wait_for(lambda: live.msgs('map') and live.msgs('map')[-1].width == len(
        worker.voxel_map), 5, 'map with the fed frames')
    got = []
    late = rclpy.create_node('late_probe')
    late.create_subscription(PointCloud2, 'map', got.append, QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL))
    try:
        live.executor.add_node(late)
        live.wait_for(lambda: got, 10, 'latched map')
        # The late subscriber gets the last map published, not an empty or an older one.
        assert got[0].width == live.msgs('map')[-1].width > 0
    finally:
        live.executor.remove_node(late)
        late.destroy_node()


def test_save_map_writes_a_ply_that_reads_back(live):
    assert live.call(SetBool, '/spann3r_node/pause', SetBool.Request(data=True)).success
    xyz, rgb, conf = live.node.worker.map_arrays()
    response = live.call(Trigger, '/spann3r_node/save_map', Trigger.Request())
    assert response.success, response.message
    path = response.message
    assert path.startswith(str(live.out_dir.resolve())) and path.endswith('.ply')
    ply = read_ply(path)
    assert len(xyz) > 0
    np.testing.assert_allclose(ply['xyz'], xyz)
    np.testing.assert_array_equal(ply['rgb'], rgb)
    live.call(SetBool, '/spann3r_node/pause', SetBool.Request(data=False))


def test_save_map_refuses_paths_outside_the_output_directory(live, tmp_path):
    node = live.node
    result = node.set_parameters([Parameter('map_filename', value='../escape.ply')])[0]
    assert not result.successful and 'map_filename' in result.reason
    # A symlink planted inside output_dir must not lead the write outside it either.
    outside = tmp_path / 'outside.ply'
    (live.out_dir / 'link.ply').symlink_to(outside)
    assert node.set_parameters([Parameter('map_filename', value='link.ply')])[0].successful
    response = live.call(Trigger, '/spann3r_node/save_map', Trigger.Request())
    assert not response.success and 'outside the output directory' in response.message
    assert not outside.exists()
    assert node.set_parameters([Parameter('map_filename', value='fixed.ply')])[0].successful
    response = live.call(Trigger, '/spann3r_node/save_map', Trigger.Request())
    assert response.success and response.message == str((live.out_dir / 'fixed.ply').resolve())
    node.set_parameters([Parameter('map_filename', value='')])


def test_read_only_parameters_cannot_change_at_runtime(live):
    result = live.node.set_parameters([Parameter('device', value='cuda')])[0]
    assert not result.successful


def test_pause_stops_processing(live):
    worker = live.node.worker
    assert live.call(SetBool, '/spann3r_node/pause', SetBool.Request(data=True)).message == \
        'paused'
    before = worker.processed
    paused_before = live.node.stats.paused
    live.stream([smooth_frame(i) for i in range(3)], rate_hz=10.0, start_stamp=200.0)
    live.wait_for(lambda: live.node.stats.paused >= paused_before + 3, 5, 'paused frames')
    assert worker.processed == before
    live.call(SetBool, '/spann3r_node/pause', SetBool.Request(data=False))
    live.feed([smooth_frame(1)], start_stamp=210.0)


def test_reset_empties_the_map_and_restarts_indices(live):
    worker = live.node.worker
    assert len(worker.voxel_map) > 0 and worker.trajectory
    response = live.call(Trigger, '/spann3r_node/reset', Trigger.Request())
    assert response.success
    assert len(worker.voxel_map) == 0 and worker.trajectory == []
    assert worker.session.frame_count == 0
    live.wait_for(lambda: live.msgs('map') and live.msgs('map')[-1].width == 0, 5, 'empty map')
    live.clear()
    stamps = live.feed([smooth_frame(i) for i in range(3)], start_stamp=300.0)
    # A path published right after the reset may be empty (the cleared trajectory).
    live.wait_for(lambda: live.msgs('path') and live.msgs('path')[-1].poses, 10, 'new path')
    path = live.msgs('path')[-1]
    assert _stamp(path.poses[0].header) == pytest.approx(stamps[0])
    assert len(path.poses) <= 3


def test_reset_repeatedly_while_streaming(live):
    import threading
    errors = []

    def resets():
        try:
            for _ in range(5):
                assert live.call(Trigger, '/spann3r_node/reset', Trigger.Request()).success
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    t = threading.Thread(target=resets)
    t.start()
    live.stream([smooth_frame(i) for i in range(8)], rate_hz=15.0, start_stamp=400.0)
    t.join(60)
    assert not t.is_alive() and not errors
    live.feed([smooth_frame(i) for i in range(2)], start_stamp=500.0)
    assert live.node.worker.error is None and live.node.worker.alive


def test_drops_are_counted_when_inference_is_slower_than_the_camera(live):
    worker = live.node.worker
    dropped = worker.queue.dropped
    # ~100 ms per step on this CPU; 60 Hz for half a second outruns it by far.
    live.stream([smooth_frame(i) for i in range(30)], rate_hz=60.0, start_stamp=600.0)
    live.wait_for(lambda: worker.queue.dropped > dropped, 5, 'drops')
    assert len(worker.queue) <= 1


def _bad(**fields):
    msg = image_msg(smooth_frame(0), 0.0)
    for k, v in fields.items():
        setattr(msg, k, v)
    return msg


def test_malformed_messages_are_dropped_counted_and_the_next_frame_processed(live):
    node, worker = live.node, live.node.worker
    good = image_msg(smooth_frame(0), 0.0)
    f32 = image_msg(smooth_frame(0), 0.0)
    f32.encoding, f32.step = '32FC1', 160 * 4
    f32.data = np.full((120, 160), np.nan, np.float32).tobytes()
    cases = {
        'unknown_encoding': _bad(encoding='weird9'),
        'zero_size': _bad(width=0),
        'too_small': _bad(width=4, height=4, step=12),
        'too_large': _bad(width=200000, height=100000),
        'short_step': _bad(step=100),
        'short_data': _bad(data=bytes(good.data)[:1000]),
        'nonfinite': f32,
        'odd_width': _bad(encoding='yuv422', width=159, step=318),
    }
    start = node.stats.rejected.copy()
    for i, (reason, msg) in enumerate(cases.items()):
        msg.header.stamp.sec = 700 + i
        live.pub.publish(msg)
        time.sleep(0.05)  # the sensor-data queue keeps 5 messages
    live.wait_for(lambda: all(node.stats.rejected[r] > start[r] for r in cases), 5,
                  'rejections')
    # Timestamps going backwards (after a valid frame at 800 s).
    live.pub.publish(image_msg(smooth_frame(1), 800.0))
    live.wait_for(lambda: node.gate._last_seen.get(0) == 800.0, 5, 'frame at 800 s')
    live.pub.publish(image_msg(smooth_frame(2), 790.0))
    live.wait_for(lambda: node.stats.rejected['stamp_backwards'] > start['stamp_backwards'], 5,
                  'backwards stamp')
    before = worker.processed
    live.pub.publish(image_msg(smooth_frame(3), 801.0))
    live.wait_for(lambda: worker.processed > before, 10, 'next valid frame')
    assert worker.error is None


def test_compressed_transport_and_malformed_compressed(ros, checkpoint, tmp_path):
    import cv2
    harness = Harness(make_node(checkpoint, tmp_path, transport='compressed'),
                      image_type=CompressedImage, image_topic='image/compressed')
    try:
        node = harness.node
        bad = {'empty_compressed': CompressedImage(format='jpeg', data=b''),
               'unsupported_format': CompressedImage(format='h264', data=b'\x00\x01'),
               'corrupt_compressed': CompressedImage(format='jpeg',
                                                     data=b'\xff\xd8\xff' + bytes(100))}
        for msg in bad.values():
            harness.pub.publish(msg)
            time.sleep(0.05)
        harness.wait_for(lambda: all(node.stats.rejected[r] for r in bad), 5, 'rejections')
        for i in range(3):
            ok, buf = cv2.imencode('.jpg', smooth_frame(i)[..., ::-1])
            msg = CompressedImage(format='rgb8; jpeg compressed bgr8', data=buf.tobytes())
            msg.header.stamp.sec = 10 + i
            harness.pub.publish(msg)
            harness.wait_for(lambda: node.worker.processed >= i + 1, 10, f'frame {i}')
        harness.wait_for(lambda: harness.msgs('points'), 10, 'points')
        assert harness.msgs('points')[-1].width > 0
    finally:
        harness.close()


def test_invalid_configuration_stops_startup_with_one_message(ros, checkpoint, tmp_path):
    with pytest.raises(ValueError, match='does not exist'):
        make_node(tmp_path / 'missing.pth', tmp_path)
    with pytest.raises(ValueError, match='checkpoint is required'):
        make_node('', tmp_path)
    with pytest.raises(ValueError, match='precision'):
        make_node(checkpoint, tmp_path, precision='fp8')


@pytest.mark.parametrize('node_options, params, logged', [
    ({'cli_args': ['--ros-args', '-r', 'image:=/cam/image_raw']}, {}, 'raw input from '
     '/cam/image_raw;'),
    ({'namespace': 'spann3r'}, {}, 'raw input from /spann3r/image;'),
    ({'cli_args': ['--ros-args', '-r', 'image/compressed:=/cam/jpeg']},
     {'transport': 'compressed'}, 'compressed input from /cam/jpeg;'),
], ids=['remapped', 'namespaced', 'compressed-remapped'])
def test_the_log_names_the_input_topics_as_resolved(ros, checkpoint, tmp_path, capfd,
                                                     node_options, params, logged):
    node = make_node(checkpoint, tmp_path, node_options, **params)
    try:
        node.announce_ready()
        err = capfd.readouterr().err
    finally:
        node.shutdown()
        node.destroy_node()
    assert logged in err, err
