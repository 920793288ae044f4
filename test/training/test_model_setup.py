"""Initial weights (scratch, Spann3R, DUSt3R), optimiser groups, the dataset mix and sampler."""

import numpy as np
import pytest
import torch

from spann3r_model.checkpoint_official import save_official
from spann3r_model.config import ModelConfig
from spann3r_model.spann3r import Spann3R
from training.datasets.mixture import EpochBatchSampler, MixedDataset
from training.model_setup import build_model, parameter_groups

TINY = ModelConfig.preset('tiny')


def test_init_from_spann3r_and_dust3r_checkpoints(tmp_path):
    torch.manual_seed(1)
    source = Spann3R(TINY)
    full = tmp_path / 'spann3r.pth'
    save_official(source, full)
    torch.manual_seed(2)
    model = build_model(TINY, 'spann3r', str(full), torch.device('cpu'))
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    # A DUSt3R checkpoint: the dust3r.* tensors without the prefix, in {'model': ...}.
    dust3r = {k[len('dust3r.'):]: v.clone() for k, v in source.state_dict().items()
              if k.startswith('dust3r.')}
    path = tmp_path / 'dust3r.pth'
    torch.save({'model': dust3r}, path)
    torch.manual_seed(3)
    model = build_model(TINY, 'dust3r', str(path), torch.device('cpu'))
    state = model.state_dict()
    for key, value in source.state_dict().items():
        if key.startswith('dust3r.'):
            assert torch.equal(state[key], value), key
    assert torch.equal(state['pos_patch_embed.proj.weight'],
                       source.state_dict()['dust3r.patch_embed.proj.weight'])
    assert not torch.equal(state['value_out.weight'], source.state_dict()['value_out.weight'])
    dust3r.pop(next(iter(dust3r)))
    torch.save({'model': dust3r}, path)
    with pytest.raises(ValueError):
        build_model(TINY, 'dust3r', str(path), torch.device('cpu'))


def test_weight_decay_spares_biases_and_norms():
    model = Spann3R(TINY)
    decay, no_decay = parameter_groups(model, 0.05)
    assert decay['weight_decay'] == 0.05 and no_decay['weight_decay'] == 0.0
    assert all(p.ndim >= 2 for p in decay['params'])
    names = {id(p): n for n, p in model.named_parameters()}
    assert any(names[id(p)].endswith('.bias') for p in no_decay['params'])
    assert len(decay['params']) + len(no_decay['params']) == len(list(model.parameters()))


class _Numbers:
    name = 'numbers'

    def __init__(self, n, offset):
        self.n, self.offset, self.epoch = n, offset, None

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self.offset + i

    def set_epoch(self, epoch, ratio):
        self.epoch = epoch


def test_mix_counts_reshuffles_and_repeats():
    small, big = _Numbers(3, 0), _Numbers(50, 100)
    mix = MixedDataset([(small, 7), (big, 5)], seed=0)
    first = [mix[i] for i in range(len(mix))]
    assert len(first) == 12
    assert sorted(v for v in first[:7] if v < 100) == sorted(first[:7])
    assert {v for v in first[:7]} == {0, 1, 2}  # 7 from a part of 3: repeated
    assert all(100 <= v < 150 for v in first[7:]) and len(set(first[7:])) == 5
    mix.set_epoch(1, 0.5)
    assert small.epoch == 1 and [mix[i] for i in range(12)] != first


def test_ranks_split_the_global_batches_of_one_process():
    one = list(EpochBatchSampler(20, 4, seed=3))
    ranks = [list(EpochBatchSampler(20, 2, rank=r, world_size=2, seed=3)) for r in range(2)]
    assert [a + b for a, b in zip(*ranks)] == one
    resumed = EpochBatchSampler(20, 4, seed=3)
    resumed.set_epoch(0, skip_batches=2)
    assert list(resumed) == one[2:]
    other = EpochBatchSampler(20, 4, seed=3)
    other.set_epoch(1)
    assert list(other) != one
    assert sorted(np.concatenate(one)) == list(range(20))
    with pytest.raises(ValueError, match='global batch'):
        EpochBatchSampler(3, 2, world_size=2)


@pytest.mark.parametrize('dropout, same', [(0.0, True), (0.5, False)])
def test_training_forward_uses_the_configured_memory_dropout(dropout, same):
    from training.model_setup import TrainingForward
    torch.manual_seed(0)
    model = Spann3R(TINY).train()
    imgs = [torch.rand(1, 3, 32, 32) * 2 - 1 for _ in range(3)]
    forward = TrainingForward(model, dropout)
    with torch.no_grad():
        first = forward(imgs)[-1][0]['pts3d']
        second = forward(imgs)[-1][0]['pts3d']
    assert torch.equal(first, second) == same
