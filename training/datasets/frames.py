"""One training frame: crop to the model resolution, back-project the depth, jitter the colour.

The crop is the official training crop: centred on the (rounded) principal point, an isotropic
Lanczos resize of the image (nearest neighbour for the depth) by ``max(S / W1, S / H1) + 1e-8``,
then a centred ``S x S`` crop. The geometry is expressed as a :class:`CropBox` of
``spann3r_model.preprocess`` so the model-side helpers apply to training frames too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image
import torch
from torchvision.transforms import functional as TF

from spann3r_model.preprocess import CropBox, normalize


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


@dataclass
class CroppedFrame:
    """A frame at the model resolution.

    :param rgb: ``[S, S, 3]`` uint8.
    :param depth: ``[S, S]`` float32 metres.
    :param K: ``[3, 3]`` float32 intrinsics of the crop.
    :param crop: the crop geometry in the input image.
    """

    rgb: np.ndarray
    depth: np.ndarray
    K: np.ndarray
    crop: CropBox


def principal_point_crop(width: int, height: int, K: np.ndarray, size: int) -> CropBox:
    """Return the official training crop of a ``width x height`` frame with intrinsics ``K``.

    :raises ValueError: if the principal point lies too close to a border to crop around it.
    """
    # np.round rounds half to even, as the released data pipeline does (319.5 -> 320).
    cx, cy = (int(v) for v in np.round(np.asarray(K, dtype=np.float32)[:2, 2]))
    mx, my = min(cx, width - cx), min(cy, height - cy)
    if mx <= 0 or my <= 0:
        raise ValueError(f'principal point ({cx}, {cy}) lies outside the {width}x{height} image')
    crop1 = (cx - mx, cy - my, cx + mx, cy + my)
    w1, h1 = 2 * mx, 2 * my
    scale = max(size / w1, size / h1) + 1e-8
    w2, h2 = int(np.floor(w1 * scale)), int(np.floor(h1 * scale))
    ox, oy = int(np.round((w2 - size) / 2)), int(np.round((h2 - size) / 2))
    if ox < 0 or oy < 0:
        raise ValueError(f'a {w1}x{h1} crop cannot give a {size}x{size} model image')
    return CropBox(crop1=crop1, resized_wh=(w2, h2), offset=(ox, oy), size=size)


def crop_frame(frame: Frame, size: int) -> CroppedFrame:
    """Crop and resize ``frame`` to ``size x size`` as the official training data path does.

    The colour image is first resized to the depth resolution (bilinear) when they differ, as
    the released ScanNet reader does; ``frame.K`` must describe the depth map.
    """
    depth = np.asarray(frame.depth, dtype=np.float32)
    rgb = np.asarray(frame.rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f'{frame.name}: expected an [H, W, 3] uint8 image, got '
                         f'{rgb.dtype} {rgb.shape}')
    if depth.ndim != 2:
        raise ValueError(f'{frame.name}: expected an [H, W] depth map, got {depth.shape}')
    height, width = depth.shape
    if rgb.shape[:2] != depth.shape:
        rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_LINEAR)
    crop = principal_point_crop(width, height, frame.K, size)
    left, top, right, bottom = crop.crop1
    image = Image.fromarray(np.ascontiguousarray(rgb[top:bottom, left:right]))
    depth = depth[top:bottom, left:right]
    if crop.resized_wh != image.size:
        image = image.resize(crop.resized_wh, resample=Image.Resampling.LANCZOS)
        depth = cv2.resize(depth, crop.resized_wh, interpolation=cv2.INTER_NEAREST)
    ox, oy = crop.offset
    rgb_out = np.ascontiguousarray(np.asarray(image)[oy:oy + size, ox:ox + size])
    depth_out = np.ascontiguousarray(depth[oy:oy + size, ox:ox + size])
    K_out = crop.input_to_model_intrinsics(frame.K).astype(np.float32)
    return CroppedFrame(rgb=rgb_out, depth=depth_out, K=K_out, crop=crop)


def depth_to_world_points(depth: np.ndarray, K: np.ndarray,
                          T_world_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Back-project a z-depth map to world points.

    :param depth: ``[H, W]`` metres, 0 or non-finite = invalid.
    :param K: ``[3, 3]`` intrinsics.
    :param T_world_cam: ``[4, 4]`` camera-to-world.
    :return: ``[H, W, 3]`` float32 world points (invalid pixels land on the camera centre) and
        the ``[H, W]`` bool validity mask.
    """
    depth = np.nan_to_num(np.asarray(depth, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    height, width = depth.shape
    u, v = np.meshgrid(np.arange(width), np.arange(height))
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    cam = np.stack([(u - cx) * depth / fx, (v - cy) * depth / fy, depth], axis=-1)
    cam = cam.astype(np.float32)
    T = np.asarray(T_world_cam, dtype=np.float32)
    world = cam @ T[:3, :3].T + T[:3, 3]
    return world.astype(np.float32), depth > 0


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
