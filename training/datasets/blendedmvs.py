"""The BlendedMVS layout (MVSNet-style cameras), as the official recipe reads it.

::

    <root>/<split>_list.txt                       scene list
    <root>/<scene>/blended_images/NNNNNNNN.jpg    RGB
    <root>/<scene>/rendered_depth_maps/NNNNNNNN.pfm   float32 depth (same units as the poses)
    <root>/<scene>/cams/NNNNNNNN_cam.txt          "extrinsic", 4x4 world-to-camera, blank,
                                                  "intrinsic", 3x3 K, blank, depth range
    <root>/<scene>/cams/pair.txt                  view-selection clusters

A sequence is a reference view plus ``num_frames - 1`` views drawn without replacement from its
cluster in ``pair.txt``, reversed with probability 0.5 (no curriculum). The official recipe
feeds BlendedMVS without colour jitter, so ``color_jitter`` defaults to false here. Views whose
principal point lies within a fifth of the image size of a border, and sequences whose depth
ranges disagree, are redrawn.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from training.datasets.base import SequenceDataset
from training.datasets.frames import Frame
from training.datasets.io import read_lines, read_raw, read_rgb


class BlendedMVSLayout(SequenceDataset):
    """Sequences from BlendedMVS view clusters.

    :param root: dataset root.
    :param split: ``train`` or ``val`` (``<split>_list.txt``).
    :param scenes: explicit scene ids (overrides the list file).
    """

    def __init__(self, root: str, split: str = 'train', scenes: Sequence[str] | None = None,
                 **kwargs) -> None:
        kwargs.setdefault('color_jitter', False)
        super().__init__(**kwargs)
        self.root = Path(root)
        self.scenes = list(scenes) if scenes else read_lines(self.root / f'{split}_list.txt')
        self._require_scenes()

    def scene_frames(self, scene: str) -> Sequence[str]:
        """Return the reference view ids listed in ``pair.txt``."""
        return [ref for ref, _ in _pairs(self.root / scene / 'cams' / 'pair.txt')]

    def pick_frames(self, scene: str, rng: np.random.Generator, index: int) -> list[str]:
        """Draw a reference view and ``num_frames - 1`` of its cluster (10 tries)."""
        clusters = _pairs(self.root / scene / 'cams' / 'pair.txt')
        for _ in range(10):
            ref, views = clusters[int(rng.integers(0, len(clusters)))]
            if len(views) > self.num_frames - 1:
                chosen = rng.choice(len(views), self.num_frames - 1, replace=False)
                picked = [ref] + [views[int(c)] for c in chosen]
                if rng.random() < 0.5:
                    picked.reverse()
                return picked
        return []

    def load_frame(self, scene: str, frame_id: str) -> Frame:
        """Read image, PFM depth and the MVSNet camera (world-to-camera, inverted here)."""
        folder = self.root / scene
        K, T_cam_world = _read_cam(folder / 'cams' / f'{frame_id}_cam.txt')
        depth = np.nan_to_num(read_raw(folder / 'rendered_depth_maps' / f'{frame_id}.pfm')
                              .astype(np.float32), nan=0.0)
        return Frame(rgb=read_rgb(folder / 'blended_images' / f'{frame_id}.jpg'), depth=depth,
                     K=K, T_world_cam=np.linalg.inv(T_cam_world), name=f'{scene}/{frame_id}')

    def accept_sequence(self, frames: list[Frame], cropped_depths: list[np.ndarray]) -> bool:
        """Reject off-centre principal points and disagreeing depth ranges."""
        for frame in frames:
            height, width = frame.depth.shape
            cx, cy = np.round(frame.K[:2, 2]).astype(int)
            if min(cx, width - cx) <= width / 5 or min(cy, height - cy) <= height / 5:
                return False
        maxima = [float(d.max()) for d in cropped_depths]
        low, high, first = min(maxima), max(maxima), maxima[0]
        return low > 0 and high / low <= 100.0 and high / first <= 10.0


@lru_cache(maxsize=64)
def _pairs(path: Path) -> tuple[tuple[str, tuple[str, ...]], ...]:
    lines = read_lines(path)
    try:
        count = int(lines[0])
        clusters = []
        for i in range(count):
            ref = int(lines[1 + 2 * i])
            tokens = lines[2 + 2 * i].split()
            n = int(tokens[0])
            views = tuple(f'{int(tokens[1 + 2 * j]):08d}' for j in range(n))
            clusters.append((f'{ref:08d}', views))
    except (IndexError, ValueError) as err:
        raise ValueError(f'{path}: malformed pair file ({err})') from err
    return tuple(clusters)


def _read_cam(path: Path) -> tuple[np.ndarray, np.ndarray]:
    lines = [line.strip() for line in read_lines(path)]
    try:
        e = lines.index('extrinsic')
        i = lines.index('intrinsic')
        T = np.array([[float(v) for v in lines[e + 1 + r].split()] for r in range(4)])
        K = np.array([[float(v) for v in lines[i + 1 + r].split()] for r in range(3)])
    except (ValueError, IndexError) as err:
        raise ValueError(f'{path}: malformed MVSNet camera file ({err})') from err
    if T.shape != (4, 4) or K.shape != (3, 3):
        raise ValueError(f'{path}: expected a 4x4 extrinsic and a 3x3 intrinsic matrix')
    return K, T
