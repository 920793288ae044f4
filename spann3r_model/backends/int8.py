"""The reduced-precision CPU mode (``precision='int8'``).

* Every ``nn.Linear`` is dynamically quantised: int8 weights (one scale per output channel),
  activations quantised on the fly.
* On processors with native bfloat16 arithmetic (AVX512-BF16 or AMX), the DPT heads' 3x3
  convolutions, most of the heads' time, run in bfloat16 with float32 inputs and outputs; on
  other processors they stay in float32, where bfloat16 would be emulated and slower.

LayerNorms, attention, the memory and everything else stay in float32. The accuracy change is
measured on the parity fixture by ``spann3r-parity --precision int8``; see the README.
"""

from __future__ import annotations

import copy
import functools
import platform
import warnings

import torch
from torch import nn
import torch.nn.functional as F

#: Names under which the heads live in :class:`~spann3r_model.spann3r.Spann3R`.
HEAD_PREFIXES = ('dust3r.downstream_head1.', 'dust3r.downstream_head2.')


@functools.lru_cache(maxsize=None)
def native_bf16() -> bool:
    """Whether this CPU computes in bfloat16 natively (x86 with AVX512-BF16 or AMX, Linux)."""
    if platform.machine().lower() not in ('x86_64', 'amd64'):
        return False
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('flags'):
                    flags = set(line.split(':', 1)[1].split())
                    return bool(flags & {'avx512_bf16', 'amx_bf16'})
    except OSError:
        pass
    return False


class Bf16Conv2d(nn.Module):
    """A convolution computed in bfloat16, taking and returning float32 tensors.

    :param conv: the float convolution (its weights are copied, rounded to bfloat16).
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if conv.padding_mode != 'zeros' or isinstance(conv.padding, str):
            raise ValueError('only zero-padded convolutions with explicit padding are supported')
        self.stride, self.padding = conv.stride, conv.padding
        self.dilation, self.groups = conv.dilation, conv.groups
        weight = conv.weight.detach().to(torch.bfloat16)
        self.register_buffer('weight', weight.contiguous(memory_format=torch.channels_last))
        bias = None if conv.bias is None else conv.bias.detach().to(torch.bfloat16)
        self.register_buffer('bias', bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convolve ``[B, C, H, W]`` float32; returns float32 (channels-last)."""
        x = x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
        out = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                       self.groups)
        return out.float()


def _swap_head_convs(model: nn.Module) -> int:
    """Replace the heads' 3x3 convolutions by :class:`Bf16Conv2d`, aliases included."""
    swapped: dict[int, nn.Module] = {}
    for name, module in model.named_modules():
        if (type(module) is nn.Conv2d and module.kernel_size == (3, 3)
                and name.startswith(HEAD_PREFIXES)):
            swapped[id(module)] = Bf16Conv2d(module)
    # One module may sit under two names (scratch.layerX_rn and scratch.layer_rn.N): every
    # edge that reached the float module gets the same replacement.
    for parent in list(model.modules()):
        for attr, child in list(parent._modules.items()):
            if child is not None and id(child) in swapped:
                parent._modules[attr] = swapped[id(child)]
    return len(swapped)


def quantize_linear_int8(model: nn.Module) -> nn.Module:
    """Return a CPU copy of ``model`` whose ``nn.Linear`` layers are dynamically quantised.

    :param model: a float model (left unchanged).
    :return: the quantised copy, in eval mode.
    """
    qcopy = copy.deepcopy(model).to('cpu').float().eval()
    # torch marks eager-mode quantisation as deprecated in favour of torchao, which is not a
    # dependency of this project; the API still works and is what we test.
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', DeprecationWarning)
        warnings.simplefilter('ignore', UserWarning)
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
        # Per-output-channel weight scales: the key/query heads and the attention projections
        # have rows of very different norms, and one scale per tensor costs several times more
        # accuracy for no speed gain.
        return quantize_dynamic(qcopy, {nn.Linear: per_channel_dynamic_qconfig},
                                dtype=torch.qint8, inplace=True)


def quantize_for_cpu(model: nn.Module, head_bf16: bool | None = None) -> nn.Module:
    """Return the reduced-precision CPU copy of ``model`` described in the module docstring.

    :param model: a float model (left unchanged).
    :param head_bf16: run the heads' 3x3 convolutions in bfloat16; None decides by
        :func:`native_bf16`.
    :return: the copy, in eval mode.
    """
    qcopy = quantize_linear_int8(model)
    if native_bf16() if head_bf16 is None else head_bf16:
        _swap_head_convs(qcopy)
    return qcopy
