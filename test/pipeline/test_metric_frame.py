"""The metric alignment state machine, and outputs re-expressed in the frame it aligns to.

Odometry is a PoseBuffer holding the exact images of the reconstruction's camera poses under a
known Sim(3); sensor depth is a known multiple of the predicted depth. Expected transforms,
states and versions follow from that construction.
"""

from collections import Counter
import json
import threading

import numpy as np
import pytest
from test_odometry_alignment import (
    assert_sim3,
    known_sim3,
    pose,
    rotation,
    spin_in_place,
    straight_path,
    to_map,
)

from spann3r_model.data.crop import compute_crop
from spann3r_model.geometry.align import Sim3
from spann3r_model.results import MemoryStats
from spann3r_ros.pipeline.depth_scale import DepthBuffer
from spann3r_ros.pipeline.frame_queue import Frame
from spann3r_ros.pipeline.metric_frame import MetricAlignment, MetricSettings
from spann3r_ros.pipeline.odometry_alignment import AlignmentThresholds
from spann3r_ros.pipeline.output import express_output, Output
from spann3r_ros.pipeline.pose_buffer import PoseBuffer

S = 32
CROP = compute_crop(S, S, S)
WH = (S, S)
MASK = np.ones((S, S), dtype=bool)
CAMERA = 'camera_optical'
#: Metres per reconstruction unit that the depth sensor implies.
K_DEPTH = 1.7
#: Frames 0.1 s apart; odometry centres 5 cm apart on a line, the camera turning 2 deg a frame.
DT = 0.1
STEP = 0.05 / np.sqrt(5.0)


def settings(source):
    return MetricSettings(source=source, map_frame='map', odom_frame='odom',
                          thresholds=AlignmentThresholds(min_frames=5, min_baseline=0.08),
                          depth_min_pixels=100)


class Odometry:
    """``lookup(stamp, camera_frame)`` backed by a PoseBuffer, recording what it was asked."""

    def __init__(self):
        self.buffer = PoseBuffer(timeout=0.5, tolerance=0.01)
        self.asked = []

    def __call__(self, stamp, camera_frame_id):
        self.asked.append(camera_frame_id)
        return self.buffer.lookup(stamp)


def predicted_depth():
    u, v = np.meshgrid(np.linspace(0.0, 1.0, S), np.linspace(0.0, 1.0, S))
    return (0.5 + 2.0 * u + v).astype(np.float32)


def run(metric, odometry, depth, T_odom, T_map, first=0, predicted=None):
    """Observe frames ``first..``; odometry and sensor depth arrive before each frame."""
    states, versions = [], []
    for i, (T_o, T_m) in enumerate(zip(T_odom, T_map), start=first):
        if odometry is not None:
            odometry.buffer.add(i * DT, T_o)
        if depth is not None:
            depth.add(i * DT, (K_DEPTH * predicted).astype(np.float32))
        metric.observe(i * DT, CAMERA, T_m, predicted, MASK, CROP, WH)
        states.append(metric.state)
        versions.append(metric.version)
    return states, versions


def aligned_to_odometry():
    odometry = Odometry()
    metric = MetricAlignment(settings('odometry'), odometry=odometry)
    T_odom = straight_path(9, step=STEP, turn_deg=2.0)
    run(metric, odometry, None, T_odom, to_map(T_odom, *known_sim3()))
    assert metric.state == 'aligned'
    return metric, odometry


# -- construction ------------------------------------------------------------------------------
def test_source_none_is_the_identity_and_off():
    metric = MetricAlignment(settings('none'))
    assert metric.state == 'off' and not metric.active and metric.frame_id == 'map'
    assert metric.transform().is_identity()
    metric.observe(0.0, CAMERA, None, None, MASK, CROP, WH)
    assert not metric.faults and metric.version == 0
    metric.reset()
    assert metric.state == 'off' and metric.transform().is_identity()
    status = metric.status()
    assert status['metric_source'] == 'none' and status['metric_state'] == 'off'
    assert 'metric_scale' not in status


@pytest.mark.parametrize('source, odometry, depth', [
    ('odometry', None, None),
    ('odometry', None, DepthBuffer()),
    ('depth', Odometry(), None),
    ('both', Odometry(), None),
    ('both', None, DepthBuffer()),
])
def test_a_source_without_its_input_raises(source, odometry, depth):
    with pytest.raises(ValueError, match=source):
        MetricAlignment(settings(source), odometry=odometry, depth=depth)


