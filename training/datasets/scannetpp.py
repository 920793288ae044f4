"""The ScanNet++ layout of the official preprocessing (undistorted DSLR, rendered depth).

::

    <root>/splits/nvs_sem_<split>.txt                                  scene list
    <root>/data/<scene>/dslr/nerfstudio/transforms_undistorted.json    fl_x, fl_y, cx, cy, frames
    <root>/data/<scene>/dslr/train_test_lists.json                     {"train": [image names]}
    <root>/data/<scene>/dslr/undistorted_images/<name>.JPG             RGB
    <root>/data/<scene>/dslr/undistorted_depths/<name>.png             uint16 millimetres

Poses are nerfstudio's camera-to-world in OpenGL axes; the y and z axes are flipped to OpenCV.
"""

from __future__ import annotations

from functools import lru_cache
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from training.datasets.base import SequenceDataset
from training.datasets.frames import Frame
from training.datasets.io import read_depth_png, read_lines, read_rgb


class ScanNetppLayout(SequenceDataset):
    """Sequences from ScanNet++ DSLR captures (official gap defaults 5..30 in the recipe).

    :param root: dataset root.
    :param split: split name of ``splits/nvs_sem_<split>.txt``.
    :param scenes: explicit scene ids (overrides the split file).
    """

    def __init__(self, root: str, split: str = 'train', scenes: Sequence[str] | None = None,
                 **kwargs) -> None:
        kwargs.setdefault('min_gap', 5)
        kwargs.setdefault('max_gap', 30)
        super().__init__(**kwargs)
        self.root = Path(root)
        self.scenes = list(scenes) if scenes else read_lines(
            self.root / 'splits' / f'nvs_sem_{split}.txt')
        self._require_scenes()

    def _meta(self, scene: str) -> tuple[dict, dict]:
        return _read_meta(self.root / 'data' / scene / 'dslr')

    def scene_frames(self, scene: str) -> Sequence[str]:
        """Return the sorted training image names of ``scene``."""
        _, lists = self._meta(scene)
        return sorted(lists['train'])

    def load_frame(self, scene: str, frame_id: str) -> Frame:
        """Read one undistorted DSLR frame with its rendered depth."""
        transforms, _ = self._meta(scene)
        dslr = self.root / 'data' / scene / 'dslr'
        by_name = {f['file_path']: f for f in transforms['frames']}
        if frame_id not in by_name:
            raise ValueError(f'{dslr}: no pose for {frame_id} in transforms_undistorted.json')
        T = np.array(by_name[frame_id]['transform_matrix'], dtype=np.float64)
        T[:, 1:3] *= -1.0
        K = np.array([[transforms['fl_x'], 0, transforms['cx']],
                      [0, transforms['fl_y'], transforms['cy']], [0, 0, 1]], dtype=np.float64)
        depth_name = Path(frame_id).with_suffix('.png').name
        return Frame(rgb=read_rgb(dslr / 'undistorted_images' / frame_id),
                     depth=read_depth_png(dslr / 'undistorted_depths' / depth_name, 1000.0),
                     K=K, T_world_cam=T, name=f'{scene}/{frame_id}')


@lru_cache(maxsize=64)
def _read_meta(dslr: Path) -> tuple[dict, dict]:
    paths = (dslr / 'nerfstudio' / 'transforms_undistorted.json', dslr / 'train_test_lists.json')
    for path in paths:
        if not path.is_file():
            raise ValueError(f'missing file {path}')
    return tuple(json.loads(p.read_text()) for p in paths)
