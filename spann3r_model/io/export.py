"""Writers (and readers for round trips) of reconstruction outputs.

* PLY point clouds: binary little-endian, ``x y z`` float32, optional ``red green blue`` uint8
  and ``confidence`` float32 per vertex.
* TUM trajectories: one ``timestamp tx ty tz qx qy qz qw`` line per camera-to-world pose.
* Nerfstudio ``transforms.json`` with the fields the official demo writes.

Every file is written atomically: a temporary file in the target directory is filled, flushed
to disk and renamed over the target, so readers never see a partial file and a failure leaves
any previous file untouched.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
import shutil
import tempfile
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np
from scipy.spatial.transform import Rotation

PathLike = Union[str, os.PathLike]


@contextlib.contextmanager
def atomic_output(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` if the block succeeds.

    The caller writes the complete file to the yielded path. On success the file is fsynced and
    renamed (atomic on POSIX); on any exception it is deleted and ``path`` is left as it was.

    :param path: final location of the file; its directory must exist.
    :return: a context manager yielding the temporary path.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f'directory of {path} does not exist')
    fd, tmp_name = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, 'rb+') as handle:
            os.fsync(handle.fileno())
        # mkstemp creates 0600 files; give the result the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable; not every platform allows opening a directory.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename)."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: PathLike, text: str, encoding: str = 'utf-8') -> None:
    """Write ``text`` to ``path`` atomically (temporary file, fsync, rename)."""
    atomic_write_bytes(path, text.encode(encoding))


# --- PLY --------------------------------------------------------------------------------------

_PLY_TYPES = {
    'char': 'i1', 'int8': 'i1', 'uchar': 'u1', 'uint8': 'u1',
    'short': '<i2', 'int16': '<i2', 'ushort': '<u2', 'uint16': '<u2',
    'int': '<i4', 'int32': '<i4', 'uint': '<u4', 'uint32': '<u4',
    'float': '<f4', 'float32': '<f4', 'double': '<f8', 'float64': '<f8',
}


def _ply_dtype(rgb: bool, conf: bool) -> np.dtype:
    fields = [('x', '<f4'), ('y', '<f4'), ('z', '<f4')]
    if rgb:
        fields += [('red', 'u1'), ('green', 'u1'), ('blue', 'u1')]
    if conf:
        fields += [('confidence', '<f4')]
    return np.dtype(fields)


def _ply_vertices(xyz: np.ndarray, rgb: Optional[np.ndarray], conf: Optional[np.ndarray]
                  ) -> np.ndarray:
    """Validate one set of points and pack it into PLY vertex records.

    :return: ``[N]`` structured array whose fields are the PLY properties, in order.
    :raises ValueError: on shape or dtype mismatches or non-finite positions.
    """
    xyz = np.asarray(xyz)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f'xyz must be [N, 3], got {xyz.shape}')
    if not np.isfinite(xyz).all():
        raise ValueError('xyz contains NaN or infinite values')
    n = xyz.shape[0]
    if rgb is not None:
        rgb = np.asarray(rgb)
        if rgb.shape != (n, 3) or rgb.dtype != np.uint8:
            raise ValueError(f'rgb must be [{n}, 3] uint8, got {rgb.dtype} {rgb.shape}')
    if conf is not None:
        conf = np.asarray(conf)
        if conf.shape != (n,):
            raise ValueError(f'conf must be [{n}], got {conf.shape}')
    vertices = np.empty(n, dtype=_ply_dtype(rgb is not None, conf is not None))
    vertices['x'], vertices['y'], vertices['z'] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    if rgb is not None:
        vertices['red'], vertices['green'], vertices['blue'] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    if conf is not None:
        vertices['confidence'] = conf
    return vertices


def _ply_header(n: int, dtype: np.dtype) -> bytes:
    names = {'<f4': 'float', '|u1': 'uchar'}
    header = ['ply', 'format binary_little_endian 1.0', f'element vertex {n}']
    header += [f'property {names[dtype[name].str]} {name}' for name in dtype.names]
    header += ['end_header']
    return ('\n'.join(header) + '\n').encode('ascii')


def write_ply(path: PathLike, xyz: np.ndarray, rgb: Optional[np.ndarray] = None,
              conf: Optional[np.ndarray] = None) -> None:
    """Write a binary little-endian PLY point cloud atomically.

    :param path: output file.
    :param xyz: ``[N, 3]`` positions (stored as float32).
    :param rgb: optional ``[N, 3]`` uint8 colours.
    :param conf: optional ``[N]`` confidences (stored as float32, property ``confidence``).
    :raises ValueError: on shape or dtype mismatches or non-finite positions.
    """
    vertices = _ply_vertices(xyz, rgb, conf)
    atomic_write_bytes(path, _ply_header(len(vertices), vertices.dtype) + vertices.tobytes())


class PlyStream:
    """Write a PLY point cloud part by part, holding none of the parts in memory.

    The vertex records go to an anonymous temporary file next to ``path`` as they come; the
    header, which must state the total count, is written in :meth:`close`, when the file is
    assembled and renamed over ``path`` (atomically, as :func:`write_ply`). The result is byte
    for byte what :func:`write_ply` writes for the concatenated parts. Used as a context
    manager, the stream is closed on success and discarded on an exception.

    :param path: output file; its directory must exist.
    :param rgb: every part carries ``[N, 3]`` uint8 colours.
    :param conf: every part carries ``[N]`` confidences.
    """

    def __init__(self, path: PathLike, *, rgb: bool = False, conf: bool = False) -> None:
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise ValueError(f'directory of {self.path} does not exist')
        self._rgb, self._conf = rgb, conf
        self._dtype = _ply_dtype(rgb, conf)
        self._body = tempfile.TemporaryFile(dir=self.path.parent)
        self.count = 0

    def append(self, xyz: np.ndarray, rgb: Optional[np.ndarray] = None,
               conf: Optional[np.ndarray] = None) -> None:
        """Add points (the same checks as :func:`write_ply`).

        :param xyz: ``[N, 3]`` positions.
        :param rgb: ``[N, 3]`` uint8 colours, exactly when the stream was opened with ``rgb``.
        :param conf: ``[N]`` confidences, exactly when the stream was opened with ``conf``.
        :raises ValueError: on bad input, or after :meth:`close`.
        """
        if self._body.closed:
            raise ValueError(f'PLY stream {self.path} is closed')
        if (rgb is not None) != self._rgb or (conf is not None) != self._conf:
            raise ValueError(f'PLY stream {self.path} takes rgb={self._rgb}, conf={self._conf}')
        vertices = _ply_vertices(xyz, rgb, conf)
        self._body.write(vertices.tobytes())
        self.count += len(vertices)

    def close(self) -> None:
        """Write the file: header, then the records in the order they were appended."""
        if self._body.closed:
            return
        try:
            self._body.seek(0)
            with atomic_output(self.path) as tmp, open(tmp, 'wb') as handle:
                handle.write(_ply_header(self.count, self._dtype))
                shutil.copyfileobj(self._body, handle, 1 << 20)
        finally:
            self._body.close()

    def discard(self) -> None:
        """Drop what was appended; ``path`` is left as it was."""
        self._body.close()

    def __enter__(self) -> 'PlyStream':
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()


def read_ply(path: PathLike) -> dict[str, np.ndarray]:
    """Read a binary little-endian PLY vertex list.

    :param path: PLY file (only the ``vertex`` element is read; it must come first).
    :return: ``{'xyz': [N, 3] float32}`` plus ``'rgb'`` ``[N, 3]`` uint8 and ``'conf'`` ``[N]``
        float32 when present, and every vertex property by name under ``'properties'``.
    :raises ValueError: for files that are not binary little-endian PLY or are truncated.
    """
    data = Path(path).read_bytes()
    end = data.find(b'end_header\n')
    if not data.startswith(b'ply\n') or end < 0:
        raise ValueError(f'{path}: not a PLY file')
    lines = data[:end].decode('ascii', errors='replace').splitlines()
    body = data[end + len(b'end_header\n'):]
    if 'format binary_little_endian 1.0' not in lines:
        raise ValueError(f'{path}: only binary_little_endian PLY is supported')
    count, fields, in_vertex = None, [], False
    for line in lines[1:]:
        parts = line.split()
        if not parts or parts[0] in ('comment', 'obj_info', 'format'):
            continue
        if parts[0] == 'element':
            if count is not None and in_vertex:
                break
            in_vertex = parts[1] == 'vertex'
            if not in_vertex:
                raise ValueError(f'{path}: the vertex element must come first')
            count = int(parts[2])
        elif parts[0] == 'property' and in_vertex:
            if parts[1] == 'list' or parts[1] not in _PLY_TYPES:
                raise ValueError(f'{path}: unsupported vertex property {line!r}')
            fields.append((parts[2], _PLY_TYPES[parts[1]]))
    if count is None or not fields:
        raise ValueError(f'{path}: no vertex element')
    dtype = np.dtype(fields)
    if len(body) < count * dtype.itemsize:
        raise ValueError(f'{path}: truncated ({len(body)} bytes for {count} vertices)')
    vertices = np.frombuffer(body, dtype=dtype, count=count)
    names = dtype.names
    if not {'x', 'y', 'z'} <= set(names):
        raise ValueError(f'{path}: vertices have no x, y, z')
    out = {'xyz': np.stack([vertices[c] for c in 'xyz'], axis=1).astype(np.float32)}
    if {'red', 'green', 'blue'} <= set(names):
        out['rgb'] = np.stack([vertices[c] for c in ('red', 'green', 'blue')], axis=1)
        out['rgb'] = out['rgb'].astype(np.uint8)
    if 'confidence' in names:
        out['conf'] = vertices['confidence'].astype(np.float32)
    out['properties'] = {name: np.array(vertices[name]) for name in names}
    return out


# --- trajectories -----------------------------------------------------------------------------

def _check_poses(T_world_cams: np.ndarray) -> np.ndarray:
    poses = np.asarray(T_world_cams, dtype=np.float64)
    if poses.ndim != 3 or poses.shape[1:] != (4, 4):
        raise ValueError(f'poses must be [N, 4, 4], got {poses.shape}')
    if not np.isfinite(poses).all():
        raise ValueError('poses contain NaN or infinite values')
    return poses


def write_tum(path: PathLike, stamps: Sequence[float], T_world_cams: np.ndarray) -> None:
    """Write a TUM RGB-D trajectory (``timestamp tx ty tz qx qy qz qw``) atomically.

    :param path: output file.
    :param stamps: ``[N]`` timestamps in seconds.
    :param T_world_cams: ``[N, 4, 4]`` camera-to-world poses.
    """
    poses = _check_poses(T_world_cams)
    stamps = np.asarray(stamps, dtype=np.float64)
    if stamps.shape != (poses.shape[0],):
        raise ValueError(f'{stamps.shape[0] if stamps.ndim else 1} stamps for '
                         f'{poses.shape[0]} poses')
    lines = ['# timestamp tx ty tz qx qy qz qw']
    if len(poses):
        quats = Rotation.from_matrix(poses[:, :3, :3]).as_quat()  # x, y, z, w
        for stamp, pose, quat in zip(stamps, poses, quats):
            values = [*pose[:3, 3], *quat]
            lines.append(f'{stamp:.9f} ' + ' '.join(f'{v:.9g}' for v in values))
    atomic_write_text(path, '\n'.join(lines) + '\n')


def read_tum(path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a TUM trajectory.

    :return: ``([N] stamps, [N, 4, 4] camera-to-world poses)``.
    :raises ValueError: on malformed lines (the message names the line).
    """
    stamps, poses = [], []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith('#'):
            continue
        parts = line.split()
        if len(parts) != 8:
            raise ValueError(f'{path}:{number}: expected 8 values, got {len(parts)}')
        values = [float(p) for p in parts]
        pose = np.eye(4)
        pose[:3, :3] = Rotation.from_quat(values[4:8]).as_matrix()
        pose[:3, 3] = values[1:4]
        stamps.append(values[0])
        poses.append(pose)
    return np.asarray(stamps, dtype=np.float64), np.asarray(poses).reshape(-1, 4, 4)


