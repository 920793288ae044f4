"""The training loop: the loss falls, resume is exact, a killed run resumes, exports load."""

import os
from pathlib import Path
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from spann3r_model.checkpoint import load_model
from training.config import TrainConfig
from training.losses import spann3r_loss
from training.state import load_training_state
from training.train import main, split_views, Trainer

REPO = Path(__file__).resolve().parents[2]


def _config(root, out, **optim):
    data = {
        'run': {'output_dir': str(out), 'seed': 3, 'device': 'cpu'},
        'model': {'preset': 'tiny', 'memory_dropout': 0.15},
        'data': {'train': [{'type': 'scannet', 'samples': 6,
                            'args': {'root': str(root), 'min_gap': 1, 'max_gap': 3}}],
                 'num_frames': 3, 'image_size': 32, 'batch_size': 2, 'num_workers': 0},
        'optim': {'epochs': 3, 'lr': 2e-4, 'warmup_epochs': 0.5, **optim},
        'log': {'every': 1, 'checkpoint_every': 1, 'tensorboard': False, 'progress': False},
    }
    return data


def _run(data):
    Trainer(TrainConfig.from_dict(data)).fit()


def test_resume_is_bit_exact(scannet_root, tmp_path):
    straight = _config(scannet_root, tmp_path / 'a', max_steps=4)
    _run(straight)
    split = _config(scannet_root, tmp_path / 'b', max_steps=2)
    _run(split)
    first = load_training_state(tmp_path / 'b' / 'checkpoint-last.pt')
    assert first['global_step'] == 2 and first['step_in_epoch'] == 2
    split['optim']['max_steps'] = 4
    _run(split)  # resume: auto picks up b/checkpoint-last.pt; crosses into epoch 1
    a = load_training_state(tmp_path / 'a' / 'checkpoint-last.pt')
    b = load_training_state(tmp_path / 'b' / 'checkpoint-last.pt')
    assert a['global_step'] == b['global_step'] == 4 and a['epoch'] == b['epoch'] == 1
    assert not torch.equal(a['model']['value_out.weight'], first['model']['value_out.weight'])
    for key, value in a['model'].items():
        assert torch.equal(value, b['model'][key]), key
    for sa, sb in zip(a['optimizer']['state'].values(), b['optimizer']['state'].values()):
        assert torch.equal(sa['exp_avg'], sb['exp_avg'])
    assert torch.equal(a['rng']['torch'], b['rng']['torch'])
    # Exported weights load through the model's own loader, with the architecture recorded.
    for name in ('model.safetensors', 'spann3r.pth'):
        model, cfg = load_model(tmp_path / 'a' / name)
        assert cfg.enc_embed_dim == 192
        assert torch.equal(model.state_dict()['value_out.weight'],
                           a['model']['value_out.weight'])
    saved = yaml.safe_load((tmp_path / 'a' / 'config.yaml').read_text())
    assert saved['optim']['max_steps'] == 4 and saved['model']['preset'] == 'tiny'
    # Resuming takes the architecture from the checkpoint, not from the config, and a run
    # already at its step budget trains no further.
    straight['model']['preset'] = 'released'
    _run(straight)
    again = load_training_state(tmp_path / 'a' / 'checkpoint-last.pt')
    assert again['global_step'] == 4 and again['model_config']['enc_embed_dim'] == 192
    assert torch.equal(again['model']['value_out.weight'], a['model']['value_out.weight'])


def test_cli_reports_bad_configs(tmp_path, caplog):
    assert main([str(tmp_path / 'missing.yaml')]) == 2
    assert 'does not exist' in caplog.text


