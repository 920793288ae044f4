"""The one place that knows checkpoint formats.

Two formats are read and written:

* **Official** ``spann3r.pth``: a ``torch.save`` container ``{'model': state_dict, 'args':
  argparse.Namespace, 'optimizer': ..., 'scaler': ..., 'epoch': ...}`` as DUSt3R-lineage training
  writes it (a bare state_dict is accepted too). It is unpickled with ``weights_only=True`` and
  an allow-list holding only ``argparse.Namespace``: the other entries are plain dicts, lists,
  numbers and tensors, which the restricted unpickler handles. Anything else (a crafted pickle
  that would call a function) is refused before it runs.
* **Ours**: safetensors with the resolved :class:`ModelConfig` as JSON and a format version in
  the file's metadata. Weights saved by :func:`save_official` load unchanged in the official code.

Key handling (all of it in :func:`filter_state_dict` and :func:`match_state_dict`): ``module.``
and ``_orig_mod.`` prefixes (DDP, ``torch.compile``) are stripped; each DPT
``scratch.layer{1..4}_rn.weight`` / ``scratch.layer_rn.{0..3}.weight`` pair names one tensor,
so either name satisfies both; loading is strict and errors list missing, unexpected and
shape-mismatched keys and name the file.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
import pickle
import re
from typing import Any, Mapping, Optional, TYPE_CHECKING, Union

import safetensors
import safetensors.torch
import torch

from spann3r_model.config import DPTConfig, ModelConfig, PRESETS
from spann3r_model.io.atomic import atomic_output

if TYPE_CHECKING:
    from spann3r_model.spann3r import Spann3R

LOG = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

#: Version of our safetensors layout; bump when the metadata or key layout changes.
FORMAT_VERSION = 1
_META_FORMAT = 'spann3r_format_version'
_META_CONFIG = 'spann3r_model_config'
_ARGS_CONFIG = 'spann3r_model_config'

#: Classes the official container pickles besides tensors and builtins.
SAFE_GLOBALS = (argparse.Namespace,)

_WRAPPER_PREFIXES = ('module.', '_orig_mod.')
_LIST_LIMIT = 10

_ALIAS_NAMED = re.compile(r'^(?P<head>(?:.*\.)?dpt\.scratch\.)layer(?P<n>[1-4])_rn\.weight$')
_ALIAS_LISTED = re.compile(r'^(?P<head>(?:.*\.)?dpt\.scratch\.)layer_rn\.(?P<n>[0-3])\.weight$')


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or does not fit the model."""


# --- key handling -----------------------------------------------------------------------------

def alias_of(key: str) -> Optional[str]:
    """Return the other name of an aliased DPT key, or None when ``key`` has no alias."""
    match = _ALIAS_NAMED.match(key)
    if match:
        return f'{match["head"]}layer_rn.{int(match["n"]) - 1}.weight'
    match = _ALIAS_LISTED.match(key)
    if match:
        return f'{match["head"]}layer{int(match["n"]) + 1}_rn.weight'
    return None


