"""``spann3r-eval --predictions`` reproduces the official eval.py numbers on the reference fixture.

Tolerances are those stated with the fixture (see test/data/tools/open3d_rgbd5/README.md).
"""

import json

import numpy as np
import pytest

from spann3r_ros.cli.eval import main


def test_official_prediction_reproduces_expected_numbers(data_dir, tmp_path):
    root = data_dir / 'tools' / 'open3d_rgbd5'
    expected = json.loads((root / 'expected.json').read_text())
    out = tmp_path / 'report'
    assert main([str(root / 'gt'), '--predictions', str(root / 'pred'), '--out', str(out)]) == 0
    report = json.loads((out / 'report.json').read_text())
    al, exp_al = report['alignment'], expected['alignment']
    assert al['n_points'] == exp_al['n_points_gt'] == 237678
    for key in ('gt_shift_z', 'pred_shift_z', 'gt_scale', 'pred_scale'):
        assert al[key] == pytest.approx(exp_al[key], rel=1e-5), key
    T = np.array(report['icp']['transformation'])
    assert np.abs(T - np.array(expected['icp']['transformation'])).max() < 1e-4
    assert report['icp']['n_correspondences'] == pytest.approx(
        expected['icp']['n_correspondences'], abs=5)
    for key in ('acc', 'acc_med', 'comp', 'comp_med'):
        assert report['metrics'][key] == pytest.approx(expected['metrics'][key], rel=1e-4), key
    for key in ('nc1', 'nc1_med', 'nc2', 'nc2_med'):
        assert report['metrics'][key] == pytest.approx(expected['metrics'][key], abs=1e-3), key
    for name in ('report.md', 'prediction.ply', 'ground_truth.ply', 'trajectory.png',
                 'errors.png'):
        assert (out / name).stat().st_size > 0, name
