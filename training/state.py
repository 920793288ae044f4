"""Training checkpoints: everything a run needs to continue exactly where it stopped.

A checkpoint holds the model weights, the optimiser and gradient-scaler states, every random
state the loop consumes (Python, NumPy, torch CPU and CUDA), the epoch and step counters, the
resolved training config and the model architecture. It is written atomically and durably
(:func:`spann3r_model.io.atomic.atomic_output`), so a crash never leaves a half-written
checkpoint behind, and it is read with ``torch.load(weights_only=True)``: all content is
tensors and plain containers.
"""

from __future__ import annotations

import json
from pathlib import Path
import random
from typing import Any

import numpy as np
import torch

from spann3r_model.io.atomic import atomic_output

FORMAT = 'training/1'


def capture_rng() -> dict[str, Any]:
    """Return every global random state as tensors and plain values."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        'python': [py_state[0], list(py_state[1]), py_state[2]],
        'numpy': [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)),
                  int(np_state[2]), int(np_state[3]), float(np_state[4])],
        'torch': torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Restore the states captured by :func:`capture_rng`."""
    version, internal, gauss = state['python']
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state['numpy']
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


def save_training_state(path: Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                        scaler: torch.amp.GradScaler | None, epoch: int, step_in_epoch: int,
                        global_step: int, best_metric: float, train_config: dict[str, Any],
                        model_config: dict[str, Any]) -> None:
    """Write a resumable checkpoint atomically.

    :param epoch: the epoch in progress.
    :param step_in_epoch: optimiser steps already done in ``epoch`` (the next one to run).
    :param global_step: optimiser steps done in total.
    """
    state = {
        'format': FORMAT,
        'model': model.state_dict(),
        'optimizer': optimizer.state_dict(),
        'scaler': scaler.state_dict() if scaler is not None else {},
        'rng': capture_rng(),
        'epoch': epoch,
        'step_in_epoch': step_in_epoch,
        'global_step': global_step,
        'best_metric': best_metric,
        'train_config': json.dumps(train_config),
        'model_config': json.dumps(model_config),
    }
    with atomic_output(path) as tmp:
        torch.save(state, tmp)


def load_training_state(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_training_state`.

    :raises ValueError: if the file is missing, unreadable or not a training checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f'checkpoint {path} does not exist')
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a bad file
        raise ValueError(f'cannot read checkpoint {path}: {err}') from err
    if not isinstance(state, dict) or state.get('format') != FORMAT:
        raise ValueError(f'{path} is not a {FORMAT} training checkpoint')
    state['train_config'] = json.loads(state['train_config'])
    state['model_config'] = json.loads(state['model_config'])
    return state
