"""Per-epoch and per-iteration schedules of the official Spann3R recipe.

* ``alpha``: the confidence regulariser stays at its initial value for the first half of the
  epochs, then falls linearly by ``drop`` (0.4 -> 0.2 by default).
* curriculum ratio: rises linearly from 0 to 1 over the first 37.5 % of the epochs, stays at 1
  until 75 %, then falls linearly to 0.5 at the end.
* frame-gap threshold: ``int(min_gap + ratio * (max_gap - min_gap))`` per dataset.
* learning rate: linear warm-up, then a half-cycle cosine down to ``min_lr``, evaluated at the
  fractional epoch of every iteration.

The arithmetic follows the released code's operation order so the values agree to the last bit.
"""

from __future__ import annotations

import math

from training.datasets.sampling import frame_gap

__all__ = ['alpha_at', 'curriculum_ratio', 'frame_gap', 'learning_rate']


def alpha_at(epoch: int, epochs: int, alpha_init: float = 0.4, drop: float = 0.2) -> float:
    """Return the confidence weight ``alpha`` used during ``epoch`` (0-based) of ``epochs``.

    :raises ValueError: if ``epochs`` is not positive.
    """
    if epochs <= 0:
        raise ValueError(f'epochs must be positive, got {epochs}')
    half = 0.5 * epochs
    return alpha_init - drop * max((epoch - half) / half, 0)


def curriculum_ratio(epoch: int, epochs: int) -> float:
    """Return the curriculum ratio in ``[0, 1]`` for ``epoch`` (0-based) of ``epochs``.

    :raises ValueError: if ``epochs`` is not positive.
    """
    if epochs <= 0:
        raise ValueError(f'epochs must be positive, got {epochs}')
    progress = epoch / epochs
    if progress < 0.75:
        return min(1, 2 * epoch / epochs)
    return max(0.5, 1 - (progress - 0.75) / 0.25)


def learning_rate(epoch_f: float, *, lr: float, min_lr: float, warmup_epochs: float,
                  epochs: float) -> float:
    """Return the learning rate at fractional epoch ``epoch_f``.

    :param epoch_f: ``epoch + iteration / iterations_per_epoch``.
    :param lr: peak learning rate reached at the end of the warm-up.
    :param min_lr: floor reached at ``epochs``.
    :param warmup_epochs: length of the linear warm-up (0 disables it).
    :param epochs: total length of the schedule.
    """
    if epoch_f < warmup_epochs:
        return lr * epoch_f / warmup_epochs
    span = epochs - warmup_epochs
    if span <= 0:
        return lr
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * (epoch_f - warmup_epochs)
                                                           / span))
