import pytest
from training_scenes import make_scannet_root


@pytest.fixture
def scannet_root(tmp_path):
    return make_scannet_root(tmp_path / 'scannet')
