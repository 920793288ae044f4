"""2D RoPE agrees with its textbook definition, also when its gathered tables are reused."""

from __future__ import annotations

import torch

from spann3r_model.layers.attention import Attention
from spann3r_model.layers.rope import patch_positions, RoPE2D


def _reference(tokens: torch.Tensor, positions: torch.Tensor, base: float) -> torch.Tensor:
    """Rotate-half RoPE per half, written out in float64 from the definition."""
    d = tokens.shape[-1]
    half = d // 2
    out = []
    for axis, part in enumerate((tokens[..., :half], tokens[..., half:])):
        inv_freq = base ** (-torch.arange(0, half, 2, dtype=torch.float64) / half)
        angle = positions[..., axis].double()[..., None] * inv_freq  # [B, N, half / 2]
        angle = torch.cat((angle, angle), dim=-1)[:, None]  # [B, 1, N, half]
        a, b = part.double()[..., :half // 2], part.double()[..., half // 2:]
        rotated = torch.cat((-b, a), dim=-1)
        out.append(part.double() * angle.cos() + rotated * angle.sin())
    return torch.cat(out, dim=-1)


def test_matches_definition_on_a_grid():
    torch.manual_seed(0)
    rope = RoPE2D(100.0)
    pos = patch_positions(2, 3, 5)
    x = torch.randn(2, 4, 15, 16)
    ref = _reference(x, pos, 100.0)
    assert torch.allclose(rope(x, pos).double(), ref, atol=1e-5)
    # second call reuses the gathered tables for the same positions tensor
    assert torch.allclose(rope(x, pos).double(), ref, atol=1e-5)


def test_changed_positions_are_not_served_from_the_cache():
    torch.manual_seed(0)
    rope = RoPE2D(100.0)
    pos = patch_positions(1, 4, 4).clone()
    x = torch.randn(1, 2, 16, 8)
    first = rope(x, pos)
    pos[0, :, 1] = pos[0, :, 1].flip(0)  # in place: same object, new content
    ref = _reference(x, pos, 100.0)
    out = rope(x, pos)
    assert torch.allclose(out.double(), ref, atol=1e-5)
    assert not torch.allclose(out, first)
    other = patch_positions(1, 2, 8)
    assert torch.allclose(rope(x, other).double(), _reference(x, other, 100.0), atol=1e-5)


def test_self_attention_rotates_queries_and_keys():
    torch.manual_seed(0)
    attn = Attention(32, 2, rope=RoPE2D(100.0)).eval()
    x = torch.randn(1, 12, 32)
    pos = patch_positions(1, 3, 4)
    q, k, v = attn.qkv(x).reshape(1, 12, 3, 2, 16).permute(2, 0, 3, 1, 4).double()
    q, k = _reference(q, pos, 100.0), _reference(k, pos, 100.0)
    weights = torch.softmax(q @ k.transpose(-1, -2) / 4.0, dim=-1)
    ref = attn.proj((weights @ v).transpose(1, 2).reshape(1, 12, 32).float())
    with torch.no_grad():
        assert torch.allclose(attn(x, pos), ref, atol=1e-5)


def test_autograd_path_matches_and_backpropagates():
    torch.manual_seed(0)
    rope = RoPE2D(100.0)
    pos = patch_positions(1, 2, 3)
    x = torch.randn(1, 2, 6, 8, requires_grad=True)
    out = rope(x, pos)
    assert out.requires_grad
    assert torch.allclose(out.double(), _reference(x.detach(), pos, 100.0), atol=1e-5)
    out.square().sum().backward()
    # a rotation preserves norms, so d/dx |R x|^2 = 2 x
    assert torch.allclose(x.grad, 2 * x.detach(), atol=1e-5)


def test_patch_positions_are_row_major():
    pos = patch_positions(2, 3, 4)
    assert pos.shape == (2, 12, 2) and pos.dtype == torch.int64
    expected = [(r, c) for r in range(3) for c in range(4)]
    assert [tuple(p) for p in pos[1].tolist()] == expected
