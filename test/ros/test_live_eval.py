"""spann3r-eval --live against the real node (real rclpy, in-process, isolated DDS domain).

The node loads the shipped demo weights at 112 px, so focal and poses are meaningful and the
whole protocol (Acc / Comp / NC, ATE) applies. The live metrics must equal those of the offline
path (the same StreamingSession run here) on the frames both have: the node never refines the
last frame, which the offline path flushes.
"""

import json
import math
from pathlib import Path
import threading

from node_harness import synthetic_scannet
import numpy as np
import pytest
from rclpy.executors import MultiThreadedExecutor
from rclpy.parameter import Parameter

from spann3r_model.config import EngineConfig
from spann3r_model.data.scannet import ScanNetScene
from spann3r_model.evaluation.predictions import Predictions
from spann3r_model.evaluation.scoring import evaluate, run_session
from spann3r_model.geometry.frames import optical_to_rep103_pose
from spann3r_model.session import StreamingSession
from spann3r_ros.cli.eval import main as eval_main
from spann3r_ros.cli.playback_score import score_playback
from spann3r_ros.node.node import Spann3rNode
from spann3r_ros.node.player import NodeOutput, Playback

WEIGHTS = Path(__file__).resolve().parents[2] / 'weights' / 'spann3r_tiny_demo.safetensors'
IMAGE_SIZE = 112
FRAMES = 6
METRICS = ('acc', 'acc_med', 'comp', 'comp_med', 'nc', 'nc_med')


