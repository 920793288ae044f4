"""Inference of ``nn.Linear`` layers through oneDNN on x86 CPUs.

torch runs float32 ``nn.Linear`` on the CPU through MKL's GEMM. MKL picks its AVX2 kernels on
AMD processors, while oneDNN (bundled with torch as ``mkldnn``) uses AVX-512 wherever the
processor has it: on an AMD EPYC with one thread the encoder's ``[196, 1024] x [1024, 4096]``
product runs at about 105 GFLOP/s through oneDNN against 50 through MKL, with the same float32
accumulation (results differ by rounding only). oneDNN also applies the MLP's GELU (erf form)
while the output is still in cache.

The layers stay plain ``nn.Linear`` modules, so parameter names, ``state_dict`` and dynamic
int8 quantisation (which swaps modules by exact type) are untouched; only the call goes through
:func:`linear`. oneDNN's operator has no backward pass, so whenever autograd records the call it
falls back to ``nn.Linear.forward``.
"""

from __future__ import annotations

import functools
import platform

import torch
from torch import nn
import torch.nn.functional as F


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


def _use_onednn(layer: nn.Module, x: torch.Tensor) -> bool:
    if type(layer) is not nn.Linear or x.device.type != 'cpu':
        return False
    weight = layer.weight
    if x.dtype != torch.float32 or weight.dtype != torch.float32 or weight.device.type != 'cpu':
        return False
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return False
    if torch.is_autocast_enabled('cpu'):
        return False
    return onednn_linear_available()


def linear(layer: nn.Module, x: torch.Tensor, gelu: bool = False) -> torch.Tensor:
    """Apply a linear layer, optionally followed by the exact (erf) GELU.

    :param layer: an ``nn.Linear`` (or a module that replaced it, such as a dynamically
        quantised linear layer, which is simply called).
    :param x: ``[..., in_features]`` input.
    :param gelu: apply ``GELU(approximate='none')`` to the output.
    :return: ``[..., out_features]``.
    """
    if _use_onednn(layer, x):
        attr = 'gelu' if gelu else 'none'
        algorithm = 'none' if gelu else ''
        return torch.ops.mkldnn._linear_pointwise(x, layer.weight, layer.bias, attr, [],
                                                  algorithm)
    out = layer(x)
    return F.gelu(out) if gelu else out
