"""Weights kept a second time in oneDNN's own blocked layout, for CPU inference.

oneDNN reorders a plain weight into its blocked layout on every call of a linear layer or a
convolution. For weights registered here, the reordered copy is made once, on first use, and
made again only when the weight has been modified in place since (``load_state_dict`` does
that) or, for a convolution, when the input shape changes. The cost is a second copy of each
registered weight in memory.
"""

from __future__ import annotations

from typing import Callable, Hashable, Iterable
import weakref

import torch


class _Entry:
    """A registered weight: a weak reference to it, and its packed copies once made."""

    __slots__ = ('ref', 'version', 'packed')

    def __init__(self, ref: weakref.ref) -> None:
        self.ref = ref
        self.version = -1
        # spec -> packed copy, newest last; a few specs (e.g. a landscape and a portrait
        # camera feeding one session) must not repack on every alternation.
        self.packed: dict[Hashable, torch.Tensor] = {}


#: Packed copies kept per weight (one per input shape for convolutions).
MAX_SPECS = 4


# id(parameter) -> entry. Keyed by identity (tensors compare element-wise, so they cannot be
# dictionary keys by value); an entry goes away with its parameter.
_REGISTRY: dict[int, _Entry] = {}


def _forget(key: int) -> None:
    _REGISTRY.pop(key, None)


def register(weights: Iterable[torch.Tensor]) -> int:
    """Allow packed copies of these parameters.

    :param weights: parameters of linear layers or convolutions.
    :return: how many were registered.
    """
    count = 0
    for weight in weights:
        key = id(weight)
        entry = _REGISTRY.get(key)
        if entry is None or entry.ref() is not weight:
            _REGISTRY[key] = _Entry(weakref.ref(weight, lambda _, k=key: _forget(k)))
        count += 1
    return count


def packed_bytes() -> int:
    """Bytes held by packed copies at present (every registered weight of the process)."""
    total = 0
    for entry in list(_REGISTRY.values()):
        weight = entry.ref()
        if weight is not None:
            total += len(entry.packed) * weight.numel() * weight.element_size()
    return total


def packed_copy(source: torch.Tensor, spec: Hashable,
                make: Callable[[], torch.Tensor]) -> torch.Tensor | None:
    """Return the packed copy of ``source``, made by ``make`` when missing or stale.

    :param source: the parameter.
    :param spec: what else the packed layout depends on (e.g. a convolution's input shape).
    :param make: builds the packed copy from the current weight.
    :return: the packed copy, or None when ``source`` is not registered.
    """
    entry = _REGISTRY.get(id(source))
    if entry is None or entry.ref() is not source:
        return None
    if entry.version != source._version:
        entry.packed.clear()
        entry.version = source._version
    packed = entry.packed.pop(spec, None)
    if packed is None:
        packed = make()
        while len(entry.packed) >= MAX_SPECS:
            entry.packed.pop(next(iter(entry.packed)))
    entry.packed[spec] = packed
    return packed
