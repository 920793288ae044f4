"""Dataset names usable in a training config, and building a mix from config entries."""

from __future__ import annotations

import inspect
from typing import Any, Mapping, Sequence

from training.datasets.arkitscenes import ARKitScenesLayout
from training.datasets.base import SequenceDataset
from training.datasets.blendedmvs import BlendedMVSLayout
from training.datasets.co3d import Co3dLayout
from training.datasets.habitat import HabitatLayout
from training.datasets.mixture import MixedDataset
from training.datasets.scannet import ScanNetLayout
from training.datasets.scannetpp import ScanNetppLayout

#: Layout readers by config name.
DATASETS: dict[str, type[SequenceDataset]] = {
    'scannet': ScanNetLayout,
    'scannetpp': ScanNetppLayout,
    'arkitscenes': ARKitScenesLayout,
    'co3d': Co3dLayout,
    'blendedmvs': BlendedMVSLayout,
    'habitat': HabitatLayout,
}


def _accepted(cls: type) -> set[str]:
    names = set()
    for klass in cls.__mro__:
        if klass is object or '__init__' not in vars(klass):
            continue
        for p in inspect.signature(klass.__init__).parameters.values():
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != 'self':
                names.add(p.name)
    return names


def build_dataset(kind: str, args: Mapping[str, Any], *, defaults: Mapping[str, Any]
                  ) -> SequenceDataset:
    """Build one layout reader.

    :param kind: a key of :data:`DATASETS`.
    :param args: the entry's constructor arguments (``root``, gaps, ``scenes`` ...).
    :param defaults: run-wide values (``num_frames``, ``image_size``, ``seed``) the entry may
        override.
    :raises ValueError: for an unknown name or argument.
    """
    if kind not in DATASETS:
        raise ValueError(f'unknown dataset type {kind!r}; choose from {sorted(DATASETS)}')
    cls = DATASETS[kind]
    unknown = set(args) - _accepted(cls)
    if unknown:
        raise ValueError(f'dataset {kind!r} does not take {sorted(unknown)}; it accepts '
                         f'{sorted(_accepted(cls))}')
    merged = {**defaults, **args}
    merged.setdefault('name', kind)
    return cls(**merged)


def build_mix(entries: Sequence[Any], *, defaults: Mapping[str, Any], seed: int
              ) -> MixedDataset:
    """Build a :class:`MixedDataset` from config entries (``type``, ``samples``, ``args``)."""
    parts = [(build_dataset(e.type, e.args, defaults=defaults), e.samples) for e in entries]
    return MixedDataset(parts, seed=seed)
