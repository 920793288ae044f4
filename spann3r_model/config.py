"""Typed, frozen configuration of the model, its spatial memory and the inference engine.

This module is the single source of truth for every knob of the ROS-free core. The ROS node,
the bag tools and the trainer build their own settings on top of these dataclasses.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass(frozen=True)
class DPTConfig:
    """Dimensions of one DPT head (both heads share them).

    :param layer_dims: channel widths of the four reassemble stages.
    :param feature_dim: width of the fusion blocks.
    :param last_dim: width of the last convolutions before the output conv.
    :param hooks: indices of the decoder token maps fed to the four stages.
    :param num_channels: output channels (xyz + confidence).
    """

    layer_dims: tuple[int, int, int, int] = (96, 192, 384, 768)
    feature_dim: int = 256
    last_dim: int = 128
    hooks: tuple[int, int, int, int] = (0, 6, 9, 12)
    num_channels: int = 4


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of Spann3R: a DUSt3R encoder/decoder plus the memory encoder and key heads.

    The memory (value) encoder works at the encoder width; the key/query heads map
    ``enc_embed_dim + dec_embed_dim`` to ``enc_embed_dim``.
    """

    patch_size: int = 16
    rope_base: float = 100.0
    enc_embed_dim: int = 1024
    enc_depth: int = 24
    enc_num_heads: int = 16
    dec_embed_dim: int = 768
    dec_depth: int = 12
    dec_num_heads: int = 12
    mlp_ratio: float = 4.0
    value_encoder_depth: int = 6
    value_encoder_num_heads: int = 16
    dpt: DPTConfig = field(default_factory=DPTConfig)

    def __post_init__(self) -> None:
        """Validate dimensions that the layers cannot check cleanly themselves."""
        for name, dim, heads in (
            ('enc', self.enc_embed_dim, self.enc_num_heads),
            ('dec', self.dec_embed_dim, self.dec_num_heads),
            ('value_encoder', self.enc_embed_dim, self.value_encoder_num_heads),
        ):
            if heads <= 0 or dim % heads != 0:
                raise ValueError(f'{name}: embed dim {dim} is not divisible by {heads} heads')
            if (dim // heads) % 4 != 0 and name != 'value_encoder':
                raise ValueError(
                    f'{name}: 2D RoPE needs a head dim divisible by 4, got {dim // heads}')
        if max(self.dpt.hooks) > self.dec_depth:
            raise ValueError(f'DPT hooks {self.dpt.hooks} exceed decoder depth {self.dec_depth}')
        if self.patch_size <= 0:
            raise ValueError('patch_size must be positive')

    @property
    def key_dim(self) -> int:
        """Width of memory keys, values and queries."""
        return self.enc_embed_dim

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> 'ModelConfig':
        """Build from :meth:`to_dict` output; unknown keys are an error."""
        data = dict(data)
        dpt = data.pop('dpt', {})
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f'unknown ModelConfig keys: {sorted(unknown)}')
        dpt_cfg = DPTConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in dpt.items()})
        return cls(dpt=dpt_cfg, **data)

    @classmethod
    def preset(cls, name: str) -> 'ModelConfig':
        """Return a named preset (see :data:`PRESETS`)."""
        try:
            return PRESETS[name]
        except KeyError:
            raise ValueError(
                f'unknown model preset {name!r}; choose from {sorted(PRESETS)}') from None


#: The released Spann3R (ViT-L encoder, ViT-B decoders, DPT heads).
RELEASED = ModelConfig()

#: A small, fast variant for tests, the demo and CPU training (same structure, fewer widths).
TINY = ModelConfig(
    enc_embed_dim=192,
    enc_depth=4,
    enc_num_heads=3,
    dec_embed_dim=128,
    dec_depth=4,
    dec_num_heads=2,
    value_encoder_depth=2,
    value_encoder_num_heads=3,
    dpt=DPTConfig(layer_dims=(24, 48, 96, 192), feature_dim=64, last_dim=32, hooks=(0, 2, 3, 4)),
)

