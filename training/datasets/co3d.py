"""The Co3D layout of the DUSt3R/Spann3R preprocessing.

::

    <root>/selected_seqs_<split>.json        {category: {sequence: [frame numbers]}}
    <root>/<category>/<sequence>/images/frameNNNNNN.jpg
    <root>/<category>/<sequence>/images/frameNNNNNN.npz
        camera_pose (4x4 camera-to-world, OpenCV), camera_intrinsics (3x3), maximum_depth
    <root>/<category>/<sequence>/depths/frameNNNNNN.jpg.geometric.png
        uint16, metres = value / 65535 * maximum_depth
    <root>/<category>/<sequence>/masks/frameNNNNNN.png   object mask (> 0.1 of 255)

Two samplers, as in the official recipe: ``use_comb=True`` draws a combination of frame
positions in ``[0, 100)`` whose consecutive gaps are multiples of 5 in ``(lb, ub]`` (uniformly
over all such combinations) and jitters each position by +-4; ``use_comb=False`` uses the
curriculum window. ``mask_bg`` (true, false or ``rand``) zeroes the background depth. Sequences
whose depth ranges disagree (max/min of the frames' ``maximum_depth`` > 100, or > 10 times the
first frame's) are redrawn. A frame without valid depth (e.g. the object out of view) is
replaced by the nearest usable frame in a random direction.
"""

from __future__ import annotations

from functools import lru_cache
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from training.datasets.base import SequenceDataset
from training.datasets.frames import Frame
from training.datasets.io import read_raw, read_rgb

_POOL = 100
#: Neighbouring frames tried in place of one without valid depth.
MAX_SUBSTITUTES = 20


