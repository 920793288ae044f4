"""DPT regression head: four decoder token maps fused into a dense pointmap and confidence.

Layout and names follow the official checkpoints (``dpt.scratch.*``, ``dpt.head.*``,
``dpt.act_postprocess.*``). The four ``scratch.layerX_rn`` convolutions are also reachable as
``scratch.layer_rn.(X-1)``: one module under two names, so a state_dict lists both keys.

The feature maps run in channels-last layout: a token map ``[B, N, C]`` already is one, so
viewing it as ``[B, C, h, w]`` costs no copy, and oneDNN's convolutions read it without
reordering. A 1x1 convolution on such a map is a linear layer over the channels; torch sends
small-batch single-thread 1x1 convolutions to a slow generic kernel, so these go through
:func:`~.linear.onednn_linear` instead. Other convolutions whose weights were registered with
:mod:`.packed` run through oneDNN with the packed weight and a following ReLU fused.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
import torch.nn.functional as F

from spann3r_model.backends import packed
from spann3r_model.backends.onednn_linear import onednn_applies, onednn_linear


def is_pointwise(conv: nn.Module) -> bool:
    """Whether ``conv`` is a plain 1x1 convolution (a linear layer over the channels)."""
    return (type(conv) is nn.Conv2d and conv.kernel_size == (1, 1) and conv.stride == (1, 1)
            and conv.padding == (0, 0) and conv.dilation == (1, 1) and conv.groups == 1)


def _packed_conv(layer: nn.Conv2d, x: torch.Tensor, relu: bool) -> torch.Tensor | None:
    """Run a registered convolution with its packed weight (and a fused ReLU), else None."""
    if layer.padding_mode != 'zeros' or isinstance(layer.padding, str):
        return None
    args = (list(layer.padding), list(layer.stride), list(layer.dilation), layer.groups)
    spec = tuple(x.shape)
    reorder = torch._C._nn.mkldnn_reorder_conv2d_weight
    weight = packed.packed_copy(
        layer.weight, spec, lambda: reorder(layer.weight.detach().to_mkldnn(), *args, list(spec)))
    if weight is None:
        return None
    if not (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)):
        x = x.contiguous(memory_format=torch.channels_last)
    return torch.ops.mkldnn._convolution_pointwise(x, weight, layer.bias, *args,
                                                   'relu' if relu else 'none', [], '')


def apply_conv(layer: nn.Module, x: torch.Tensor, relu: bool = False) -> torch.Tensor:
    """Apply ``layer`` (then a ReLU), through oneDNN's fused paths where they are exact.

    A 1x1 convolution on a channels-last map runs as a linear layer; a convolution whose weight
    was registered for packing (:mod:`.packed`) runs with its packed weight and the ReLU fused.

    :param layer: any module taking ``[B, C, H, W]``.
    :param x: ``[B, C, H, W]``.
    :param relu: apply ``ReLU`` to the output.
    :return: the layer's output (channels-last for the oneDNN routes).
    """
    if type(layer) is nn.Conv2d and onednn_applies(x, layer.weight):
        if is_pointwise(layer) and not relu:
            nhwc = x.permute(0, 2, 3, 1)
            if nhwc.is_contiguous():
                weight = layer.weight.view(layer.out_channels, layer.in_channels)
                out = onednn_linear(nhwc, weight, layer.bias, source=layer.weight)
                return out.permute(0, 3, 1, 2)
        out = _packed_conv(layer, x, relu)
        if out is not None:
            return out
    out = layer(x)
    return F.relu(out) if relu else out


def apply_sequential(layers: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """Run an ``nn.Sequential`` through :func:`apply_conv`, a ReLU after a layer fused into it."""
    modules = list(layers)
    i = 0
    while i < len(modules):
        relu = i + 1 < len(modules) and type(modules[i + 1]) is nn.ReLU
        x = apply_conv(modules[i], x, relu=relu)
        i += 2 if relu else 1
    return x


class Interpolate(nn.Module):
    """Bilinear up-sampling (align_corners=True) as a module, so ``head`` indices match."""

    def __init__(self, scale_factor: float) -> None:
        super().__init__()
        self.scale_factor = scale_factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Up-sample ``[B, C, H, W]`` by ``scale_factor``."""
        return F.interpolate(x, scale_factor=self.scale_factor, mode='bilinear',
                             align_corners=True)


