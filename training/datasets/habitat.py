"""The pre-rendered Habitat sequences of the official recipe.

::

    <root>/<dataset>/<scene>/<seq:08d>_<i>.jpeg               RGB, i = 1 .. num_frames
    <root>/<dataset>/<scene>/<seq:08d>_<i>_depth.exr          float32 z-depth (metres)
    <root>/<dataset>/<scene>/<seq:08d>_<i>_camera_params.json
        camera_intrinsics (3x3), R_cam2world (3x3), t_cam2world (3)

Each scene holds ``sequences_per_scene`` rendered sequences (200 officially); a sample is one
of them with its frames in random order. OpenCV reads EXR only when
``OPENCV_IO_ENABLE_OPENEXR=1`` is set in the environment before the process starts.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from training.datasets.base import SequenceDataset
from training.datasets.frames import Frame
from training.datasets.io import read_raw, read_rgb


class HabitatLayout(SequenceDataset):
    """Pre-rendered Habitat sequences.

    :param root: dataset root (one folder per source dataset, then one per scene).
    """

    def __init__(self, root: str, **kwargs) -> None:
        kwargs.setdefault('sequences_per_scene', 200)
        super().__init__(**kwargs)
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f'{self.name}: {self.root} does not exist')
        self.scenes = sorted(f'{d.name}/{s.name}' for d in self.root.iterdir() if d.is_dir()
                             for s in d.iterdir() if s.is_dir())
        self._require_scenes()

    def scene_frames(self, scene: str) -> list[str]:
        """Return the frame numbers of one rendered sequence."""
        return [str(i) for i in range(1, self.num_frames + 1)]

    def pick_frames(self, scene: str, rng: np.random.Generator, index: int) -> list[str]:
        """Return the frames of rendered sequence ``index % sequences_per_scene``, shuffled."""
        seq = index % self.sequences_per_scene
        order = list(range(1, self.num_frames + 1))
        rng.shuffle(order)
        return [f'{seq:08d}_{i}' for i in order]

    def load_frame(self, scene: str, frame_id: str) -> Frame:
        """Read image, EXR depth and the JSON camera."""
        folder = self.root / scene
        params_path = folder / f'{frame_id}_camera_params.json'
        if not params_path.is_file():
            raise ValueError(f'missing file {params_path}')
        params = json.loads(params_path.read_text())
        T = np.eye(4)
        T[:3, :3] = np.array(params['R_cam2world'], dtype=np.float64)
        T[:3, 3] = np.array(params['t_cam2world'], dtype=np.float64)
        depth = read_raw(folder / f'{frame_id}_depth.exr').astype(np.float32)
        if depth.ndim == 3:
            depth = depth[..., 0]
        return Frame(rgb=read_rgb(folder / f'{frame_id}.jpeg'), depth=depth,
                     K=np.array(params['camera_intrinsics'], dtype=np.float64), T_world_cam=T,
                     name=f'{scene}/{frame_id}')
