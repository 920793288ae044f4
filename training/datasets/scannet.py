"""The ScanNet layout.

What ``spann3r-export``, the synthetic generator and the official ScanNet preprocessing
(SimpleRecon's reader) write:

::

    <root>/scans/<scene>/sensor_data/frame-NNNNNN.color.jpg|png   RGB
    <root>/scans/<scene>/sensor_data/frame-NNNNNN.depth.png       uint16 millimetres, 0 = invalid
    <root>/scans/<scene>/sensor_data/frame-NNNNNN.pose.txt        4x4 camera-to-world
    <root>/scans/<scene>/intrinsic/intrinsic_depth.txt            4x4, K of the depth map
    <root>/splits/scannetv2_<split>.txt                           optional scene list

The ``test`` split reads ``scans_test/``. Scenes come from ``scenes`` when given, else the split
file when present, else every folder under ``scans/``. A scene without ``intrinsic_depth.txt``
(a bag exported without camera_info) is refused when the dataset is built.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
import re
from typing import Sequence

from training.datasets.base import SequenceDataset
from training.datasets.frames import Frame
from training.datasets.io import read_depth_png, read_lines, read_matrix, read_rgb

_FRAME = re.compile(r'^frame-(\d+)\.color\.(jpg|jpeg|png)$')


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
        for scene in self.scenes:
            K_file = self.folder / scene / 'intrinsic' / 'intrinsic_depth.txt'
            if not K_file.is_file():
                raise ValueError(f'{self.name}: scene {scene} has no intrinsics ({K_file} is '
                                 'missing; a bag exported without camera_info has none): '
                                 're-export the bag with spann3r-export --intrinsics '
                                 'fx,fy,cx,cy or --calibration FILE')
            if len(self.scene_frames(scene)) < self.num_frames:
                raise ValueError(f'{self.name}: scene {scene} has '
                                 f'{len(self.scene_frames(scene))} frames, fewer than '
                                 f'num_frames={self.num_frames}')

    def scene_frames(self, scene: str) -> Sequence[str]:
        """Return the colour-frame file names of ``scene`` in frame order."""
        return _list_frames(self.folder / scene / 'sensor_data')

    def load_frame(self, scene: str, frame_id: str) -> Frame:
        """Read colour, depth, pose and the scene's depth intrinsics."""
        data = self.folder / scene / 'sensor_data'
        stem = frame_id.split('.color.')[0]
        K = _intrinsics(self.folder / scene / 'intrinsic' / 'intrinsic_depth.txt')
        return Frame(rgb=read_rgb(data / frame_id),
                     depth=read_depth_png(data / f'{stem}.depth.png', self.depth_scale),
                     K=K, T_world_cam=read_matrix(data / f'{stem}.pose.txt', (4, 4)),
                     name=f'{scene}/{stem}')


@lru_cache(maxsize=256)
def _list_frames(folder: Path) -> tuple[str, ...]:
    if not folder.is_dir():
        raise ValueError(f'missing folder {folder}')
    found = []
    for path in folder.iterdir():
        match = _FRAME.match(path.name)
        if match:
            found.append((int(match.group(1)), path.name))
    return tuple(name for _, name in sorted(found))


@lru_cache(maxsize=256)
def _intrinsics(path: Path):
    return read_matrix(path, (4, 4))[:3, :3]
