"""The one place that knows checkpoint formats: it reads any of them and loads it into a model.

Two formats are read and written:

* **Official** ``spann3r.pth`` (:mod:`spann3r_model.checkpoint_official`): the ``torch.save``
  container DUSt3R-lineage training writes (a bare state_dict is accepted too), unpickled with an
  allow-list so that a crafted pickle is refused before it runs.
* **Ours** (:mod:`spann3r_model.checkpoint_safetensors`): safetensors with the resolved
  :class:`ModelConfig` as JSON and a format version in the file's metadata.

Key handling, for both, is in :mod:`spann3r_model.checkpoint_keys`: wrapper prefixes are
stripped, the two names of each DPT alias satisfy each other, and loading is strict. A file
without a recorded config gets the architecture its tensor shapes imply (:func:`infer_config`).
"""

from __future__ import annotations

import logging
from pathlib import Path
import re
from typing import Any, Mapping, Optional, TYPE_CHECKING, Union

import torch

from spann3r_model.checkpoint_keys import CheckpointError, filter_state_dict, match_state_dict
from spann3r_model.checkpoint_official import read_official
from spann3r_model.checkpoint_safetensors import read_safetensors
from spann3r_model.config import DPTConfig, ModelConfig, PRESETS
from spann3r_model.io.atomic import PathLike

if TYPE_CHECKING:
    from spann3r_model.spann3r import Spann3R

LOG = logging.getLogger(__name__)


# --- reading ----------------------------------------------------------------------------------

def _sniff(path: Path) -> str:
    with open(path, 'rb') as handle:
        head = handle.read(9)
    if head.startswith(b'PK\x03\x04') or head[:1] == b'\x80':
        return 'torch'
    if len(head) == 9 and head[8:9] == b'{':
        size = int.from_bytes(head[:8], 'little')
        if 0 < size <= path.stat().st_size - 8:
            return 'safetensors'
    raise CheckpointError(f'{path}: neither a torch checkpoint nor a safetensors file')


def _read(path: PathLike) -> tuple[dict[str, torch.Tensor], Optional[ModelConfig], dict]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'checkpoint {path} does not exist')
    if _sniff(path) == 'safetensors':
        return read_safetensors(path)
    return read_official(path)


def read_state_dict(path: PathLike) -> tuple[dict[str, torch.Tensor], Optional[ModelConfig]]:
    """Read the tensors of any supported checkpoint, on the CPU, with clean key names.

    :param path: official container, bare state_dict or our safetensors.
    :return: ``(state_dict, config)``; ``config`` is the one recorded in the file (ours) or None.
    :raises CheckpointError: for missing, corrupt, unsafe or unrecognised files.
    """
    state_dict, config, _ = _read(path)
    return state_dict, config


# --- architecture from tensor shapes ----------------------------------------------------------