def cv_to_gl_pose(T_world_cam: np.ndarray) -> np.ndarray:
    """Return the pose with the camera's y and z axes flipped (OpenCV to OpenGL convention)."""
    pose = np.array(T_world_cam, dtype=np.float64, copy=True)
    pose[:3, 1:3] *= -1.0
    return pose


def write_transforms_json(path: PathLike, *, width: int, height: int, focal: float,
                          T_world_cams: np.ndarray, file_paths: Optional[Sequence[str]] = None,
                          ply_file_path: Optional[str] = None,
                          principal_point: Optional[tuple[float, float]] = None) -> dict[str, Any]:
    """Write a Nerfstudio ``transforms.json`` as the official demo does, atomically.

    Poses are given in the OpenCV convention (camera-to-world, z forward, y down) and written
    in the OpenGL convention Nerfstudio expects (y and z axes of the camera negated).

    :param path: output file.
    :param width: image width in pixels (``w``).
    :param height: image height in pixels (``h``).
    :param focal: focal length in pixels (``fl_x`` = ``fl_y``).
    :param T_world_cams: ``[N, 4, 4]`` camera-to-world poses (OpenCV convention).
    :param file_paths: image path of each frame; defaults to ``imgs/img_0000.png`` and so on.
    :param ply_file_path: point cloud to reference (``ply_file_path``), if any.
    :param principal_point: ``(cx, cy)``; defaults to ``(width / 2, height / 2)``.
    :return: the written dictionary.
    """
    poses = _check_poses(T_world_cams)
    if width <= 0 or height <= 0 or not np.isfinite(focal) or focal <= 0:
        raise ValueError(f'bad camera: {width}x{height}, focal {focal}')
    if file_paths is not None and len(file_paths) != len(poses):
        raise ValueError(f'{len(file_paths)} file paths for {len(poses)} poses')
    cx, cy = principal_point if principal_point is not None else (width / 2, height / 2)
    content: dict[str, Any] = {
        'w': int(width), 'h': int(height), 'fl_x': float(focal), 'fl_y': float(focal),
        'cx': float(cx), 'cy': float(cy), 'k1': 0, 'k2': 0, 'p1': 0, 'p2': 0,
        'camera_model': 'OPENCV',
    }
    content['frames'] = [
        {'file_path': file_paths[i] if file_paths is not None else f'imgs/img_{i:04d}.png',
         'transform_matrix': cv_to_gl_pose(pose).tolist()}
        for i, pose in enumerate(poses)
    ]
    if ply_file_path is not None:
        content['ply_file_path'] = ply_file_path
    atomic_write_text(path, json.dumps(content, indent=4) + '\n')
    return content
