"""Shared fixtures of the bag-tool tests: a tiny synthetic scene rendered once per session."""

import pytest

from spann3r_ros.synthetic.scene import SyntheticConfig, SyntheticScene


@pytest.fixture(scope='session')
def tiny_scene():
    return SyntheticScene(SyntheticConfig(width=160, height=120, num_frames=5, seed=3))


@pytest.fixture(scope='session')
def tiny_frames(tiny_scene):
    return list(tiny_scene.frames())
