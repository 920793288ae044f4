"""Persist a live reconstruction (memory, map, trajectory, frame of reference) and resume it.

A saved session is a directory with two files, each written durably
(:mod:`spann3r_model.io.atomic`) into a temporary sibling directory that is then renamed into
place, so a crash never leaves a half-written session behind:

* ``tensors.safetensors``: the streaming session's memory tensors (prefix ``session.``), the
  voxel map's state (prefix ``map.``) and the trajectory (``trajectory.stamps`` ``[N]``,
  ``trajectory.poses`` ``[N, 4, 4]``, map frame).
* ``session.json``: format version, the session's own metadata, the identity of the model
  (architecture and a SHA-256 of the checkpoint file) and of every setting that changes what the
  memory means, the map frame name and convention, and the current segment's Sim(3).

Resuming refuses a session whose identity differs from the running node's, naming each field.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
import shutil
import tempfile
import threading
from typing import Any, Optional

import numpy as np
import safetensors.torch
import torch

from spann3r_model.io.atomic import (
    atomic_output,
    atomic_write_text,
    fsync_directory,
    make_directories,
)

FORMAT_VERSION = 1
TENSORS = 'tensors.safetensors'
META = 'session.json'
#: NodeConfig fields that must match for a saved memory to be meaningful.
IDENTITY_FIELDS = ('image_size', 'work_mem_size', 'long_mem_size', 'attn_thresh', 'sim_thresh',
                   'map_voxel_size', 'map_frame')


def file_sha256(path: os.PathLike, chunk: int = 1 << 22) -> str:
    """Return the hex SHA-256 of a file (streamed)."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        while True:
            block = f.read(chunk)
            if not block:
                return digest.hexdigest()
            digest.update(block)


def identity(model_config: dict[str, Any], checkpoint_sha256: str,
             node_config: Any) -> dict[str, Any]:
    """Return what a resumed session must agree on with the running node."""
    ident = {'model_config': model_config, 'checkpoint_sha256': checkpoint_sha256}
    ident.update({name: getattr(node_config, name) for name in IDENTITY_FIELDS})
    return ident


def _to_tensor(value: Any) -> torch.Tensor:
    tensor = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.asarray(value))
    return tensor.detach().cpu().contiguous()


def save(directory: os.PathLike, *, session_tensors: dict[str, Any], session_meta: dict,
         map_state: dict[str, Any], trajectory: list[tuple[float, np.ndarray]],
         ident: dict[str, Any], extra: Optional[dict[str, Any]] = None) -> Path:
    """Write a session directory atomically.

    :param directory: final directory (must not exist yet).
    :param session_tensors: ``StreamingSession.state_dict()``.
    :param session_meta: ``StreamingSession.metadata()`` (JSON-serialisable).
    :param map_state: ``VoxelMap.state_dict()`` (arrays or tensors).
    :param trajectory: ``[(stamp, T_map_cam [4, 4])]``.
    :param ident: see :func:`identity`.
    :param extra: more JSON fields (frame convention, segment transform...).
    :return: the directory.
    """
    final = Path(directory)
    if final.exists():
        raise ValueError(f'session directory {final} already exists')
    tensors: dict[str, torch.Tensor] = {}
    for prefix, state in (('session.', session_tensors), ('map.', map_state)):
        for key, value in state.items():
            tensors[prefix + key] = _to_tensor(value)
    stamps = np.array([s for s, _ in trajectory], np.float64)
    poses = np.array([T for _, T in trajectory], np.float64).reshape(-1, 4, 4)
    tensors['trajectory.stamps'] = torch.from_numpy(stamps)
    tensors['trajectory.poses'] = torch.from_numpy(poses)
    meta = {'format_version': FORMAT_VERSION, 'identity': ident, 'session': session_meta,
            'extra': extra or {}}
    text = json.dumps(meta, indent=2, sort_keys=True)
    make_directories(final.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f'.{final.name}.', dir=final.parent))
    try:
        with atomic_output(tmp / TENSORS) as tensors_path:
            safetensors.torch.save_file(tensors, str(tensors_path))
        atomic_write_text(tmp / META, text)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_directory(final.parent)
    return final


def load(directory: os.PathLike, expected_identity: dict[str, Any]) -> dict[str, Any]:
    """Read a session directory and check that it belongs to the running model and settings.

    :param directory: a directory written by :func:`save`.
    :param expected_identity: the running node's :func:`identity`.
    :return: ``{'session_tensors', 'session_meta', 'map_state', 'trajectory', 'extra'}``.
    :raises ValueError: when files are missing or corrupt, or the identity differs.
    """
    path = Path(os.path.expanduser(str(directory)))
    for name in (TENSORS, META):
        if not (path / name).is_file():
            raise ValueError(f'resume_from {path}: {name} is missing (not a saved session)')
    try:
        meta = json.loads((path / META).read_text())
        tensors = safetensors.torch.load_file(str(path / TENSORS))
    except Exception as exc:
        raise ValueError(f'resume_from {path}: cannot read the session: {exc}') from None
    if meta.get('format_version') != FORMAT_VERSION:
        raise ValueError(f'resume_from {path}: format version {meta.get("format_version")} '
                         f'is not {FORMAT_VERSION}')
    saved = meta.get('identity', {})
    # Compare through JSON so tuples and lists are equal when their contents are.
    expected = json.loads(json.dumps(expected_identity))
    diffs = [f'{key}: saved {saved.get(key)!r}, running {expected[key]!r}'
             for key in sorted(expected) if saved.get(key) != expected[key]]
    if diffs:
        raise ValueError(f'resume_from {path}: the session was saved by a different model or '
                         'configuration; ' + '; '.join(diffs))
    stamps = tensors.pop('trajectory.stamps').numpy()
    poses = tensors.pop('trajectory.poses').numpy()
    return {
        'session_tensors': {k[len('session.'):]: v for k, v in tensors.items()
                            if k.startswith('session.')},
        'map_state': {k[len('map.'):]: v for k, v in tensors.items() if k.startswith('map.')},
        'session_meta': meta.get('session', {}),
        'trajectory': [(float(s), T) for s, T in zip(stamps, poses)],
        'extra': meta.get('extra', {}),
    }


class FileDigest:
    """The SHA-256 of a file, computed once on a background thread from construction on.

    Hashing a multi-GB checkpoint takes seconds; starting it when the file is loaded keeps it out
    of the service callbacks that need it later (:meth:`result` waits only if it is not done).

    :param path: the file.
    """

    def __init__(self, path: os.PathLike) -> None:
        self._path = path
        self._done = threading.Event()
        self._value: Optional[str] = None
        self._error: Optional[BaseException] = None
        threading.Thread(target=self._run, name='checkpoint-sha256', daemon=True).start()

    def _run(self) -> None:
        try:
            self._value = file_sha256(self._path)
        except BaseException as exc:  # re-raised by result() in the caller's thread
            self._error = exc
        finally:
            self._done.set()

    @property
    def done(self) -> bool:
        """True once the hash (or its failure) is known."""
        return self._done.is_set()

    def result(self, timeout: Optional[float] = None) -> str:
        """Return the hex digest, waiting for it up to ``timeout`` seconds (None: no limit).

        :raises TimeoutError: when it is not ready in time.
        :raises OSError: when the file could not be read.
        """
        if not self._done.wait(timeout):
            raise TimeoutError(f'the SHA-256 of {self._path} is not ready yet')
        if self._error is not None:
            raise self._error
        return self._value
