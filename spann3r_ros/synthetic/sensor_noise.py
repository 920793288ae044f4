"""Degrade a synthetic depth image the way a real depth camera does (NumPy only, no ROS).

Two effects, both drawn per frame from ``(seed, frame index)`` so a frame's degradation does not
depend on which other frames are rendered:

* relative Gaussian noise: ``d * (1 + relative * n)``, ``n`` standard normal per pixel (a depth
  that this would make zero or negative becomes invalid);
* invalid pixels: each pixel independently set to 0 (no measurement, as RealSense-style drivers
  publish it) with probability ``invalid``.
"""

from __future__ import annotations

import numpy as np


def check_depth_degradation(relative: float, invalid: float) -> None:
    """Check the two settings of :func:`degrade_depth`.

    :raises ValueError: unless ``0 <= relative < 1`` and ``0 <= invalid <= 1``.
    """
    if not np.isfinite(relative) or not 0.0 <= relative < 1.0:
        raise ValueError(f'relative depth noise must be in [0, 1), got {relative!r}')
    if not np.isfinite(invalid) or not 0.0 <= invalid <= 1.0:
        raise ValueError(f'the invalid depth fraction must be in [0, 1], got {invalid!r}')


def degrade_depth(depth: np.ndarray, relative: float, invalid: float, seed: int,
                  index: int) -> np.ndarray:
    """Return a noisy copy of ``depth`` with some pixels invalid (0).

    :param depth: ``[H, W]`` depth in metres; pixels that are already invalid stay so.
    :param relative: standard deviation of the multiplicative noise (0.02 = 2 %).
    :param invalid: fraction of pixels set to 0.
    :param seed: seed of the sequence.
    :param index: frame index (a second seed, so that every frame draws anew).
    :return: ``[H, W]`` float32 metres.
    :raises ValueError: for settings :func:`check_depth_degradation` refuses.
    """
    check_depth_degradation(relative, invalid)
    out = np.array(depth, dtype=np.float32)
    if not relative and not invalid:
        return out
    rng = np.random.default_rng((seed, index))
    if relative:
        out *= (1.0 + relative * rng.standard_normal(out.shape)).astype(np.float32)
        out[out <= 0] = 0.0
    if invalid:
        out[rng.random(out.shape) < invalid] = 0.0
    return out
