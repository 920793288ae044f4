"""Inference of ``nn.Linear`` layers through oneDNN on x86 CPUs.

torch runs float32 ``nn.Linear`` on the CPU through MKL's GEMM. MKL picks its AVX2 kernels on
AMD processors, while oneDNN (bundled with torch as ``mkldnn``) uses AVX-512 wherever the
processor has it: on an AMD EPYC with one thread the encoder's ``[196, 1024] x [1024, 4096]``
product runs at about 105 GFLOP/s through oneDNN against 50 through MKL, with the same float32
accumulation (results differ by rounding only). oneDNN also applies the MLP's GELU (erf form)
while the output is still in cache.

Layers registered with :func:`pack_onednn_weights` also keep their weight in oneDNN's own
blocked layout (:mod:`.packed`), which saves the reorder oneDNN otherwise does on every call:
about 4% of a released frame on one thread, for a second copy of the linear weights.

The layers stay plain ``nn.Linear`` modules, so parameter names, ``state_dict`` and dynamic
int8 quantisation (which swaps modules by exact type) are untouched; only the call goes through
:func:`linear`. oneDNN's operator has no backward pass, so whenever autograd records the call it
falls back to ``nn.Linear.forward``.
"""

from __future__ import annotations

import functools
import platform
from typing import Iterable

import torch
from torch import nn
import torch.nn.functional as F

from spann3r_model.backends import packed


@functools.lru_cache(maxsize=None)
def onednn_linear_available() -> bool:
    """Whether torch has oneDNN's fused linear operator and this is an x86-64 machine.

    Other architectures (e.g. aarch64 boards) keep torch's default GEMM, whose speed there has
    not been compared.
    """
    if platform.machine().lower() not in ('x86_64', 'amd64'):
        return False
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        return hasattr(torch.ops.mkldnn, '_linear_pointwise')
    except (AttributeError, RuntimeError):
        return False


def onednn_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether ``x @ weight.T`` can go through oneDNN with an identical float32 result.

    :param x: the input.
    :param weight: ``[out, in]`` weight.
    :return: True on an x86-64 CPU for float32 tensors when autograd does not record the call.
    """
    if x.device.type != 'cpu' or weight.device.type != 'cpu':
        return False
    if x.dtype != torch.float32 or weight.dtype != torch.float32:
        return False
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return False
    if _cpu_autocast_enabled():
        return False
    return onednn_linear_available()


def _cpu_autocast_enabled() -> bool:
    try:
        return torch.is_autocast_enabled('cpu')
    except TypeError:  # torch < 2.4 has no device argument
        return torch.is_autocast_cpu_enabled()


def pack_onednn_weights(weights: Iterable[torch.Tensor]) -> int:
    """Let the oneDNN paths use packed copies of these weights (see :mod:`.packed`).

    :param weights: parameters of linear layers (used by :func:`onednn_linear`) and of
        convolutions (used by :func:`~.dpt_head.apply_conv`).
    :return: how many weights were registered (0 where oneDNN is not available).
    """
    return packed.register(weights) if onednn_linear_available() else 0


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                  gelu: bool = False, source: torch.Tensor | None = None,
                  residual: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ weight.T + bias``, then the erf GELU or ``+ residual``, through oneDNN.

    See :func:`onednn_applies` for when this is exact.

    :param x: ``[..., in]``.
    :param weight: ``[out, in]``.
    :param bias: ``[out]`` or None.
    :param gelu: apply ``GELU(approximate='none')``.
    :param source: the parameter ``weight`` is (or views, e.g. a 1x1 convolution's kernel);
        when it was registered with :func:`pack_onednn_weights` its packed copy is used.
    :param residual: contiguous float32 ``[..., out]`` to add (not with ``gelu``).
    :return: ``[..., out]``.
    """
    rows = x.numel() // max(x.shape[-1], 1)
    w = packed.packed_copy(weight if source is None else source, None,
                           lambda: torch.ops.mkldnn._reorder_linear_weight(weight, rows))
    w = weight if w is None else w
    if residual is not None:
        return torch.ops.mkldnn._linear_pointwise.binary(x, residual, w, bias, 'add')
    attr, algorithm = ('gelu', 'none') if gelu else ('none', '')
    return torch.ops.mkldnn._linear_pointwise(x, w, bias, attr, [], algorithm)


def _use_onednn(layer: nn.Module, x: torch.Tensor) -> bool:
    return type(layer) is nn.Linear and onednn_applies(x, layer.weight)


def linear(layer: nn.Module, x: torch.Tensor, gelu: bool = False,
           residual: torch.Tensor | None = None) -> torch.Tensor:
    """Apply a linear layer, optionally followed by the exact (erf) GELU or a residual sum.

    :param layer: an ``nn.Linear`` (or a module that replaced it, such as a dynamically
        quantised linear layer, which is simply called).
    :param x: ``[..., in_features]`` input.
    :param gelu: apply ``GELU(approximate='none')`` to the output.
    :param residual: ``[..., out_features]`` added to the output (not with ``gelu``); oneDNN
        adds it while the output is still in cache.
    :return: ``[..., out_features]``.
    """
    if gelu and residual is not None:
        raise ValueError('linear: gelu and residual cannot be combined')
    if _use_onednn(layer, x):
        fusable = (residual is not None and residual.dtype == torch.float32
                   and residual.is_contiguous()
                   and residual.shape == x.shape[:-1] + (layer.out_features,))
        if residual is None or fusable:
            return onednn_linear(x, layer.weight, layer.bias, gelu, residual=residual)
        out = onednn_linear(x, layer.weight, layer.bias, gelu)
    else:
        out = layer(x)
        if gelu:
            out = F.gelu(out)
    return out if residual is None else residual + out
