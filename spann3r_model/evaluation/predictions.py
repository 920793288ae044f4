"""Saved reconstructions: our per-frame files and the official demo's ``<scene>.npy``.

Our format (written by ``spann3r-reconstruct``; one file per frame, written as produced)::

    <dir>/frames/frame-NNNNNN.npz   pts3d [S, S, 3] float32 (frame 0's camera), conf [S, S],
                                    rgb [S, S, 3] uint8, stamp, source (input index),
                                    T_world_cam [4, 4] (NaN when unknown), focal (NaN when unknown)
    <dir>/reconstruction.json       crop centre and input description

The official demo writes ``<save_path>/<scene>/<scene>.npy``: a pickled dict with ``pts_all``
``[N, S, S, 3]`` (and, unused here, ``conf_all``, ``poses_all`` ...). It is read with the
restricted unpickler of :mod:`safe_pickle`.
"""

from __future__ import annotations

from dataclasses import dataclass
import io
import json
from pathlib import Path
from typing import Optional

import numpy as np

from spann3r_model.io.atomic import atomic_write
from spann3r_model.io.safe_pickle import load_npy
from spann3r_model.results import FrameResult

FRAMES_DIR = 'frames'
INFO_FILE = 'reconstruction.json'


@dataclass
class Predictions:
    """Pointmaps of a sequence, in frame 0's camera coordinates.

    :param pts3d: ``[N, S, S, 3]`` float32.
    :param conf: ``[N, S, S]`` float32 or None.
    :param rgb: ``[N, S, S, 3]`` uint8 or None.
    :param source: ``[N]`` input indices of the frames, or None (= consecutive).
    :param poses: ``[N, 4, 4]`` estimated camera-to-frame-0 poses (NaN rows unknown), or None.
    :param crop_centre: ``image`` (ours) or ``principal`` (official datasets / demo).
    :param origin: ``ours`` or ``official``.
    """

    pts3d: np.ndarray
    conf: Optional[np.ndarray]
    rgb: Optional[np.ndarray]
    source: Optional[np.ndarray]
    poses: Optional[np.ndarray]
    crop_centre: str
    origin: str


def write_frame(directory: Path, result: FrameResult, source: int) -> Path:
    """Store one :class:`FrameResult` as ``frames/frame-NNNNNN.npz`` (atomically)."""
    buf = io.BytesIO()
    T = result.T_world_cam if result.T_world_cam is not None else np.full((4, 4), np.nan)
    np.savez(buf, pts3d=result.pts3d.astype(np.float32), conf=result.conf.astype(np.float32),
             rgb=result.rgb, stamp=np.float64(result.stamp), source=np.int64(source),
             T_world_cam=np.asarray(T, np.float64),
             focal=np.float64(np.nan if result.focal is None else result.focal))
    path = Path(directory) / FRAMES_DIR / f'frame-{result.index:06d}.npz'
    atomic_write(path, buf.getvalue())
    return path


def write_info(directory: Path, info: dict) -> None:
    """Write ``reconstruction.json``."""
    atomic_write(Path(directory) / INFO_FILE, json.dumps(info, indent=1).encode())


def _load_ours(directory: Path) -> Predictions:
    files = sorted((directory / FRAMES_DIR).glob('frame-*.npz'))
    if not files:
        raise ValueError(f'{directory / FRAMES_DIR} holds no frame-NNNNNN.npz file')
    parts: dict[str, list] = {k: [] for k in ('pts3d', 'conf', 'rgb', 'source', 'T_world_cam')}
    for f in files:
        try:
            with np.load(f, allow_pickle=False) as z:
                for k in parts:
                    parts[k].append(z[k])
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError(f'cannot read prediction {f}: {exc}') from exc
    info_path = directory / INFO_FILE
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    return Predictions(np.stack(parts['pts3d']), np.stack(parts['conf']),
                       np.stack(parts['rgb']), np.asarray(parts['source']),
                       np.stack(parts['T_world_cam']), info.get('crop_centre', 'image'), 'ours')


def _official_file(directory: Path, scene: Optional[str]) -> Optional[Path]:
    names = [scene] if scene else []
    names.append(directory.name)
    for name in names:
        for cand in (directory / name / f'{name}.npy', directory / f'{name}.npy'):
            for path in (cand, cand.with_name(cand.name + '.gz')):
                if path.exists():
                    return path
    found = sorted(directory.glob('*/*.npy')) + sorted(directory.glob('*/*.npy.gz'))
    return found[0] if len(found) == 1 else None


def load_predictions(directory: Path, scene: Optional[str] = None) -> Predictions:
    """Load ours (``frames/``) or the official demo output for ``scene`` from ``directory``.

    :raises ValueError: when nothing usable is found, or the official file is malformed.
    """
    directory = Path(directory)
    if not directory.exists():
        raise ValueError(f'predictions {directory} do not exist')
    if (directory / FRAMES_DIR).is_dir():
        return _load_ours(directory)
    path = directory if directory.is_file() else _official_file(directory, scene)
    if path is None:
        raise ValueError(f'no predictions in {directory}: expected {FRAMES_DIR}/ (ours) or '
                         f'<scene>/<scene>.npy (official demo)')
    data = load_npy(path)
    if not isinstance(data, dict) or 'pts_all' not in data:
        raise ValueError(f'{path} is not an official demo output (a dict with pts_all)')
    pts = np.asarray(data['pts_all'], dtype=np.float32)
    if pts.ndim != 4 or pts.shape[-1] != 3:
        raise ValueError(f'pts_all in {path} must be [N, H, W, 3], got {pts.shape}')
    conf = data.get('conf_all')
    images = data.get('images_all')
    rgb = None if images is None else np.clip(np.asarray(images) * 255 + 0.5, 0,
                                                 255).astype(np.uint8)
    poses = data.get('poses_all')
    return Predictions(pts, None if conf is None else np.asarray(conf, np.float32), rgb, None,
                       None if poses is None else np.asarray(poses, np.float64),
                       'principal', 'official')
