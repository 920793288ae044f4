"""The node survives what a robot sends it: callbacks that raise, bombs, odd files, bursts."""

import os
import threading
import time

from diagnostic_msgs.msg import DiagnosticStatus
from node_harness import Harness, image_msg, smooth_frame
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage
from std_srvs.srv import SetBool, Trigger
from test_compressed_size import _png_bomb
from test_node import make_node

import spann3r_ros.node.diagnostics as diagnostics
import spann3r_ros.node.image_input as image_input
import spann3r_ros.node.publishing as publishing


@pytest.fixture(scope='module')
def live(ros, checkpoint, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp('out')
    harness = Harness(make_node(checkpoint, out_dir, image_size=112, diagnostics_rate=20.0))
    harness.out_dir = out_dir
    yield harness
    harness.close()


def _diag_values(live):
    live.wait_for(lambda: live.msgs('/diagnostics'), 10, 'diagnostics')
    status = live.msgs('/diagnostics')[-1].status[0]
    return status, {kv.key: kv.value for kv in status.values}


def _fresh_diagnostics(live):
    live.clear()
    live.wait_for(lambda: len(live.msgs('/diagnostics')) >= 2, 10, 'fresh diagnostics')
    return _diag_values(live)


def test_an_image_callback_that_raises_drops_and_counts_the_frame(live, monkeypatch):
    real = image_input.image_to_rgb
    calls = []

    def flaky(msg, max_pixels):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError('decoder exploded')
        return real(msg, max_pixels)

    monkeypatch.setattr(image_input, 'image_to_rgb', flaky)
    before = live.node.worker.processed
    live.pub.publish(image_msg(smooth_frame(0), 500.0))
    live.wait_for(lambda: calls, 10, 'first callback')
    live.feed([smooth_frame(i) for i in range(1, 3)], start_stamp=501.0)
    assert live.node.worker.processed == before + 2
    assert live.node.stats.rejected['error_RuntimeError'] == 1
    _, values = _fresh_diagnostics(live)
    assert values['malformed_error_RuntimeError'] == '1'


def test_frames_of_one_camera_are_decoded_in_order(live, monkeypatch):
    """Slow, uneven decoding must not reorder one camera's frames (no stamp_backwards)."""
    real = image_input.image_to_rgb
    rng = np.random.default_rng(1)
    active, overlap = [0], []
    lock = threading.Lock()

    def slow(msg, max_pixels):
        with lock:
            active[0] += 1
            overlap.append(active[0])
        time.sleep(float(rng.uniform(0.0, 0.03)))
        with lock:
            active[0] -= 1
        return real(msg, max_pixels)

    monkeypatch.setattr(image_input, 'image_to_rgb', slow)
    before = live.node.stats.rejected['stamp_backwards']
    for i in range(20):
        live.pub.publish(image_msg(smooth_frame(i), 600.0 + 0.01 * i))
        time.sleep(0.005)
    live.wait_for(lambda: len(overlap) >= 5, 20, 'decoded frames')
    seen = -1
    while seen != len(overlap):  # until the last queued message was decoded
        seen = len(overlap)
        time.sleep(0.5)
    assert live.node.stats.rejected['stamp_backwards'] == before
    assert max(overlap) == 1


def test_a_png_bomb_on_the_compressed_topic_is_refused_and_the_node_goes_on(
        ros, checkpoint, tmp_path):
    node = make_node(checkpoint, tmp_path, image_size=112, transport='compressed')
    harness = Harness(node, image_type=CompressedImage, image_topic='image/compressed')
    try:
        bomb = CompressedImage(format='png', data=_png_bomb(40000, 40000))
        bomb.header.stamp.sec = 10
        harness.pub.publish(bomb)
        harness.wait_for(lambda: node.stats.rejected['too_large'] == 1, 10, 'bomb refused')
        import cv2
        ok, jpg = cv2.imencode('.jpg', smooth_frame(1)[:, :, ::-1])
        good = CompressedImage(format='jpeg', data=jpg.tobytes())
        good.header.stamp.sec = 11
        harness.pub.publish(good)
        harness.wait_for(lambda: node.worker.processed == 1, 20, 'next frame processed')
    finally:
        harness.close()


def test_save_map_into_a_symlink_loop_answers_false_and_the_node_answers_on(live, monkeypatch):
    loop = live.out_dir / 'loop.ply'
    os.symlink(loop, loop)
    monkeypatch.setattr(live.node, 'config', live.node.config.replace(map_filename='loop.ply'))
    response = live.call(Trigger, 'spann3r_node/save_map', Trigger.Request())
    assert not response.success and 'loop.ply' in response.message
    assert live.call(SetBool, 'spann3r_node/pause', SetBool.Request(data=False)).success


def test_a_service_handler_that_raises_answers_false_with_the_reason(live, monkeypatch):
    def broken():
        raise RuntimeError('disk on fire')
    monkeypatch.setattr(live.node.worker, 'reset', broken)
    response = live.call(Trigger, 'spann3r_node/reset', Trigger.Request())
    assert not response.success
    assert response.message == 'reset failed: RuntimeError: disk on fire'


def test_a_timer_that_raises_logs_and_the_node_carries_on(live, monkeypatch):
    def broken(flush=True):
        raise RuntimeError('map unavailable')
    monkeypatch.setattr(live.node.worker, 'map_arrays', broken)
    live.node.worker.map_version += 1
    _, values = _fresh_diagnostics(live)
    assert 'map timer' in live.node._failure_logged
    assert values['frames_received']


def test_a_burst_of_100_service_calls_is_answered(live):
    client = live.probe.create_client(SetBool, 'spann3r_node/pause')
    assert client.wait_for_service(timeout_sec=10)
    futures = [client.call_async(SetBool.Request(data=False)) for _ in range(100)]
    live.wait_for(lambda: all(f.done() for f in futures), 30, '100 answers')
    assert all(f.result().success for f in futures)


def test_diagnostics_are_ok_again_after_a_malformed_burst(live, monkeypatch):
    monkeypatch.setattr(diagnostics, 'RECENT_WINDOW_S', 1.0)
    bad = image_msg(smooth_frame(0), 700.0)
    bad.encoding = 'no_such_encoding'
    for i in range(3):
        bad.header.stamp.sec = 700 + i
        live.pub.publish(bad)
    live.wait_for(lambda: live.node.stats.recent_rejections() >= 3, 10, 'rejections')
    status, values = _fresh_diagnostics(live)
    assert status.level == DiagnosticStatus.WARN and int(values['dropped_malformed_recent']) >= 3
    time.sleep(1.2)
    status, values = _fresh_diagnostics(live)
    assert status.level == DiagnosticStatus.OK, status.message
    assert values['dropped_malformed_recent'] == '0' and int(values['dropped_malformed']) >= 3


def test_the_path_is_thinned_evenly_and_bounded(live):
    from std_msgs.msg import Header
    node, worker = live.node, live.node.worker
    n = 5 * publishing.MAX_PATH_POSES + 3
    with worker.lock:
        worker.trajectory[:] = [(1000.0 + i, np.eye(4)) for i in range(n)]
        worker.trajectory_resets += 1
    live.clear()
    header = Header(frame_id=node.config.map_frame)
    node._publish_path(header)
    live.wait_for(lambda: live.msgs('path'), 10, 'path')
    stamps = [p.header.stamp.sec for p in live.msgs('path')[-1].poses]
    assert len(stamps) <= publishing.MAX_PATH_POSES + 1
    assert stamps[0] == 1000 and stamps[-1] == 1000 + n - 1
    steps = np.diff(stamps[:-1])
    assert (steps == steps[0]).all() and steps[0] <= 8


def test_a_camera_info_callback_that_raises_logs_and_the_node_goes_on(
        ros, checkpoint, tmp_path, monkeypatch):
    from sensor_msgs.msg import CameraInfo

    def broken(msg):
        raise RuntimeError('calibration unreadable')
    monkeypatch.setattr(image_input, 'camera_info_K', broken)
    node = make_node(checkpoint, tmp_path, image_size=112, image_topics=['cam/image'])
    harness = Harness(node, image_topic='cam/image')
    try:
        info_pub = harness.probe.create_publisher(CameraInfo, '/cam/camera_info', 10)
        harness.wait_for(lambda: info_pub.get_subscription_count() > 0, 10, 'camera_info match')
        info = CameraInfo(width=160, height=120, k=[100.0, 0, 80, 0, 100.0, 60, 0, 0, 1])
        info_pub.publish(info)
        harness.wait_for(lambda: 'camera_info callback of camera 0' in node._failure_logged,
                         10, 'logged failure')
        harness.feed([smooth_frame(i) for i in range(2)], start_stamp=20.0)
        assert node.worker.processed == 2
    finally:
        harness.close()
