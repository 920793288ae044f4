"""The official Spann3R input pipeline as one pure function.

Any ``[H, W, 3]`` uint8 RGB image becomes the model input exactly as the official demo and
evaluation data path produce it: the official crop of :mod:`spann3r_model.data.crop` centred on
``(W // 2, H // 2)`` (odd sizes lose their last row/column), then ``u8 / 255`` and
``(x - 0.5) / 0.5`` in float32, channels first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spann3r_model.data.crop import compute_crop, crop_image, CropBox


@dataclass(frozen=True)
class Preprocessed:
    """Model input for one frame.

    :param img: ``[3, S, S]`` float32 RGB in [-1, 1].
    :param rgb: ``[S, S, 3]`` uint8 RGB, the same pixels before normalisation.
    :param crop: where the crop lies in the input image.
    """

    img: np.ndarray
    rgb: np.ndarray
    crop: CropBox


def normalize(rgb: np.ndarray) -> np.ndarray:
    """Return ``[3, H, W]`` float32 in [-1, 1] from ``[H, W, 3]`` uint8, as the official does."""
    x = rgb.astype(np.float32) / np.float32(255.0)
    x = (x - np.float32(0.5)) / np.float32(0.5)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def preprocess(rgb: np.ndarray, size: int = 224) -> Preprocessed:
    """Crop, resize and normalise one RGB image as the official data path does.

    :param rgb: ``[H, W, 3]`` uint8 RGB image of any size.
    :param size: side of the square model input.
    :return: the normalised image, its uint8 pixels and the crop geometry.
    :raises ValueError: for anything that is not an ``[H, W, 3]`` uint8 image of usable size.
    """
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f'expected an [H, W, 3] uint8 image, got {rgb.dtype} {rgb.shape}')
    height, width = rgb.shape[:2]
    crop = compute_crop(width, height, size)
    final = crop_image(rgb, crop)
    return Preprocessed(img=normalize(final), rgb=final, crop=crop)
