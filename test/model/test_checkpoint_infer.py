"""Architecture inference from the tensor shapes of official-layout checkpoints."""

import json
from pathlib import Path

import pytest
import torch

from spann3r_model.checkpoint import infer_config
from spann3r_model.checkpoint_keys import CheckpointError
from spann3r_model.config import DPTConfig, ModelConfig, RELEASED


def _shapes(path: Path, device: str) -> dict:
    keys = json.loads(path.read_text())['keys']
    return {e['key']: torch.empty(e['shape'], device=device) for e in keys}


def test_parity_fixture_shapes_give_its_configuration(data_dir: Path) -> None:
    state_dict = _shapes(data_dir / 'checkpoint' / 'parity_shapes.json', 'meta')
    assert len(state_dict) == 801
    reduced = json.loads((data_dir / 'checkpoint' / 'parity_config.json').read_text())
    reduced = reduced['reduced_config']
    dust3r = json.loads((data_dir / 'checkpoint' / 'parity_config.json').read_text())
    heads = dust3r['model']['dust3r']['heads']
    expected = ModelConfig(
        patch_size=reduced['patch_size'], rope_base=100.0,
        enc_embed_dim=reduced['enc_embed_dim'], enc_depth=reduced['enc_depth'],
        enc_num_heads=reduced['enc_num_heads'], dec_embed_dim=reduced['dec_embed_dim'],
        dec_depth=reduced['dec_depth'], dec_num_heads=reduced['dec_num_heads'], mlp_ratio=4.0,
        value_encoder_depth=reduced['mem_enc_depth'],
        value_encoder_num_heads=reduced['mem_enc_num_heads'],
        dpt=DPTConfig(layer_dims=tuple(reduced['dpt_layer_dims']),
                      feature_dim=reduced['dpt_feature_dim'], last_dim=reduced['dpt_last_dim'],
                      hooks=tuple(heads['hooks']), num_channels=heads['num_channels']))
    assert infer_config(state_dict) == expected


def test_released_schema_is_recognised(data_dir: Path) -> None:
    state_dict = _shapes(data_dir / 'checkpoint' / 'released_schema.json', 'meta')
    assert len(state_dict) == 1101
    config = infer_config(state_dict)
    assert config == RELEASED
    assert (config.enc_num_heads, config.dec_num_heads) == (16, 12)
    assert config.dpt.hooks == (0, 6, 9, 12)


def test_released_schema_with_only_one_alias_name(data_dir: Path) -> None:
    state_dict = _shapes(data_dir / 'checkpoint' / 'released_schema.json', 'meta')
    state_dict = {k: v for k, v in state_dict.items() if '.scratch.layer_rn.' not in k}
    assert infer_config(state_dict) == RELEASED


def test_missing_anchor_key_is_a_clear_error(data_dir: Path) -> None:
    state_dict = _shapes(data_dir / 'checkpoint' / 'parity_shapes.json', 'meta')
    del state_dict['dust3r.decoder_embed.weight']
    with pytest.raises(CheckpointError, match='decoder_embed.weight.*preset'):
        infer_config(state_dict, 'w.pth')


def test_inconsistent_mlp_ratio_is_refused(data_dir: Path) -> None:
    state_dict = _shapes(data_dir / 'checkpoint' / 'parity_shapes.json', 'meta')
    state_dict['value_encoder.0.mlp.fc1.weight'] = torch.empty(128, 64, device='meta')
    with pytest.raises(CheckpointError, match='MLP ratio'):
        infer_config(state_dict)