def test_an_unknown_source_raises():
    with pytest.raises(ValueError, match='metric_source'):
        MetricSettings(source='gps')


# -- odometry ----------------------------------------------------------------------------------
def test_odometry_waits_then_aligns_to_the_known_similarity():
    odometry = Odometry()
    metric = MetricAlignment(settings('odometry'), odometry=odometry)
    assert metric.state == 'waiting_for_odometry' and metric.transform() is None
    assert metric.frame_id == 'odom'
    T_odom = straight_path(9, step=STEP, turn_deg=2.0)
    T_map = to_map(T_odom, *known_sim3())
    # The first frame comes before any odometry.
    metric.observe(0.0, CAMERA, T_map[0], None, MASK, CROP, WH)
    assert metric.state == 'waiting_for_odometry' and metric.faults['odometry_waiting'] == 1
    metric.observe(0.0, CAMERA, None, None, MASK, CROP, WH)
    assert metric.faults['no_pose'] == 1
    states, versions = run(metric, odometry, None, T_odom[1:], T_map[1:], first=1)
    # Pairs 5 cm apart: RMS spread 0.071 m for five of them, 0.085 m for six.
    assert states == ['waiting_for_baseline'] * 5 + ['aligned'] * 3
    assert versions == [0] * 5 + [1] * 3
    assert_sim3(metric.transform(), *known_sim3())
    assert odometry.asked == [CAMERA] * 9
    assert metric.aligner.fit.used == 8


def test_stale_odometry_loses_the_alignment_but_keeps_the_transform():
    metric, odometry = aligned_to_odometry()
    held, version = metric.transform(), metric.version
    # The newest odometry is from 0.8 s; a frame at 1.6 s is 0.8 s past it (timeout 0.5 s).
    metric.observe(1.6, CAMERA, np.eye(4), None, MASK, CROP, WH)
    assert metric.state == 'lost' and metric.faults['odometry_stale'] == 1
    assert metric.transform() is held and metric.version == version
    status = metric.status()
    assert status['metric_state'] == 'lost' and status['metric_fault_odometry_stale'] == '1'
    assert float(status['odometry_age_s']) == pytest.approx(0.8)
    # Odometry returns: aligned again, the (unchanged) transform not republished.
    T_odom = straight_path(14, step=STEP, turn_deg=2.0)[9:]
    states, versions = run(metric, odometry, None, T_odom, to_map(T_odom, *known_sim3()),
                           first=9)
    assert states == ['aligned'] * 5 and versions == [version] * 5
    assert_sim3(metric.transform(), *known_sim3())


def test_a_moved_fit_is_republished():
    metric, odometry = aligned_to_odometry()
    scale, R, t = known_sim3()
    version = metric.version
    T_odom = straight_path(30, step=STEP, turn_deg=2.0)
    # From frame 9 on the odometry runs 3% long: the fitted scale grows and is republished.
    drifted = T_odom[9:].copy()
    start = T_odom[8, :3, 3]
    drifted[:, :3, 3] = start + 1.03 * (drifted[:, :3, 3] - start)
    states, versions = run(metric, odometry, None, drifted, to_map(T_odom, scale, R, t)[9:],
                           first=9)
    assert set(states) == {'aligned'}
    assert versions[-1] > version and metric.transform().scale > 1.005 * scale


def test_status_reports_state_scale_and_faults():
    metric, _ = aligned_to_odometry()
    metric.observe(0.9, CAMERA, None, None, MASK, CROP, WH)
    status = metric.status()
    assert status['metric_source'] == 'odometry' and status['metric_state'] == 'aligned'
    assert status['metric_frame'] == 'odom'
    assert float(status['metric_scale']) == pytest.approx(known_sim3()[0], abs=1e-6)
    assert status['metric_frames_used'] == '9' and status['metric_frames_held'] == '9'
    assert float(status['metric_residual_m']) < 1e-4
    assert status['metric_fault_no_pose'] == '1'


def test_reset_forgets_the_alignment():
    metric, odometry = aligned_to_odometry()
    version = metric.version
    metric.reset()
    assert metric.transform() is None and metric.state == 'waiting_for_odometry'
    assert len(metric.aligner) == 0 and metric.version == version + 1
    assert metric.status()['metric_scale'] == 'n/a'
    # A new reconstruction aligns again from its own frames.
    T_odom = straight_path(15, step=STEP, turn_deg=2.0)[9:]
    states, _ = run(metric, odometry, None, T_odom, to_map(T_odom, *known_sim3()), first=9)
    assert states == ['waiting_for_baseline'] * 5 + ['aligned']


