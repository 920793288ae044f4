"""The durable atomic writer: whole files or nothing, old content kept, temporaries removed."""

import os
from pathlib import Path

import pytest

from spann3r_model.io import atomic
from spann3r_model.io.atomic import atomic_output, atomic_write, atomic_write_text


def test_atomic_write_replaces_whole_file(tmp_path: Path) -> None:
    path = tmp_path / 'f.txt'
    atomic_write_text(path, 'first')
    atomic_write(path, b'second')
    assert path.read_bytes() == b'second'
    assert [p.name for p in tmp_path.iterdir()] == ['f.txt']


def test_failure_leaves_previous_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / 'cloud.ply'
    atomic_write(path, b'complete')
    before = path.read_bytes()
    with pytest.raises(RuntimeError):
        with atomic_output(path) as tmp:
            tmp.write_bytes(b'partial')
            raise RuntimeError('crash while writing')
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ['cloud.ply']


def test_a_writer_that_raises_leaves_no_file_at_the_destination(tmp_path: Path) -> None:
    path = tmp_path / 'new.bin'
    with pytest.raises(RuntimeError, match='writer failed'):
        with atomic_output(path) as tmp:
            tmp.write_bytes(b'half')
            raise RuntimeError('writer failed')
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_old_content_survives_a_failed_rewrite(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / 'state.json'
    atomic_write_text(path, '{"version": 1}')

    def fail_fsync(fd: int) -> None:
        raise OSError('disk full')

    monkeypatch.setattr(atomic.os, 'fsync', fail_fsync)
    with pytest.raises(OSError, match='disk full'):
        atomic_write_text(path, '{"version": 2}')
    monkeypatch.undo()
    with pytest.raises(RuntimeError):
        with atomic_output(path) as tmp:
            tmp.write_text('{"version": 3}')
            raise RuntimeError('crash before the rename')
    assert path.read_text() == '{"version": 1}'
    assert [p.name for p in tmp_path.iterdir()] == ['state.json']


def test_the_file_and_its_directory_are_fsynced_before_and_after_the_rename(
        tmp_path: Path, monkeypatch) -> None:
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(('fsync', os.path.isdir(f'/proc/self/fd/{fd}')))
        real_fsync(fd)

    def replace(src, dst) -> None:
        events.append(('replace', None))
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, 'fsync', fsync)
    monkeypatch.setattr(atomic.os, 'replace', replace)
    atomic_write(tmp_path / 'f.bin', b'data')
    assert events == [('fsync', False), ('replace', None), ('fsync', True)]


def test_missing_directories_are_created_and_permissions_follow_the_umask(tmp_path: Path) -> None:
    path = tmp_path / 'a' / 'b' / 'f.txt'
    atomic_write_text(path, 'x')
    assert path.read_text() == 'x'
    umask = os.umask(0o022)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
