"""Two gloo processes under torchrun train exactly like one process with the global batch."""

import os
from pathlib import Path
import subprocess
import sys

import pytest
import torch
import yaml

from spann3r_model.config import ModelConfig
from spann3r_model.spann3r import Spann3R
from training.config import TrainConfig
from training.state import load_training_state
from training.train import Trainer

REPO = Path(__file__).resolve().parents[2]


def _config(root, out, batch_size):
    return {
        'run': {'output_dir': str(out), 'seed': 5, 'device': 'cpu'},
        # Dropout masks depend on how the batch is split, so the comparison runs without it.
        'model': {'preset': 'tiny', 'memory_dropout': 0.0},
        'data': {'train': [{'type': 'scannet', 'samples': 8,
                            'args': {'root': str(root), 'min_gap': 1, 'max_gap': 3}}],
                 'num_frames': 3, 'image_size': 32, 'batch_size': batch_size,
                 'num_workers': 0},
        'optim': {'epochs': 2, 'lr': 2e-4, 'warmup_epochs': 0.5, 'max_steps': 2},
        'log': {'every': 1, 'tensorboard': False, 'progress': False},
    }


@pytest.mark.slow
def test_two_processes_match_one_with_the_global_batch(scannet_root, tmp_path):
    cfg = tmp_path / 'ddp.yaml'
    cfg.write_text(yaml.safe_dump(_config(scannet_root, tmp_path / 'ddp', batch_size=1)))
    env = {**os.environ, 'PYTHONPATH': str(REPO), 'OMP_NUM_THREADS': '1'}
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node',
           '2', '-m', 'training.train', str(cfg)]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    Trainer(TrainConfig.from_dict(_config(scannet_root, tmp_path / 'one', batch_size=2))).fit()
    ddp = load_training_state(tmp_path / 'ddp' / 'checkpoint-last.pt')
    one = load_training_state(tmp_path / 'one' / 'checkpoint-last.pt')
    assert ddp['global_step'] == one['global_step'] == 2
    torch.manual_seed(5)
    init = Spann3R(ModelConfig.preset('tiny')).state_dict()
    changed = 0
    for key, value in one['model'].items():
        other = ddp['model'][key]
        assert torch.allclose(value, other, rtol=1e-4, atol=1e-6), key
        changed += int(not torch.allclose(value, init[key], rtol=1e-4, atol=1e-6))
    assert changed > len(init) // 2  # the comparison is not between two untrained models
