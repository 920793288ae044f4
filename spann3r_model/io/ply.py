"""PLY point clouds: written whole or part by part, and read back (binary little-endian).

Vertices carry ``x y z`` float32, optionally ``red green blue`` uint8 and ``confidence`` float32.
Files are written atomically (:mod:`spann3r_model.io.atomic`): readers never see a partial
file and a failure leaves any previous file untouched.
"""

from __future__ import annotations

from pathlib import Path
import shutil
import tempfile
from typing import Any, Optional

import numpy as np

from spann3r_model.io.atomic import atomic_output, atomic_write, make_directories, PathLike

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
    atomic_write(path, _ply_header(len(vertices), vertices.dtype) + vertices.tobytes())


class PlyStream:
    """Write a PLY point cloud part by part, holding none of the parts in memory.

    The vertex records go to an anonymous temporary file next to ``path`` as they come; the
    header, which must state the total count, is written in :meth:`close`, when the file is
    assembled and renamed over ``path`` (atomically, as :func:`write_ply`). The result is byte
    for byte what :func:`write_ply` writes for the concatenated parts. Used as a context
    manager, the stream is closed on success and discarded on an exception.

    :param path: output file; missing parent directories are created.
    :param rgb: every part carries ``[N, 3]`` uint8 colours.
    :param conf: every part carries ``[N]`` confidences.
    """

    def __init__(self, path: PathLike, *, rgb: bool = False, conf: bool = False) -> None:
        self.path = Path(path)
        make_directories(self.path.parent)
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