class ResidualConvUnit(nn.Module):
    """``x + conv2(relu(conv1(relu(x))))`` with 3x3 convolutions."""

    def __init__(self, features: int, **kw) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1, **kw)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the unit to ``[B, C, H, W]``."""
        out = apply_conv(self.conv1, F.relu(x), relu=True)
        return apply_conv(self.conv2, out) + x


class FeatureFusionBlock(nn.Module):
    """Add a refined skip connection, refine, up-sample by two and project with ``out_conv``."""

    def __init__(self, features: int, **kw) -> None:
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, 1, **kw)
        self.resConfUnit1 = ResidualConvUnit(features, **kw)
        self.resConfUnit2 = ResidualConvUnit(features, **kw)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        """Fuse ``x`` with ``skip`` (same size) and double the resolution."""
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        x = F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=True)
        return apply_conv(self.out_conv, x)


class _Scratch(nn.Module):
    def __init__(self, layer_dims: Sequence[int], features: int, **kw) -> None:
        super().__init__()
        for i, d in enumerate(layer_dims):
            setattr(self, f'layer{i + 1}_rn', nn.Conv2d(d, features, 3, padding=1, bias=False,
                                                         **kw))
        self.layer_rn = nn.ModuleList(getattr(self, f'layer{i + 1}_rn') for i in range(4))
        for i in range(4):
            setattr(self, f'refinenet{i + 1}', FeatureFusionBlock(features, **kw))


class DPTAdapter(nn.Module):
    """Reassemble, fuse and regress (the ``dpt`` sub-module of a head).

    :param dim_tokens: width of each of the four hooked token maps.
    :param layer_dims: width of the four reassembled feature maps.
    :param feature_dim: width of the fusion blocks.
    :param last_dim: width before the final 1x1 convolution.
    :param num_channels: output channels.
    :param patch_size: patch size of the tokens.
    """

    def __init__(self, dim_tokens: Sequence[int], layer_dims: Sequence[int], feature_dim: int,
                 last_dim: int, num_channels: int, patch_size: int, *,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None
                 ) -> None:
        super().__init__()
        kw = {'device': device, 'dtype': dtype}
        self.patch_size = patch_size
        self.scratch = _Scratch(layer_dims, feature_dim, **kw)
        self.head = nn.Sequential(
            nn.Conv2d(feature_dim, feature_dim // 2, 3, padding=1, **kw),
            Interpolate(2),
            nn.Conv2d(feature_dim // 2, last_dim, 3, padding=1, **kw),
            nn.ReLU(True),
            nn.Conv2d(last_dim, num_channels, 1, **kw),
        )
        d0, d1, d2, d3 = layer_dims
        t0, t1, t2, t3 = dim_tokens
        # Bring the four maps to 1/4, 1/8, 1/16 and 1/32 of the image resolution.
        conv, up = nn.Conv2d, nn.ConvTranspose2d
        self.act_postprocess = nn.ModuleList([
            nn.Sequential(conv(t0, d0, 1, **kw), up(d0, d0, 4, stride=4, **kw)),
            nn.Sequential(conv(t1, d1, 1, **kw), up(d1, d1, 2, stride=2, **kw)),
            nn.Sequential(conv(t2, d2, 1, **kw)),
            nn.Sequential(conv(t3, d3, 1, **kw), conv(d3, d3, 3, stride=2, padding=1, **kw)),
        ])

    def forward(self, tokens: Sequence[torch.Tensor], image_hw: tuple[int, int]) -> torch.Tensor:
        """Regress dense outputs.

        :param tokens: the four hooked token maps, each ``[B, N, C_i]``.
        :param image_hw: ``(H, W)`` the tokens were computed for.
        :return: ``[B, num_channels, H, W]`` raw (not yet activated) outputs.
        """
        h, w = image_hw
        nh, nw = h // self.patch_size, w // self.patch_size
        maps = []
        for i, tok in enumerate(tokens):
            b, n, c = tok.shape
            # Channels-last view of the row-major patch grid, no copy.
            grid = tok.reshape(b, nh, nw, c).permute(0, 3, 1, 2)
            grid = apply_sequential(self.act_postprocess[i], grid)
            maps.append(apply_conv(self.scratch.layer_rn[i], grid))
        s = self.scratch
        path = s.refinenet4(maps[3])[:, :, :maps[2].shape[2], :maps[2].shape[3]]
        path = s.refinenet3(path, maps[2])
        path = s.refinenet2(path, maps[1])
        path = s.refinenet1(path, maps[0])
        return apply_sequential(self.head, path)


def activate_pointmap(raw: torch.Tensor) -> dict[str, torch.Tensor]:
    """Turn raw head outputs into a pointmap and a confidence.

    ``pts3d = xyz / |xyz| * expm1(|xyz|)`` and ``conf = 1 + exp(c)``.

    :param raw: ``[B, 4, H, W]``.
    :return: ``{'pts3d': [B, H, W, 3], 'conf': [B, H, W]}``.
    """
    out = raw.permute(0, 2, 3, 1)
    xyz = out[..., :3]
    d = xyz.norm(dim=-1, keepdim=True)
    pts3d = xyz / d.clip(min=1e-8) * torch.expm1(d)
    conf = 1.0 + out[..., 3].exp()
    return {'pts3d': pts3d, 'conf': conf}


class DPTHead(nn.Module):
    """One pointmap head (``downstream_head1`` or ``downstream_head2``).

    :param dim_tokens: width of the four hooked token maps.
    :param layer_dims: see :class:`DPTAdapter`.
    :param feature_dim: see :class:`DPTAdapter`.
    :param last_dim: see :class:`DPTAdapter`.
    :param num_channels: output channels (4: xyz + confidence).
    :param patch_size: patch size of the tokens.
    """

    def __init__(self, dim_tokens: Sequence[int], layer_dims: Sequence[int], feature_dim: int,
                 last_dim: int, num_channels: int, patch_size: int, *,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None
                 ) -> None:
        super().__init__()
        self.dpt = DPTAdapter(dim_tokens, layer_dims, feature_dim, last_dim, num_channels,
                              patch_size, device=device, dtype=dtype)

    def forward(self, tokens: Sequence[torch.Tensor], image_hw: tuple[int, int]
                ) -> dict[str, torch.Tensor]:
        """Predict a pointmap and confidence.

        Portrait images are handled as the official landscape-only wrapper does: the head runs
        with height and width swapped and its outputs are transposed back.

        :param tokens: the four hooked token maps, each ``[B, N, C_i]``.
        :param image_hw: ``(H, W)`` of the input image.
        :return: ``{'pts3d': [B, H, W, 3], 'conf': [B, H, W]}``.
        """
        h, w = image_hw
        if w >= h:
            return activate_pointmap(self.dpt(tokens, (h, w)))
        res = activate_pointmap(self.dpt(tokens, (w, h)))
        return {k: v.transpose(1, 2) for k, v in res.items()}
