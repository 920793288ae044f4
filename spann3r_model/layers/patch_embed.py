"""Non-overlapping patch embedding that also returns each patch's grid position."""

from __future__ import annotations

import torch
from torch import nn

from spann3r_model.layers.rope import patch_positions


class PatchEmbed(nn.Module):
    """A strided convolution ``proj`` from pixels (or pointmap channels) to tokens.

    :param patch_size: side of a square patch in pixels.
    :param in_chans: input channels.
    :param embed_dim: token width.
    """

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int, *,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None
                 ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size,
                              device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed an image.

        :param x: ``[B, C, H, W]`` with H and W multiples of the patch size.
        :return: tokens ``[B, P, D]`` (row-major patches) and positions ``[B, P, 2]``.
        """
        b, _, h, w = x.shape
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(f'image size {h}x{w} is not a multiple of the patch size {p}')
        x = self.proj(x)
        pos = patch_positions(b, x.shape[2], x.shape[3], device=x.device)
        return x.flatten(2).transpose(1, 2), pos
