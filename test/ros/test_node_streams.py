"""The live node's streams: provisional output, several cameras in one memory, the path."""

from node_harness import Harness, image_msg, smooth_frame
import numpy as np
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image

from spann3r_model.config import EngineConfig
from spann3r_model.geometry.frames import optical_to_rep103_points
from spann3r_model.session import StreamingSession
from spann3r_ros.node import publishing
from spann3r_ros.node.node import Spann3rNode


def _node(checkpoint, out_dir, **overrides):
    params = {'checkpoint': str(checkpoint), 'device': 'cpu', 'min_confidence': 1.0,
              'output_dir': str(out_dir), 'map_voxel_size': 0.001, 'num_threads': 1,
              'map_publish_rate': 0.0, 'diagnostics_rate': 0.0}
    params.update(overrides)
    return Spann3rNode(parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])


def _stamp(header):
    return round(header.stamp.sec + header.stamp.nanosec * 1e-9, 6)


def _points_by_stamp(harness):
    return {_stamp(m.header): m for m in harness.msgs('points')}


def _xyz(cloud):
    return np.frombuffer(bytes(cloud.data), np.float32).reshape(-1, 5)[:, :3]


def _finite(points_map):
    flat = points_map.reshape(-1, 3)
    return flat[np.isfinite(flat).all(-1)]


def _feed_one(harness, rgb, stamp, publisher=None):
    worker = harness.node.worker
    processed, published = worker.processed, worker.published
    (publisher or harness.pub).publish(image_msg(rgb, stamp))
    harness.wait_for(lambda: worker.processed > processed, 30, f'frame at {stamp}')
    return published


def test_provisional_results_come_with_their_own_frame_one_frame_before_refined(
        ros, checkpoint, tmp_path):
    frames = [smooth_frame(i) for i in range(5)]
    stamps = [round(100.0 + 0.1 * i, 6) for i in range(5)]
    seen = {}
    for provisional in (True, False):
        harness = Harness(_node(checkpoint, tmp_path, provisional=provisional))
        try:
            worker = harness.node.worker
            order = []
            for i, (rgb, stamp) in enumerate(zip(frames, stamps)):
                published = _feed_one(harness, rgb, stamp)
                # Frame 0 has no partner yet; every later frame releases exactly one cloud.
                if i == 0:
                    assert worker.published == published
                    continue
                harness.wait_for(lambda: worker.published > published, 10, f'output {i}')
                expected = stamps[i] if provisional else stamps[i - 1]
                harness.wait_for(lambda: expected in _points_by_stamp(harness), 10,
                                 f'cloud of frame {i}')
                order.append(max(_points_by_stamp(harness)))
                harness.wait_for(lambda: expected in [_stamp(p.header)
                                                      for p in harness.msgs('pose')], 10,
                                 f'pose of frame {i}')
            seen[provisional] = (order, _points_by_stamp(harness))
            trajectory = [round(s, 6) for s, _ in worker.trajectory]
            assert trajectory == (stamps[1:] if provisional else stamps[:-1])
            assert sorted(_stamp(p.header) for p in harness.msgs('pose')) == trajectory
        finally:
            harness.close()
    assert seen[True][0] == stamps[1:]
    assert seen[False][0] == stamps[:-1]

    # The provisional clouds are the session's head-2 estimates of the same frames, not the
    # refined ones that arrive a frame later.
    session = StreamingSession.from_checkpoint(
        checkpoint, engine_config=EngineConfig(device='cpu', num_threads=1), provisional=True)
    outs = [session.step(rgb, stamp) for rgb, stamp in zip(frames, stamps)]
    for i in range(1, 4):
        head2, refined = outs[i].provisional, outs[i + 1].refined
        assert head2.index == refined.index == i
        head2_map, refined_map = (_finite(optical_to_rep103_points(r.pts3d))
                                  for r in (head2, refined))
        published = _xyz(seen[True][1][stamps[i]])
        np.testing.assert_allclose(published, head2_map, rtol=1e-5, atol=1e-5)
        assert published.shape != refined_map.shape or not np.allclose(published, refined_map,
                                                                        atol=1e-3)
        np.testing.assert_allclose(_xyz(seen[False][1][stamps[i]]), refined_map, rtol=1e-5,
                                   atol=1e-5)


