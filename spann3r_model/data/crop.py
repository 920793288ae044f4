"""The official crop of the model input, the evaluation ground truth and the training frames.

Every image the model sees, and every depth map it is compared with, goes through the same steps:

1. a crop centred on ``(cx, cy)`` with the largest margins that fit (so odd sides lose a row or a
   column); the centre is the rounded principal point of K (official datasets, ``principal``) or
   ``(W // 2, H // 2)`` (official demo, :func:`spann3r_model.preprocess.preprocess`, ``image``);
2. an isotropic resize by ``max(S / W1, S / H1) + 1e-8``, sizes floored: Lanczos (Pillow, also when
   up-scaling) for colour, nearest neighbour for depth;
3. a centred ``S x S`` crop, its offset rounded half to even;
4. the intrinsics update of the official code (:meth:`CropBox.input_to_model_intrinsics`).

Pillow is used for the resize because its fixed-point separable Lanczos is what the official code
ran; a floating-point Lanczos differs by up to tens of grey levels next to hard edges.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np
from PIL import Image

#: Where the first crop is centred: the rounded principal point of K, or the image centre.
CROP_CENTRES = ('principal', 'image')


@dataclass(frozen=True)
class CropBox:
    """Where the model's ``size x size`` image lies in the input image.

    :param crop1: ``(left, top, right, bottom)`` of the first (centred) crop, input pixels.
    :param resized_wh: ``(W2, H2)`` after the resize of that crop.
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

    def _residual(self) -> np.ndarray:
        # Half the flooring residual of the resize, ``0.5 * ((W1, H1) * s - (W2, H2))``.
        left, top, right, bottom = self.crop1
        first = np.array([right - left, bottom - top])
        return 0.5 * (first * self.scale - np.array(self.resized_wh))

    def _shift(self) -> tuple[float, float]:
        # Offset of a model pixel centre from the scaled input pixel centre, as the official
        # intrinsics update defines it: half the flooring residual plus the final crop offset.
        rx, ry = self._residual()
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

    def input_to_model_intrinsics(self, K: np.ndarray, dtype: type = np.float64) -> np.ndarray:
        """Return the ``[3, 3]`` intrinsics of the model image given those of the input image.

        Follows the official update step by step in ``dtype``: the principal point moves by the
        first crop, goes to pixel-corner coordinates (+0.5), the first two rows are scaled by
        ``s`` (``s`` cast to ``dtype``), the principal point moves by half the flooring residual
        (computed in float64), back to pixel centres (-0.5) and by the final crop offset. With
        ``np.float32`` the result is the official float32 value bit for bit.
        """
        out = np.array(K, dtype=dtype)
        if out.shape != (3, 3):
            raise ValueError(f'K must be [3, 3], got {out.shape}')
        out[0, 2] -= self.crop1[0]
        out[1, 2] -= self.crop1[1]
        out[:2, 2] += 0.5
        out[:2, :] *= dtype(self.scale)
        out[:2, 2] -= self._residual()
        out[:2, 2] -= 0.5
        out[0, 2] -= self.offset[0]
        out[1, 2] -= self.offset[1]
        return out


@dataclass(frozen=True)
class CroppedRGBD:
    """An RGB-D frame at the model resolution.

    :param rgb: ``[S, S, 3]`` uint8.
    :param depth: ``[S, S]`` float32 metres.
    :param K: ``[3, 3]`` float32 intrinsics of the crop.
    :param crop: the crop geometry in the (depth-resolution) input frame.
    """

    rgb: np.ndarray
    depth: np.ndarray
    K: np.ndarray
    crop: CropBox


def principal_centre(K: np.ndarray) -> tuple[int, int]:
    """Return the principal point of ``K`` in float32, rounded half to even (319.5 -> 320)."""
    cx, cy = np.round(np.asarray(K, dtype=np.float32)[:2, 2])
    return int(cx), int(cy)


