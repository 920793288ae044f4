"""Optional int8 dynamic quantisation for CPU inference.

Weights of every ``nn.Linear`` and of the DPT heads' 3x3 convolutions are stored as int8 (one
scale per output channel); activations are quantised on the fly, per tensor, by each layer.
LayerNorms, attention, the 1x1 and transposed convolutions of the heads and everything outside
these layers stay in float32. The accuracy change is measured on the parity fixture by
``spann3r-parity --precision int8`` (see the README's performance table).
"""

from __future__ import annotations

import copy
from typing import Iterator
import warnings

import torch
from torch import nn

#: Names under which the heads live in :class:`~spann3r_model.spann3r.Spann3R`.
HEAD_PREFIXES = ('dust3r.downstream_head1.', 'dust3r.downstream_head2.')


def _is_head_conv3x3(name: str, module: nn.Module) -> bool:
    return (type(module) is nn.Conv2d and module.kernel_size == (3, 3)
            and module.groups == 1 and name.startswith(HEAD_PREFIXES))


def _children(model: nn.Module) -> Iterator[tuple[nn.Module, str, nn.Module]]:
    """Every ``(parent, attribute, child)`` edge, aliases included (one module, two names)."""
    for parent in model.modules():
        for attr, child in parent._modules.items():
            if child is not None:
                yield parent, attr, child


def quantize_int8(model: nn.Module, head_convs: bool = True) -> nn.Module:
    """Return a CPU copy of ``model`` with dynamically quantised layers.

    :param model: a float model (left unchanged).
    :param head_convs: also quantise the 3x3 convolutions of the DPT heads (most of the
        heads' time); the linear layers are always quantised.
    :return: the quantised copy, in eval mode.
    """
    qcopy = copy.deepcopy(model).to('cpu').float().eval()
    # torch marks eager-mode quantisation as deprecated in favour of torchao, which is not a
    # dependency of this project; the API still works and is what we test.
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', DeprecationWarning)
        warnings.simplefilter('ignore', UserWarning)
        from torch.ao.nn.quantized.dynamic import Conv2d as DynamicConv2d
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
        if head_convs:
            # One quantised module per float module, then every name that reached the float
            # module (the heads' scratch.layerX_rn / scratch.layer_rn.N aliases) gets it.
            swapped: dict[int, nn.Module] = {}
            for name, module in qcopy.named_modules():
                if _is_head_conv3x3(name, module):
                    module.qconfig = per_channel_dynamic_qconfig
                    swapped[id(module)] = DynamicConv2d.from_float(module)
            for parent, attr, child in list(_children(qcopy)):
                if id(child) in swapped:
                    parent._modules[attr] = swapped[id(child)]
        # Per-output-channel weight scales: the key/query heads and the attention projections
        # have rows of very different norms, and one scale per tensor costs several times more
        # accuracy for no speed gain.
        return quantize_dynamic(qcopy, {nn.Linear: per_channel_dynamic_qconfig},
                                dtype=torch.qint8, inplace=True)


def quantize_linear_int8(model: nn.Module) -> nn.Module:
    """Return a CPU copy of ``model`` whose ``nn.Linear`` layers alone are quantised."""
    return quantize_int8(model, head_convs=False)
