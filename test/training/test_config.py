"""The typed training config: example files, overrides, validation."""

from pathlib import Path

import pytest

from training.config import apply_override, load_config, TrainConfig
from training.datasets.registry import DATASETS

CONFIGS = Path(__file__).resolve().parents[2] / 'config' / 'training'


@pytest.mark.parametrize('name', ['smoke_cpu.yaml', 'official_5frame.yaml',
                                  'finetune_bag.yaml'])
def test_example_configs_parse_and_round_trip(name):
    cfg = load_config(CONFIGS / name)
    assert all(entry.type in DATASETS for entry in cfg.data.train + cfg.data.val)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_official_recipe_values():
    cfg = load_config(CONFIGS / 'official_5frame.yaml')
    o = cfg.optim
    assert (o.lr, o.min_lr, o.warmup_epochs, o.epochs) == (5e-5, 1e-6, 10, 120)
    assert o.betas == (0.9, 0.95) and o.weight_decay == 0.05 and o.grad_clip == 1.0
    assert cfg.data.num_frames == 5 and cfg.data.image_size == 224
    assert [e.samples for e in cfg.data.train] == [10000] * 7


def test_overrides(tmp_path):
    cfg = load_config(CONFIGS / 'smoke_cpu.yaml',
                      ['optim.lr=3e-4', 'data.train.0.args.root=/elsewhere',
                       'optim.betas=[0.8, 0.9]', 'loss.official_batch_coupling=true',
                       'run.output_dir=' + str(tmp_path)])
    assert cfg.optim.lr == 3e-4 and cfg.optim.betas == (0.8, 0.9)
    assert cfg.data.train[0].args['root'] == '/elsewhere'
    assert cfg.loss.official_batch_coupling is True
    data = {'a': [{'b': 1}]}
    with pytest.raises(ValueError, match='no list entry'):
        apply_override(data, 'a.3.b=2')
    with pytest.raises(ValueError, match='key=value'):
        apply_override(data, 'a.b')


@pytest.mark.parametrize('override, message', [
    ('optim.lrr=1', 'unknown keys'),
    ('optim.lr=fast', 'expected a number'),
    ('model.preset=huge', 'model.preset'),
    ('model.init=dust3r', 'needs model.checkpoint'),
    ('optim.precision=fp8', 'precision'),
    ('data.batch_size=0', 'batch_size'),
    ('data.train=[]', 'data.train lists no dataset'),
    ('loss.curriculum=maybe', 'true or false'),
    ('run.num_threads=-1', 'num_threads'),
])
def test_bad_values_are_precise_errors(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(CONFIGS / 'smoke_cpu.yaml', [override])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ValueError, match='does not exist'):
        load_config(tmp_path / 'none.yaml')
    bad = tmp_path / 'bad.yaml'
    bad.write_text('run: [1, 2\n')
    with pytest.raises(ValueError, match='invalid YAML'):
        load_config(bad)


def test_trainer_imports_nothing_from_ros():
    import subprocess
    import sys

    code = ('import sys, training.train; '
            'bad = [m for m in sys.modules if m.split(".")[0] in '
            '("rclpy", "sensor_msgs", "std_msgs", "spann3r_ros")]; print(bad)')
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          cwd=CONFIGS.parents[1], timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == '[]'