PRESETS: dict[str, ModelConfig] = {'released': RELEASED, 'tiny': TINY}


@dataclass(frozen=True)
class MemoryConfig:
    """Limits and thresholds of the spatial memory (official evaluation defaults).

    :param work_mem_size: working-memory size in frames.
    :param long_mem_size: long-term memory size in tokens; also the number kept by pruning.
    :param attn_thresh: attention values below this are zeroed after the softmax (0 disables).
    :param sim_thresh: a frame whose keys are this similar to a working-memory frame is not stored.
    """

    work_mem_size: int = 5
    long_mem_size: int = 4000
    attn_thresh: float = 5e-4
    sim_thresh: float = 0.95

    def __post_init__(self) -> None:
        """Reject values the memory cannot work with."""
        if self.work_mem_size < 1:
            raise ValueError(f'work_mem_size must be >= 1, got {self.work_mem_size}')
        if self.long_mem_size < 0:
            raise ValueError(f'long_mem_size must be >= 0, got {self.long_mem_size}')
        if not 0.0 <= self.attn_thresh < 1.0:
            raise ValueError(f'attn_thresh must be in [0, 1), got {self.attn_thresh}')
        if not 0.0 < self.sim_thresh <= 1.0:
            raise ValueError(f'sim_thresh must be in (0, 1], got {self.sim_thresh}')

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        return dataclasses.asdict(self)


PRECISIONS = ('fp32', 'fp16', 'bf16', 'int8')


@dataclass(frozen=True)
class EngineConfig:
    """How the model is run.

    :param device: ``auto`` (CUDA when present, else CPU), ``cpu`` or ``cuda[:N]``.
    :param precision: ``fp32``; ``fp16`` autocast on CUDA; ``bf16`` autocast on CUDA or the
        CPU (fast on a CPU only where the processor has native bfloat16); ``int8`` on CPU:
        dynamic int8 quantisation of the linear layers, and the heads' 3x3 convolutions in
        bfloat16 where the processor has native bfloat16 (see :mod:`spann3r_model.backends.int8`).
        The heads run in float32 and results are float32 in every mode.
    :param image_size: square model resolution in pixels (multiple of the patch size).
    :param num_threads: CPU threads for torch (0 keeps torch's default). torch's thread count
        is process-wide: applications apply it (and ``keep_freed_memory``) with
        :func:`spann3r_model.backends.process.apply_process_settings`.
    :param pack_weights: on an x86 CPU, keep a copy of the float linear and convolution
        weights in oneDNN's packed layout: about 5% faster per frame in fp32, for a second
        copy of those weights in memory (+2.4 GB for the released model in fp32).
    :param keep_freed_memory: on Linux with glibc, keep freed tensor memory in the process
        instead of faulting fresh pages in every frame (process-wide; see
        :mod:`spann3r_model.backends.allocator`).
    """

    device: str = 'auto'
    precision: str = 'fp32'
    image_size: int = 224
    num_threads: int = 0
    pack_weights: bool = True
    keep_freed_memory: bool = True

    def __post_init__(self) -> None:
        """Reject values the engine cannot run with."""
        if self.precision not in PRECISIONS:
            raise ValueError(f'precision must be one of {PRECISIONS}, got {self.precision!r}')
        dev = self.device
        if not (dev in ('auto', 'cpu') or dev == 'cuda' or
                (dev.startswith('cuda:') and dev[5:].isdigit())):
            raise ValueError(f'device must be auto, cpu, cuda or cuda:N, got {dev!r}')
        if self.image_size <= 0 or self.image_size % 16 != 0:
            raise ValueError(
                f'image_size must be a positive multiple of 16, got {self.image_size}')
        if self.num_threads < 0:
            raise ValueError('num_threads must be >= 0')

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        return dataclasses.asdict(self)
