"""The official ``spann3r.pth`` container: read safely, written as the official code loads it.

A ``torch.save`` container ``{'model': state_dict, 'args': argparse.Namespace, 'optimizer': ...,
'scaler': ..., 'epoch': ...}`` as DUSt3R-lineage training writes it (a bare state_dict is accepted
too). It is unpickled with ``weights_only=True`` and an allow-list holding only
``argparse.Namespace``: the other entries are plain dicts, lists, numbers and tensors, which the
restricted unpickler handles. Anything else (a crafted pickle that would call a function) is
refused before it runs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
import pickle
from typing import Any, Optional

import torch

from spann3r_model.checkpoint_keys import (
    CheckpointError,
    config_from_json,
    filter_state_dict,
    LIST_LIMIT,
)
from spann3r_model.config import ModelConfig
from spann3r_model.io.atomic import atomic_output, PathLike

#: Name of the ``args`` entry that records the :class:`ModelConfig` as JSON.
ARGS_CONFIG = 'spann3r_model_config'

#: Classes the official container pickles besides tensors and builtins.
SAFE_GLOBALS = (argparse.Namespace,)


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


def read_official(path: Path
                  ) -> tuple[dict[str, torch.Tensor], Optional[ModelConfig], dict]:
    """Read an official container or a bare state_dict: ``(state_dict, config, other entries)``.

    :raises CheckpointError: for corrupt or unsafe files and for other contents.
    """
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
                              f'(keys: {sorted(map(str, obj))[:LIST_LIMIT]})')
    config = None
    args = extra.get('args')
    if isinstance(args, argparse.Namespace) and isinstance(getattr(args, ARGS_CONFIG, None),
                                                            str):
        config = config_from_json(getattr(args, ARGS_CONFIG), str(path))
    return filter_state_dict(state_dict, str(path)), config, extra


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
        values[ARGS_CONFIG] = json.dumps(config.to_dict(), sort_keys=True)
    state_dict = {k: v.detach().to('cpu') for k, v in model.state_dict().items()}
    with atomic_output(path) as tmp:
        torch.save({'model': state_dict, 'args': argparse.Namespace(**values)}, tmp)
