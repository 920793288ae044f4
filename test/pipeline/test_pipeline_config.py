"""NodeConfig: defaults, validation and the specs the ROS layer and docs are built from."""

import dataclasses

import pytest

from spann3r_model.config import EngineConfig, MemoryConfig
from spann3r_ros.pipeline.config import NodeConfig, param_specs, validate_map_filename


def test_defaults_are_valid_and_build_core_configs():
    cfg = NodeConfig()
    assert cfg.engine_config() == EngineConfig()
    assert cfg.memory_config() == MemoryConfig()
    assert cfg.camera_frame_for(0) == cfg.camera_frame
    assert cfg.camera_frame_for(2) == cfg.camera_frame + '_2'


def test_specs_cover_every_field_with_description():
    specs = {s.name: s for s in param_specs()}
    assert set(specs) == {f.name for f in dataclasses.fields(NodeConfig)}
    for spec in specs.values():
        assert spec.description.strip(), spec.name
        if spec.range is not None:
            assert spec.range[0] <= spec.default <= spec.range[1], spec.name
        if spec.choices is not None:
            assert spec.default in spec.choices, spec.name
    # Runtime-tunable parameters are the exception, not the rule.
    assert not specs['min_confidence'].read_only
    assert specs['checkpoint'].read_only


@pytest.mark.parametrize('changes, fragment', [
    ({'precision': 'fp64'}, 'precision'),
    ({'device': 'gpu0'}, 'device'),
    ({'image_size': 230}, 'image_size'),
    ({'qos_depth': 0}, 'qos_depth'),
    ({'qos_reliability': 'sometimes'}, 'qos_reliability'),
    ({'transport': 'theora'}, 'transport'),
    ({'keyframe_every': 2.5}, 'keyframe_every'),
    ({'min_confidence': -1.0}, 'min_confidence'),
    ({'image_topics': []}, 'image_topics'),
    ({'image_topics': ['a', 'a']}, 'image_topics'),
    ({'map_frame': 'cam', 'camera_frame': 'cam'}, 'differ'),
    ({'map_filename': '../escape.ply'}, 'map_filename'),
    ({'map_filename': 'map.txt'}, 'map_filename'),
    ({'sim_thresh': 0.0}, 'sim_thresh'),
    ({'model_preset': 'huge'}, 'model_preset'),
    ({'publish_tf': 'yes'}, 'publish_tf'),
])
def test_invalid_values_name_the_parameter(changes, fragment):
    with pytest.raises(ValueError, match=fragment):
        NodeConfig(**changes)


def test_ints_are_accepted_for_floats_and_normalised():
    cfg = NodeConfig(min_confidence=2, image_topics=('a', 'b'))
    assert isinstance(cfg.min_confidence, float)
    assert cfg.image_topics == ['a', 'b']


def test_from_mapping_rejects_unknown_names():
    with pytest.raises(ValueError, match='unknown parameters'):
        NodeConfig.from_mapping({'voxel': 0.1})


@pytest.mark.parametrize('name', ['a/b.ply', '..', '.hidden.ply', 'x.pcd', 'a\\b.ply'])
def test_map_filename_rejects_paths(name):
    with pytest.raises(ValueError):
        validate_map_filename(name)


def test_output_path_expands_user(monkeypatch, tmp_path):
    monkeypatch.setenv('HOME', str(tmp_path))
    assert NodeConfig(output_dir='~/out').output_path() == tmp_path / 'out'