def test_two_cameras_feed_one_memory_interleaved_by_stamp(ros, checkpoint, tmp_path):
    harness = Harness(_node(checkpoint, tmp_path, image_topics=['front', 'rear']),
                      image_topic='front')
    rear = harness.probe.create_publisher(Image, 'rear', 10)
    harness.wait_for(lambda: rear.get_subscription_count() > 0, 10, 'rear subscription')
    try:
        node, worker = harness.node, harness.node.worker
        front_frames = [smooth_frame(i) for i in range(4)]
        rear_frames = [smooth_frame(20 + i, width=200, height=150) for i in range(4)]
        # Alternate cameras in stamp order, one frame at a time.
        camera_of = {}
        for i in range(3):
            _feed_one(harness, front_frames[i], 10.0 + 0.2 * i)
            camera_of[round(10.0 + 0.2 * i, 6)] = 0
            _feed_one(harness, rear_frames[i], 10.1 + 0.2 * i, rear)
            camera_of[round(10.1 + 0.2 * i, 6)] = 1
        assert worker.session.frame_count == 6  # one memory for both cameras
        harness.wait_for(lambda: worker.published == 5, 10, 'outputs of the first frames')

        # With both cameras pending, the older stamp goes first even when it arrived last.
        enqueued = worker.queue.enqueued
        with worker.lock:  # the worker takes the next frame, then waits here
            harness.pub.publish(image_msg(front_frames[3], 11.0))
            harness.wait_for(lambda: worker.queue.enqueued > enqueued and not len(worker.queue),
                             10, 'frame at 11.0 taken')
            rear.publish(image_msg(rear_frames[3], 11.3))
            harness.pub.publish(image_msg(front_frames[0], 11.2))
            harness.wait_for(lambda: len(worker.queue) == 2, 10, 'both cameras pending')
        camera_of.update({11.0: 0, 11.2: 0, 11.3: 1})
        harness.wait_for(lambda: worker.processed == 9, 60, 'all frames processed')
        harness.wait_for(lambda: worker.published == 8, 10, 'all outputs published')

        stamps = sorted(camera_of)
        assert [round(s, 6) for s, _ in worker.trajectory] == stamps[:-1]
        harness.wait_for(lambda: len(harness.msgs('confidence')) == 8, 10, 'confidence')
        for image in harness.msgs('confidence'):
            camera = camera_of[_stamp(image.header)]
            assert image.header.frame_id == node.config.camera_frame_for(camera)
            assert (image.width, image.height) == (224, 224)
        assert {camera_of[_stamp(m.header)] for m in harness.msgs('depth')} == {0, 1}
        # The path is published at most every PATH_PERIOD; the last one holds every pose.
        harness.wait_for(lambda: len(harness.msgs('path')[-1].poses) == len(stamps) - 1, 10,
                         'complete path')
        path = harness.msgs('path')[-1]
        assert [_stamp(p.header) for p in path.poses] == stamps[:-1]
        assert path.header.frame_id == node.config.map_frame
    finally:
        harness.close()


def test_path_covers_the_whole_run_thinned_and_restarts_after_reset(ros, checkpoint, tmp_path,
                                                                   monkeypatch):
    from std_srvs.srv import Trigger
    monkeypatch.setattr(publishing, 'MAX_PATH_POSES', 3)
    harness = Harness(_node(checkpoint, tmp_path))
    try:
        stamps = harness.feed([smooth_frame(i) for i in range(6)], start_stamp=50.0)
        harness.wait_for(lambda: harness.node.worker.published == 5, 10, 'outputs')
        harness.wait_for(lambda: harness.msgs('path') and _stamp(
            harness.msgs('path')[-1].poses[-1].header) == round(stamps[4], 6), 10, 'last path')
        assert all(len(p.poses) <= 3 for p in harness.msgs('path'))
        last = harness.msgs('path')[-1]
        # Five poses thinned to every second one: the first, the middle and the newest.
        assert [_stamp(p.header) for p in last.poses] == [round(stamps[i], 6) for i in (0, 2, 4)]
        # Each pose of the path is the pose that was published for that frame.
        poses = {_stamp(p.header): p.pose for p in harness.msgs('pose')}
        for p in last.poses:
            assert p.pose == poses[_stamp(p.header)]
        assert harness.call(Trigger, '/spann3r_node/reset', Trigger.Request()).success
        harness.clear()
        new = harness.feed([smooth_frame(i) for i in range(2)], start_stamp=90.0)
        harness.wait_for(lambda: harness.msgs('path'), 10, 'path after reset')
        assert [_stamp(p.header) for p in harness.msgs('path')[-1].poses] == [new[0]]
    finally:
        harness.close()


