"""The released architecture has exactly the official state_dict."""

import json
from pathlib import Path

import pytest
import torch

from spann3r_model.config import ModelConfig
from spann3r_model.spann3r import Spann3R


@pytest.fixture(scope='module')
def schema():
    path = Path(__file__).parents[1] / 'data' / 'model' / 'state_dict_schema.json'
    return json.loads(path.read_text())


@pytest.fixture(scope='module')
def released():
    return Spann3R(ModelConfig.preset('released'), device='meta')


def test_released_keys_shapes_dtypes_match_schema(schema, released):
    ours = released.state_dict()
    expected = [(e['key'], tuple(e['shape']), e['dtype']) for e in schema['keys']]
    assert len(ours) == schema['num_state_dict_keys'] == 1101
    got = [(k, tuple(v.shape), str(v.dtype).replace('torch.', '')) for k, v in ours.items()]
    assert sorted(got) == sorted(expected)
    # Registration order matches too, so saved files list keys like official ones.
    assert [g[0] for g in got] == [e[0] for e in expected]


def test_released_unique_parameter_count(schema, released):
    # parameters() yields each shared (aliased) parameter once.
    unique = sum(p.numel() for p in released.parameters())
    assert unique == schema['num_parameters_unique'] == 658_691_976
    total = sum(v.numel() for v in released.state_dict().values())
    assert total == schema['state_dict_numel_total_with_aliases']
    assert not list(released.buffers())


def test_aliased_dpt_keys_are_one_tensor():
    model = Spann3R(ModelConfig.preset('tiny'))
    sd = model.state_dict()
    for head in ('downstream_head1', 'downstream_head2'):
        for i in range(4):
            a = sd[f'dust3r.{head}.dpt.scratch.layer{i + 1}_rn.weight']
            b = sd[f'dust3r.{head}.dpt.scratch.layer_rn.{i}.weight']
            assert a.data_ptr() == b.data_ptr()


def test_parity_config_has_fixture_keys(parity_dir, parity_model):
    from safetensors import safe_open
    with safe_open(str(parity_dir / 'weights.safetensors'), 'pt') as f:
        keys = set(f.keys())
    assert set(parity_model.state_dict()) == keys
    assert len(keys) == 801
    assert sum(p.numel() for p in parity_model.parameters()) == 1_038_088


def test_pos_patch_embed_starts_as_copy_of_patch_embed():
    model = Spann3R(ModelConfig.preset('tiny'))
    assert torch.equal(model.pos_patch_embed.proj.weight, model.dust3r.patch_embed.proj.weight)
    assert model.pos_patch_embed.proj.weight.data_ptr() != \
        model.dust3r.patch_embed.proj.weight.data_ptr()


def test_bad_inputs_raise_value_error():
    model = Spann3R(ModelConfig.preset('tiny'))
    with pytest.raises(ValueError, match='multiple of the patch size'):
        model.encode_image(torch.zeros(1, 3, 100, 112))
    with pytest.raises(ValueError, match='at least 2 frames'):
        model.forward_sequence([torch.zeros(1, 3, 32, 32)])
    with pytest.raises(ValueError, match='ModelConfig'):
        Spann3R({'enc_embed_dim': 64})
