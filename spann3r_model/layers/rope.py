"""Two-dimensional rotary position embedding (RoPE) on a patch grid.

Every attention head's channels are split in two halves: the first half is rotated by the
token's row index, the second half by its column index. Within a half, channel ``i`` is paired
with channel ``i + D / 2`` (rotate-half convention) and rotated by ``pos * base^(-2k / D)``.
"""

from __future__ import annotations

import weakref

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
    # meshgrid + stack: cartesian_prod takes milliseconds on the CPU for the same grid.
    r, c = torch.meshgrid(torch.arange(rows, device=device), torch.arange(cols, device=device),
                          indexing='ij')
    grid = torch.stack((r, c), dim=-1).reshape(rows * cols, 2)
    return grid.unsqueeze(0).expand(batch, -1, -1)


class RoPE2D(nn.Module):
    """Rotary embedding over 2D integer positions; has no parameters.

    The rotation is ``x * cos + swap(x) * sin'``, where ``swap`` exchanges the two quarters of
    each half and ``sin'`` carries the rotate-half sign: the same products as the textbook
    ``x * cos + rotate_half(x) * sin`` (a sign flip is exact), in three kernels instead of a
    dozen. The per-token ``cos`` / ``sin'`` rows are gathered once per positions tensor and
    reused by every layer that receives the same tensor.

    :param base: frequency base (100 for DUSt3R-lineage models).
    """

    #: Gathered tables kept for this many positions tensors (the two views of a pair).
    GATHER_CACHE_SIZE = 4

    def __init__(self, base: float = 100.0) -> None:
        super().__init__()
        if base <= 0:
            raise ValueError(f'RoPE base must be positive, got {base}')
        self.base = float(base)
        # Tables are small and depend only on (dim, length, device, dtype); recomputing them in
        # every attention layer of every frame costs more than the lookup itself.
        self._tables: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        # (weak reference to a positions tensor, its version, dim, dtype, cos, signed sin)
        self._gathered: list[tuple] = []

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

    def rotation(self, positions: torch.Tensor, dim: int, dtype: torch.dtype
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token rotation tables for head width ``dim``.

        :param positions: ``[B, N, 2]`` integer ``(row, col)`` per token, each in ``[0, N)``.
        :param dim: head width D (divisible by 4).
        :param dtype: dtype of the tokens.
        :return: ``cos`` and signed ``sin``, each ``[B, N, D]``.
        """
        for ref, version, d, dt, cos, sin in self._gathered:
            if ref() is positions and version == positions._version and d == dim and dt == dtype:
                return cos, sin
        half = dim // 2
        # Grid coordinates are below the token count, so a table of that length covers them
        # without reading ``positions.max()`` back from the device.
        cos_t, sin_t = self._cos_sin(half, positions.shape[-2], positions.device, dtype)
        rows, cols = positions[..., 0], positions[..., 1]
        cos = torch.cat((cos_t[rows], cos_t[cols]), dim=-1)
        quarter = torch.ones(2, 2, half // 2, device=positions.device, dtype=dtype)
        quarter[:, 0] = -1
        sin = torch.cat((sin_t[rows], sin_t[cols]), dim=-1) * quarter.flatten()
        self._gathered.insert(0, (weakref.ref(positions), positions._version, dim, dtype, cos,
                                  sin))
        del self._gathered[self.GATHER_CACHE_SIZE:]
        return cos, sin

    @staticmethod
    def rotate(tokens: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Apply tables from :meth:`rotation` (already broadcastable to ``tokens``).

        :param tokens: ``[..., D]``, any strides.
        :param cos: ``cos`` from :meth:`rotation`, shaped to broadcast against ``tokens``.
        :param sin: signed ``sin`` from :meth:`rotation`, shaped alike.
        :return: ``[..., D]``, a new contiguous tensor.
        """
        if torch.is_grad_enabled() and (tokens.requires_grad or cos.requires_grad):
            swapped = tokens.unflatten(-1, (2, 2, -1)).flip(-2).flatten(-3)
            return tokens * cos + swapped * sin
        # Without autograd, write into a contiguous result quarter by quarter: no swapped
        # copy, and the attention kernel gets dense [B, heads, N, D] operands.
        out = torch.mul(tokens, cos, out=torch.empty(tokens.shape, dtype=tokens.dtype,
                                                     device=tokens.device))
        x4, s4, o4 = (t.unflatten(-1, (2, 2, -1)) for t in (tokens, sin, out))
        o4[..., 0, :].addcmul_(x4[..., 1, :], s4[..., 0, :])
        o4[..., 1, :].addcmul_(x4[..., 0, :], s4[..., 1, :])
        return out

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Rotate queries or keys by their patch positions.

        :param tokens: ``[B, heads, N, D]`` with D divisible by 4.
        :param positions: ``[B, N, 2]`` integer ``(row, col)`` per token, each in ``[0, N)``
            (true of any patch grid, see :func:`patch_positions`).
        :return: ``[B, heads, N, D]``.
        """
        cos, sin = self.rotation(positions, tokens.shape[-1], tokens.dtype)
        return self.rotate(tokens, cos.unsqueeze(1), sin.unsqueeze(1))