class Co3dLayout(SequenceDataset):
    """Sequences from Co3D object captures.

    :param root: dataset root.
    :param split: ``train`` or ``test`` (``selected_seqs_<split>.json``).
    :param use_comb: DUSt3R-style combinations instead of the curriculum window.
    :param mask_bg: ``True``, ``False`` or ``'rand'`` (per sequence, probability 0.5).
    :param lb: exclusive lower bound of a combination gap.
    :param ub: inclusive upper bound of a combination gap.
    :param categories: restrict to these categories.
    """

    def __init__(self, root: str, split: str = 'train', use_comb: bool = True,
                 mask_bg: bool | str = 'rand', lb: int = 0, ub: int = 30,
                 categories: Sequence[str] | None = None, **kwargs) -> None:
        kwargs.setdefault('min_gap', 5)
        kwargs.setdefault('max_gap', 20)
        super().__init__(**kwargs)
        if mask_bg not in (True, False, 'rand'):
            raise ValueError(f'mask_bg must be true, false or rand, got {mask_bg!r}')
        if not 0 <= lb < ub:
            raise ValueError(f'need 0 <= lb < ub, got {lb}, {ub}')
        self.root = Path(root)
        index_path = self.root / f'selected_seqs_{split}.json'
        if not index_path.is_file():
            raise ValueError(f'missing file {index_path}')
        selected = json.loads(index_path.read_text())
        self.pools: dict[str, list[int]] = {}
        for category, sequences in sorted(selected.items()):
            if categories and category not in categories:
                continue
            for sequence, frames in sorted(sequences.items()):
                if frames:
                    self.pools[f'{category}/{sequence}'] = [int(f) for f in frames]
        self.scenes = list(self.pools)
        self._require_scenes()
        self.use_comb = use_comb
        self.mask_bg = mask_bg
        self.gap_choices = tuple(g for g in range(5, ub + 1, 5) if g > lb)
        if use_comb and not self.gap_choices:
            raise ValueError(f'no multiple of 5 lies in ({lb}, {ub}]')

    def scene_frames(self, scene: str) -> Sequence[str]:
        """Return the selected frame numbers of a sequence (as strings)."""
        return [str(f) for f in self.pools[scene]]

    def pick_frames(self, scene: str, rng: np.random.Generator, index: int) -> list[str]:
        """Draw a combination (``use_comb``) or a curriculum window, and the mask choice."""
        self._mask_now = self.mask_bg is True or (self.mask_bg == 'rand'
                                                  and bool(rng.integers(0, 2)))
        if not self.use_comb:
            return super().pick_frames(scene, rng, index)
        pool = self.pools[scene]
        positions = _uniform_combination(self.num_frames, self.gap_choices, rng)
        last = len(pool) - 1
        jittered = [max(0, min(p + int(rng.integers(-4, 5)), last)) for p in positions]
        return [str(pool[p]) for p in jittered]

    def load_frame(self, scene: str, frame_id: str) -> Frame:
        """Read image, camera, quantised depth and (when masking) the object mask."""
        folder = self.root / scene
        stem = f'frame{int(frame_id):06d}'
        meta_path = folder / 'images' / f'{stem}.npz'
        if not meta_path.is_file():
            raise ValueError(f'missing file {meta_path}')
        with np.load(meta_path) as meta:
            T = meta['camera_pose'].astype(np.float64)
            K = meta['camera_intrinsics'].astype(np.float64)
            max_depth = float(np.nan_to_num(meta['maximum_depth']))
        raw = read_raw(folder / 'depths' / f'{stem}.jpg.geometric.png')
        depth = raw.astype(np.float32) / 65535.0 * np.float32(max_depth)
        if getattr(self, '_mask_now', False):
            mask = read_raw(folder / 'masks' / f'{stem}.png').astype(np.float32) / 255.0 > 0.1
            depth = depth * mask
        return Frame(rgb=read_rgb(folder / 'images' / f'{stem}.jpg'), depth=depth, K=K,
                     T_world_cam=T, name=f'{scene}/{stem}', meta={'maximum_depth': max_depth})

    def frame_substitutes(self, scene: str, frame_id: str, rng: np.random.Generator
                          ) -> Sequence[str]:
        """Walk the pool from ``frame_id`` in a random direction, as the released reader does.

        Bounded to :data:`MAX_SUBSTITUTES` frames so a sequence of empty masks cannot stall
        the loader.
        """
        pool = self.pools[scene]
        start = pool.index(int(frame_id))
        step = 1 if rng.integers(0, 2) else -1
        count = min(len(pool) - 1, MAX_SUBSTITUTES)
        return [str(pool[(start + step * k) % len(pool)]) for k in range(1, count + 1)]

    def accept_sequence(self, frames: list[Frame], cropped_depths: list[np.ndarray]) -> bool:
        """Reject sequences whose frames' depth ranges disagree wildly."""
        maxima = [f.meta['maximum_depth'] for f in frames]
        return _plausible_range(maxima)


def _plausible_range(maxima: Sequence[float]) -> bool:
    low, high, first = min(maxima), max(maxima), maxima[0]
    if low <= 0 or first <= 0:
        return False
    return high / low <= 100.0 and high / first <= 10.0


@lru_cache(maxsize=32)
def _combination_counts(num_frames: int, gaps: tuple[int, ...]) -> np.ndarray:
    # counts[k, p]: combinations of k more positions after position p.
    counts = np.zeros((num_frames, _POOL), dtype=object)
    counts[0, :] = 1
    for k in range(1, num_frames):
        for p in range(_POOL):
            counts[k, p] = sum(counts[k - 1, p + g] for g in gaps if p + g < _POOL)
    return counts


def _uniform_combination(num_frames: int, gaps: tuple[int, ...], rng: np.random.Generator
                         ) -> list[int]:
    """Draw uniformly among increasing position tuples in ``[0, 100)`` with gaps in ``gaps``."""
    counts = _combination_counts(num_frames, gaps)
    weights = counts[num_frames - 1].astype(float)
    if weights.sum() == 0:
        raise ValueError(f'no combination of {num_frames} frames with gaps {gaps} fits in '
                         f'{_POOL} frames')
    position = int(rng.choice(_POOL, p=weights / weights.sum()))
    picked = [position]
    for k in range(num_frames - 2, -1, -1):
        options = [picked[-1] + g for g in gaps if picked[-1] + g < _POOL]
        w = np.array([float(counts[k, o]) for o in options])
        picked.append(int(options[int(rng.choice(len(options), p=w / w.sum()))]))
    return picked
