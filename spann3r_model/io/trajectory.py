"""Camera trajectories: TUM RGB-D text files and Nerfstudio ``transforms.json``.

* TUM: one ``timestamp tx ty tz qx qy qz qw`` line per camera-to-world pose.
* ``transforms.json`` with the fields the official demo writes (OpenGL camera convention).

Files are written atomically (:mod:`spann3r_model.io.atomic`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from scipy.spatial.transform import Rotation

from spann3r_model.geometry.frames import quaternion_xyzw
from spann3r_model.io.atomic import atomic_write_text, PathLike


def _check_poses(T_world_cams: np.ndarray) -> np.ndarray:
    poses = np.asarray(T_world_cams, dtype=np.float64)
    if poses.ndim != 3 or poses.shape[1:] != (4, 4):
        raise ValueError(f'poses must be [N, 4, 4], got {poses.shape}')
    if not np.isfinite(poses).all():
        raise ValueError('poses contain NaN or infinite values')
    return poses


def write_tum(path: PathLike, stamps: Sequence[float], T_world_cams: np.ndarray) -> None:
    """Write a TUM RGB-D trajectory (``timestamp tx ty tz qx qy qz qw``) atomically.

    :param path: output file.
    :param stamps: ``[N]`` timestamps in seconds.
    :param T_world_cams: ``[N, 4, 4]`` camera-to-world poses.
    """
    poses = _check_poses(T_world_cams)
    stamps = np.asarray(stamps, dtype=np.float64)
    if stamps.shape != (poses.shape[0],):
        raise ValueError(f'{stamps.shape[0] if stamps.ndim else 1} stamps for '
                         f'{poses.shape[0]} poses')
    lines = ['# timestamp tx ty tz qx qy qz qw']
    if len(poses):
        quats = quaternion_xyzw(poses[:, :3, :3])
        for stamp, pose, quat in zip(stamps, poses, quats):
            values = [*pose[:3, 3], *quat]
            lines.append(f'{stamp:.9f} ' + ' '.join(f'{v:.9g}' for v in values))
    atomic_write_text(path, '\n'.join(lines) + '\n')


def read_tum(path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a TUM trajectory.

    :return: ``([N] stamps, [N, 4, 4] camera-to-world poses)``.
    :raises ValueError: on malformed lines (the message names the line).
    """
    stamps, poses = [], []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith('#'):
            continue
        parts = line.split()
        if len(parts) != 8:
            raise ValueError(f'{path}:{number}: expected 8 values, got {len(parts)}')
        values = [float(p) for p in parts]
        pose = np.eye(4)
        pose[:3, :3] = Rotation.from_quat(values[4:8]).as_matrix()
        pose[:3, 3] = values[1:4]
        stamps.append(values[0])
        poses.append(pose)
    return np.asarray(stamps, dtype=np.float64), np.asarray(poses).reshape(-1, 4, 4)


def cv_to_gl_pose(T_world_cam: np.ndarray) -> np.ndarray:
    """Return the pose with the camera's y and z axes flipped (OpenCV to OpenGL convention)."""
    pose = np.array(T_world_cam, dtype=np.float64, copy=True)
    pose[:3, 1:3] *= -1.0
    return pose


def write_transforms_json(path: PathLike, *, width: int, height: int, focal: float,
                          T_world_cams: np.ndarray, file_paths: Optional[Sequence[str]] = None,
                          ply_file_path: Optional[str] = None,
                          principal_point: Optional[tuple[float, float]] = None) -> dict[str, Any]:
    """Write a Nerfstudio ``transforms.json`` as the official demo does, atomically.

    Poses are given in the OpenCV convention (camera-to-world, z forward, y down) and written
    in the OpenGL convention Nerfstudio expects (y and z axes of the camera negated).

    :param path: output file.
    :param width: image width in pixels (``w``).
    :param height: image height in pixels (``h``).
    :param focal: focal length in pixels (``fl_x`` = ``fl_y``).
    :param T_world_cams: ``[N, 4, 4]`` camera-to-world poses (OpenCV convention).
    :param file_paths: image path of each frame; defaults to ``imgs/img_0000.png`` and so on.
    :param ply_file_path: point cloud to reference (``ply_file_path``), if any.
    :param principal_point: ``(cx, cy)``; defaults to ``(width / 2, height / 2)``.
    :return: the written dictionary.
    """
    poses = _check_poses(T_world_cams)
    if width <= 0 or height <= 0 or not np.isfinite(focal) or focal <= 0:
        raise ValueError(f'bad camera: {width}x{height}, focal {focal}')
    if file_paths is not None and len(file_paths) != len(poses):
        raise ValueError(f'{len(file_paths)} file paths for {len(poses)} poses')
    cx, cy = principal_point if principal_point is not None else (width / 2, height / 2)
    content: dict[str, Any] = {
        'w': int(width), 'h': int(height), 'fl_x': float(focal), 'fl_y': float(focal),
        'cx': float(cx), 'cy': float(cy), 'k1': 0, 'k2': 0, 'p1': 0, 'p2': 0,
        'camera_model': 'OPENCV',
    }
    content['frames'] = [
        {'file_path': file_paths[i] if file_paths is not None else f'imgs/img_{i:04d}.png',
         'transform_matrix': cv_to_gl_pose(pose).tolist()}
        for i, pose in enumerate(poses)
    ]
    if ply_file_path is not None:
        content['ply_file_path'] = ply_file_path
    atomic_write_text(path, json.dumps(content, indent=4) + '\n')
    return content
