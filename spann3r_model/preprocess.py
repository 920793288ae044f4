"""The official Spann3R input pipeline as one pure function.

Any ``[H, W, 3]`` uint8 RGB image becomes the model input exactly as the official demo and
evaluation data path produce it:

1. centre crop on the principal point ``(W // 2, H // 2)`` (odd sizes lose their last row/column),
2. Lanczos resize (Pillow, also when up-scaling) by ``max(S / W1, S / H1) + 1e-8``, sizes floored,
3. centre crop to ``S x S`` with the offset rounded half to even,
4. ``u8 / 255`` then ``(x - 0.5) / 0.5`` in float32, channels first.

Pillow is used for the resize because its fixed-point separable Lanczos is what the official code
ran; a floating-point Lanczos differs by up to tens of grey levels next to hard edges.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class CropBox:
    """Where the model's ``size x size`` image lies in the input image.

    :param crop1: ``(left, top, right, bottom)`` of the first (principal-point) crop, input pixels.
    :param resized_wh: ``(W2, H2)`` after the Lanczos resize of that crop.
    :param offset: ``(ox, oy)`` of the final crop inside the resized image.
    :param size: side of the final square crop.
    """

    crop1: tuple[int, int, int, int]
    resized_wh: tuple[int, int]
    offset: tuple[int, int]
    size: int

    @property
    def scale(self) -> float:
        """The official isotropic resize factor ``max(S / W1, S / H1) + 1e-8``."""
        left, top, right, bottom = self.crop1
        return max(self.size / (right - left), self.size / (bottom - top)) + 1e-8

    def _shift(self) -> tuple[float, float]:
        # Offset of a model pixel centre from the scaled input pixel centre, as the official
        # intrinsics update defines it: half the flooring residual plus the final crop offset.
        left, top, right, bottom = self.crop1
        s = self.scale
        rx = 0.5 * ((right - left) * s - self.resized_wh[0])
        ry = 0.5 * ((bottom - top) * s - self.resized_wh[1])
        return rx + self.offset[0], ry + self.offset[1]

    def model_to_input(self, uv: np.ndarray) -> np.ndarray:
        """Map model pixel coordinates ``[..., 2]`` (u, v) to input-image pixel coordinates.

        Pixel centres are at integer coordinates in both images; the mapping is the inverse of
        :meth:`input_to_model_intrinsics`.
        """
        s = self.scale
        dx, dy = self._shift()
        uv = np.asarray(uv, dtype=np.float64)
        x = (uv[..., 0] + dx + 0.5) / s - 0.5 + self.crop1[0]
        y = (uv[..., 1] + dy + 0.5) / s - 0.5 + self.crop1[1]
        return np.stack([x, y], axis=-1)

    def input_to_model_intrinsics(self, K: np.ndarray) -> np.ndarray:
        """Return the ``[3, 3]`` intrinsics of the model image given those of the input image.

        Follows the official update: isotropic scale ``s``, principal point moved by the crops.
        """
        s = self.scale
        dx, dy = self._shift()
        K = np.asarray(K, dtype=np.float64)
        out = np.eye(3)
        out[:2, :] = K[:2, :] * s
        out[0, 2] = (K[0, 2] - self.crop1[0] + 0.5) * s - 0.5 - dx
        out[1, 2] = (K[1, 2] - self.crop1[1] + 0.5) * s - 0.5 - dy
        return out


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


def compute_crop(width: int, height: int, size: int = 224) -> CropBox:
    """Compute the official crop and resize geometry for an input of ``width x height``.

    :raises ValueError: when the image is too small or too elongated for the official crop.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f'image size must be positive, got {width}x{height}')
    cx, cy = width // 2, height // 2
    mx, my = min(cx, width - cx), min(cy, height - cy)
    if mx == 0 or my == 0:
        raise ValueError(f'image {width}x{height} is too small to crop')
    crop1 = (cx - mx, cy - my, cx + mx, cy + my)
    w1, h1 = crop1[2] - crop1[0], crop1[3] - crop1[1]
    # The epsilon is part of the official rule: without it 166 * (224 / 166) floors to 223.
    scale = max(size / w1, size / h1) + 1e-8
    w2, h2 = int(np.floor(w1 * scale)), int(np.floor(h1 * scale))
    # np.round rounds half to even, as the official offset computation does.
    ox, oy = int(np.round((w2 - size) / 2)), int(np.round((h2 - size) / 2))
    if ox < 0 or oy < 0:
        raise ValueError(f'image {width}x{height} cannot be cropped to {size}x{size}')
    return CropBox(crop1=crop1, resized_wh=(w2, h2), offset=(ox, oy), size=size)


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
    left, top, right, bottom = crop.crop1
    image = Image.fromarray(np.ascontiguousarray(rgb[top:bottom, left:right]))
    if crop.resized_wh != image.size:
        image = image.resize(crop.resized_wh, resample=Image.Resampling.LANCZOS)
    ox, oy = crop.offset
    final = np.asarray(image)[oy:oy + size, ox:ox + size]
    final = np.ascontiguousarray(final)
    return Preprocessed(img=normalize(final), rgb=final, crop=crop)
