"""Ground-truth pointmaps at model resolution, cropped as the official evaluation data path does.

The official datasets crop each RGB-D frame around its principal point, resize it isotropically
(depth with nearest neighbour) and crop it to ``size x size``; the ground-truth pointmap is the
back-projected depth of that crop. Predictions are compared pixel by pixel with these maps, so
the crop must match the one that produced the prediction:

* ``principal`` centres the first crop on the rounded principal point (official datasets and the
  official demo when it is given intrinsics);
* ``image`` centres it on ``(W // 2, H // 2)`` (our :func:`spann3r_model.preprocess.preprocess`).

The crop is :func:`spann3r_model.data.crop.crop_rgbd`, the back-projection
:func:`spann3r_model.geometry.camera.backproject`: the training ground truth uses the same two.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spann3r_model.data.crop import crop_rgbd
from spann3r_model.data.scannet import ScanNetScene
from spann3r_model.geometry.camera import backproject


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
        cropped = crop_rgbd(scene.color(fid), scene.depth(fid), K_depth, size, centre)
        pts, valid = backproject(cropped.depth, cropped.K, T)
        views.append(GroundTruthView(cropped.depth, cropped.K, cropped.rgb, pts, valid, T))
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
