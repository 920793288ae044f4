"""Multi-head self- and cross-attention with optional 2D RoPE, using the official layer names."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn
import torch.nn.functional as F

from spann3r_model.backends.onednn_linear import linear
from spann3r_model.layers.rope import RoPE2D


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, c = x.shape
    return x.reshape(b, n, heads, c // heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


class Attention(nn.Module):
    """Self-attention with a fused ``qkv`` projection and an output ``proj``.

    :param dim: token width.
    :param num_heads: number of heads (``dim`` must be divisible by it).
    :param qkv_bias: bias on the ``qkv`` projection.
    :param rope: rotary embedding applied to queries and keys, or None for none.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True,
                 rope: Optional[RoPE2D] = None, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f'dim {dim} is not divisible by {num_heads} heads')
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias, device=device, dtype=dtype)
        self.proj = nn.Linear(dim, dim, device=device, dtype=dtype)
        self.rope = rope

    def forward(self, x: torch.Tensor, pos: Optional[torch.Tensor] = None,
                residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Attend every token to every token.

        :param x: ``[B, N, C]`` tokens.
        :param pos: ``[B, N, 2]`` patch positions (needed when RoPE is used).
        :param residual: ``[B, N, C]`` added to the output (fused into the projection).
        :return: ``[B, N, C]``.
        """
        b, n, c = x.shape
        qkv = linear(self.qkv, x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
        if self.rope is None:
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        else:
            # Queries and keys share the positions: rotate both in one pass, from their strided
            # [2, B, heads, N, D] view into dense tensors.
            cos, sin = self.rope.rotation(pos, qkv.shape[-1], qkv.dtype)
            qk = qkv[:, :, :2].permute(2, 0, 3, 1, 4)
            q, k = self.rope.rotate(qk, cos[:, None], sin[:, None]).unbind(0)
            v = qkv[:, :, 2].transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)
        return linear(self.proj, _merge_heads(out), residual=residual)


class CrossAttention(nn.Module):
    """Attention from one token set to another with separate ``projq/projk/projv`` projections.

    :param dim: token width (both sets).
    :param num_heads: number of heads.
    :param qkv_bias: bias on the three input projections.
    :param rope: rotary embedding applied to queries and keys, or None.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True,
                 rope: Optional[RoPE2D] = None, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f'dim {dim} is not divisible by {num_heads} heads')
        self.num_heads = num_heads
        kw = {'device': device, 'dtype': dtype}
        self.projq = nn.Linear(dim, dim, bias=qkv_bias, **kw)
        self.projk = nn.Linear(dim, dim, bias=qkv_bias, **kw)
        self.projv = nn.Linear(dim, dim, bias=qkv_bias, **kw)
        self.proj = nn.Linear(dim, dim, **kw)
        self.rope = rope

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                qpos: Optional[torch.Tensor] = None, kpos: Optional[torch.Tensor] = None,
                residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Attend ``query`` tokens to ``key``/``value`` tokens.

        :param query: ``[B, Nq, C]``.
        :param key: ``[B, Nk, C]``.
        :param value: ``[B, Nk, C]``.
        :param qpos: ``[B, Nq, 2]`` positions of the queries.
        :param kpos: ``[B, Nk, 2]`` positions of the keys.
        :param residual: ``[B, Nq, C]`` added to the output (fused into the projection).
        :return: ``[B, Nq, C]``.
        """
        q = _split_heads(linear(self.projq, query), self.num_heads)
        k = _split_heads(linear(self.projk, key), self.num_heads)
        v = _split_heads(linear(self.projv, value), self.num_heads)
        if self.rope is not None:
            q = self.rope(q, qpos)
            k = self.rope(k, kpos)
        out = F.scaled_dot_product_attention(q, k, v)
        return linear(self.proj, _merge_heads(out), residual=residual)
