"""Checkpoint reading, writing and every rejection path, on a small official-style module.

The module uses the official key layout where it matters to the loader: ``dust3r.`` prefixes,
a DPT ``scratch`` whose ``layer{1..4}_rn`` and ``layer_rn.{0..3}`` name the same convolutions.
"""

import argparse
import json
import os
from pathlib import Path
import pickle

import pytest
from safetensors import safe_open
import torch
from torch import nn

from spann3r_model.checkpoint import load_into, read_state_dict
from spann3r_model.checkpoint_keys import (
    alias_of,
    CheckpointError,
    filter_state_dict,
    match_state_dict,
)
from spann3r_model.checkpoint_official import save_official
from spann3r_model.checkpoint_safetensors import save_safetensors
from spann3r_model.config import TINY


class _Scratch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer_rn = nn.ModuleList(nn.Conv2d(3, 5, 3, bias=False) for _ in range(4))
        # The official DPT registers each convolution twice: in a list and by name.
        for i, conv in enumerate(self.layer_rn):
            setattr(self, f'layer{i + 1}_rn', conv)


class _Dpt(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scratch = _Scratch()
        self.head = nn.Sequential(nn.Conv2d(5, 4, 1))


class _Head(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.dpt = _Dpt()


class _Dust3r(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, 8, 4, stride=4)
        self.enc_blocks = nn.ModuleList(nn.Linear(8, 8) for _ in range(12))
        self.downstream_head1 = _Head()


class OfficialStyle(nn.Module):
    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.dust3r = _Dust3r()
        self.value_out = nn.Linear(width, width)


def _model(seed: int) -> OfficialStyle:
    torch.manual_seed(seed)
    return OfficialStyle()


def _assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


SCRATCH = 'dust3r.downstream_head1.dpt.scratch.'


def test_alias_names_map_both_ways() -> None:
    assert alias_of(SCRATCH + 'layer1_rn.weight') == SCRATCH + 'layer_rn.0.weight'
    assert alias_of(SCRATCH + 'layer_rn.3.weight') == SCRATCH + 'layer4_rn.weight'
    assert alias_of('dust3r.downstream_head2.dpt.scratch.layer3_rn.weight') == (
        'dust3r.downstream_head2.dpt.scratch.layer_rn.2.weight')
    assert alias_of(SCRATCH + 'refinenet1.out_conv.weight') is None
    assert alias_of(SCRATCH + 'layer_rn.4.weight') is None
    assert alias_of('value_out.weight') is None


def test_filter_strips_wrapper_prefixes() -> None:
    t = torch.zeros(1)
    out = filter_state_dict({'module.a.b': t, '_orig_mod.c': t, 'module._orig_mod.d': t,
                             'e._orig_mod.f': t, 'plain': t})
    assert set(out) == {'a.b', 'c', 'd', 'e.f', 'plain'}
    with pytest.raises(CheckpointError, match='collides'):
        filter_state_dict({'module.a': t, 'a': t})
    with pytest.raises(CheckpointError, match='not a tensor'):
        filter_state_dict({'a': 3})


def test_safetensors_round_trip_records_config_and_one_alias_name(tmp_path: Path) -> None:
    path = tmp_path / 'w.safetensors'
    src = _model(0)
    save_safetensors(src, TINY, path, metadata={'run': 'unit'})
    with safe_open(str(path), framework='pt') as handle:
        keys, meta = set(handle.keys()), handle.metadata()
    assert meta['spann3r_format_version'] == '1' and meta['run'] == 'unit'
    # safetensors cannot hold shared tensors: exactly one name of each pair is stored.
    for i in range(4):
        names = {SCRATCH + f'layer{i + 1}_rn.weight', SCRATCH + f'layer_rn.{i}.weight'}
        assert len(names & keys) == 1
    state_dict, config = read_state_dict(path)
    assert config == TINY
    dst = _model(1)
    load_into(dst, state_dict, str(path))
    _assert_same_weights(src, dst)


def test_official_round_trip_keeps_both_names_and_args(tmp_path: Path) -> None:
    path = tmp_path / 'spann3r.pth'
    src = _model(0)
    save_official(src, path, args=argparse.Namespace(lr=5e-5, model='Spann3R()', hooks=[0, 6]),
                  config=TINY)
    with torch.serialization.safe_globals([argparse.Namespace]):
        raw = torch.load(path, weights_only=True)
    assert set(raw) == {'model', 'args'}
    assert raw['args'].lr == 5e-5 and raw['args'].hooks == [0, 6]
    assert SCRATCH + 'layer2_rn.weight' in raw['model']
    assert SCRATCH + 'layer_rn.1.weight' in raw['model']
    state_dict, config = read_state_dict(path)
    assert config == TINY
    dst = _model(1)
    load_into(dst, state_dict, str(path))
    _assert_same_weights(src, dst)


def test_official_container_written_by_training_code_loads(tmp_path: Path) -> None:
    # What DUSt3R-lineage training writes: DDP prefixes, optimizer and scaler state, args.
    src = _model(0)
    model = src.state_dict()
    optimizer = torch.optim.AdamW(src.parameters())
    path = tmp_path / 'checkpoint-last.pth'
    torch.save({'model': {f'module.{k}': v for k, v in model.items()},
                'optimizer': optimizer.state_dict(), 'scaler': {'scale': 65536.0},
                'args': argparse.Namespace(model='Spann3R(use_feat=False)', epochs=120),
                'epoch': 7, 'best_so_far': 0.25}, path)
    state_dict, config = read_state_dict(path)
    assert config is None
    dst = _model(1)
    load_into(dst, state_dict, str(path))
    _assert_same_weights(src, dst)


def test_bare_and_compiled_state_dicts_load(tmp_path: Path) -> None:
    src = _model(0)
    path = tmp_path / 'bare.pth'
    torch.save({f'_orig_mod.{k}': v for k, v in src.state_dict().items()}, path)
    dst = _model(1)
    load_into(dst, read_state_dict(path)[0], str(path))
    _assert_same_weights(src, dst)


@pytest.mark.parametrize('keep', ['layer3_rn.weight', 'layer_rn.2.weight'])
def test_either_alias_name_alone_loads_both(tmp_path: Path, keep: str) -> None:
    src = _model(0)
    state_dict = dict(src.state_dict())
    drop = alias_of(SCRATCH + keep)
    del state_dict[drop]
    dst = _model(1)
    load_into(dst, state_dict)
    assert torch.equal(dst.dust3r.downstream_head1.dpt.scratch.layer3_rn.weight,
                       src.dust3r.downstream_head1.dpt.scratch.layer_rn[2].weight)
    # One module behind both names: they stay one tensor after loading.
    assert dst.state_dict()[drop].data_ptr() == dst.state_dict()[SCRATCH + keep].data_ptr()


def test_differing_alias_copies_are_refused() -> None:
    state_dict = {k: v.clone() for k, v in _model(0).state_dict().items()}
    state_dict[SCRATCH + 'layer1_rn.weight'] += 1.0
    with pytest.raises(CheckpointError, match='layer1_rn.weight.*differ|differ'):
        load_into(_model(1), state_dict, 'x.pth')


def test_mismatch_report_lists_missing_unexpected_and_shapes(tmp_path: Path) -> None:
    state_dict = dict(_model(0).state_dict())
    del state_dict['value_out.bias']
    state_dict['value_out.weight'] = torch.zeros(3, 8)
    state_dict['extra.thing'] = torch.zeros(1)
    with pytest.raises(CheckpointError) as info:
        load_into(_model(1), state_dict, 'my_weights.pth')
    message = str(info.value)
    assert 'my_weights.pth' in message
    assert '1 missing keys: value_out.bias' in message
    assert '1 unexpected keys: extra.thing' in message
    assert 'value_out.weight (file [3, 8], model [8, 8])' in message


def test_long_key_lists_are_truncated() -> None:
    expected = {f'k{i:02d}': torch.Size([1]) for i in range(25)}
    with pytest.raises(CheckpointError) as info:
        match_state_dict(expected, {}, 'f.pth')
    message = str(info.value)
    assert '25 missing keys' in message and '... and 15 more' in message
    assert 'k09' in message and 'k10' not in message


def test_model_untouched_when_load_fails() -> None:
    dst = _model(1)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    state_dict = {k: torch.full_like(v, 7.0) for k, v in _model(0).state_dict().items()}
    state_dict['surplus'] = torch.zeros(1)
    with pytest.raises(CheckpointError):
        load_into(dst, state_dict)
    for key, value in dst.state_dict().items():
        assert torch.equal(value, before[key])


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match='does not exist'):
        read_state_dict(tmp_path / 'nope.pth')


@pytest.mark.parametrize('fmt', ['pth', 'safetensors'])
def test_truncated_files_are_refused(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f'w.{fmt}'
    if fmt == 'pth':
        save_official(_model(0), path)
    else:
        save_safetensors(_model(0), TINY, path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match=str(path.name)):
        read_state_dict(path)


def test_garbage_and_wrong_containers_are_refused(tmp_path: Path) -> None:
    garbage = tmp_path / 'garbage.bin'
    garbage.write_bytes(b'hello, this is not a checkpoint at all')
    with pytest.raises(CheckpointError, match='neither'):
        read_state_dict(garbage)
    empty = tmp_path / 'empty.pth'
    empty.write_bytes(b'')
    with pytest.raises(CheckpointError):
        read_state_dict(empty)
    a_list = tmp_path / 'list.pth'
    torch.save([torch.zeros(1)], a_list)
    with pytest.raises(CheckpointError, match='expected a dict, got list'):
        read_state_dict(a_list)
    no_model = tmp_path / 'nomodel.pth'
    torch.save({'epoch': 3, 'weights': {'a': torch.zeros(1)}}, no_model)
    with pytest.raises(CheckpointError, match='neither a state_dict'):
        read_state_dict(no_model)
    bad_model = tmp_path / 'badmodel.pth'
    torch.save({'model': [torch.zeros(1)]}, bad_model)
    with pytest.raises(CheckpointError, match="'model' is a list"):
        read_state_dict(bad_model)
    bad_value = tmp_path / 'badvalue.pth'
    torch.save({'model': {'a': 'text'}}, bad_value)
    with pytest.raises(CheckpointError, match='not a tensor'):
        read_state_dict(bad_value)


class _Exploit:
    """Unpickling this calls ``os.system``: a loader that runs it is unsafe."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}',))


def test_code_executing_pickle_is_refused_in_torch_container(tmp_path: Path) -> None:
    marker = tmp_path / 'pwned'
    path = tmp_path / 'evil.pth'
    torch.save({'model': _model(0).state_dict(), 'args': _Exploit(marker)}, path)
    with pytest.raises(CheckpointError, match='refused') as info:
        read_state_dict(path)
    assert 'system' in str(info.value) and 'weights_only' not in str(info.value)
    assert not marker.exists()


def test_code_executing_raw_pickle_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / 'pwned'
    path = tmp_path / 'evil.pkl'
    path.write_bytes(pickle.dumps({'model': _Exploit(marker)}, protocol=2))
    with pytest.raises(CheckpointError):
        read_state_dict(path)
    assert not marker.exists()
    # The exploit is real: an unrestricted unpickler runs it.
    pickle.loads(path.read_bytes())
    assert marker.exists()


def test_newer_format_version_is_refused(tmp_path: Path) -> None:
    from safetensors.torch import save_file
    path = tmp_path / 'future.safetensors'
    save_file({'a': torch.zeros(1)}, str(path), metadata={'spann3r_format_version': '99'})
    with pytest.raises(CheckpointError, match='newer'):
        read_state_dict(path)


def test_corrupt_recorded_config_is_refused(tmp_path: Path) -> None:
    from safetensors.torch import save_file
    path = tmp_path / 'cfg.safetensors'
    save_file({'a': torch.zeros(1)}, str(path),
              metadata={'spann3r_model_config': json.dumps({'no_such_field': 1})})
    with pytest.raises(CheckpointError, match='invalid model config'):
        read_state_dict(path)


def test_save_refuses_unsafe_args_and_reserved_metadata(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match='output_dir'):
        save_official(_model(0), tmp_path / 'a.pth',
                      args=argparse.Namespace(output_dir=Path('/tmp')))
    with pytest.raises(ValueError, match='reserved'):
        save_safetensors(_model(0), TINY, tmp_path / 'a.safetensors',
                         metadata={'spann3r_model_config': '{}'})
    assert list(tmp_path.iterdir()) == []


def test_failed_save_keeps_previous_file(tmp_path: Path, monkeypatch) -> None:
    import safetensors.torch
    path = tmp_path / 'w.safetensors'
    save_safetensors(_model(0), TINY, path)
    before = path.read_bytes()

    def write_half_then_fail(tensors, filename, metadata=None):
        Path(filename).write_bytes(before[:100])
        raise OSError('disk full')

    monkeypatch.setattr(safetensors.torch, 'save_file', write_half_then_fail)
    with pytest.raises(OSError, match='disk full'):
        save_safetensors(_model(1), TINY, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ['w.safetensors']
