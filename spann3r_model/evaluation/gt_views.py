"""Ground-truth pointmaps at model resolution, cropped as the official evaluation data path does.

The official datasets crop each RGB-D frame around its principal point, resize it isotropically
(depth with nearest neighbour) and crop it to ``size x size``; the ground-truth pointmap is the
back-projected depth of that crop. Predictions are compared pixel by pixel with these maps, so
the crop must match the one that produced the prediction:

* ``principal`` centres the first crop on the rounded principal point (official datasets and the
  official demo when it is given intrinsics);
* ``image`` centres it on ``(W // 2, H // 2)`` (our :func:`spann3r_model.preprocess.preprocess`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from spann3r_model.data.scannet import ScanNetScene

CROP_CENTRES = ('principal', 'image')


@dataclass
class GroundTruthView:
    """One frame at model resolution.

    :param depth: ``[S, S]`` float32 metres (0 = invalid).
    :param K: ``[3, 3]`` float32 intrinsics of the crop.
    :param rgb: ``[S, S, 3]`` uint8 colours of the crop.
    :param pts_world: ``[S, S, 3]`` float32 world points.
    :param valid: ``[S, S]`` bool.
    :param T_world_cam: ``[4, 4]`` float32 camera-to-world, as the official loader casts it.
    """

    depth: np.ndarray
    K: np.ndarray
    rgb: np.ndarray
    pts_world: np.ndarray
    valid: np.ndarray
    T_world_cam: np.ndarray


def crop_view(rgb: np.ndarray, depth: np.ndarray, K: np.ndarray, size: int = 224,
              centre: str = 'principal') -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crop and resize an RGB-D frame and its intrinsics like the official data path.

    :param rgb: ``[H, W, 3]`` uint8 (same size as ``depth``).
    :param depth: ``[H, W]`` float32 metres.
    :param K: ``[3, 3]`` intrinsics.
    :param size: output side.
    :param centre: ``principal`` or ``image`` (see the module docstring).
    :return: ``(rgb [S, S, 3], depth [S, S], K [3, 3] float32)``.
    """
    if centre not in CROP_CENTRES:
        raise ValueError(f'centre must be one of {CROP_CENTRES}, got {centre!r}')
    if rgb.shape[:2] != depth.shape:
        # The official loader resizes colour to the depth resolution.
        rgb = cv2.resize(rgb, (depth.shape[1], depth.shape[0]), interpolation=cv2.INTER_LINEAR)
    K = np.asarray(K, dtype=np.float32).copy()
    H, W = depth.shape
    if centre == 'principal':
        cx, cy = (int(c) for c in np.round(K[:2, 2]))
    else:
        cx, cy = W // 2, H // 2
    mx, my = min(cx, W - cx), min(cy, H - cy)
    if mx <= 0 or my <= 0:
        raise ValueError(f'principal point ({cx}, {cy}) lies outside the {W}x{H} image')
    left, top = cx - mx, cy - my
    rgb, depth = rgb[top:cy + my, left:cx + mx], depth[top:cy + my, left:cx + mx]
    K[0, 2] -= left
    K[1, 2] -= top
    W1, H1 = 2 * mx, 2 * my
    s = max(size / W1, size / H1) + 1e-8
    W2, H2 = int(np.floor(W1 * s)), int(np.floor(H1 * s))
    image = Image.fromarray(np.ascontiguousarray(rgb))
    if (W2, H2) != (W1, H1):
        image = image.resize((W2, H2), resample=Image.Resampling.LANCZOS)
    depth = cv2.resize(depth, (W2, H2), interpolation=cv2.INTER_NEAREST)
    # The intrinsics update keeps float32 arithmetic, as the official code does in place.
    K[:2, 2] += 0.5
    K[:2, :] *= s
    K[:2, 2] -= 0.5 * (np.array([W1, H1]) * s - np.array([W2, H2]))
    K[:2, 2] -= 0.5
    target = K[:2, 2] + 0.5 - 0.5 * (np.array([W2, H2]) - size) - 0.5
    ox, oy = (int(v) for v in np.int32(np.round(K[:2, 2] - target)))
    if ox < 0 or oy < 0 or ox + size > W2 or oy + size > H2:
        raise ValueError(f'cannot crop {size}x{size} from the resized {W2}x{H2} frame')
    K[0, 2] -= ox
    K[1, 2] -= oy
    rgb_out = np.ascontiguousarray(np.asarray(image)[oy:oy + size, ox:ox + size])
    return rgb_out, np.ascontiguousarray(depth[oy:oy + size, ox:ox + size]), K


def backproject(depth: np.ndarray, K: np.ndarray, T_world_cam: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """Back-project ``[H, W]`` depth to ``[H, W, 3]`` float32 world points and a valid mask."""
    depth = np.asarray(depth, dtype=np.float32)
    H, W = depth.shape
    u, v = np.meshgrid(np.arange(W), np.arange(H))
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    x = ((u - cx) * depth / fx).astype(np.float32)
    y = ((v - cy) * depth / fy).astype(np.float32)
    cam = np.stack([x, y, depth], axis=-1)
    T = np.asarray(T_world_cam, dtype=np.float32)
    world = np.einsum('ik,vuk->vui', T[:3, :3], cam) + T[:3, 3]
    valid = np.isfinite(depth) & (depth > 0)
    return world.astype(np.float32), valid


def load_views(scene: ScanNetScene, frame_ids: list[int], size: int = 224,
               centre: str = 'principal') -> list[GroundTruthView]:
    """Ground-truth views of ``frame_ids`` of a ScanNet scene.

    :raises ValueError: when the scene has no intrinsics (a bag exported without camera_info)
        or a pose is not finite (such frames cannot be evaluated).
    """
    K_depth = scene.K_depth.astype(np.float32)
    views = []
    for fid in frame_ids:
        T = scene.pose(fid).astype(np.float32)
        if not np.isfinite(T).all():
            raise ValueError(f'frame {fid} of {scene.scene_dir} has no valid pose')
        rgb, depth, K = crop_view(scene.color(fid), scene.depth(fid), K_depth, size, centre)
        pts, valid = backproject(depth, K, T)
        views.append(GroundTruthView(depth, K, rgb, pts, valid, T))
    return views


def to_first_camera(views: list[GroundTruthView]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stack the views in frame 0's camera coordinates.

    :return: ``(pts [N, S, S, 3] float64, valid [N, S, S], T_world_cam0 [4, 4] float64)``.
    """
    T0 = views[0].T_world_cam.astype(np.float64)
    T_cam0_world = np.linalg.inv(T0)
    pts = np.stack([v.pts_world for v in views]).astype(np.float64)
    pts = pts @ T_cam0_world[:3, :3].T + T_cam0_world[:3, 3]
    return pts, np.stack([v.valid for v in views]), T0
