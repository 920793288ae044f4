"""Read and write sequences in the ScanNet layout that the official preprocessing produces.

::

    <root>/scans/<scene>/sensor_data/frame-NNNNNN.color.jpg|png   RGB
    <root>/scans/<scene>/sensor_data/frame-NNNNNN.depth.png       uint16 millimetres, 0 = invalid
    <root>/scans/<scene>/sensor_data/frame-NNNNNN.pose.txt        4x4 camera-to-world
    <root>/scans/<scene>/intrinsic/intrinsic_color.txt            4x4, K top-left
    <root>/scans/<scene>/intrinsic/intrinsic_depth.txt            4x4, K top-left

Exported bags, synthetic scenes, real ScanNet and the training datasets all go through this one
reader. It also accepts frame numbers of any digit count and ``.jpeg`` colour files
(``frame-N.color.jpg|jpeg|png``, depth and pose named after the colour file); the writer writes
the six-digit ``jpg|png`` form above. Every file is written atomically, so a file that exists
is complete and an interrupted writer can resume.

A bag without camera_info exports without ``intrinsic/`` (its ``manifest.json`` says
``"intrinsics": {"known": false, ...}``): the frames replay, but whatever needs K refuses it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
import re
from typing import Optional

import cv2
import numpy as np

from spann3r_model.io.atomic import atomic_write

_FRAME_RE = re.compile(r'^frame-(\d+)\.color\.(jpg|jpeg|png)$')
COLOR_FORMATS = ('jpg', 'png')
MANIFEST = 'manifest.json'

#: How to give a scene intrinsics; every refusal for want of them says it.
SUPPLY_HINT = ('re-export the bag with spann3r-export --intrinsics fx,fy,cx,cy or '
               '--calibration FILE')


def _encode(ext: str, image: np.ndarray, params: Optional[list[int]] = None) -> bytes:
    ok, buf = cv2.imencode(ext, image, params or [])
    if not ok:
        raise ValueError(f'could not encode a {image.dtype} {image.shape} image as {ext}')
    return buf.tobytes()


def matrix_text(T: np.ndarray) -> bytes:
    """Format a matrix with full float64 precision (round-trips exactly through ``loadtxt``)."""
    rows = [' '.join(f'{v:.17g}' for v in row) for row in np.asarray(T, dtype=np.float64)]
    return ('\n'.join(rows) + '\n').encode()


def depth_to_millimetres(depth_m: np.ndarray) -> np.ndarray:
    """Convert metric depth to ScanNet's uint16 millimetres (invalid and out-of-range -> 0).

    :param depth_m: ``[H, W]`` float depth in metres; NaN, inf and values <= 0 are invalid.
    :return: ``[H, W]`` uint16.
    """
    d = np.asarray(depth_m, dtype=np.float64)
    mm = np.where(np.isfinite(d) & (d > 0), np.round(d * 1000.0), 0.0)
    mm[mm > 65535] = 0
    return mm.astype(np.uint16)


class ScanNetWriter:
    """Write one scene.

    :param scene_dir: ``<root>/scans/<scene>``.
    :param color_format: ``jpg`` (as ScanNet) or ``png`` (lossless).
    :param jpeg_quality: JPEG quality when ``color_format`` is ``jpg``.
    """

    def __init__(self, scene_dir: Path, color_format: str = 'jpg', jpeg_quality: int = 95) -> None:
        if color_format not in COLOR_FORMATS:
            raise ValueError(f'color_format must be one of {COLOR_FORMATS}, got {color_format!r}')
        if not 1 <= jpeg_quality <= 100:
            raise ValueError(f'jpeg_quality must be in [1, 100], got {jpeg_quality}')
        self.scene_dir = Path(scene_dir)
        self.color_format = color_format
        self.jpeg_quality = jpeg_quality
        self.sensor_dir = self.scene_dir / 'sensor_data'
        self.intrinsic_dir = self.scene_dir / 'intrinsic'

    def frame_path(self, index: int, kind: str) -> Path:
        """Path of ``kind`` (``color``, ``depth``, ``pose``) of frame ``index``."""
        ext = {'color': self.color_format, 'depth': 'png', 'pose': 'txt'}[kind]
        return self.sensor_dir / f'frame-{index:06d}.{kind}.{ext}'

    def has_frame(self, index: int) -> bool:
        """Tell whether all files of frame ``index`` exist (each is written atomically)."""
        return all(self.frame_path(index, k).exists() for k in ('color', 'depth', 'pose'))

    def write_intrinsics(self, K_color: np.ndarray, K_depth: Optional[np.ndarray] = None) -> None:
        """Write ``intrinsic_color.txt`` and ``intrinsic_depth.txt`` (4x4, K top-left)."""
        for name, K in (('color', K_color), ('depth', K_color if K_depth is None else K_depth)):
            K = np.asarray(K, dtype=np.float64)
            if K.shape != (3, 3):
                raise ValueError(f'intrinsics must be [3, 3], got {K.shape}')
            M = np.eye(4)
            M[:3, :3] = K
            atomic_write(self.intrinsic_dir / f'intrinsic_{name}.txt', matrix_text(M))

    def write_frame(self, index: int, rgb: Optional[np.ndarray], depth: Optional[np.ndarray],
                    T_world_cam: Optional[np.ndarray], color_bytes: Optional[bytes] = None,
                    image_size: Optional[tuple[int, int]] = None) -> None:
        """Write one frame; the pose file goes last so that it marks a complete frame.

        :param index: frame number in the file names.
        :param rgb: ``[H, W, 3]`` uint8 RGB (None when ``color_bytes`` is given).
        :param color_bytes: an already encoded image in ``color_format`` (stored unchanged).
        :param image_size: ``(H, W)`` for the empty depth map when ``rgb`` is None.
        :param depth: ``[H, W]`` uint16 millimetres or float metres; None writes an all-zero map.
        :param T_world_cam: ``[4, 4]`` camera-to-world; None writes NaNs (ScanNet's "no pose").
        """
        if color_bytes is not None:
            color = color_bytes
        else:
            rgb = np.asarray(rgb)
            if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
                raise ValueError(f'expected an [H, W, 3] uint8 image, got {rgb.dtype} {rgb.shape}')
            image_size = rgb.shape[:2]
            bgr = np.ascontiguousarray(rgb[..., ::-1])
            if self.color_format == 'jpg':
                color = _encode('.jpg', bgr, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
            else:
                color = _encode('.png', bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        if depth is None:
            if image_size is None:
                raise ValueError('image_size is needed to write an empty depth map')
            depth_mm = np.zeros(image_size, np.uint16)
        elif np.asarray(depth).dtype == np.uint16:
            depth_mm = np.asarray(depth)
        else:
            depth_mm = depth_to_millimetres(depth)
        if depth_mm.ndim != 2:
            raise ValueError(f'depth must be [H, W], got {depth_mm.shape}')
        T = np.full((4, 4), np.nan) if T_world_cam is None else np.asarray(T_world_cam)
        if T.shape != (4, 4):
            raise ValueError(f'pose must be [4, 4], got {T.shape}')
        atomic_write(self.frame_path(index, 'color'), color)
        atomic_write(self.frame_path(index, 'depth'),
                     _encode('.png', depth_mm, [cv2.IMWRITE_PNG_COMPRESSION, 1]))
        atomic_write(self.frame_path(index, 'pose'), matrix_text(T))


class ScanNetScene:
    """Read one scene.

    Frames are the ``frame-N.color.jpg|jpeg|png`` files (any digit count); a frame's depth and
    pose files share its colour file's ``frame-N`` stem. When one frame number has several
    colour files (a mirror, another digit count) the png is read, else the first name in order.

    :param scene_dir: the scene folder (holding ``sensor_data/`` and ``intrinsic/``).
    :raises ValueError: when the folder is not a ScanNet scene or has no frame.
    """

    def __init__(self, scene_dir: Path) -> None:
        self.scene_dir = Path(scene_dir)
        self.sensor_dir = self.scene_dir / 'sensor_data'
        if not self.sensor_dir.is_dir():
            raise ValueError(f'{self.scene_dir} is not a ScanNet scene: no sensor_data/ folder')
        found: dict[int, tuple[bool, str]] = {}
        for entry in os.listdir(self.sensor_dir):
            match = _FRAME_RE.match(entry)
            if match:
                # One frame may exist several times; count it once, prefer the png.
                frame_id, rank = int(match.group(1)), (match.group(2) != 'png', entry)
                found[frame_id] = min(found.get(frame_id, rank), rank)
        if not found:
            raise ValueError(f'{self.sensor_dir} holds no frame-N.color.jpg|jpeg|png file')
        self.frame_ids = sorted(found)
        self._color_files = {fid: entry for fid, (_, entry) in found.items()}

    @property
    def name(self) -> str:
        """The scene name (its folder name)."""
        return self.scene_dir.name

    def __len__(self) -> int:
        return len(self.frame_ids)

    @property
    def has_intrinsics(self) -> bool:
        """Whether the scene has depth intrinsics (exports of bags without camera_info do not)."""
        return (self.scene_dir / 'intrinsic' / 'intrinsic_depth.txt').exists()

    def _intrinsic(self, kind: str) -> np.ndarray:
        path = self.scene_dir / 'intrinsic' / f'intrinsic_{kind}.txt'
        if not path.exists():
            raise ValueError(missing_intrinsics_message(self.scene_dir, path))
        M = np.loadtxt(path)
        if M.shape not in ((4, 4), (3, 3)):
            raise ValueError(f'{path} must hold a 4x4 or 3x3 matrix, got {M.shape}')
        return M[:3, :3]

    @property
    def K_color(self) -> np.ndarray:
        """``[3, 3]`` colour intrinsics (float64)."""
        return self._intrinsic('color')

    @property
    def K_depth(self) -> np.ndarray:
        """``[3, 3]`` depth intrinsics (float64)."""
        return self._intrinsic('depth')

    def frame_stem(self, frame_id: int) -> str:
        """Return the ``frame-N`` stem that the files of ``frame_id`` share."""
        return self._color_files[frame_id].split('.color.')[0]

    def color_path(self, frame_id: int) -> Path:
        """Colour file of ``frame_id``."""
        return self.sensor_dir / self._color_files[frame_id]

    def depth_path(self, frame_id: int) -> Path:
        """Depth file of ``frame_id``."""
        return self.sensor_dir / f'{self.frame_stem(frame_id)}.depth.png'

    def pose_path(self, frame_id: int) -> Path:
        """Pose file of ``frame_id``."""
        return self.sensor_dir / f'{self.frame_stem(frame_id)}.pose.txt'

    def color(self, frame_id: int) -> np.ndarray:
        """``[H, W, 3]`` uint8 RGB of ``frame_id``."""
        path = self.color_path(frame_id)
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f'cannot decode {path}')
        return np.ascontiguousarray(bgr[..., ::-1])

    def depth_mm(self, frame_id: int) -> np.ndarray:
        """``[H, W]`` uint16 depth in millimetres of ``frame_id``."""
        path = self.depth_path(frame_id)
        depth = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if depth is None:
            raise ValueError(f'cannot read depth {path}')
        if depth.dtype != np.uint16 or depth.ndim != 2:
            raise ValueError(f'{path} is not a single-channel uint16 PNG')
        return depth

    def depth(self, frame_id: int, scale: float = 1000.0) -> np.ndarray:
        """``[H, W]`` float32 depth in metres (0 = invalid), as the official loader scales it.

        :param scale: depth PNG units per metre (ScanNet stores millimetres).
        """
        return self.depth_mm(frame_id).astype(np.float32) / np.float32(scale)

    def pose(self, frame_id: int) -> np.ndarray:
        """``[4, 4]`` float64 camera-to-world of ``frame_id`` (NaN when unknown)."""
        path = self.pose_path(frame_id)
        if not path.exists():
            raise ValueError(f'missing pose file {path}')
        T = np.loadtxt(path)
        if T.shape != (4, 4):
            raise ValueError(f'{path} must hold a 4x4 matrix, got {T.shape}')
        return T


def missing_intrinsics_message(scene_dir: Path, path: Path) -> str:
    """Say why ``path`` (an intrinsics file of ``scene_dir``) is missing and how to add it."""
    try:
        manifest = json.loads((Path(scene_dir) / MANIFEST).read_text())
        unknown = manifest['intrinsics']['known'] is False
    except (OSError, ValueError, KeyError, TypeError):
        unknown = False
    if unknown:
        return (f'{scene_dir} has no intrinsics: it was exported from a bag without '
                f'camera_info; {SUPPLY_HINT}')
    return f'missing intrinsics file {path}; {SUPPLY_HINT} (or add the file)'


def find_scenes(path: Path) -> list[Path]:
    """Scene folders under ``path``: the scene itself, ``<path>/scans/*`` or ``<path>/*``.

    :raises ValueError: when nothing under ``path`` looks like a scene.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f'{path} does not exist')
    if (path / 'sensor_data').is_dir():
        return [path]
    for base in (path / 'scans', path):
        if base.is_dir():
            scenes = sorted(p for p in base.iterdir() if (p / 'sensor_data').is_dir())
            if scenes:
                return scenes
    raise ValueError(f'no ScanNet scene (a folder with sensor_data/) under {path}')
