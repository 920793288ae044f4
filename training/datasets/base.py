"""Sequence datasets: the frame sampling, cropping and ground truth shared by every layout.

A layout reader subclasses :class:`SequenceDataset` and implements :meth:`scene_frames` (the
ordered frame ids of a scene) and :meth:`load_frame` (one frame from disk). Everything else -
which frames form a training sequence, the crop, the pointmaps, the validity masks, the colour
jitter and the reproducible randomness - lives here once. The crop
(:func:`spann3r_model.data.crop.crop_rgbd`, centred on the principal point) and the
back-projection (:func:`spann3r_model.geometry.camera.backproject`) are those of the evaluation
ground truth.

Randomness: every sample draws from ``numpy.random.default_rng((seed, epoch, index))``, so a
sample is the same whichever worker or rank loads it, and resuming an epoch reproduces it.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from spann3r_model.data.crop import crop_rgbd
from spann3r_model.geometry.camera import backproject
from training.datasets.frames import draw_jitter, Frame, model_image
from training.datasets.sampling import frame_gap, sample_frame_window

LOG = logging.getLogger(__name__)

#: Attempts at drawing a sequence whose every frame has valid depth before giving up.
MAX_ATTEMPTS = 10


class SequenceDataset(Dataset):
    """Base class: ``sequences_per_scene`` random sequences of ``num_frames`` per scene.

    :param num_frames: frames per training sequence (5 in the official recipe, 10 for v1.01).
    :param min_gap: smallest allowed maximum gap (curriculum start).
    :param max_gap: largest allowed maximum gap (curriculum peak).
    :param sequences_per_scene: dataset length per scene (the official ``num_seq``).
    :param image_size: model resolution ``S``.
    :param color_jitter: apply ColorJitter(0.5, 0.5, 0.5, 0.1) per frame.
    :param seed: base of every sample's random stream.
    :param name: label used in logs and errors.
    """

    def __init__(self, *, num_frames: int = 5, min_gap: int = 10, max_gap: int = 50,
                 sequences_per_scene: int = 100, image_size: int = 224,
                 color_jitter: bool = True, seed: int = 0, name: str = '') -> None:
        if num_frames < 2:
            raise ValueError(f'num_frames must be >= 2, got {num_frames}')
        if not 1 <= min_gap <= max_gap:
            raise ValueError(f'need 1 <= min_gap <= max_gap, got {min_gap}, {max_gap}')
        if sequences_per_scene < 1:
            raise ValueError(f'sequences_per_scene must be >= 1, got {sequences_per_scene}')
        if image_size <= 0 or image_size % 16:
            raise ValueError(f'image_size must be a positive multiple of 16, got {image_size}')
        self.num_frames = num_frames
        self.min_gap = min_gap
        self.max_gap = max_gap
        self.sequences_per_scene = sequences_per_scene
        self.image_size = image_size
        self.color_jitter = color_jitter
        self.seed = seed
        self.name = name or type(self).__name__
        self.epoch = 0
        self.ratio = 0.0
        self.scenes: list[str] = []

    # -- what a layout implements ---------------------------------------------------------
    def scene_frames(self, scene: str) -> Sequence[str]:
        """Return the ordered frame ids of ``scene``."""
        raise NotImplementedError

    def load_frame(self, scene: str, frame_id: str) -> Frame:
        """Read one frame of ``scene`` from disk."""
        raise NotImplementedError

    def pick_frames(self, scene: str, rng: np.random.Generator, index: int) -> list[str]:
        """Choose the frame ids of one training sequence (curriculum window by default).

        :param index: the sample index (layouts with pre-rendered sequences use it).
        """
        frames = self.scene_frames(scene)
        gap = frame_gap(self.ratio, self.min_gap, self.max_gap)
        return [frames[i] for i in sample_frame_window(len(frames), self.num_frames, gap, rng)]

    def accept_sequence(self, frames: list[Frame], cropped_depths: list[np.ndarray]) -> bool:
        """Return False to draw another sequence (e.g. an implausible depth range)."""
        return True

    # -- shared machinery -----------------------------------------------------------------
    def _require_scenes(self) -> None:
        if not self.scenes:
            raise ValueError(f'{self.name}: no scenes found')

    def set_epoch(self, epoch: int, ratio: float) -> None:
        """Set the epoch (part of every sample's seed) and the curriculum ratio."""
        self.epoch = int(epoch)
        self.ratio = float(ratio)

    def __len__(self) -> int:
        return len(self.scenes) * self.sequences_per_scene

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        """Return one sequence.

        :return: ``img`` ``[N, 3, S, S]`` in [-1, 1], ``pts3d`` ``[N, S, S, 3]`` (world),
            ``valid_mask`` ``[N, S, S]``, ``camera_pose`` ``[N, 4, 4]`` (camera-to-world),
            ``camera_intrinsics`` ``[N, 3, 3]``, ``rgb`` ``[N, S, S, 3]`` uint8 (unjittered).
        """
        if not 0 <= index < len(self):
            raise IndexError(f'{self.name}: index {index} out of range [0, {len(self)})')
        rng = np.random.default_rng((self.seed, self.epoch, index))
        scene_index = index // self.sequences_per_scene
        for attempt in range(MAX_ATTEMPTS):
            scene = self.scenes[scene_index]
            sample = self._try_sequence(scene, rng, index)
            if sample is not None:
                return sample
            LOG.debug('%s: scene %s gave a frame without valid depth (attempt %d)',
                      self.name, scene, attempt)
            scene_index = int(rng.integers(0, len(self.scenes)))
        raise ValueError(f'{self.name}: {MAX_ATTEMPTS} sequences in a row were rejected (a '
                         'frame without valid depth or an implausible depth range); check the '
                         'data')

    def frame_substitutes(self, scene: str, frame_id: str, rng: np.random.Generator
                          ) -> Sequence[str]:
        """Return frames to try, in order, when ``frame_id`` has no valid depth (none here)."""
        return ()

    def _load_one(self, scene: str, frame_id: str):
        frame = self.load_frame(scene, frame_id)
        if not np.isfinite(frame.T_world_cam).all():
            return None
        try:
            cropped = crop_rgbd(frame.rgb, frame.depth, frame.K, self.image_size, 'principal')
        except ValueError as err:
            raise ValueError(f'{frame.name}: {err}') from err
        pts, valid = backproject(cropped.depth, cropped.K, frame.T_world_cam)
        if not valid.any():
            return None
        return frame, cropped, pts, valid

    def _load_usable(self, scene: str, frame_id: str, rng: np.random.Generator):
        loaded = self._load_one(scene, frame_id)
        if loaded is not None:
            return loaded
        for other in self.frame_substitutes(scene, frame_id, rng):
            loaded = self._load_one(scene, other)
            if loaded is not None:
                return loaded
        return None

    def _try_sequence(self, scene: str, rng: np.random.Generator, index: int
                      ) -> dict[str, torch.Tensor] | None:
        frame_ids = self.pick_frames(scene, rng, index)
        if not frame_ids:
            return None
        frames, depths = [], []
        out: dict[str, list] = {k: [] for k in ('img', 'pts3d', 'valid_mask', 'camera_pose',
                                                'camera_intrinsics', 'rgb')}
        for frame_id in frame_ids:
            loaded = self._load_usable(scene, frame_id, rng)
            if loaded is None:
                return None
            frame, cropped, pts, valid = loaded
            frames.append(frame)
            depths.append(cropped.depth)
            jitter = draw_jitter(rng) if self.color_jitter else None
            out['img'].append(model_image(cropped.rgb, jitter))
            out['pts3d'].append(torch.from_numpy(pts))
            out['valid_mask'].append(torch.from_numpy(valid))
            out['camera_pose'].append(torch.from_numpy(
                np.asarray(frame.T_world_cam, dtype=np.float32)))
            out['camera_intrinsics'].append(torch.from_numpy(cropped.K))
            out['rgb'].append(torch.from_numpy(cropped.rgb))
        if not self.accept_sequence(frames, depths):
            return None
        return {k: torch.stack(v) for k, v in out.items()}
