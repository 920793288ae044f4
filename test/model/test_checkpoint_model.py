"""Checkpoints with the real :class:`Spann3R`: round trips through both formats and inference."""

import argparse
import dataclasses
import json
from pathlib import Path

import pytest
import torch

from spann3r_model.checkpoint import infer_config, load_model, read_state_dict
from spann3r_model.checkpoint_keys import alias_of, CheckpointError
from spann3r_model.checkpoint_official import save_official
from spann3r_model.checkpoint_safetensors import save_safetensors
from spann3r_model.config import DPTConfig, ModelConfig, RELEASED, TINY
from spann3r_model.spann3r import Spann3R


@pytest.fixture(scope='module')
def tiny() -> Spann3R:
    torch.manual_seed(0)
    return Spann3R(TINY).eval()


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_safetensors_round_trip_rebuilds_the_architecture(tmp_path: Path, tiny) -> None:
    path = tmp_path / 'tiny.safetensors'
    save_safetensors(tiny, TINY, path)
    model, config = load_model(path)
    assert config == TINY and not model.training
    _assert_same_weights(tiny, model)


def test_official_round_trip_with_and_without_recorded_config(tmp_path: Path, tiny) -> None:
    path = tmp_path / 'tiny.pth'
    save_official(tiny, path, args=argparse.Namespace(epochs=3), config=TINY)
    model, config = load_model(path)
    assert config == TINY
    _assert_same_weights(tiny, model)
    # As the official code writes it: no config recorded, DDP prefixes; shapes identify tiny.
    bare = tmp_path / 'ddp.pth'
    torch.save({'model': {f'module.{k}': v for k, v in tiny.state_dict().items()},
                'args': argparse.Namespace(model='Spann3R(use_feat=False)'), 'epoch': 1}, bare)
    model, config = load_model(bare)
    assert config == TINY
    _assert_same_weights(tiny, model)


def test_only_one_name_of_each_alias_pair(tmp_path: Path, tiny) -> None:
    state_dict = tiny.state_dict()
    kept = {k: v for k, v in state_dict.items() if '.scratch.layer_rn.' not in k}
    assert len(state_dict) - len(kept) == 8
    path = tmp_path / 'one_name.pth'
    torch.save({'model': kept}, path)
    model, _ = load_model(path, preset='tiny')
    _assert_same_weights(tiny, model)


def test_preset_that_does_not_fit_lists_the_differences(tmp_path: Path, tiny) -> None:
    path = tmp_path / 'tiny.safetensors'
    save_safetensors(tiny, TINY, path)
    deeper = dataclasses.replace(TINY, value_encoder_depth=TINY.value_encoder_depth + 1)
    with pytest.raises(CheckpointError) as info:
        load_model(path, preset=deeper)
    message = str(info.value)
    assert str(path) in message and 'missing keys' in message
    assert f'value_encoder.{TINY.value_encoder_depth}.attn.qkv.weight' in message
    wider = dataclasses.replace(TINY, dpt=dataclasses.replace(TINY.dpt, feature_dim=32))
    with pytest.raises(CheckpointError, match='shape mismatches'):
        load_model(path, preset=wider)


def test_released_architecture_is_inferred_from_its_own_state_dict() -> None:
    meta = Spann3R(RELEASED, device='meta').state_dict()
    assert infer_config(meta) == RELEASED


def test_tiny_architecture_is_inferred(tiny) -> None:
    assert infer_config(tiny.state_dict()) == TINY


PARITY = Path(__file__).parent.parent / 'data' / 'model' / 'parity'


def test_parity_weights_load_with_the_inferred_configuration(data_dir: Path,
                                                               tmp_path: Path) -> None:
    weights = PARITY / 'weights.safetensors'
    state_dict, recorded = read_state_dict(weights)
    assert recorded is None and len(state_dict) == 801
    model, config = load_model(weights)
    reduced = json.loads((data_dir / 'checkpoint' / 'parity_config.json').read_text())
    reduced = reduced['reduced_config']
    assert (config.enc_embed_dim, config.enc_depth, config.enc_num_heads) == (
        reduced['enc_embed_dim'], reduced['enc_depth'], reduced['enc_num_heads'])
    assert (config.dec_embed_dim, config.dec_depth, config.dec_num_heads) == (
        reduced['dec_embed_dim'], reduced['dec_depth'], reduced['dec_num_heads'])
    assert (config.value_encoder_depth, config.value_encoder_num_heads) == (
        reduced['mem_enc_depth'], reduced['mem_enc_num_heads'])
    assert config.dpt == DPTConfig(layer_dims=tuple(reduced['dpt_layer_dims']),
                                   feature_dim=reduced['dpt_feature_dim'],
                                   last_dim=reduced['dpt_last_dim'], hooks=(0, 6, 9, 12))
    loaded = model.state_dict()
    for key, tensor in state_dict.items():
        assert torch.equal(loaded[key], tensor), key
        if alias_of(key):
            assert loaded[alias_of(key)].data_ptr() == loaded[key].data_ptr()
    # Re-saved in the official layout and read back unchanged.
    save_official(model, tmp_path / 'parity.pth')
    again, again_config = load_model(tmp_path / 'parity.pth')
    assert again_config == config
    _assert_same_weights(model, again)


def test_parity_config_is_expressible_as_a_model_config() -> None:
    assert isinstance(infer_config(read_state_dict(PARITY / 'weights.safetensors')[0]),
                      ModelConfig)