# -- depth -------------------------------------------------------------------------------------
def test_depth_gives_a_pure_scale_in_the_map_frame():
    depth = DepthBuffer(max_dt=0.01)
    metric = MetricAlignment(settings('depth'), depth=depth)
    assert metric.state == 'waiting_for_depth' and metric.frame_id == 'map'
    predicted = predicted_depth()
    metric.observe(0.0, CAMERA, np.eye(4), predicted, MASK, CROP, WH)
    assert metric.faults['depth_missing'] == 1 and metric.transform() is None
    assert metric.state == 'waiting_for_depth'
    states, versions = run(metric, None, depth, [None] * 2, [np.eye(4)] * 2, first=1,
                           predicted=predicted)
    assert states == ['aligned'] * 2 and versions == [1, 1]
    assert_sim3(metric.transform(), K_DEPTH, np.eye(3), np.zeros(3), tol=1e-6)
    status = metric.status()
    assert status['depth_scale_frames'] == '2' and status['depth_pixels'] == str(S * S)
    assert float(status['metric_scale']) == pytest.approx(K_DEPTH, abs=1e-5)


def test_bad_depth_frames_are_counted_and_keep_the_scale():
    depth = DepthBuffer(max_dt=0.01)
    metric = MetricAlignment(settings('depth'), depth=depth)
    predicted = predicted_depth()
    run(metric, None, depth, [None], [np.eye(4)], predicted=predicted)
    held = metric.transform()
    depth.add(0.5, np.ones((S // 2, S), np.float32))
    metric.observe(0.5, CAMERA, np.eye(4), predicted, MASK, CROP, WH)
    depth.add(0.6, np.zeros((S, S), np.float32))
    metric.observe(0.6, CAMERA, np.eye(4), predicted, MASK, CROP, WH)
    assert metric.faults['depth_aspect_mismatch'] == 1 and metric.faults['depth_invalid'] == 1
    assert metric.state == 'aligned' and metric.transform() is held
    assert len(metric.depth_scale) == 1


# -- both --------------------------------------------------------------------------------------
def test_both_takes_the_scale_from_depth_and_the_rotation_from_odometry():
    _, R, t = known_sim3()
    odometry, depth = Odometry(), DepthBuffer(max_dt=0.01)
    metric = MetricAlignment(settings('both'), odometry=odometry, depth=depth)
    assert metric.state == 'waiting_for_depth' and metric.frame_id == 'odom'
    # Without depth nothing is asked of the odometry.
    metric.observe(0.0, CAMERA, np.eye(4), predicted_depth(), MASK, CROP, WH)
    assert metric.faults['depth_missing'] == 1 and odometry.asked == []
    T_odom = straight_path(8, step=STEP, turn_deg=2.0)
    states, _ = run(metric, odometry, depth, T_odom[1:], to_map(T_odom, K_DEPTH, R, t)[1:],
                    first=1, predicted=predicted_depth())
    # The scale is known: five pairs are enough, the baseline is not waited for.
    assert states == ['waiting_for_baseline'] * 4 + ['aligned'] * 3
    assert_sim3(metric.transform(), K_DEPTH, R, t, tol=1e-5)
    np.testing.assert_allclose(metric.transform().R, R, atol=1e-9)


def test_both_gives_a_held_fit_the_depth_scale_of_now():
    """A depth scale that moves away from the odometry's is published, not the fit's old one."""
    _, R, t = known_sim3()
    odometry, depth = Odometry(), DepthBuffer(max_dt=0.01)
    quick = MetricSettings(source='both', thresholds=AlignmentThresholds(min_frames=5),
                           depth_min_pixels=100, depth_window=3)
    metric = MetricAlignment(quick, odometry=odometry, depth=depth)
    T_odom = straight_path(12, step=STEP, turn_deg=2.0)
    T_map = to_map(T_odom, K_DEPTH, R, t)
    run(metric, odometry, depth, T_odom[:8], T_map[:8], predicted=predicted_depth())
    assert metric.state == 'aligned'
    for i in range(8, 12):  # the sensor now says the scene is twice as far
        odometry.buffer.add(i * DT, T_odom[i])
        depth.add(i * DT, (2.0 * K_DEPTH * predicted_depth()).astype(np.float32))
        metric.observe(i * DT, CAMERA, T_map[i], predicted_depth(), MASK, CROP, WH)
    # Twice the scale cannot fit these centres: the last fit with the old scale is held, and
    # published with the new one, centred on the same cameras.
    held = metric.aligner.fit
    assert metric.aligner.waiting_for == 'consistent motion'
    assert held.sim3.scale == pytest.approx(K_DEPTH, rel=1e-6)
    moved = metric.transform()
    assert moved.scale == pytest.approx(2.0 * K_DEPTH, rel=1e-6)
    np.testing.assert_allclose(moved.R, R, atol=1e-6)
    np.testing.assert_allclose(moved.scale * R @ held.map_centroid + moved.t,
                               held.sim3.scale * R @ held.map_centroid + held.sim3.t, atol=1e-9)


def test_both_aligns_a_camera_turning_on_the_spot_where_odometry_alone_cannot():
    _, R, t = known_sim3()
    T_odom = spin_in_place(8, turn_deg=8.0)
    T_map = to_map(T_odom, K_DEPTH, R, t)
    odometry = Odometry()
    alone = MetricAlignment(settings('odometry'), odometry=odometry)
    states, _ = run(alone, odometry, None, T_odom, T_map)
    assert states == ['waiting_for_baseline'] * 8 and alone.aligner.waiting_for == 'baseline'
    odometry, depth = Odometry(), DepthBuffer(max_dt=0.01)
    both = MetricAlignment(settings('both'), odometry=odometry, depth=depth)
    states, _ = run(both, odometry, depth, T_odom, T_map, predicted=predicted_depth())
    assert states == ['waiting_for_baseline'] * 4 + ['aligned'] * 4
    assert_sim3(both.transform(), K_DEPTH, R, t, tol=1e-5)


# -- cameras -----------------------------------------------------------------------------------
def test_sensor_depth_paired_on_arrival_is_used_without_the_buffer():
    depth = DepthBuffer()
    metric = MetricAlignment(settings('depth'), depth=depth)
    predicted = predicted_depth()
    metric.observe(0.0, CAMERA, np.eye(4), predicted, MASK, CROP, WH,
                   sensor_depth=(2.0 * predicted).astype(np.float32))
    assert metric.state == 'aligned' and not metric.faults
    assert metric.transform().scale == pytest.approx(2.0, rel=1e-6)


def test_depth_serves_only_the_first_camera():
    depth = DepthBuffer(max_dt=0.01)
    metric = MetricAlignment(settings('depth'), depth=depth)
    predicted = predicted_depth()
    depth.add(0.0, (3.0 * predicted).astype(np.float32))
    # Another camera's frame neither gives a scale nor counts a missing depth.
    metric.observe(0.0, 'other_optical', np.eye(4), predicted, MASK, CROP, WH, camera=1)
    assert metric.transform() is None and not metric.faults and len(metric.depth_scale) == 0
    metric.observe(0.0, CAMERA, np.eye(4), predicted, MASK, CROP, WH, camera=0)
    metric.observe(0.0, 'other_optical', np.eye(4), predicted, MASK, CROP, WH, camera=1)
    assert len(metric.depth_scale) == 1 and metric.state == 'aligned'
    assert metric.transform().scale == pytest.approx(3.0, rel=1e-6)


@pytest.mark.parametrize('cameras, asked', [('all', [CAMERA, 'other_optical']),
                                            ('first', [CAMERA])])
def test_odometry_cameras(cameras, asked):
    odometry = Odometry()
    metric = MetricAlignment(settings('odometry'), odometry=odometry, odometry_cameras=cameras)
    odometry.buffer.add(0.0, np.eye(4))
    metric.observe(0.0, CAMERA, np.eye(4), None, MASK, CROP, WH, camera=0)
    metric.observe(0.0, 'other_optical', np.eye(4), None, MASK, CROP, WH, camera=1)
    assert odometry.asked == asked and len(metric.aligner) == len(asked)


def test_an_unknown_odometry_cameras_raises():
    with pytest.raises(ValueError, match='odometry_cameras'):
        MetricAlignment(settings('odometry'), odometry=Odometry(), odometry_cameras='some')


def test_a_fault_is_not_counted_while_status_reads_the_faults():
    # status() may run on another thread than observe(); while it reads the faults (under its
    # lock) an observe() must not change them (a new key during the iteration would raise).
    metric = MetricAlignment(settings('odometry'), odometry=Odometry())
    observed = threading.Event()

    def observe_without_pose():
        metric.observe(0.0, CAMERA, None, None, MASK, CROP, WH)
        observed.set()

    class Probe(Counter):
        changed_while_read = None

        def items(self):
            thread = threading.Thread(target=observe_without_pose)
            thread.start()
            Probe.changed_while_read = observed.wait(0.2)
            return super().items()

    metric.faults = Probe()
    metric.status()
    assert observed.wait(5.0) and metric.faults['no_pose'] == 1
    assert Probe.changed_while_read is False


# -- saved sessions ----------------------------------------------------------------------------
def test_state_dict_round_trip_and_source_mismatch():
    metric, _ = aligned_to_odometry()
    state = json.loads(json.dumps(metric.state_dict()))
    assert state['source'] == 'odometry'
    resumed = MetricAlignment(settings('odometry'), odometry=Odometry())
    resumed.load_state_dict(state)
    assert resumed.state == 'aligned' and resumed.version == 1
    assert_sim3(resumed.transform(), *known_sim3())
    with pytest.raises(ValueError, match='odometry'):
        MetricAlignment(settings('depth'), depth=DepthBuffer()).load_state_dict(state)
    with pytest.raises(ValueError, match='none'):
        resumed.load_state_dict(MetricAlignment(settings('none')).state_dict())
    with pytest.raises(ValueError):
        resumed.load_state_dict({})


def test_a_saved_state_without_a_transform_keeps_waiting():
    metric = MetricAlignment(settings('depth'), depth=DepthBuffer())
    state = metric.state_dict()
    assert state == {'source': 'depth', 'transform': None}
    resumed = MetricAlignment(settings('depth'), depth=DepthBuffer())
    resumed.load_state_dict(state)
    assert resumed.transform() is None and resumed.state == 'waiting_for_depth'


# -- express_output ----------------------------------------------------------------------------
def make_output(with_pose=True, with_depth=True):
    rng = np.random.default_rng(5)
    return Output(frame=Frame(camera=0, stamp=1.0, rgb=np.zeros((4, 4, 3), np.uint8)),
                  index=3, points_map=rng.normal(size=(4, 4, 3)).astype(np.float32),
                  conf=np.ones((4, 4), np.float32), rgb=np.zeros((4, 4, 3), np.uint8),
                  mask=np.ones((4, 4), dtype=bool),
                  T_map_cam=pose(rotation((1.0, 1.0, 0.0), 35.0), [0.2, -0.4, 1.1])
                  if with_pose else None,
                  depth=rng.uniform(0.5, 3.0, (4, 4)).astype(np.float32) if with_depth else None,
                  focal=50.0, provisional=False, segment=0, memory=MemoryStats(),
                  model_time=0.01)


def test_express_output_applies_the_similarity():
    scale, R, t = known_sim3()
    output = make_output()
    points, T, depth = output.points_map.copy(), output.T_map_cam.copy(), output.depth.copy()
    express_output(output, Sim3(scale=scale, R=R, t=t), 'odom')
    assert output.frame_id == 'odom' and not output.metric_held
    expected = scale * points.astype(np.float64) @ R.T + t
    assert output.points_map.dtype == np.float32
    np.testing.assert_allclose(output.points_map, expected, atol=1e-5)
    np.testing.assert_allclose(output.T_map_cam[:3, :3], R @ T[:3, :3], atol=1e-12)
    np.testing.assert_allclose(output.T_map_cam[:3, 3], scale * R @ T[:3, 3] + t, atol=1e-12)
    np.testing.assert_array_equal(output.T_map_cam[3], [0.0, 0.0, 0.0, 1.0])
    assert output.depth.dtype == np.float32
    np.testing.assert_allclose(output.depth, scale * depth, rtol=1e-6)


def test_express_output_without_pose_and_depth_moves_only_the_points():
    output = make_output(with_pose=False, with_depth=False)
    points = output.points_map.copy()
    express_output(output, Sim3(scale=2.0), 'map')
    np.testing.assert_allclose(output.points_map, 2.0 * points, rtol=1e-6)
    assert output.T_map_cam is None and output.depth is None


@pytest.mark.parametrize('transform', [None, Sim3()])
def test_express_output_without_a_transform_holds_the_geometry(transform):
    output = make_output()
    points, T, depth = output.points_map, output.T_map_cam, output.depth
    before = points.copy(), T.copy(), depth.copy()
    express_output(output, transform, 'odom')
    assert output.frame_id == 'odom'
    assert output.metric_held == (transform is None)
    assert output.points_map is points and output.T_map_cam is T and output.depth is depth
    for now, then in zip((output.points_map, output.T_map_cam, output.depth), before):
        np.testing.assert_array_equal(now, then)
