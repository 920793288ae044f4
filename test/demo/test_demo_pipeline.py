"""``make demo`` end to end (real node, real topics, real bag) and the pieces it relies on."""

import json
import math
import os
from pathlib import Path
import re
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from spann3r_model.geometry.frames import optical_to_rep103_points, optical_to_rep103_pose
from spann3r_model.io.ply import read_ply
from spann3r_ros.cli.demo import DEFAULT_WEIGHTS
from spann3r_ros.cli.playback_score import dense_predictions
from spann3r_ros.node.player import NodeOutput, Playback

ROOT = Path(__file__).resolve().parents[2]


def _demo(*args, timeout=600):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, '-m', 'spann3r_ros.cli.demo', *map(str, args)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_the_demo_finds_the_shipped_weights():
    assert DEFAULT_WEIGHTS == ROOT / 'weights' / 'spann3r_tiny_demo.safetensors'
    assert DEFAULT_WEIGHTS.is_file()


@pytest.mark.slow
def test_demo_pipeline_writes_every_output(tmp_path):
    out = tmp_path / 'demo'
    frames = 6
    # The shipped weights, found by default as `make demo` finds them.
    run = _demo('--frames', frames, '--out', out)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    # It says where everything is.
    for name in ('map.ply', 'report.json', 'report.md', 'preview.png'):
        assert str(out / name) in run.stdout, name

    report = json.loads((out / 'report.json').read_text())
    # Frame i is refined when frame i + 1 is processed: all but the last come back.
    live = report['live']
    assert live['frames_published'] == frames
    assert live['frames_answered'] == frames - 1
    assert live['frames_evaluated'] == frames - 1
    metrics = report['metrics']
    for key in ('acc', 'acc_med', 'comp', 'comp_med', 'nc'):
        assert math.isfinite(metrics[key]) and metrics[key] > 0, (key, metrics[key])
    assert 0.0 <= metrics['nc'] <= 1.0
    # Loose bounds the shipped weights meet with room to spare and earlier weights miss: on
    # these 6 frames the shipped weights give Acc 0.22 m, Comp 0.08 m, NC 0.72; the previous
    # demo weights (500 steps) gave 0.55 m, 0.35 m, 0.51; an untrained network 24 m, 19 m.
    assert metrics['acc'] < 0.4 and metrics['comp'] < 0.2 and metrics['nc'] > 0.6, metrics
    assert report['evaluated_pixels'] > 0
    latency = report['latency']
    assert latency['n'] == frames - 1
    assert 0 < latency['p50_ms'] <= latency['max_ms'] < 600_000
    assert live['throughput_fps'] > 0
    # The trained weights estimate a focal and a pose for every frame.
    assert report['ate'] is not None and math.isfinite(report['ate']['rmse'])
    assert report['ate']['n'] == frames - 1

    cloud = read_ply(out / 'map.ply')
    assert len(cloud['xyz']) > 0 and len(cloud['xyz']) == report['map_points']
    assert np.isfinite(cloud['xyz']).all()
    assert cloud['rgb'].shape == cloud['xyz'].shape and cloud['rgb'].dtype == np.uint8

    md = (out / 'report.md').read_text()
    assert 'ATE' in md
    acc_row = re.search(r'^\| Acc \| ([0-9.e+-]+) \|', md, re.M)
    assert acc_row and float(acc_row.group(1)) == pytest.approx(metrics['acc'], rel=1e-4)

    with Image.open(out / 'preview.png') as img:
        img.load()
        assert img.format == 'PNG' and img.width > 600 and img.height > 200
        pixels = np.asarray(img.convert('RGB'))
    assert pixels.std() > 5  # something was drawn

    # The node was stopped: its log ends with the saved map, no traceback.
    log = (out / 'node.log').read_text()
    assert 'saved' in log and 'Traceback' not in log


def test_bad_arguments_give_a_clear_error(tmp_path):
    run = _demo('--checkpoint', tmp_path / 'missing.safetensors', '--out', tmp_path / 'o')
    assert run.returncode == 2
    assert 'missing.safetensors' in run.stderr and 'do not exist' in run.stderr
    run = _demo('--frames', 2, '--out', tmp_path / 'o')
    assert run.returncode == 2 and '--frames must be >= 3' in run.stderr


def test_dense_pointmaps_are_rebuilt_from_the_published_clouds():
    rng = np.random.default_rng(1)
    size, min_conf = 8, 1.5
    stamps = [10**9 * s for s in range(3)]
    pts = rng.normal(size=(3, size, size, 3)).astype(np.float32)
    conf = rng.uniform(1.0, 3.0, (3, size, size)).astype(np.float32)
    T = np.eye(4)
    T[:3, 3] = [0.1, -0.2, 0.3]
    playback = Playback(stamps_ns=stamps)
    # Published as the node does: map frame, confident pixels only, row-major order.
    for i in range(2):
        mask = conf[i] >= min_conf
        pose = optical_to_rep103_pose(T) if i == 1 else None
        playback.outputs[stamps[i]] = NodeOutput(optical_to_rep103_points(pts[i])[mask],
                                                 conf[i][mask], conf[i], pose)
    dense = dense_predictions(playback, min_conf)
    assert list(dense.frame_index) == [0, 1]
    for i in range(2):
        mask = conf[i] >= min_conf
        np.testing.assert_allclose(dense.pts[i][mask], pts[i][mask], atol=1e-6)
        assert np.isnan(dense.pts[i][~mask]).all()
    assert np.isnan(dense.poses[0]).all()
    np.testing.assert_allclose(dense.poses[1], T, atol=1e-12)
