"""Durable atomic file writes: a file that exists is complete, and a failed write changes nothing.

Every write goes to a temporary file in the target's directory, which is flushed to disk
(``fsync``) and renamed over the target (atomic on POSIX); the directory is then fsynced so the
rename itself survives a power cut. A failure at any step deletes the temporary file and leaves
the previous content of the target, if any, untouched. Missing parent directories are created
(and made durable in their own parents).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
import tempfile
from typing import Iterator, Union

PathLike = Union[str, os.PathLike]


def fsync_directory(directory: PathLike) -> None:
    """Flush a directory's entries (new, renamed or removed files) to disk.

    Not every platform allows opening a directory; there this does nothing.
    """
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def make_directories(directory: PathLike) -> None:
    """Create ``directory`` and its missing parents, each made durable in its parent."""
    directory = Path(directory)
    missing = []
    while not directory.is_dir():
        missing.append(directory)
        if directory.parent == directory:
            break
        directory = directory.parent
    for created in reversed(missing):
        created.mkdir(exist_ok=True)
        fsync_directory(created.parent)


def _umask() -> int:
    # /proc tells without changing it; setting and restoring it races with other threads.
    with contextlib.suppress(OSError, ValueError):
        with open('/proc/self/status') as status:
            for line in status:
                if line.startswith('Umask:'):
                    return int(line.split()[1], 8)
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


@contextlib.contextmanager
def atomic_output(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it over ``path`` if the block succeeds.

    The caller writes the complete file to the yielded path (by name, for writers that only take
    a path). On success the file is fsynced, given the permissions a plain ``open()`` would give
    it, renamed over ``path`` and the directory fsynced; on any exception the temporary file is
    deleted and ``path`` is left as it was.

    :param path: final location of the file; missing parent directories are created.
    :return: a context manager yielding the temporary path.
    """
    path = Path(path)
    make_directories(path.parent)
    fd, tmp_name = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, 'rb+') as handle:
            os.fsync(handle.fileno())
        # mkstemp creates 0600 files; outputs are ordinary shared files.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_directory(path.parent)


def atomic_write(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably (see :func:`atomic_output`)."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: PathLike, text: str, encoding: str = 'utf-8') -> None:
    """Write ``text`` to ``path`` atomically and durably (see :func:`atomic_output`)."""
    atomic_write(path, text.encode(encoding))