def test_each_camera_has_its_own_intrinsics(ros, checkpoint, tmp_path, monkeypatch):
    from sensor_msgs.msg import CameraInfo

    from spann3r_model.geometry import camera as geometry
    from spann3r_ros.node.image_input import camera_info_topic
    assert camera_info_topic('/cam/color/image_raw') == '/cam/color/camera_info'
    estimated = []
    posed = geometry.estimate_focal_posed

    def spy(pts3d, **kwargs):
        estimated.append((pts3d.copy(), posed(pts3d, **kwargs)))
        return estimated[-1][1]

    monkeypatch.setattr(geometry, 'estimate_focal_posed', spy)
    harness = Harness(_node(checkpoint, tmp_path, image_topics=['/front/image_raw', 'rear']),
                      image_topic='/front/image_raw')
    rear = harness.probe.create_publisher(Image, 'rear', 10)
    info_pub = harness.probe.create_publisher(CameraInfo, '/front/camera_info', 10)
    harness.wait_for(lambda: rear.get_subscription_count() > 0, 10, 'rear subscription')
    try:
        node, worker = harness.node, harness.node.worker
        info = CameraInfo(width=256, height=192)
        info.k = [300.0, 0.0, 131.0, 0.0, 310.0, 93.0, 0.0, 0.0, 1.0]
        harness.wait_for(lambda: info_pub.publish(info) or 0 in node._camera_info, 10,
                         'camera_info of camera 0')
        camera_of = {}
        for i in range(3):
            _feed_one(harness, smooth_frame(i, width=256, height=192), 10.0 + 0.2 * i)
            camera_of[round(10.0 + 0.2 * i, 6)] = 0
            _feed_one(harness, smooth_frame(20 + i, width=200, height=150), 10.1 + 0.2 * i, rear)
            camera_of[round(10.1 + 0.2 * i, 6)] = 1
        harness.wait_for(lambda: worker.published == 5, 10, 'outputs')
        harness.wait_for(lambda: len(harness.msgs('camera_info')) == 5, 10, 'camera_info')
        # 256x192 -> scale 224 / 192 = 7 / 6, resized to 298x224, final crop at x = 37, and
        # the pixel centres shift by (256 * 7 / 6 - 298) / 2 = 1 / 3.
        s = 7.0 / 6.0
        K0 = [300.0 * s, 0.0, (131.0 + 0.5) * s - 0.5 - 37.0 - 1.0 / 3.0,
              0.0, 310.0 * s, (93.0 + 0.5) * s - 0.5, 0.0, 0.0, 1.0]
        infos = {camera_of[_stamp(m.header)]: m for m in harness.msgs('camera_info')}
        np.testing.assert_allclose(infos[0].k, K0, atol=1e-4)
        assert infos[0].header.frame_id == node.config.camera_frame_for(0)
        # Camera 1 has no camera_info: its focal is estimated once, from its own first frame
        # (index 1), whose published cloud holds the same points.
        assert len(estimated) == 1
        pts3d, focal1 = estimated[0]
        np.testing.assert_allclose(infos[1].k, [focal1, 0, 112, 0, focal1, 112, 0, 0, 1])
        cloud = _points_by_stamp(harness)[10.1]
        mask = np.isfinite(pts3d).all(-1)  # min_confidence 1.0 keeps every finite point
        np.testing.assert_allclose(_xyz(cloud), optical_to_rep103_points(pts3d[mask]),
                                   rtol=1e-5, atol=1e-5)
        assert focal1 != geometry.estimate_focal(pts3d)
        assert node.intrinsics_status() == {'intrinsics_camera_0': 'camera_info',
                                            'intrinsics_camera_1': 'estimated'}

        # A camera_info for another image size is not used, and counted.
        info.width, info.height = 640, 480
        harness.wait_for(lambda: info_pub.publish(info) or node._camera_info[0][1] == 640, 10,
                         'second camera_info')
        _feed_one(harness, smooth_frame(5, width=256, height=192), 11.0)
        _feed_one(harness, smooth_frame(6, width=256, height=192), 11.2)
        harness.wait_for(lambda: worker.published == 7, 10, 'outputs')
        status = node.intrinsics_status()
        assert status['camera_info_ignored_size_mismatch'] == '2'
        assert status['intrinsics_camera_0'] == 'estimated'
    finally:
        harness.close()
