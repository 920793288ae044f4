"""The official curriculum window: which frames of a scene form one training sequence."""

from __future__ import annotations

import numpy as np


def frame_gap(ratio: float, min_gap: int, max_gap: int) -> int:
    """Return the largest allowed gap between consecutive sampled frames at ``ratio``."""
    return int(min_gap + ratio * (max_gap - min_gap))


def sample_frame_window(num_available: int, num_frames: int, max_gap: int,
                        rng: np.random.Generator) -> list[int]:
    """Draw ``num_frames`` increasing frame positions with gaps of at most ``max_gap``.

    The official curriculum window: the start is drawn from the first
    ``max(n // num_frames, n - max_gap * (num_frames - 1))`` positions, every next position
    uniformly from ``(current, current + max_gap]`` while leaving room for the frames still to
    come, and the whole list is reversed with probability 0.5.

    :raises ValueError: when the scene has fewer than ``num_frames`` frames.
    """
    if num_available < num_frames:
        raise ValueError(f'a scene with {num_available} frames cannot give {num_frames}')
    if max_gap < 1:
        raise ValueError(f'the frame gap must be >= 1, got {max_gap}')
    start_range = max(num_available // num_frames, num_available - max_gap * (num_frames - 1))
    start_range = min(max(start_range, 1), num_available - num_frames + 1)
    picked = [int(rng.integers(0, start_range))]
    while len(picked) < num_frames:
        remaining = num_frames - len(picked)
        low = picked[-1] + 1
        high = min(picked[-1] + max_gap, num_available - remaining)
        picked.append(int(rng.integers(low, high + 1)))
    if rng.random() < 0.5:
        picked.reverse()
    return picked
