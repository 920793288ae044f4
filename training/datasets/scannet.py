"""The ScanNet layout as a training dataset: scenes read by ``spann3r_model.data.scannet``.

What ``spann3r-export``, the synthetic generator and the official ScanNet preprocessing
(SimpleRecon's reader) write, read by :class:`~spann3r_model.data.scannet.ScanNetScene` (frame
names and the files of a frame are its rules):

::

    <root>/scans/<scene>/sensor_data/frame-N.color.jpg|jpeg|png   RGB
    <root>/scans/<scene>/sensor_data/frame-N.depth.png            uint16, 0 = invalid
    <root>/scans/<scene>/sensor_data/frame-N.pose.txt             4x4 camera-to-world
    <root>/scans/<scene>/intrinsic/intrinsic_depth.txt            K of the depth map
    <root>/splits/scannetv2_<split>.txt                           optional scene list

The ``test`` split reads ``scans_test/``. Scenes come from ``scenes`` when given, else the split
file when present, else every folder under ``scans/``. A scene without ``intrinsic_depth.txt``
(a bag exported without camera_info) is refused when the dataset is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from spann3r_model.data.scannet import ScanNetScene
from training.datasets.base import SequenceDataset
from training.datasets.frames import Frame
from training.datasets.io import read_lines


class ScanNetLayout(SequenceDataset):
    """Sequences from scenes in the ScanNet layout.

    :param root: dataset root (holds ``scans/``).
    :param split: ``train``/``val`` (``scans/``) or ``test`` (``scans_test/``).
    :param scenes: explicit scene names; overrides the split file.
    :param depth_scale: depth PNG units per metre (1000 for millimetres).
    """

    def __init__(self, root: str, split: str = 'train', scenes: Sequence[str] | None = None,
                 depth_scale: float = 1000.0, **kwargs) -> None:
        kwargs.setdefault('min_gap', 10)
        kwargs.setdefault('max_gap', 50)
        super().__init__(**kwargs)
        if split not in ('train', 'val', 'test'):
            raise ValueError(f'split must be train, val or test, got {split!r}')
        self.root = Path(root)
        self.folder = self.root / ('scans_test' if split == 'test' else 'scans')
        if not self.folder.is_dir():
            raise ValueError(f'{self.name}: {self.folder} does not exist')
        self.depth_scale = float(depth_scale)
        split_file = self.root / 'splits' / f'scannetv2_{split}.txt'
        if scenes:
            self.scenes = list(scenes)
        elif split_file.is_file():
            self.scenes = read_lines(split_file)
        else:
            self.scenes = sorted(p.name for p in self.folder.iterdir()
                                 if (p / 'sensor_data').is_dir())
        self._require_scenes()
        self._readers: dict[str, ScanNetScene] = {}
        self._K: dict[str, np.ndarray] = {}
        for scene in self.scenes:
            try:
                reader = ScanNetScene(self.folder / scene)
                self._K[scene] = reader.K_depth
            except ValueError as err:
                raise ValueError(f'{self.name}: scene {scene}: {err}') from err
            if len(reader) < self.num_frames:
                raise ValueError(f'{self.name}: scene {scene} has {len(reader)} frames, fewer '
                                 f'than num_frames={self.num_frames}')
            self._readers[scene] = reader

    def scene_frames(self, scene: str) -> Sequence[int]:
        """Return the frame numbers of ``scene`` in order."""
        return self._readers[scene].frame_ids

    def load_frame(self, scene: str, frame_id: int) -> Frame:
        """Read colour, depth, pose and the scene's depth intrinsics."""
        reader = self._readers[scene]
        return Frame(rgb=reader.color(frame_id), depth=reader.depth(frame_id, self.depth_scale),
                     K=self._K[scene], T_world_cam=reader.pose(frame_id),
                     name=f'{scene}/{reader.frame_stem(frame_id)}')
