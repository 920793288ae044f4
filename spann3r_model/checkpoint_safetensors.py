"""Our checkpoint format: safetensors with the resolved config and a format version.

The file's metadata holds the :class:`ModelConfig` as JSON and the format version; one name is
kept per aliased DPT tensor (safetensors refuses shared storage). Weights saved by
:func:`spann3r_model.checkpoint_official.save_official` load unchanged in the official code; these
load in ours.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Optional

import safetensors
import safetensors.torch
import torch

from spann3r_model.checkpoint_keys import (
    alias_of,
    CheckpointError,
    config_from_json,
    filter_state_dict,
)
from spann3r_model.config import ModelConfig
from spann3r_model.io.atomic import atomic_output, PathLike

#: Version of our safetensors layout; bump when the metadata or key layout changes.
FORMAT_VERSION = 1
_META_FORMAT = 'spann3r_format_version'
_META_CONFIG = 'spann3r_model_config'


def read_safetensors(path: Path
                     ) -> tuple[dict[str, torch.Tensor], Optional[ModelConfig], dict]:
    """Read our safetensors file: ``(state_dict, config or None, {'metadata': ...})``.

    :raises CheckpointError: for a corrupt file or one of a newer format version.
    """
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
    config = (config_from_json(metadata[_META_CONFIG], str(path))
              if _META_CONFIG in metadata else None)
    return filter_state_dict(tensors, str(path)), config, {'metadata': metadata}


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
