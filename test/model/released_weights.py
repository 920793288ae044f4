"""Deterministic stand-in weights for a Spann3R state_dict of any width, the released one included.

Every tensor is drawn from its own ``torch.Generator`` seeded with the CRC-32 of its key, so a
tensor depends only on its name and shape, never on the order or on the other keys. The draws are
uniform: ``torch.rand`` on the CPU turns each 32-bit Mersenne-Twister word into a float with
integer operations only, and the scaling below is a few correctly rounded float32 operations, so
the weights are the same bit for bit on every machine (``torch.randn`` need not be: its
vectorised Box-Muller computes ``log``/``sin``/``cos`` differently for each CPU capability).

What each key gets (``U(s)``: uniform with zero mean and standard deviation ``s``):

* 1-D ``*.weight`` (the LayerNorms; the model has no other 1-D weights): ``1 + U(0.1)``, and
  ``3 * (1 + U(0.1))`` for ``norm_q`` and ``norm_k``: the memory keys of one frame share most of
  their direction, so with unit norms the memory attention is almost uniform (weights 0.055 to
  0.072 over 16 tokens at 64x64); tripling both makes the affinities nine times as spread;
* ``*.bias`` (linear, convolution and LayerNorm biases): ``U(0.02)``;
* every other tensor (linear and convolution weights, the mask token): ``U(g / sqrt(fan_in))``
  with ``fan_in`` the product of all but the first dimension (1 for a 1-D tensor) and gain
  ``g = 1``, except ``g = 0.2`` for the last 1x1 convolution of each DPT head
  (``*.dpt.head.4.weight``): the DPT fusion stages sum residual branches, so their output grows
  to a standard deviation of about 5, and the exponential depth mode would turn that into
  pointmaps of norm 1e4 and more.

The LayerNorm weights and all biases are not ones and zeros, so that a weight loaded under the
wrong name changes the outputs. At the released widths every activation stays finite through
the 24 encoder and 12 decoder blocks (the residual streams grow to a standard deviation of about
6, the normalised tokens have 1), and the outputs vary from pixel to pixel and from frame to
frame.

The two names of an aliased DPT tensor (``scratch.layerN_rn.weight`` and
``scratch.layer_rn.{N-1}.weight``) get one tensor, drawn under the lexicographically smaller
name.
"""

from __future__ import annotations

import hashlib
import math
from typing import Mapping, Optional, Sequence
import zlib

import torch

from spann3r_model.checkpoint_keys import alias_of
from spann3r_model.config import ModelConfig

NORM_WEIGHT_STD = 0.1
BIAS_STD = 0.02
#: Scale of the LayerNorms in front of the memory attention's affinity (see the module docstring).
QK_NORM_SCALE = 3.0
#: Gain of the last 1x1 convolution of each DPT head (see the module docstring).
HEAD_OUT_GAIN = 0.2


def schema(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of the state_dict of ``Spann3R(config)`` (built on ``meta``), by key."""
    from spann3r_model.spann3r import Spann3R

    model = Spann3R(config, device='meta')
    return {key: tuple(t.shape) for key, t in sorted(model.state_dict(keep_vars=True).items())}


def std_of(key: str, shape: Sequence[int]) -> tuple[float, float]:
    """``(mean, std)`` of the draw for ``key`` (see the module docstring)."""
    if key.endswith('.bias'):
        return 0.0, BIAS_STD
    if len(shape) == 1 and key.endswith('.weight'):
        scale = QK_NORM_SCALE if key in ('norm_q.weight', 'norm_k.weight') else 1.0
        return scale, scale * NORM_WEIGHT_STD
    gain = HEAD_OUT_GAIN if key.endswith('.dpt.head.4.weight') else 1.0
    return 0.0, gain / math.sqrt(math.prod(shape[1:]))


def seed_of(key: str) -> int:
    """Seed of the generator that draws ``key`` (aliased names share one)."""
    other = alias_of(key)
    return zlib.crc32(min(key, other or key).encode())


def tensor_for(key: str, shape: Sequence[int]) -> torch.Tensor:
    """Draw the float32 tensor of ``key``."""
    mean, std = std_of(key, shape)
    gen = torch.Generator(device='cpu').manual_seed(seed_of(key))
    out = torch.rand(tuple(shape), generator=gen, dtype=torch.float32)
    # rand gives k / 2^24; 2u - 1 is exact, then one rounding for the scale and one for the mean.
    out.mul_(2.0).sub_(1.0).mul_(std * math.sqrt(3.0))
    if mean:
        out.add_(mean)
    return out


def generate(shapes: Mapping[str, Sequence[int]]) -> dict[str, torch.Tensor]:
    """Draw every tensor of a state_dict schema; both names of an aliased tensor share one."""
    out: dict[str, torch.Tensor] = {}
    for key in sorted(shapes):
        other = alias_of(key)
        if other in out and tuple(out[other].shape) == tuple(shapes[key]):
            out[key] = out[other]
        else:
            out[key] = tensor_for(key, shapes[key])
    return out


def generate_for(config: ModelConfig) -> dict[str, torch.Tensor]:
    """Draw the state_dict of ``Spann3R(config)``."""
    return generate(schema(config))


def fingerprint(state_dict: Mapping[str, torch.Tensor], keys: Optional[Sequence[str]] = None
                ) -> str:
    """SHA-256 over the sorted keys, shapes and float32 bytes of a state_dict."""
    digest = hashlib.sha256()
    for key in sorted(state_dict if keys is None else keys):
        tensor = state_dict[key].detach().to('cpu', torch.float32).contiguous()
        digest.update(f'{key}:{list(tensor.shape)}\n'.encode())
        digest.update(memoryview(tensor.numpy()).cast('B'))
    return digest.hexdigest()
