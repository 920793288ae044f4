"""Fixtures shared by the model tests: the committed parity fixture and its model."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from safetensors.torch import load_file
import torch

from spann3r_model.checkpoint import load_into
from spann3r_model.cli.parity import configs_from_fixture
from spann3r_model.spann3r import Spann3R

PARITY = Path(__file__).parents[1] / 'data' / 'model' / 'parity'


@pytest.fixture(scope='session', autouse=True)
def one_cpu_thread():
    # The test machines run several jobs on two cores; with two intra-op threads each, torch's
    # thread pool spends most of its time waiting (measured 13x slower than one thread).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope='session')
def parity_dir() -> Path:
    return PARITY


@pytest.fixture(scope='session')
def parity_configs():
    return configs_from_fixture(json.loads((PARITY / 'config.json').read_text()))


@pytest.fixture(scope='session')
def parity_model(parity_configs) -> Spann3R:
    model = Spann3R(parity_configs[0])
    load_into(model, load_file(str(PARITY / 'weights.safetensors')))
    return model.eval()


@pytest.fixture(scope='session')
def parity_frames() -> list[np.ndarray]:
    files = sorted((PARITY / 'inputs').glob('*.png'))
    return [cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files]
