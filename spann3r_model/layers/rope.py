"""Two-dimensional rotary position embedding (RoPE) on a patch grid.

Every attention head's channels are split in two halves: the first half is rotated by the
token's row index, the second half by its column index. Within a half, channel ``i`` is paired
with channel ``i + D / 2`` (rotate-half convention) and rotated by ``pos * base^(-2k / D)``.
"""

from __future__ import annotations

import torch
from torch import nn


def patch_positions(batch: int, rows: int, cols: int, device: torch.device | str | None = None
                    ) -> torch.Tensor:
    """Return the ``(row, col)`` index of every patch in row-major order.

    :param batch: batch size B.
    :param rows: patches per column of the image.
    :param cols: patches per row of the image.
    :param device: device of the result.
    :return: ``[B, rows * cols, 2]`` int64 tensor.
    """
    r = torch.arange(rows, device=device)
    c = torch.arange(cols, device=device)
    grid = torch.cartesian_prod(r, c)
    return grid.unsqueeze(0).expand(batch, -1, -1)


class RoPE2D(nn.Module):
    """Rotary embedding over 2D integer positions; has no parameters.

    :param base: frequency base (100 for DUSt3R-lineage models).
    """

    def __init__(self, base: float = 100.0) -> None:
        super().__init__()
        if base <= 0:
            raise ValueError(f'RoPE base must be positive, got {base}')
        self.base = float(base)
        # Tables are small and depend only on (dim, length, device, dtype); recomputing them in
        # every attention layer of every frame costs more than the lookup itself.
        self._tables: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def _cos_sin(self, dim: int, length: int, device: torch.device, dtype: torch.dtype
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        key = (dim, length, device, dtype)
        table = self._tables.get(key)
        if table is None:
            inv_freq = 1.0 / (self.base ** (torch.arange(0, dim, 2, device=device).float() / dim))
            t = torch.arange(length, device=device, dtype=inv_freq.dtype)
            freqs = torch.outer(t, inv_freq).to(dtype)
            freqs = torch.cat((freqs, freqs), dim=-1)
            table = (freqs.cos(), freqs.sin())
            self._tables[key] = table
        return table

    @staticmethod
    def _rotate_half(x: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        return torch.cat((-x[..., half:], x[..., :half]), dim=-1)

    def _rotate(self, x: torch.Tensor, pos: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
                ) -> torch.Tensor:
        c = cos[pos].unsqueeze(1)
        s = sin[pos].unsqueeze(1)
        return x * c + self._rotate_half(x) * s

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Rotate queries or keys by their patch positions.

        :param tokens: ``[B, heads, N, D]`` with D divisible by 4.
        :param positions: ``[B, N, 2]`` integer ``(row, col)`` per token, each in ``[0, N)``
            (true of any patch grid, see :func:`patch_positions`).
        :return: ``[B, heads, N, D]``.
        """
        half = tokens.shape[-1] // 2
        # Grid coordinates are below the token count, so a table of that length covers them
        # without reading ``positions.max()`` back from the device in every attention layer.
        length = positions.shape[-2]
        cos, sin = self._cos_sin(half, length, tokens.device, tokens.dtype)
        y, x = tokens[..., :half], tokens[..., half:]
        y = self._rotate(y, positions[..., 0], cos, sin)
        x = self._rotate(x, positions[..., 1], cos, sin)
        return torch.cat((y, x), dim=-1)
