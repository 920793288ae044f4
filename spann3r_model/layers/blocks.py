"""Pre-norm transformer blocks of the encoder, the decoders and the memory encoder.

The MLP is :class:`timm.layers.Mlp`: its ``fc1 -> GELU -> fc2`` structure and parameter names
are exactly those of the official checkpoints, so there is no reason to re-implement it; in
evaluation its two layers are called through :func:`~.linear.linear` (GELU fused into ``fc1``,
dropout and its identity norm skipped, as they do nothing there). The attention layers are
our own because timm's have neither 2D RoPE nor the ``projq/projk/projv`` cross-attention
layout.
"""

from __future__ import annotations

from typing import Optional

from timm.layers import Mlp
import torch
from torch import nn

from spann3r_model.backends.onednn_linear import linear
from spann3r_model.layers.attention import Attention, CrossAttention
from spann3r_model.layers.rope import RoPE2D

#: LayerNorm epsilon of every transformer block (the memory's q/k/v norms use torch's 1e-5).
BLOCK_NORM_EPS = 1e-6


def run_mlp(mlp: nn.Module, x: torch.Tensor, residual: Optional[torch.Tensor] = None
            ) -> torch.Tensor:
    """Apply an ``fc1 -> GELU -> fc2`` MLP, through the fused inference path when that is exact.

    :param mlp: timm's ``Mlp`` (default dropout and norm), or an ``nn.Sequential`` of the
        three layers (the memory's key and query heads).
    :param x: ``[..., C]``.
    :param residual: added to the output (fused into ``fc2`` where possible).
    :return: the MLP's output, plus ``residual``.
    """
    fc1, act, fc2 = tuple(mlp) if isinstance(mlp, nn.Sequential) else (mlp.fc1, mlp.act, mlp.fc2)
    if mlp.training or type(act) is not nn.GELU or act.approximate != 'none':
        out = mlp(x)
        return out if residual is None else residual + out
    return linear(fc2, linear(fc1, x, gelu=True), residual=residual)


class Block(nn.Module):
    """``x += attn(norm1(x)); x += mlp(norm2(x))``.

    :param dim: token width.
    :param num_heads: attention heads.
    :param mlp_ratio: hidden width of the MLP relative to ``dim``.
    :param rope: rotary embedding, or None for attention without positions.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0,
                 rope: Optional[RoPE2D] = None, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        kw = {'device': device, 'dtype': dtype}
        self.norm1 = nn.LayerNorm(dim, eps=BLOCK_NORM_EPS, **kw)
        self.attn = Attention(dim, num_heads, qkv_bias=True, rope=rope, **kw)
        self.norm2 = nn.LayerNorm(dim, eps=BLOCK_NORM_EPS, **kw)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), **kw)

    def forward(self, x: torch.Tensor, pos: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Run the block.

        :param x: ``[B, N, C]``.
        :param pos: ``[B, N, 2]`` patch positions, used only with RoPE.
        :return: ``[B, N, C]``.
        """
        x = self.attn(self.norm1(x), pos, residual=x)
        return run_mlp(self.mlp, self.norm2(x), residual=x)


class DecoderBlock(nn.Module):
    """Self-attention, cross-attention to the other view (normalised by ``norm_y``), MLP.

    :param dim: token width.
    :param num_heads: attention heads.
    :param mlp_ratio: hidden width of the MLP relative to ``dim``.
    :param rope: rotary embedding used by both attentions.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0,
                 rope: Optional[RoPE2D] = None, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        kw = {'device': device, 'dtype': dtype}
        self.norm1 = nn.LayerNorm(dim, eps=BLOCK_NORM_EPS, **kw)
        self.attn = Attention(dim, num_heads, qkv_bias=True, rope=rope, **kw)
        self.cross_attn = CrossAttention(dim, num_heads, qkv_bias=True, rope=rope, **kw)
        self.norm2 = nn.LayerNorm(dim, eps=BLOCK_NORM_EPS, **kw)
        self.norm3 = nn.LayerNorm(dim, eps=BLOCK_NORM_EPS, **kw)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), **kw)
        self.norm_y = nn.LayerNorm(dim, eps=BLOCK_NORM_EPS, **kw)

    def forward(self, x: torch.Tensor, y: torch.Tensor, xpos: torch.Tensor, ypos: torch.Tensor
                ) -> torch.Tensor:
        """Update the tokens ``x`` of this view given the tokens ``y`` of the other view.

        :param x: ``[B, N, C]`` tokens of this view.
        :param y: ``[B, M, C]`` tokens of the other view (previous layer).
        :param xpos: ``[B, N, 2]`` positions of ``x``.
        :param ypos: ``[B, M, 2]`` positions of ``y``.
        :return: ``[B, N, C]`` updated ``x``.
        """
        x = self.attn(self.norm1(x), xpos, residual=x)
        y = self.norm_y(y)
        x = self.cross_attn(self.norm2(x), y, y, xpos, ypos, residual=x)
        return run_mlp(self.mlp, self.norm3(x), residual=x)
