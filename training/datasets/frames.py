"""One training frame as read from disk, and the colour jitter of the model input.

The crop (:func:`spann3r_model.data.crop.crop_rgbd`, centred on the rounded principal point) and
the back-projection (:func:`spann3r_model.geometry.camera.backproject`) are the ones the
evaluation ground truth uses; :class:`~training.datasets.base.SequenceDataset` applies them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torchvision.transforms import functional as TF

from spann3r_model.preprocess import normalize


@dataclass
class Frame:
    """One frame as read from disk.

    :param rgb: ``[H, W, 3]`` uint8 RGB.
    :param depth: ``[H, W]`` float32 z-depth in metres (0 = invalid).
    :param K: ``[3, 3]`` intrinsics of ``rgb`` / ``depth`` (OpenCV convention).
    :param T_world_cam: ``[4, 4]`` camera-to-world pose (OpenCV axes: x right, y down, z fwd).
    :param name: identifier for error messages.
    :param meta: layout-specific values (e.g. Co3D's ``maximum_depth``).
    """

    rgb: np.ndarray
    depth: np.ndarray
    K: np.ndarray
    T_world_cam: np.ndarray
    name: str = ''
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class JitterParams:
    """Colour jitter factors of one frame (the ColorJitter(0.5, 0.5, 0.5, 0.1) ranges)."""

    order: tuple[int, ...]
    brightness: float
    contrast: float
    saturation: float
    hue: float


def draw_jitter(rng: np.random.Generator, strength: float = 0.5, hue: float = 0.1
                ) -> JitterParams:
    """Draw jitter factors from ``rng`` so that a sample's augmentation is reproducible."""
    return JitterParams(order=tuple(int(i) for i in rng.permutation(4)),
                        brightness=float(rng.uniform(1 - strength, 1 + strength)),
                        contrast=float(rng.uniform(1 - strength, 1 + strength)),
                        saturation=float(rng.uniform(1 - strength, 1 + strength)),
                        hue=float(rng.uniform(-hue, hue)))


def model_image(rgb: np.ndarray, jitter: JitterParams | None = None) -> torch.Tensor:
    """Return the ``[3, S, S]`` float32 model input in [-1, 1], optionally colour-jittered."""
    if jitter is None:
        return torch.from_numpy(normalize(rgb))
    img = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))
    for op in jitter.order:
        if op == 0:
            img = TF.adjust_brightness(img, jitter.brightness)
        elif op == 1:
            img = TF.adjust_contrast(img, jitter.contrast)
        elif op == 2:
            img = TF.adjust_saturation(img, jitter.saturation)
        else:
            img = TF.adjust_hue(img, jitter.hue)
    return (img.float() / 255.0 - 0.5) / 0.5