@pytest.fixture(scope='module')
def running_node(ros, tmp_path_factory):
    params = {'checkpoint': str(WEIGHTS), 'device': 'cpu', 'min_confidence': 1.0,
              'image_size': IMAGE_SIZE, 'num_threads': 1, 'map_publish_rate': 0.0,
              'diagnostics_rate': 20.0, 'output_dir': str(tmp_path_factory.mktemp('out'))}
    node = Spann3rNode(parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    yield node
    node.shutdown()
    executor.shutdown()
    thread.join(timeout=5)
    node.destroy_node()


@pytest.fixture(scope='module')
def sequence(tmp_path_factory):
    return synthetic_scannet(tmp_path_factory.mktemp('synth'), FRAMES)


def _offline_report(root: Path) -> dict:
    """The offline path on the same frames, restricted to those the node answers."""
    scene = ScanNetScene(root / 'scans' / 'room')
    frame_ids = scene.frame_ids
    assert len(frame_ids) == FRAMES
    session = StreamingSession.from_checkpoint(
        str(WEIGHTS), engine_config=EngineConfig(device='cpu', image_size=IMAGE_SIZE,
                                                 num_threads=1))
    preds, _ = run_session(session, scene, frame_ids)
    keep = slice(0, FRAMES - 1)
    cut = Predictions(preds.pts3d[keep], preds.conf[keep], preds.rgb[keep], preds.source[keep],
                      preds.poses[keep], preds.crop_centre, preds.origin)
    report, _, _ = evaluate(scene, frame_ids, cut)
    return report


def test_live_eval_reports_the_official_protocol_like_offline(running_node, sequence,
                                                              tmp_path):
    out = tmp_path / 'report'
    assert eval_main([str(sequence), '--live', '--out', str(out), '--timeout', '120']) == 0
    report = json.loads((out / 'report.json').read_text())
    live = report['live']
    assert live['mode'] == 'lockstep' and live['min_confidence'] == 1.0
    assert live['frames_published'] == FRAMES
    # The refined result of frame i arrives with frame i + 1: the last one never comes back.
    assert live['frames_answered'] == live['frames_evaluated'] == FRAMES - 1
    assert live['frames_dropped'] == 0
    assert live['published_pixel_fraction'] == 1.0 and not live['filtered_by_min_confidence']
    assert report['n_frames'] == FRAMES - 1
    for key in METRICS:
        assert math.isfinite(report['metrics'][key]), key
    assert 0.0 < report['metrics']['nc'] <= 1.0
    assert report['ate'] is not None and math.isfinite(report['ate']['rmse'])
    assert report['ate']['n'] == FRAMES - 1
    lat = report['latency']
    assert lat['n'] == FRAMES - 1 and 0 < lat['p50_ms'] <= lat['p90_ms'] <= lat['max_ms']
    assert lat['fps'] > 0
    for name in ('report.md', 'trajectory.png', 'latency.png', 'errors.png', 'prediction.ply',
                 'ground_truth.ply'):
        assert (out / name).is_file(), name
    md = (out / 'report.md').read_text()
    assert '## Live run' in md and 'lock-step' in md and 'full official protocol applies' in md

    offline = _offline_report(sequence)
    assert report['evaluated_pixels'] == offline['evaluated_pixels']
    for key in METRICS:
        assert report['metrics'][key] == pytest.approx(offline['metrics'][key], rel=1e-3,
                                                       abs=1e-5), key
    assert report['ate']['rmse'] == pytest.approx(offline['ate']['rmse'], rel=1e-3, abs=1e-5)


def test_live_eval_fixed_rate_mode(running_node, sequence, tmp_path):
    out = tmp_path / 'report'
    assert eval_main([str(sequence), '--live', '--rate', '2', '--out', str(out),
                      '--timeout', '60']) == 0
    report = json.loads((out / 'report.json').read_text())
    live = report['live']
    assert live['mode'] == 'fixed_rate' and live['rate_hz'] == 2.0
    assert live['frames_published'] == FRAMES
    assert live['frames_answered'] + live['frames_dropped'] == FRAMES - 1
    assert report['latency']['n'] == live['frames_answered']
    # Fixed rate: from publishing frame i to its own output, i.e. at least a frame period.
    assert report['latency']['p50_ms'] > 0
    for key in METRICS:
        assert math.isfinite(report['metrics'][key]), key
    assert 'fixed rate 2 Hz' in (out / 'report.md').read_text()


def test_live_eval_without_a_node_is_a_clear_error(ros, sequence, tmp_path, capsys):
    code = eval_main([str(sequence), '--live', '--node-name', 'nobody_here', '--out',
                      str(tmp_path / 'r'), '--timeout', '1'])
    assert code == 2
    assert 'nobody_here' in capsys.readouterr().err
    assert not (tmp_path / 'r' / 'report.json').exists()


def test_filtered_pixels_are_reported_and_poses_aligned(sequence):
    """A node with min_confidence above 1 publishes part of the pixels: the report says so.

    The published poses (map frame: REP 103 axes, another scale) are carried back into the
    first camera's frame, so ATE after Sim(3) vanishes and the scale is recovered.
    """
    scene = ScanNetScene(sequence / 'scans' / 'room')
    frame_ids = scene.frame_ids[:5]
    T0_inv = np.linalg.inv(scene.pose(frame_ids[0]))
    rng = np.random.default_rng(0)
    size = 16
    playback = Playback(rate=None)
    for i in range(len(frame_ids)):
        stamp = 10**9 * (i + 1)
        playback.stamps_ns.append(stamp)
        playback.published[stamp] = float(i)
        if i == len(frame_ids) - 1:
            continue
        conf = 1.0 + 2.0 * rng.random((size, size)).astype(np.float32)
        # Points in the map frame (REP 103 axes): x forward, so in front of the camera.
        pts = np.stack([np.full((size, size), 2.0 + 0.1 * i),
                        *np.meshgrid(np.linspace(1, -1, size), np.linspace(1, -1, size))[::-1]],
                       axis=-1).astype(np.float32)
        mask = conf >= 2.0
        T_cam0_cam = T0_inv @ scene.pose(frame_ids[i])
        T_cam0_cam[:3, 3] *= 0.5
        playback.outputs[stamp] = NodeOutput(pts[mask], conf[mask], conf,
                                             optical_to_rep103_pose(T_cam0_cam), i + 0.5)
        playback.latencies.append(0.5)
    playback.wall_s = 4.0
    report, _, _ = score_playback(scene, frame_ids, playback, min_confidence=2.0)
    live = report['live']
    assert live['filtered_by_min_confidence']
    assert 0.3 < live['published_pixel_fraction'] < 0.7
    assert report['evaluated_pixels'] <= live['published_pixel_fraction'] * 4 * size * size
    assert live['throughput_fps'] == pytest.approx(1.0)
    assert report['ate']['n'] == 4 and report['ate']['rmse'] < 1e-5
    assert report['ate']['scale'] == pytest.approx(2.0, rel=1e-5)
    assert report['latency']['n'] == 4 and report['latency']['max_ms'] == pytest.approx(500.0)
    from spann3r_ros.cli.playback_score import live_markdown as markdown
    assert 'Not the full official protocol' in markdown(report)


def test_a_dropped_reference_frame_is_a_clear_error(sequence):
    scene = ScanNetScene(sequence / 'scans' / 'room')
    frame_ids = scene.frame_ids[:3]
    playback = Playback(stamps_ns=[1, 2, 3], published={1: 0.0, 2: 0.1, 3: 0.2}, rate=50.0)
    conf = np.ones((8, 8), np.float32)
    pts = np.ones((64, 3), np.float32)
    playback.outputs[2] = NodeOutput(pts, conf.ravel(), conf, None, 0.5)
    with pytest.raises(ValueError, match='frame 0.*lower --rate'):
        score_playback(scene, frame_ids, playback, min_confidence=1.0)