def _count_blocks(state_dict: Mapping[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r'(\d+)\.')
    indices = {int(m.group(1)) for k in state_dict for m in [pattern.match(k)] if m}
    return max(indices) + 1 if indices else 0


def _guess_heads(dim: int) -> int:
    # The weights do not record the head count. Every released DUSt3R/CroCo model uses 64-wide
    # heads (ViT-L 1024/16, ViT-B 768/12); reduced test models use 16-wide heads.
    if dim >= 128 and dim % 64 == 0:
        return dim // 64
    if dim % 16 == 0:
        return dim // 16
    raise CheckpointError(f'cannot guess the head count for width {dim}; pass a preset')


def infer_config(state_dict: Mapping[str, torch.Tensor], source: str = '<state_dict>'
                 ) -> ModelConfig:
    """Infer the architecture of an official-layout state_dict from its tensor shapes.

    Widths come from the patch embeddings, ``decoder_embed``, the DPT ``act_postprocess``,
    ``scratch.layer_rn`` and ``head`` convolutions; depths from the highest block indices; the
    MLP ratio from ``fc1``. What shapes cannot tell is taken from the DUSt3R conventions: DPT
    hooks ``[0, D/2, 3D/4, D]`` for decoder depth ``D`` (as DUSt3R builds them), RoPE base 100
    (every released checkpoint), and head counts from :func:`_guess_heads`. A result equal to a
    preset in every shape-derived field returns that preset, head counts included.

    :raises CheckpointError: when a key needed for the inference is missing or the shapes are
        inconsistent.
    """
    try:
        patch = state_dict['dust3r.patch_embed.proj.weight']
        enc_dim, patch_size = int(patch.shape[0]), int(patch.shape[-1])
        dec_dim = int(state_dict['dust3r.decoder_embed.weight'].shape[0])
        head = 'dust3r.downstream_head1.dpt.'
        layer_dims = tuple(int(state_dict[f'{head}act_postprocess.{i}.0.weight'].shape[0])
                           for i in range(4))
        rn = state_dict.get(f'{head}scratch.layer_rn.0.weight')
        if rn is None:
            rn = state_dict[f'{head}scratch.layer1_rn.weight']
        last = state_dict[f'{head}head.4.weight']
        fc1 = state_dict['dust3r.enc_blocks.0.mlp.fc1.weight']
    except KeyError as err:
        raise CheckpointError(f'{source}: cannot infer the architecture, {err} is missing; '
                              'pass a preset') from None
    enc_depth = _count_blocks(state_dict, 'dust3r.enc_blocks.')
    dec_depth = _count_blocks(state_dict, 'dust3r.dec_blocks.')
    value_depth = _count_blocks(state_dict, 'value_encoder.')
    mlp_ratio = fc1.shape[0] / enc_dim
    for prefix, dim in (('dust3r.dec_blocks.0.', dec_dim), ('value_encoder.0.', enc_dim)):
        other = state_dict.get(f'{prefix}mlp.fc1.weight')
        if other is not None and other.shape[0] / dim != mlp_ratio:
            raise CheckpointError(f'{source}: MLP ratio of {prefix} differs from the encoder '
                                  f'{mlp_ratio}; such a model is not expressible')
    try:
        config = ModelConfig(
            patch_size=patch_size, enc_embed_dim=enc_dim, enc_depth=enc_depth,
            enc_num_heads=_guess_heads(enc_dim), dec_embed_dim=dec_dim, dec_depth=dec_depth,
            dec_num_heads=_guess_heads(dec_dim), mlp_ratio=mlp_ratio,
            value_encoder_depth=value_depth, value_encoder_num_heads=_guess_heads(enc_dim),
            dpt=DPTConfig(layer_dims=layer_dims, feature_dim=int(rn.shape[0]),
                          last_dim=int(last.shape[1]), num_channels=int(last.shape[0]),
                          hooks=(0, dec_depth * 2 // 4, dec_depth * 3 // 4, dec_depth)))
    except ValueError as err:
        raise CheckpointError(f'{source}: inferred architecture is invalid: {err}') from None
    for name, preset in PRESETS.items():
        if _shape_fields(preset) == _shape_fields(config):
            LOG.info('%s: recognised preset %r', source, name)
            return preset
    LOG.info('%s: inferred architecture %s (head counts guessed)', source, config)
    return config


def _shape_fields(config: ModelConfig) -> dict[str, Any]:
    fields = config.to_dict()
    for name in ('enc_num_heads', 'dec_num_heads', 'value_encoder_num_heads', 'rope_base'):
        fields.pop(name)
    return fields


# --- loading into a model ---------------------------------------------------------------------

def load_into(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor],
              source: str = '<state_dict>') -> None:
    """Load ``state_dict`` into ``model`` strictly (aliases and prefixes handled).

    :raises CheckpointError: listing missing, unexpected and shape-mismatched keys.
    """
    expected = {k: v.shape for k, v in model.state_dict(keep_vars=True).items()}
    matched = match_state_dict(expected, filter_state_dict(state_dict, source), source)
    with torch.no_grad():
        model.load_state_dict(matched, strict=True)


def resolve_config(preset: Union[str, ModelConfig, None], recorded: Optional[ModelConfig],
                   state_dict: Mapping[str, torch.Tensor], source: str) -> ModelConfig:
    """Pick the architecture: an explicit preset, else the recorded config, else inference."""
    if isinstance(preset, ModelConfig):
        return preset
    if preset is not None:
        return ModelConfig.preset(preset)
    if recorded is not None:
        return recorded
    return infer_config(state_dict, source)


def load_model(path: PathLike, *, preset: Union[str, ModelConfig, None] = None,
               device: Union[str, torch.device] = 'cpu') -> tuple['Spann3R', ModelConfig]:
    """Build :class:`Spann3R` and load a checkpoint into it strictly.

    :param path: official container, bare state_dict or our safetensors.
    :param preset: architecture to build (a preset name or a :class:`ModelConfig`); by default
        the config recorded in the file, else the one inferred from its shapes.
    :param device: where the model lives.
    :return: the model in eval mode and its config.
    :raises CheckpointError: when the file cannot be read or does not fit the architecture.
    """
    # Imported here so that reading and converting checkpoints never needs the network code.
    from spann3r_model.spann3r import Spann3R

    source = str(path)
    state_dict, recorded, _ = _read(path)
    config = resolve_config(preset, recorded, state_dict, source)
    model = Spann3R(config, device=torch.device(device))
    load_into(model, state_dict, source)
    return model.eval(), config