@pytest.fixture
def one_torch_thread():
    """Run this process's torch on one intra-op thread for the test; yield that count.

    CPU kernels reduce in an order that depends on the thread count, so two runs agree bit for
    bit only with the same count. Other tests in the same process (the node's sessions, the
    model tests) change it, so a test comparing against a child process pins it in both.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield 1
    torch.set_num_threads(before)


def _tail(path, lines=20):
    return '\n'.join(path.read_text(errors='replace').splitlines()[-lines:])


@pytest.mark.slow
def test_killed_run_resumes_from_its_last_checkpoint(scannet_root, tmp_path, one_torch_thread):
    data = _config(scannet_root, tmp_path / 'killed', epochs=50)
    # The child pins its thread count through the config (run.num_threads), not the environment.
    data['run']['num_threads'] = one_torch_thread
    cfg_path = tmp_path / 'killed.yaml'
    cfg_path.write_text(yaml.safe_dump(data))
    env = {k: v for k, v in os.environ.items() if k != 'OMP_NUM_THREADS'}
    env['PYTHONPATH'] = str(REPO)
    log = tmp_path / 'killed.log'
    with open(log, 'wb') as sink:
        proc = subprocess.Popen([sys.executable, '-m', 'training.train', str(cfg_path)],
                                cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT)
    last = tmp_path / 'killed' / 'checkpoint-last.pt'
    deadline = time.time() + 240
    try:
        while time.time() < deadline:
            if last.is_file() and load_training_state(last)['global_step'] >= 2:
                break
            assert proc.poll() is None, f'the training process died on its own:\n{_tail(log)}'
            time.sleep(0.2)
        else:
            pytest.fail(f'no checkpoint after 240 s:\n{_tail(log)}')
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    # The child really ran with the thread count of this process (else the comparison below
    # would test the CPU kernels, not the resume).
    assert f'torch intra-op threads: {one_torch_thread}' in log.read_text(), _tail(log)
    step = load_training_state(last)['global_step']
    data['optim']['max_steps'] = step + 1
    _run(data)
    resumed = load_training_state(last)
    assert resumed['global_step'] == step + 1
    reference = _config(scannet_root, tmp_path / 'ref', epochs=50, max_steps=step + 1)
    _run(reference)
    ref = load_training_state(tmp_path / 'ref' / 'checkpoint-last.pt')
    for key, value in ref['model'].items():
        assert torch.equal(value, resumed['model'][key]), key


@pytest.mark.slow
def test_training_loss_falls(scannet_root, tmp_path):
    data = _config(scannet_root, tmp_path / 'fall', max_steps=12, epochs=4)
    data['model']['memory_dropout'] = 0.0
    data['data']['train'][0]['args']['color_jitter'] = False
    data['data']['val'] = [{'type': 'scannet', 'samples': 1,
                            'args': {'root': str(scannet_root), 'min_gap': 1, 'max_gap': 2}}]
    data['log']['tensorboard'] = True
    trainer = Trainer(TrainConfig.from_dict(data))
    batch = torch.utils.data.default_collate([trainer.train_set[i] for i in range(4)])
    imgs, views = split_views(batch, torch.device('cpu'))

    def loss_now():
        with torch.no_grad():
            return float(spann3r_loss(views, trainer.forward(imgs), 0.4).total)

    before = loss_now()
    trainer.fit()
    after = loss_now()
    assert after < before - 0.3, (before, after)
    # Validation ran every epoch with the evaluation metrics; the best checkpoint was kept.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / 'fall' / 'tensorboard'))
    events.Reload()
    tags = set(events.Tags()['scalars'])
    assert {'train/loss', 'train/lr', 'train/grad_norm', 'train/samples_per_s',
            'val/chamfer', 'val/acc', 'val/comp', 'val/nc'} <= tags
    assert len(events.Scalars('val/chamfer')) == 3  # epochs 0..2 complete before step 12
    best = load_training_state(tmp_path / 'fall' / 'checkpoint-best.pt')
    chamfer = min(e.value for e in events.Scalars('val/chamfer'))
    assert best['best_metric'] == pytest.approx(chamfer, rel=1e-6)


@pytest.mark.slow
def test_gradient_accumulation_matches_the_larger_batch(scannet_root, tmp_path):
    runs = {}
    for name, batch, accum in (('big', 2, 1), ('accum', 1, 2)):
        data = _config(scannet_root, tmp_path / name, max_steps=2, accum_steps=accum)
        data['model']['memory_dropout'] = 0.0
        data['data']['batch_size'] = batch
        _run(data)
        runs[name] = load_training_state(tmp_path / name / 'checkpoint-last.pt')
    assert runs['big']['global_step'] == runs['accum']['global_step'] == 2
    for key, value in runs['big']['model'].items():
        assert torch.allclose(value, runs['accum']['model'][key], rtol=1e-4, atol=1e-6), key