def compute_crop(width: int, height: int, size: int = 224,
                 centre: Optional[tuple[int, int]] = None) -> CropBox:
    """Compute the official crop and resize geometry for an input of ``width x height``.

    :param centre: integer pixel ``(cx, cy)`` the first crop is centred on (for example
        :func:`principal_centre`); None for the image centre ``(W // 2, H // 2)``.
    :raises ValueError: when the image is too small or too elongated for the crop, or the centre
        lies on or outside its border.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f'image size must be positive, got {width}x{height}')
    cx, cy = (width // 2, height // 2) if centre is None else (int(centre[0]), int(centre[1]))
    mx, my = min(cx, width - cx), min(cy, height - cy)
    if mx <= 0 or my <= 0:
        if centre is None:
            raise ValueError(f'image {width}x{height} is too small to crop')
        raise ValueError(f'crop centre ({cx}, {cy}) (the principal point) lies on or outside '
                         f'the border of the {width}x{height} image')
    crop1 = (cx - mx, cy - my, cx + mx, cy + my)
    w1, h1 = 2 * mx, 2 * my
    # The epsilon is part of the official rule: without it 166 * (224 / 166) floors to 223.
    scale = max(size / w1, size / h1) + 1e-8
    w2, h2 = int(np.floor(w1 * scale)), int(np.floor(h1 * scale))
    # np.round rounds half to even, as the official offset computation does.
    ox, oy = int(np.round((w2 - size) / 2)), int(np.round((h2 - size) / 2))
    if ox < 0 or oy < 0 or ox + size > w2 or oy + size > h2:
        raise ValueError(f'image {width}x{height} cannot be cropped to {size}x{size}')
    return CropBox(crop1=crop1, resized_wh=(w2, h2), offset=(ox, oy), size=size)


def crop_image(rgb: np.ndarray, crop: CropBox) -> np.ndarray:
    """Return the ``[S, S, 3]`` uint8 model image of ``[H, W, 3]`` uint8 ``rgb`` (Lanczos)."""
    left, top, right, bottom = crop.crop1
    image = Image.fromarray(np.ascontiguousarray(rgb[top:bottom, left:right]))
    if crop.resized_wh != image.size:
        image = image.resize(crop.resized_wh, resample=Image.Resampling.LANCZOS)
    ox, oy = crop.offset
    return np.ascontiguousarray(np.asarray(image)[oy:oy + crop.size, ox:ox + crop.size])


def crop_depth(depth: np.ndarray, crop: CropBox) -> np.ndarray:
    """Return the ``[S, S]`` float32 model-resolution depth of ``[H, W]`` ``depth`` (nearest)."""
    left, top, right, bottom = crop.crop1
    depth = np.asarray(depth, dtype=np.float32)[top:bottom, left:right]
    if crop.resized_wh != (depth.shape[1], depth.shape[0]):
        depth = cv2.resize(depth, crop.resized_wh, interpolation=cv2.INTER_NEAREST)
    ox, oy = crop.offset
    return np.ascontiguousarray(depth[oy:oy + crop.size, ox:ox + crop.size])


def crop_rgbd(rgb: np.ndarray, depth: np.ndarray, K: np.ndarray, size: int = 224,
              centre: str = 'principal') -> CroppedRGBD:
    """Crop and resize an RGB-D frame and its intrinsics as the official data path does.

    The colour image is first resized to the depth resolution (bilinear) when they differ, as
    the official loaders do, so ``K`` must describe the depth map. ``K`` is cast to float32 and
    updated in float32, as the official loaders store it.

    :param rgb: ``[H', W', 3]`` uint8.
    :param depth: ``[H, W]`` metres.
    :param K: ``[3, 3]`` intrinsics of ``depth``.
    :param size: output side ``S``.
    :param centre: ``principal`` or ``image`` (see the module docstring).
    :raises ValueError: for malformed arrays, an unknown ``centre`` or a frame that cannot be
        cropped.
    """
    if centre not in CROP_CENTRES:
        raise ValueError(f'centre must be one of {CROP_CENTRES}, got {centre!r}')
    rgb = np.asarray(rgb)
    depth = np.asarray(depth, dtype=np.float32)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f'expected an [H, W, 3] uint8 image, got {rgb.dtype} {rgb.shape}')
    if depth.ndim != 2:
        raise ValueError(f'expected an [H, W] depth map, got {depth.shape}')
    height, width = depth.shape
    if rgb.shape[:2] != depth.shape:
        rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_LINEAR)
    crop = compute_crop(width, height, size,
                        principal_centre(K) if centre == 'principal' else None)
    return CroppedRGBD(rgb=crop_image(rgb, crop), depth=crop_depth(depth, crop),
                       K=crop.input_to_model_intrinsics(K, np.float32), crop=crop)
