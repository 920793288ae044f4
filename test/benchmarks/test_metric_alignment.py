"""The metric alignment benchmark's machinery: a tiny run reports every figure, finite, and
without noise every error is at rounding level (so the ground truth, the noise model and the
evaluation agree with each other and with the modules they drive)."""

import importlib.util
import json
import math
from pathlib import Path
import sys

import pytest

BENCHMARKS = Path(__file__).parents[2] / 'benchmarks'
TINY = ['--rooms', '1', '--pose-rooms', '3', '--frames', '30', '--width', '96', '--height', '72',
        '--size', '48', '--fps', '2', '--long-frames', '310']
ODOMETRY_ROUTES = ('odometry_topic', 'odometry_tf', 'both')


@pytest.fixture(scope='module')
def bench():
    spec = importlib.util.spec_from_file_location('metric_alignment_bench',
                                                  BENCHMARKS / 'metric_alignment.py')
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def _strict_load(path):
    def refuse(name):
        raise ValueError(f'non-finite {name} in the report')
    return json.loads(path.read_text(), parse_constant=refuse)


def _finite(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and \
        math.isfinite(value)


def test_tiny_run_reports_every_figure(bench, tmp_path, capsys):
    out = tmp_path / 'report.json'
    report = bench.main(TINY + ['--output', str(out)])
    assert _strict_load(out) == report
    assert 'targets:' in capsys.readouterr().out
    for route in bench.ROUTES:
        summary = report['routes'][route]
        assert summary['not_aligned'] == 0
        assert _finite(summary['scale_error_worst'])
        assert all(isinstance(a, int) and 1 <= a <= 30 for a in summary['aligned_after_frames'])
        cost = report['cost_ms'][route]
        assert cost['frames'] == 30
        for key in ('median_ms', 'p95_ms', 'cpu_median_ms', 'cpu_p95_ms'):
            assert _finite(cost[key]) and cost[key] > 0
    for route in ODOMETRY_ROUTES:
        assert _finite(report['routes'][route]['ate_m_worst'])
        assert _finite(report['routes'][route]['rotation_error_deg_worst'])
        window = report['cost_full_window_ms'][route]
        assert window['frames'] == 310 - report['settings']['window'] + 1
        assert _finite(window['median_ms']) and _finite(window['p95_ms'])
        long = report['long_sequence'][route]
        assert _finite(long['scale_error']) and _finite(long['ate_m'])
    assert _finite(report['topic_tf_agreement']['scale_error'])
    assert _finite(report['topic_tf_agreement']['ate_m'])
    faults = report['faults']
    assert set(faults) == {'odometry_jumps', 'pure_rotation', 'standing_still',
                           'depth_all_invalid'}
    assert _finite(faults['odometry_jumps']['scale_error_worst'])
    assert _finite(faults['odometry_jumps']['ate_m_worst'])
    statistics = report['odometry_statistics']
    assert statistics['rooms'] == 3
    for key in ('scale_error_median', 'scale_error_p90', 'scale_error_worst',
                'scale_error_signed_mean', 'ate_m_worst'):
        assert _finite(statistics[key]), key
    for row in report['checks'] + report['statistics_checks'] + report['robustness']:
        assert row['figure'] is not None, row['name']
        assert isinstance(row['passed'], bool)
        if row['unit']:
            assert _finite(row['figure']), row['name']
    # What must hold whatever the noise: turning in place or standing still never aligns and
    # an all-invalid depth never gives a scale.
    assert faults['pure_rotation']['aligned_after_frames'] == [None]
    assert faults['standing_still']['aligned_after_frames'] == [None]
    for route in ('depth', 'both'):
        assert faults['depth_all_invalid'][route]['states'] == ['waiting_for_depth']
    assert _finite(report['runtime_s'])


def test_without_noise_every_error_is_at_rounding_level(bench, tmp_path):
    report = bench.main(TINY + ['--zero-noise', '--odometry-phase', '0',
                                '--output', str(tmp_path / 'report.json')])
    for route in bench.ROUTES:
        summary = report['routes'][route]
        assert summary['not_aligned'] == 0
        assert summary['scale_error_worst'] < 1e-6, route
    for route in ODOMETRY_ROUTES:
        assert report['routes'][route]['ate_m_worst'] < 1e-6, route
        assert report['long_sequence'][route]['scale_error'] < 1e-6, route
        assert report['long_sequence'][route]['ate_m'] < 1e-6, route
    # Odometry samples on the frame stamps: both odometry paths give the same poses.
    assert report['topic_tf_agreement'] == {'scale_error': 0.0, 'ate_m': 0.0,
                                            'aligned_after_frames_equal': True}
    assert report['odometry_statistics']['scale_error_worst'] < 1e-6
    assert report['odometry_statistics']['ate_m_worst'] < 1e-6
    accuracy = [row for row in report['checks'] + report['statistics_checks']
                if row['unit'] in ('%', 'm')]
    assert accuracy and all(row['passed'] for row in accuracy)
