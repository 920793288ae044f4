"""The GPU check's code paths on the CPU: tiny model, fp32 and CPU bf16 autocast, real rclpy.

The check itself needs CUDA; these tests run the same functions with ``device='cpu'`` so that
the precision plumbing, the error measures, the node run and the report stay exercised here.
"""

import importlib.util
import json
import os
from pathlib import Path
import subprocess
import sys

import numpy as np
import pytest
import torch

from spann3r_model.data.crop import CropBox
from spann3r_model.results import FrameResult

BENCHMARKS = Path(__file__).parents[2] / 'benchmarks'


@pytest.fixture(scope='module')
def gpu_check():
    spec = importlib.util.spec_from_file_location('gpu_check', BENCHMARKS / 'gpu_check.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _result(pts3d, conf):
    return FrameResult(index=0, stamp=0.0, pts3d=np.asarray(pts3d, np.float32),
                       conf=np.asarray(conf, np.float32), rgb=np.zeros((1, 2, 3), np.uint8),
                       crop=CropBox((0, 0, 2, 1), (2, 1), (0, 0), 1))


def test_cpu_run_covers_every_part_and_reports_it(gpu_check):
    report = gpu_check.run_check('cpu', 'tiny', frames=4, compare_frames=3,
                                 precisions=('fp32', 'bf16'), image_size=64,
                                 node_precision='fp32', node_seconds=1.5)
    fp32, bf16 = report['errors']['fp32'], report['errors']['bf16']
    # The same device and precision as the reference: exactly equal.
    assert fp32['pts3d_abs'] == 0 and fp32['conf_rel'] == 0 and fp32['same_skips']
    assert fp32['pass'] and fp32['reference'] == 'cpu fp32'
    # bf16 autocast really ran: not equal to fp32, and close to it.
    assert 0 < bf16['pts3d_rel'] < 0.05 and 0 < bf16['conf_rel'] < 0.05
    assert bf16['nonfinite'] == 0 and bf16['pass']
    for precision in ('fp32', 'bf16'):
        speed = report['speed'][precision]
        assert speed['fps'] > 0 and speed['p90_ms'] >= speed['p50_ms'] > 0
        assert speed['tokens'] > 0 and speed['peak_mib'] is None and speed['flat'] is None
    node = report['node']
    assert 'na' not in node, node
    # node_fps raises unless the warm-up clouds arrived; how many more fall into the short
    # window depends on the machine's load, so only the arithmetic of the report is pinned.
    assert node['published'] > node['clouds'] and node['window_s'] == 1.5
    assert node['fps'] == pytest.approx(node['clouds'] / node['window_s'])
    # No speed target on a CPU, no memory check without CUDA: the accuracy checks only.
    assert report['checks'] == {'fp32 accuracy': True, 'bf16 accuracy': True}
    text = gpu_check.format_report(report)
    assert text.splitlines()[0].startswith('Spann3R GPU check: tiny model')
    assert 'fp32  vs cpu fp32' in text and 'bf16  vs cpu fp32' in text
    assert 'peak memory n/a (not CUDA)' in text
    assert 'node pipeline (fp32): ' in text and 'FPS' in text
    assert text.splitlines()[-1] == 'result: PASS (2 checks)'
    json.dumps(report)
    # The CPU run leaves torch's process settings as it found them.
    assert torch.backends.cudnn.allow_tf32


def test_output_error_measures(gpu_check):
    ref = [_result([[[0, 0, 2], [1, 0, 0]]], [[1, 2]]),
           _result([[[0, 0, 1], [0, 0, 1]]], [[4, 1]])]
    got = [_result([[[0, 0, 2.01], [1, 0, 0]]], [[1, 2]]),
           _result([[[0, 0, 1], [0, np.nan, 1]]], [[5, 1]])]
    err = gpu_check.output_error(ref, got)
    assert err['pts3d_abs'] == pytest.approx(0.01, rel=1e-4)
    assert err['pts3d_rel'] == pytest.approx(0.005, rel=1e-4)
    assert err['conf_rel'] == pytest.approx(0.25) and err['nonfinite'] == 1
    with pytest.raises(ValueError, match='compare'):
        gpu_check.output_error(ref, got[:1])


def test_checks_memory_growth_and_the_speed_target_on_h100_class_only(gpu_check):
    speed = {'fps': 50.0, 'flat': False}
    report = {'device': 'NVIDIA H100 80GB HBM3', 'errors': {'fp32': {'pass': True}},
              'speed': {'fp32': {'fps': 20.0, 'flat': True}, 'bf16': speed}}
    assert gpu_check.checks(report) == {'fp32 accuracy': True, 'memory flat': False,
                                        'bf16 >= 60 FPS': False}
    speed.update(fps=61.0, flat=True)
    assert all(gpu_check.checks(report).values())
    report['device'] = 'NVIDIA A100-SXM4-80GB'
    assert 'bf16 >= 60 FPS' not in gpu_check.checks(report)
    assert gpu_check.memory_windows(200) == ((50, 100), (150, 200))


def test_node_run_is_na_without_ros(gpu_check, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec',
                        lambda name, *a: None if name == 'rclpy' else real(name, *a))
    node = gpu_check.node_pipeline(gpu_check.build_model('tiny'), 'cpu', 'fp32', 64)
    assert node == {'na': 'rclpy not installed here (no ROS 2 on this machine)'}


def test_refuses_without_cuda_in_one_message(gpu_check, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert gpu_check.main([]) == 2
    out = capsys.readouterr()
    assert out.out == '' and out.err.count('\n') == 1 and 'CUDA is not available' in out.err
    env = dict(os.environ, CUDA_VISIBLE_DEVICES='', PYTHON=sys.executable)
    run = subprocess.run(['bash', str(BENCHMARKS / 'gpu_check.sh')], env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    assert run.stdout == '' and run.stderr.splitlines() == [
        'gpu_check: CUDA is not available here; this check needs an NVIDIA GPU']
