"""The typed training configuration: YAML in, validated frozen dataclasses out.

A config file has the sections ``run``, ``model``, ``data``, ``optim``, ``loss`` and ``log``
(see ``config/training/*.yaml``). Command-line overrides are ``dotted.key=value`` pairs; the
value is parsed as YAML (so ``1e-4``, ``true`` and ``[0.9, 0.95]`` work) and list entries are
addressed by index (``data.train.0.args.root=/data/scannet``). Unknown keys are errors.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from spann3r_model.config import PRESETS


@dataclass(frozen=True)
class RunSection:
    """Where and how a run happens.

    :param output_dir: run directory (config, checkpoints, TensorBoard logs, exported weights).
    :param seed: base of every random stream.
    :param resume: ``auto`` (the run directory's last checkpoint when present), ``never``,
        or a checkpoint path.
    :param device: ``auto``, ``cpu`` or ``cuda`` (each rank uses its local GPU).
    :param num_threads: torch CPU threads of each process (0 keeps torch's default). On a
        shared or small CPU one thread per process is often much faster than the default.
    """

    output_dir: str = 'runs/spann3r'
    seed: int = 0
    resume: str = 'auto'
    device: str = 'auto'
    num_threads: int = 0


@dataclass(frozen=True)
class ModelSection:
    """The network and its initial weights.

    :param preset: architecture preset (``released`` or ``tiny``); ignored when resuming,
        where the architecture comes from the checkpoint.
    :param init: ``scratch``, ``spann3r`` (an official ``spann3r.pth`` or our safetensors) or
        ``dust3r`` (DUSt3R weights for the ``dust3r.*`` part, the official starting point).
    :param checkpoint: weights file for ``init`` other than ``scratch``.
    :param memory_dropout: attention dropout of the memory read in training (official 0.15).
    """

    preset: str = 'released'
    init: str = 'scratch'
    checkpoint: str = ''
    memory_dropout: float = 0.15


@dataclass(frozen=True)
class DatasetEntry:
    """One part of the data mix.

    :param type: a layout name of ``training.datasets.registry.DATASETS``.
    :param samples: samples of this part per epoch (the official ``N @ Dataset``).
    :param args: constructor arguments of the layout reader (``root``, ``min_gap`` ...).
    """

    type: str
    samples: int
    args: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DataSection:
    """Training and validation data.

    :param train: the training mix.
    :param val: held-out sequences scored every epoch (may be empty).
    :param num_frames: frames per sequence (5 official, 10 for v1.01-style training).
    :param image_size: model resolution.
    :param batch_size: sequences per process and step.
    :param num_workers: data-loader worker processes.
    """

    train: tuple[DatasetEntry, ...] = ()
    val: tuple[DatasetEntry, ...] = ()
    num_frames: int = 5
    image_size: int = 224
    batch_size: int = 2
    num_workers: int = 4


@dataclass(frozen=True)
class OptimSection:
    """AdamW with warm-up and half-cycle cosine, per iteration (official defaults).

    :param max_steps: stop after this many optimiser steps in total (0 = run all epochs).
    :param accum_steps: micro-batches per optimiser step.
    :param precision: ``fp32``; ``bf16`` / ``fp16`` autocast on CUDA.
    """

    epochs: int = 120
    lr: float = 5e-5
    min_lr: float = 1e-6
    warmup_epochs: float = 10.0
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    accum_steps: int = 1
    precision: str = 'fp32'
    max_steps: int = 0


@dataclass(frozen=True)
class LossSection:
    """The objective and its schedules.

    :param alpha: initial confidence weight; falls by ``alpha_drop`` over the second half.
    :param curriculum: use the official frame-gap curriculum (else the maximum gap throughout).
    :param official_batch_coupling: reproduce the released code's cross-sample coupling.
    """

    alpha: float = 0.4
    alpha_drop: float = 0.2
    curriculum: bool = True
    official_batch_coupling: bool = False


@dataclass(frozen=True)
class LogSection:
    """Logging and checkpoint cadence.

    :param every: log scalars every this many optimiser steps.
    :param checkpoint_every: also save the last checkpoint every this many steps (0 = at the
        end of each epoch only).
    :param tensorboard: write TensorBoard scalars.
    :param progress: show a progress bar on rank 0.
    """

    every: int = 10
    checkpoint_every: int = 0
    tensorboard: bool = True
    progress: bool = True


@dataclass(frozen=True)
class TrainConfig:
    """The whole training configuration."""

    run: RunSection = field(default_factory=RunSection)
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    loss: LossSection = field(default_factory=LossSection)
    log: LogSection = field(default_factory=LogSection)

    def __post_init__(self) -> None:
        """Check values across sections."""
        if self.model.preset not in PRESETS:
            raise ValueError(f'model.preset must be one of {sorted(PRESETS)}, '
                             f'got {self.model.preset!r}')
        if self.model.init not in ('scratch', 'spann3r', 'dust3r'):
            raise ValueError(f'model.init must be scratch, spann3r or dust3r, '
                             f'got {self.model.init!r}')
        if self.model.init != 'scratch' and not self.model.checkpoint:
            raise ValueError(f'model.init={self.model.init} needs model.checkpoint')
        if not 0 <= self.model.memory_dropout < 1:
            raise ValueError('model.memory_dropout must be in [0, 1)')
        if self.run.num_threads < 0:
            raise ValueError('run.num_threads must be >= 0')
        if not self.data.train:
            raise ValueError('data.train lists no dataset')
        if self.data.num_frames < 2:
            raise ValueError('data.num_frames must be >= 2')
        if self.data.batch_size < 1 or self.data.num_workers < 0:
            raise ValueError('data.batch_size must be >= 1 and data.num_workers >= 0')
        if self.data.image_size <= 0 or self.data.image_size % 16:
            raise ValueError('data.image_size must be a positive multiple of 16')
        o = self.optim
        if o.epochs < 1 or o.accum_steps < 1 or o.max_steps < 0:
            raise ValueError('optim.epochs and optim.accum_steps must be >= 1, max_steps >= 0')
        if o.lr <= 0 or o.min_lr < 0 or o.warmup_epochs < 0 or o.weight_decay < 0:
            raise ValueError('optim.lr must be > 0; min_lr, warmup_epochs, weight_decay >= 0')
        if len(o.betas) != 2 or not all(0 <= b < 1 for b in o.betas):
            raise ValueError(f'optim.betas must be two values in [0, 1), got {o.betas}')
        if o.precision not in ('fp32', 'bf16', 'fp16'):
            raise ValueError(f'optim.precision must be fp32, bf16 or fp16, got {o.precision!r}')
        if self.run.device not in ('auto', 'cpu', 'cuda'):
            raise ValueError(f'run.device must be auto, cpu or cuda, got {self.run.device!r}')
        if self.log.every < 1 or self.log.checkpoint_every < 0:
            raise ValueError('log.every must be >= 1 and log.checkpoint_every >= 0')

    def to_dict(self) -> dict[str, Any]:
        """Return plain data (YAML/JSON-serialisable)."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> 'TrainConfig':
        """Build and validate from plain data; unknown keys are errors."""
        return _build(cls, data, 'config')


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, Mapping):
        raise ValueError(f'{where}: expected a mapping, got {type(data).__name__}')
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise ValueError(f'{where}: unknown keys {sorted(unknown)}; known: {sorted(fields)}')
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _convert(cls, fields[name], value, f'{where}.{name}')
    return cls(**kwargs)


_SECTIONS = {'run': RunSection, 'model': ModelSection, 'data': DataSection,
             'optim': OptimSection, 'loss': LossSection, 'log': LogSection}


def _convert(cls: type, f: dataclasses.Field, value: Any, where: str) -> Any:
    if cls is TrainConfig:
        return _build(_SECTIONS[f.name], value or {}, where)
    if cls is DataSection and f.name in ('train', 'val'):
        if not isinstance(value, Sequence) or isinstance(value, str):
            raise ValueError(f'{where}: expected a list of datasets')
        return tuple(_build(DatasetEntry, v, f'{where}[{i}]') for i, v in enumerate(value))
    if f.name == 'args':
        if not isinstance(value, Mapping):
            raise ValueError(f'{where}: expected a mapping')
        return dict(value)
    default = f.default if f.default is not dataclasses.MISSING else None
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f'{where}: expected true or false, got {value!r}')
        return value
    if isinstance(default, int) and not isinstance(default, bool) or f.name == 'samples':
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f'{where}: expected an integer, got {value!r}')
        return value
    if isinstance(default, float):
        if isinstance(value, str):
            # YAML 1.1 reads '3e-4' (no dot) as a string; accept it as the number it spells.
            try:
                value = float(value)
            except ValueError:
                raise ValueError(f'{where}: expected a number, got {value!r}') from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f'{where}: expected a number, got {value!r}')
        return float(value)
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f'{where}: expected a list, got {value!r}')
        return tuple(float(v) for v in value)
    if isinstance(default, str) or f.name == 'type':
        if not isinstance(value, str):
            raise ValueError(f'{where}: expected a string, got {value!r}')
        return value
    return value


def apply_override(data: dict[str, Any], override: str) -> None:
    """Apply one ``dotted.key=value`` override to plain config data in place.

    :raises ValueError: for a malformed override or a path through a missing list entry.
    """
    if '=' not in override:
        raise ValueError(f'override {override!r} is not of the form key=value')
    key, text = override.split('=', 1)
    parts = key.strip().split('.')
    if not all(parts):
        raise ValueError(f'override {override!r} has an empty key part')
    value = yaml.safe_load(text) if text.strip() else ''
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ValueError(f'override {override!r}: no list entry {part!r}')
            node = node[int(part)]
        else:
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            node = nxt
    last = parts[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ValueError(f'override {override!r}: no list entry {last!r}')
        node[int(last)] = value
    else:
        node[last] = value


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a YAML config, apply overrides and validate.

    :raises ValueError: for a missing file, bad YAML or invalid values.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f'config file {path} does not exist')
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f'{path}: invalid YAML: {err}') from err
    if not isinstance(data, dict):
        raise ValueError(f'{path}: the top level must be a mapping')
    for override in overrides:
        apply_override(data, override)
    return TrainConfig.from_dict(data)
