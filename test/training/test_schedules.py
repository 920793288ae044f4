"""Schedules against the values the official code computed."""

import json

import pytest

from training.schedules import alpha_at, curriculum_ratio, frame_gap, learning_rate


@pytest.fixture
def official(data_dir):
    return json.loads((data_dir / 'training' / 'loss' / 'schedules.json').read_text())


def test_alpha_schedule_bitwise(official):
    for row in official['alpha']['values']:
        assert repr(alpha_at(row['epoch'], row['epochs'])) == row['alpha_repr'], row


def test_curriculum_ratio_and_gap(official):
    for row in official['curriculum_ratio']['values']:
        assert curriculum_ratio(row['epoch'], row['epochs']) == row['active_ratio'], row
    for row in official['sample_frames_thresh']['values']:
        assert frame_gap(row['ratio'], row['min_thresh'], row['max_thresh']) == row['thresh'], row


def test_ratio_rises_then_falls():
    values = [curriculum_ratio(e, 40) for e in range(40)]
    peak = values.index(1)
    assert all(a <= b for a, b in zip(values[:peak], values[1:peak + 1]))
    assert all(a >= b for a, b in zip(values[30:], values[31:]))
    assert values[-1] == 0.5 and values[0] == 0


def test_learning_rate(official):
    cfg = official['lr']
    for row in cfg['values']:
        got = learning_rate(row['epoch_f'], lr=cfg['lr'], min_lr=cfg['min_lr'],
                            warmup_epochs=cfg['warmup_epochs'], epochs=cfg['epochs'])
        assert got == pytest.approx(row['lr'], rel=1e-12, abs=1e-18), row


def test_rejects_nonpositive_epochs():
    with pytest.raises(ValueError, match='epochs'):
        alpha_at(0, 0)
    with pytest.raises(ValueError, match='epochs'):
        curriculum_ratio(0, -1)
