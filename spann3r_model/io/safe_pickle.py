"""Load pickled ``.npy`` files (such as the official demo's output) without running foreign code.

``np.load(..., allow_pickle=True)`` executes whatever the pickle names. The unpickler here only
resolves the handful of globals that NumPy itself needs to rebuild arrays and scalars; anything
else (``os.system``, ``builtins.eval``, arbitrary classes) is refused with a ``ValueError``.
Containers (dict, list, tuple) and plain scalars need no global and are always allowed.
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path
import pickle
from typing import Any, BinaryIO

import numpy as np

_ALLOWED_GLOBALS = {
    ('numpy.core.multiarray', '_reconstruct'),
    ('numpy._core.multiarray', '_reconstruct'),
    ('numpy.core.multiarray', 'scalar'),
    ('numpy._core.multiarray', 'scalar'),
    ('numpy', 'ndarray'),
    ('numpy', 'dtype'),
    ('builtins', 'complex'),
    ('collections', 'OrderedDict'),
}


class UnsafePickleError(ValueError):
    """The pickle references something other than NumPy arrays, containers and scalars."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise UnsafePickleError(f'refusing to unpickle {module}.{name}: only NumPy arrays, '
                                'dicts, lists and scalars are allowed')


def restricted_loads(data: bytes) -> Any:
    """Unpickle ``data`` admitting only NumPy arrays, containers and scalars."""
    return _RestrictedUnpickler(io.BytesIO(data)).load()


def _read_npy(stream: BinaryIO) -> Any:
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
    else:
        raise ValueError(f'unsupported .npy format version {version}')
    if not dtype.hasobject:
        count = int(np.prod(shape)) if shape else 1
        array = np.frombuffer(stream.read(count * dtype.itemsize), dtype=dtype, count=count)
        return array.reshape(shape, order='F' if fortran else 'C').copy()
    # Object arrays are stored as one pickle of the whole array.
    return restricted_loads(stream.read())


def load_npy(path: Path) -> Any:
    """Load a ``.npy`` or ``.npy.gz`` file; object arrays go through the restricted unpickler.

    A 0-d object array (``np.save`` of a dict) is unwrapped to its content.

    :raises UnsafePickleError: when the file would need anything beyond the allowed types.
    :raises ValueError: when the file is not a readable ``.npy`` file.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f'{path} does not exist')
    opener = gzip.open if path.suffix == '.gz' else open
    try:
        with opener(path, 'rb') as f:
            value = _read_npy(f)
    except UnsafePickleError:
        raise
    except (OSError, EOFError, pickle.UnpicklingError, ValueError) as exc:
        raise ValueError(f'cannot read {path}: {exc}') from exc
    if isinstance(value, np.ndarray) and value.dtype.hasobject and value.shape == ():
        return value.item()
    return value
