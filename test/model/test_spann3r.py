"""Whole-sequence forward: training mode and batches."""

import torch

from spann3r_model.config import MemoryConfig, ModelConfig
from spann3r_model.spann3r import Spann3R


def _frames(n, b, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(b, 3, size, size, generator=g) * 2 - 1 for _ in range(n)]


@torch.enable_grad()  # independent of whatever grad mode earlier code left behind
def test_training_forward_stores_every_frame_and_backpropagates():
    torch.manual_seed(0)
    model = Spann3R(ModelConfig.preset('tiny')).train()
    frames = _frames(5, b=2)
    # Limits that would skip and prune in evaluation must not matter in training.
    memory = MemoryConfig(work_mem_size=1, long_mem_size=8, sim_thresh=0.01)
    out = model.forward_sequence(frames, memory, train=True)
    assert len(out.preds) == 5 and len(out.preds_all) == 4
    assert out.preds[0]['pts3d'].shape == (2, 32, 32, 3)
    assert out.preds[0]['conf'].shape == (2, 32, 32)
    assert torch.all(out.preds[0]['conf'] >= 1)
    assert out.memory.num_tokens == 4 * 4 and out.memory.frames() == [0, 1, 2, 3]
    loss = sum(p['pts3d'].abs().mean() + p['conf'].mean() for p in out.preds)
    loss = loss + sum(r2['pts3d'].abs().mean() for _, r2 in out.preds_all)
    loss.backward()
    for name in ('dust3r.patch_embed.proj.weight', 'dust3r.dec_blocks.0.attn.qkv.weight',
                 'dust3r.dec_blocks2.3.mlp.fc2.weight', 'value_encoder.0.attn.qkv.weight',
                 'value_out.weight', 'attn_head_1.0.weight', 'attn_head_2.2.weight',
                 'norm_q.weight', 'norm_k.weight', 'norm_v.weight', 'pos_patch_embed.proj.weight',
                 'dust3r.downstream_head1.dpt.scratch.layer1_rn.weight'):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    # Attention dropout makes training forwards differ.
    with torch.no_grad():
        again = model.forward_sequence(frames, memory, train=True)
    assert not torch.allclose(again.preds[2]['pts3d'], out.preds[2]['pts3d'])


def test_batch_elements_are_independent_in_evaluation():
    torch.manual_seed(0)
    model = Spann3R(ModelConfig.preset('tiny')).eval()
    frames = _frames(4, b=2, seed=1)
    memory = MemoryConfig(work_mem_size=1, long_mem_size=16, sim_thresh=1.0)
    with torch.no_grad():
        both = model.forward_sequence(frames, memory)
        one = model.forward_sequence([f[1:] for f in frames], memory)
    for a, b in zip(both.preds, one.preds):
        assert torch.allclose(a['pts3d'][1:], b['pts3d'], atol=1e-5)