def filter_state_dict(state_dict: Mapping[str, Any], source: str = '<state_dict>'
                      ) -> dict[str, torch.Tensor]:
    """Strip wrapper prefixes (``module.``, ``_orig_mod.``, in any nesting) and check types.

    :param state_dict: mapping of names to tensors.
    :param source: name of the file for error messages.
    :return: a new dict with clean names.
    :raises CheckpointError: for non-string keys, non-tensor values or names that collide
        after stripping.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise CheckpointError(f'{source}: state_dict key {key!r} is not a string')
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f'{source}: {key!r} is a {type(value).__name__}, not a tensor')
        name = key
        stripped = True
        while stripped:
            stripped = False
            for prefix in _WRAPPER_PREFIXES:
                if name.startswith(prefix):
                    name, stripped = name[len(prefix):], True
            name = name.replace('._orig_mod.', '.')
        if name in out:
            raise CheckpointError(f'{source}: {key!r} collides with another key as {name!r}')
        out[name] = value
    return out


def _listing(title: str, items: list[str]) -> str:
    shown = ', '.join(items[:_LIST_LIMIT])
    more = f' ... and {len(items) - _LIST_LIMIT} more' if len(items) > _LIST_LIMIT else ''
    return f'{len(items)} {title}: {shown}{more}'


def match_state_dict(expected: Mapping[str, torch.Size], state_dict: Mapping[str, torch.Tensor],
                     source: str = '<state_dict>') -> dict[str, torch.Tensor]:
    """Map a checkpoint's tensors onto the keys a model expects, strictly.

    :param expected: every key of the model's state_dict and its shape.
    :param state_dict: the checkpoint's tensors (prefixes already stripped).
    :param source: name of the file for error messages.
    :return: one tensor per expected key (aliased keys share one tensor).
    :raises CheckpointError: listing missing, unexpected and shape-mismatched keys, or naming
        aliased keys whose two stored copies differ.
    """
    out: dict[str, torch.Tensor] = {}
    missing, mismatched = [], []
    consumed = set()
    for key, shape in expected.items():
        other = alias_of(key)
        names = [n for n in (key, other) if n is not None and n in state_dict]
        if not names:
            missing.append(key)
            continue
        tensor = state_dict[names[0]]
        if len(names) == 2:
            second = state_dict[names[1]]
            if second is not tensor and (second.shape != tensor.shape or
                                         not torch.equal(second, tensor)):
                raise CheckpointError(f'{source}: aliased keys {names[0]!r} and {names[1]!r} '
                                      'name one tensor in the model but differ in the file')
        consumed.update(names)
        if tuple(tensor.shape) != tuple(shape):
            mismatched.append(f'{key} (file {list(tensor.shape)}, model {list(shape)})')
            continue
        out[key] = tensor
    unexpected = sorted(set(state_dict) - consumed)
    if missing or unexpected or mismatched:
        parts = [_listing(title, items) for title, items in (
            ('missing keys', missing), ('unexpected keys', unexpected),
            ('shape mismatches', mismatched)) if items]
        raise CheckpointError(f'{source} does not fit the model: ' + '; '.join(parts))
    return out


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


def _torch_load(path: Path) -> Any:
    try:
        with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
            return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as err:
        # Keep only the line naming what was refused: torch's generic advice around it is to
        # retry with the restriction switched off, which is exactly what must not happen here.
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        reason = next((line for line in lines if 'GLOBAL' in line or 'Unsupported' in line),
                      lines[-1] if lines else repr(err))
        raise CheckpointError(f'{path}: refused to unpickle (only tensors, plain Python data '
                              f'and argparse.Namespace are allowed): {reason}') from None
    except Exception as err:  # zip, EOF and storage errors of truncated or corrupt files
        raise CheckpointError(f'{path}: cannot read checkpoint ({type(err).__name__}: '
                              f'{str(err)[:200]})') from None


def _config_from_json(text: str, source: str) -> ModelConfig:
    try:
        return ModelConfig.from_dict(json.loads(text))
    except (ValueError, TypeError) as err:
        raise CheckpointError(f'{source}: invalid model config in file: {err}') from None


def _read(path: PathLike) -> tuple[dict[str, torch.Tensor], Optional[ModelConfig], dict]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'checkpoint {path} does not exist')
    kind = _sniff(path)
    if kind == 'safetensors':
        try:
            with safetensors.safe_open(str(path), framework='pt') as handle:
                metadata = dict(handle.metadata() or {})
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        except Exception as err:
            raise CheckpointError(f'{path}: corrupt safetensors file ({err})') from None
        version = metadata.get(_META_FORMAT)
        if version is not None and int(version) > FORMAT_VERSION:
            raise CheckpointError(f'{path}: format version {version} is newer than the '
                                  f'supported {FORMAT_VERSION}')
        config = (_config_from_json(metadata[_META_CONFIG], str(path))
                  if _META_CONFIG in metadata else None)
        return filter_state_dict(tensors, str(path)), config, {'metadata': metadata}
    obj = _torch_load(path)
    if not isinstance(obj, dict):
        raise CheckpointError(f'{path}: expected a dict, got {type(obj).__name__}')
    extra: dict[str, Any] = {}
    if 'model' in obj:
        state_dict = obj['model']
        if not isinstance(state_dict, dict):
            raise CheckpointError(f"{path}: 'model' is a {type(state_dict).__name__}, "
                                  'not a state_dict')
        extra = {k: v for k, v in obj.items() if k != 'model'}
    elif obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state_dict = obj
    else:
        raise CheckpointError(f"{path}: neither a state_dict nor a {{'model': ...}} container "
                              f'(keys: {sorted(map(str, obj))[:_LIST_LIMIT]})')
    config = None
    args = extra.get('args')
    if isinstance(args, argparse.Namespace) and isinstance(getattr(args, _ARGS_CONFIG, None),
                                                            str):
        config = _config_from_json(getattr(args, _ARGS_CONFIG), str(path))
    return filter_state_dict(state_dict, str(path)), config, extra


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


# --- saving -----------------------------------------------------------------------------------

def _same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (a.shape == b.shape and a.storage_offset() == b.storage_offset() and
            a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr())


def _unique_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    # safetensors refuses shared storage: keep the first name of each aliased tensor.
    state_dict = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        other = alias_of(key)
        if other in out and _same_tensor(state_dict[other], tensor):
            continue
        out[key] = tensor.detach().to('cpu').contiguous()
    return out


def save_safetensors(model: torch.nn.Module, config: ModelConfig, path: PathLike,
                     metadata: Optional[Mapping[str, str]] = None) -> None:
    """Save weights as safetensors with the resolved config and format version, atomically.

    :param model: the model (its state_dict is saved; one name per aliased tensor).
    :param config: its architecture, stored as JSON.
    :param path: output file.
    :param metadata: extra string metadata (our own keys may not be overridden).
    """
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    clash = {_META_FORMAT, _META_CONFIG, 'format'} & set(meta)
    if clash:
        raise ValueError(f'metadata keys {sorted(clash)} are reserved')
    meta.update({'format': 'pt', _META_FORMAT: str(FORMAT_VERSION),
                 _META_CONFIG: json.dumps(config.to_dict(), sort_keys=True)})
    tensors = _unique_tensors(model)
    with atomic_output(path) as tmp:
        safetensors.torch.save_file(tensors, str(tmp), metadata=meta)


_PLAIN = (str, int, float, bool, type(None))


def _is_plain(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return isinstance(value, _PLAIN)


def save_official(model: torch.nn.Module, path: PathLike,
                  args: Optional[argparse.Namespace] = None,
                  config: Optional[ModelConfig] = None) -> None:
    """Save ``{'model': state_dict, 'args': Namespace}`` as the official code loads it, atomically.

    Both names of each aliased DPT key are written, as the official model's state_dict has
    them. ``args`` may hold only plain values (so that ``weights_only`` loading accepts it);
    when ``config`` is given it is recorded in ``args`` as JSON, which our loader reads back.

    :param model: the model to save.
    :param path: output file.
    :param args: training arguments to store (copied, not modified).
    :param config: architecture to record.
    :raises ValueError: when ``args`` holds values other than plain Python data.
    """
    values = dict(vars(args)) if args is not None else {}
    bad = sorted(k for k, v in values.items() if not _is_plain(v))
    if bad:
        raise ValueError(f'args entries {bad} are not plain data (str, numbers, lists, dicts)')
    if config is not None:
        values[_ARGS_CONFIG] = json.dumps(config.to_dict(), sort_keys=True)
    state_dict = {k: v.detach().to('cpu') for k, v in model.state_dict().items()}
    with atomic_output(path) as tmp:
        torch.save({'model': state_dict, 'args': argparse.Namespace(**values)}, tmp)
