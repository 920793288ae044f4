"""The tiny preset streams 2,000 frames with bounded memory and constant session state."""

import numpy as np
import pytest
import torch

from spann3r_model.config import EngineConfig, MemoryConfig, ModelConfig
from spann3r_model.session import StreamingSession
from spann3r_model.spann3r import Spann3R

FRAMES = 2000
SIZE = 64  # 16 tokens per frame keeps 2,000 frames within about a minute on one core


def _state_bytes(session):
    return sum(v.numel() * v.element_size() for v in session.state_dict().values())


@pytest.mark.slow
def test_two_thousand_frames_stay_bounded():
    torch.manual_seed(0)
    model = Spann3R(ModelConfig.preset('tiny'))
    memory = MemoryConfig(work_mem_size=5, long_mem_size=400)
    session = StreamingSession(model, memory, EngineConfig(device='cpu', image_size=SIZE),
                               estimate_pose=False)
    rng = np.random.default_rng(0)
    canvas = (rng.random((SIZE * 3, SIZE * 3, 3)) * 255).astype(np.uint8)
    P = (SIZE // 16) ** 2
    bound = memory.long_mem_size + memory.work_mem_size * P
    prunes = 0
    buffers = None
    state_sizes = {}
    for i in range(FRAMES):
        # A camera wandering over a textured plane.
        t = i * 0.05
        y = int(SIZE + SIZE * 0.9 * np.sin(t))
        x = int(SIZE + SIZE * 0.9 * np.cos(0.7 * t))
        out = session.step(canvas[y:y + SIZE, x:x + SIZE], float(i))
        if i == 0:
            continue
        assert out.refined.index == i - 1
        stats = out.memory
        assert stats.tokens <= bound
        assert stats.tokens == stats.long_term_tokens + stats.working_frames * P
        prunes += stats.pruned is not None
        mem = session.memory
        ptrs = [getattr(mem, n).data_ptr() for n in ('keys', 'keys_normed', 'values_normed')]
        if buffers is None:
            buffers = ptrs
        assert ptrs == buffers, 'memory buffers were re-allocated'
        if i % 10 == 0:
            state_sizes[i] = _state_bytes(session)
    assert prunes > 50
    # Once the memory is full, what a saved session holds no longer grows with its length: it
    # only oscillates between the pruned size and the bound.
    early = max(v for k, v in state_sizes.items() if 200 <= k < 1000)
    late = max(v for k, v in state_sizes.items() if k >= 1000)
    assert late <= early
    assert min(v for k, v in state_sizes.items() if k >= 1000) >= \
        min(v for k, v in state_sizes.items() if 200 <= k < 1000)
    assert session.frame_count == FRAMES
    assert session.flush().index == FRAMES - 1
