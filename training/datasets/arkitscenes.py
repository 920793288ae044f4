"""The ARKitScenes layout of the official preprocessing (low-resolution wide camera).

::

    <root>/raw/Training|Validation/<scene>/lowres_wide/<scene>_<t>.png              RGB
    <root>/raw/Training|Validation/<scene>/lowres_depth/<scene>_<t>.png             uint16 mm
    <root>/raw/Training|Validation/<scene>/lowres_wide_intrinsics/<scene>_<t>.pincam
        ``width height fx fy cx cy``
    <root>/raw/Training|Validation/<scene>/lowres_wide.traj
        per line ``t rx ry rz tx ty tz``: world-to-camera, rotation as an axis-angle vector

Frame timestamps come from the depth file names; a pose (and intrinsics file) is matched to
the timestamp rounded to 1 ms, else to the nearest one within 0.1 s (intrinsics: +-1 ms). The
official reader re-expresses the world frame by a fixed proper rotation (axes ``y, x, -z``);
this reader does the same so poses agree with the released pipeline.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from training.datasets.base import SequenceDataset
from training.datasets.frames import Frame
from training.datasets.io import read_depth_png, read_lines, read_rgb

#: World re-expression applied by the released reader (a rotation, determinant +1).
_WORLD_FIX = np.array([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, -1, 0], [0, 0, 0, 1]], dtype=np.float64)


class ARKitScenesLayout(SequenceDataset):
    """Sequences from ARKitScenes (official recipe gaps 10..100).

    :param root: dataset root (holds ``raw/``).
    :param split: ``train`` (``raw/Training``) or ``val`` (``raw/Validation``).
    :param scenes: explicit scene ids; default every folder of the split.
    """

    def __init__(self, root: str, split: str = 'train', scenes: Sequence[str] | None = None,
                 **kwargs) -> None:
        kwargs.setdefault('min_gap', 10)
        kwargs.setdefault('max_gap', 100)
        super().__init__(**kwargs)
        folders = {'train': 'Training', 'val': 'Validation'}
        if split not in folders:
            raise ValueError(f'split must be train or val, got {split!r}')
        self.base = Path(root) / 'raw' / folders[split]
        if not self.base.is_dir():
            raise ValueError(f'{self.name}: {self.base} does not exist')
        self.scenes = list(scenes) if scenes else sorted(p.name for p in self.base.iterdir()
                                                         if p.is_dir())
        self._require_scenes()

    def scene_frames(self, scene: str) -> Sequence[str]:
        """Return the frame timestamps (as written in the file names) in order."""
        return _timestamps(self.base / scene / 'lowres_depth')

    def load_frame(self, scene: str, frame_id: str) -> Frame:
        """Read image, depth, intrinsics and the trajectory pose of one timestamp."""
        folder = self.base / scene
        T = _pose(_trajectory(folder / 'lowres_wide.traj'), frame_id)
        if T is None:
            raise ValueError(f'{folder}: no trajectory pose near t={frame_id}')
        return Frame(rgb=read_rgb(folder / 'lowres_wide' / f'{scene}_{frame_id}.png'),
                     depth=read_depth_png(folder / 'lowres_depth' / f'{scene}_{frame_id}.png',
                                          1000.0),
                     K=_intrinsics(folder / 'lowres_wide_intrinsics', scene, frame_id),
                     T_world_cam=T, name=f'{scene}/{frame_id}')


@lru_cache(maxsize=64)
def _timestamps(folder: Path) -> tuple[str, ...]:
    if not folder.is_dir():
        raise ValueError(f'missing folder {folder}')
    stamps = [p.stem.split('_')[-1] for p in folder.iterdir() if p.suffix == '.png']
    return tuple(sorted(stamps, key=float))


@lru_cache(maxsize=64)
def _trajectory(path: Path) -> dict[str, np.ndarray]:
    poses = {}
    for number, line in enumerate(read_lines(path), start=1):
        tokens = line.split()
        if len(tokens) != 7:
            raise ValueError(f'{path}:{number}: expected 7 values, got {len(tokens)}')
        values = [float(t) for t in tokens]
        T_cam_world = np.eye(4)
        T_cam_world[:3, :3] = cv2.Rodrigues(np.array(values[1:4]))[0]
        T_cam_world[:3, 3] = values[4:7]
        poses[f'{round(values[0], 3):.3f}'] = _WORLD_FIX @ np.linalg.inv(T_cam_world)
    return poses


def _pose(poses: dict[str, np.ndarray], stamp: str) -> np.ndarray | None:
    key = f'{round(float(stamp), 3):.3f}'
    if key in poses:
        return poses[key]
    near = [k for k in poses if abs(float(k) - float(stamp)) < 0.1]
    if not near:
        return None
    return poses[min(near, key=lambda k: abs(float(k) - float(stamp)))]


def _intrinsics(folder: Path, scene: str, stamp: str) -> np.ndarray:
    for candidate in (stamp, f'{float(stamp) - 0.001:.3f}', f'{float(stamp) + 0.001:.3f}'):
        path = folder / f'{scene}_{candidate}.pincam'
        if path.is_file():
            values = np.loadtxt(path, dtype=np.float64).ravel()
            if values.size != 6:
                raise ValueError(f'{path}: expected 6 values, got {values.size}')
            _, _, fx, fy, cx, cy = values
            return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]])
    raise ValueError(f'{folder}: no intrinsics for t={stamp}')
