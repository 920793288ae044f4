"""Metric scale from an aligned depth camera (ROS-free).

A hand-held RGB-D camera publishes depth registered to its colour image. For each frame the
sensor depth is sampled at the model's pixels (mapped through the model's crop of the colour
image, nearest neighbour, so a depth image of another resolution but the same aspect works
too), and compared with the depth the reconstruction predicts for the same pixels. The frame's
scale is the median of ``sensor / predicted`` over pixels valid in both (after dropping ratios
far from that median); the scale used is the median of the newest frames' scales, so one bad
frame does not move it.

:class:`DepthBuffer` holds the newest depth images by stamp for the output stage, which pairs
each colour frame with the depth image of the same stamp.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from functools import lru_cache
import threading
from typing import Optional

import numpy as np

from spann3r_model.data.crop import CropBox
from spann3r_model.geometry.camera import pixel_grid

#: Ratios further than this factor from the frame's first median are dropped before the final
#: median (mismatched edges, reflections).
RATIO_SPREAD = 1.5
#: At most this many pixels of a frame enter its medians (an even subset of the valid ones).
MAX_RATIOS = 4_000


def sample_depth(depth: np.ndarray, crop: CropBox, colour_wh: tuple[int, int]) -> np.ndarray:
    """Sample ``depth`` at the centres of the model's pixels.

    :param depth: ``[h, w]`` float32 metres (0 = invalid), registered to the colour image.
    :param crop: the model crop of the colour image.
    :param colour_wh: ``(W, H)`` of the colour image.
    :return: ``[S, S]`` float32 metres (0 where the pixel falls outside the depth image).
    :raises ValueError: when the depth image's aspect ratio differs from the colour image's by
        more than 1% (it cannot be registered to it).
    """
    h, w = depth.shape
    W, H = colour_wh
    if abs((w / h) / (W / H) - 1.0) > 0.01:
        raise ValueError(f'depth image {w}x{h} does not have the aspect ratio of the colour '
                         f'image {W}x{H}')
    pixels, source = _sample_index(crop, (w, h), (W, H))
    out = np.zeros(crop.size * crop.size, np.float32)
    out[pixels] = depth.reshape(-1)[source]
    return out.reshape(crop.size, crop.size)


@lru_cache(maxsize=16)
def _sample_index(crop: CropBox, depth_wh: tuple[int, int], colour_wh: tuple[int, int]
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Model pixels inside the depth image and their flat indices there (a camera's are fixed)."""
    (w, h), (W, H) = depth_wh, colour_wh
    uv = crop.model_to_input(pixel_grid(crop.size, crop.size))
    x = np.rint((uv[..., 0] + 0.5) * (w / W) - 0.5).astype(np.int64).reshape(-1)
    y = np.rint((uv[..., 1] + 0.5) * (h / H) - 0.5).astype(np.int64).reshape(-1)
    inside = np.flatnonzero((x >= 0) & (x < w) & (y >= 0) & (y < h))
    return inside, y[inside] * w + x[inside]


@dataclass(frozen=True)
class FrameScale:
    """The scale one frame gives.

    :param scale: metres per reconstruction unit, or None when too few pixels were valid.
    :param pixels: pixels valid in both depths whose ratio was used.
    """

    scale: Optional[float]
    pixels: int


def frame_scale(sensor: np.ndarray, predicted: np.ndarray, mask: np.ndarray,
                min_depth: float, max_depth: float, min_pixels: int) -> FrameScale:
    """Robust ``sensor / predicted`` scale of one frame.

    :param sensor: ``[S, S]`` sensor depth at the model pixels, metres (0 = invalid).
    :param predicted: ``[S, S]`` predicted depth, reconstruction units.
    :param mask: ``[S, S]`` bool, pixels the reconstruction trusts (confidence).
    :param min_depth: sensor depths below this are invalid, metres.
    :param max_depth: sensor depths above this are invalid, metres.
    :param min_pixels: fewer valid pixels give no scale.
    """
    valid = mask & np.isfinite(sensor) & (sensor >= min_depth) & (sensor <= max_depth) & \
        np.isfinite(predicted) & (predicted > 0)
    index = np.flatnonzero(valid)
    count = len(index)
    if count < min_pixels:
        return FrameScale(None, count)
    # An even subset is as good for a median as every pixel, at a fraction of the cost.
    index = index[::max(1, count // MAX_RATIOS)]
    ratio = np.take(sensor, index).astype(np.float64) / np.take(predicted, index)
    first = float(np.median(ratio))
    close = ratio[(ratio > first / RATIO_SPREAD) & (ratio < first * RATIO_SPREAD)]
    if len(close) < min(min_pixels, len(ratio)):
        return FrameScale(None, len(close))
    # Pixels used, counted over all valid pixels when a subset was taken.
    return FrameScale(float(np.median(close)), int(round(len(close) * count / len(ratio))))


class DepthScaleEstimator:
    """The scale used: the median of the newest frames' scales.

    :param window: frames whose scales are kept.
    """

    def __init__(self, window: int = 30) -> None:
        self._scales: deque[float] = deque(maxlen=window)

    def __len__(self) -> int:
        """Frames that gave a scale, up to the window."""
        return len(self._scales)

    def clear(self) -> None:
        """Forget every frame."""
        self._scales.clear()

    def add(self, scale: float) -> float:
        """Add one frame's scale; return the scale used from now on."""
        self._scales.append(float(scale))
        return self.scale

    @property
    def scale(self) -> Optional[float]:
        """The scale used, or None before the first frame."""
        return float(np.median(self._scales)) if self._scales else None

    @property
    def spread(self) -> float:
        """Relative median absolute deviation of the kept scales (0 with one frame)."""
        if len(self._scales) < 2:
            return 0.0
        values = np.asarray(self._scales)
        median = np.median(values)
        return float(np.median(np.abs(values - median)) / median)


class DepthBuffer:
    """The newest depth images by stamp (thread-safe: callbacks add, the output stage takes).

    :param max_dt: the largest stamp difference between a colour frame and its depth image.
    :param size: images kept.
    """

    def __init__(self, max_dt: float = 0.02, size: int = 8) -> None:
        self.max_dt = max_dt
        self._lock = threading.Lock()
        self._items: deque[tuple[float, np.ndarray]] = deque(maxlen=size)

    def clear(self) -> None:
        """Forget every image."""
        with self._lock:
            self._items.clear()

    def add(self, stamp: float, depth: np.ndarray) -> None:
        """Keep ``[h, w]`` float32 metres at ``stamp``."""
        with self._lock:
            self._items.append((float(stamp), depth))

    def at(self, stamp: float) -> Optional[np.ndarray]:
        """Return the image closest to ``stamp`` within ``max_dt``, or None."""
        with self._lock:
            best = min(self._items, key=lambda item: abs(item[0] - stamp), default=None)
        if best is None or abs(best[0] - stamp) > self.max_dt:
            return None
        return best[1]
