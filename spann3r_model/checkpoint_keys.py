"""State-dict keys as every checkpoint format holds them, and the config a file records.

``module.`` and ``_orig_mod.`` prefixes (DDP, ``torch.compile``) are stripped; each DPT
``scratch.layer{1..4}_rn.weight`` / ``scratch.layer_rn.{0..3}.weight`` pair names one tensor,
so either name satisfies both; matching is strict and errors list missing, unexpected and
shape-mismatched keys and name the file.
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping, Optional

import torch

from spann3r_model.config import ModelConfig

#: Keys listed at most in one error message (the rest are counted).
LIST_LIMIT = 10

_WRAPPER_PREFIXES = ('module.', '_orig_mod.')

_ALIAS_NAMED = re.compile(r'^(?P<head>(?:.*\.)?dpt\.scratch\.)layer(?P<n>[1-4])_rn\.weight$')
_ALIAS_LISTED = re.compile(r'^(?P<head>(?:.*\.)?dpt\.scratch\.)layer_rn\.(?P<n>[0-3])\.weight$')


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or does not fit the model."""


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
    shown = ', '.join(items[:LIST_LIMIT])
    more = f' ... and {len(items) - LIST_LIMIT} more' if len(items) > LIST_LIMIT else ''
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


def config_from_json(text: str, source: str) -> ModelConfig:
    """Return the config a file records as JSON; ``source`` names the file in errors."""
    try:
        return ModelConfig.from_dict(json.loads(text))
    except (ValueError, TypeError) as err:
        raise CheckpointError(f'{source}: invalid model config in file: {err}') from None
