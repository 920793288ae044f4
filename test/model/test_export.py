"""PLY, TUM and transforms.json writers: round trips and atomic replacement."""

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from spann3r_model.io import export
from spann3r_model.io.export import (
    atomic_output,
    atomic_write_bytes,
    atomic_write_text,
    PlyStream,
    read_ply,
    read_tum,
    write_ply,
    write_transforms_json,
    write_tum,
)


def _poses(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    poses = np.tile(np.eye(4), (n, 1, 1))
    poses[:, :3, :3] = Rotation.from_rotvec(rng.normal(size=(n, 3))).as_matrix()
    poses[:, :3, 3] = rng.normal(size=(n, 3))
    return poses


def test_ply_round_trip_with_colour_and_confidence(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(1000, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, (1000, 3), dtype=np.uint8)
    conf = rng.uniform(1, 5, 1000).astype(np.float32)
    path = tmp_path / 'cloud.ply'
    write_ply(path, xyz, rgb, conf)
    data = path.read_bytes()
    header = data[:data.index(b'end_header\n')].decode()
    assert 'format binary_little_endian 1.0' in header and 'element vertex 1000' in header
    assert 'property float confidence' in header and 'property uchar red' in header
    # 3 floats + 3 bytes + 1 float per vertex, nothing else after the header.
    assert len(data) - len(header) - len('end_header\n') == 1000 * 19
    back = read_ply(path)
    np.testing.assert_array_equal(back['xyz'], xyz)
    np.testing.assert_array_equal(back['rgb'], rgb)
    np.testing.assert_array_equal(back['conf'], conf)


def test_ply_positions_only_and_empty(tmp_path: Path) -> None:
    xyz = np.arange(12, dtype=np.float64).reshape(4, 3)
    write_ply(tmp_path / 'a.ply', xyz)
    back = read_ply(tmp_path / 'a.ply')
    np.testing.assert_array_equal(back['xyz'], xyz.astype(np.float32))
    assert 'rgb' not in back and 'conf' not in back
    write_ply(tmp_path / 'empty.ply', np.zeros((0, 3)))
    assert read_ply(tmp_path / 'empty.ply')['xyz'].shape == (0, 3)


def test_ply_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match='xyz'):
        write_ply(tmp_path / 'a.ply', np.zeros((4, 2)))
    with pytest.raises(ValueError, match='NaN'):
        write_ply(tmp_path / 'a.ply', np.full((1, 3), np.nan))
    with pytest.raises(ValueError, match='rgb'):
        write_ply(tmp_path / 'a.ply', np.zeros((2, 3)), rgb=np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match='conf'):
        write_ply(tmp_path / 'a.ply', np.zeros((2, 3)), conf=np.zeros(3))
    assert list(tmp_path.iterdir()) == []
    (tmp_path / 'ascii.ply').write_text('ply\nformat ascii 1.0\nelement vertex 0\nend_header\n')
    with pytest.raises(ValueError, match='binary_little_endian'):
        read_ply(tmp_path / 'ascii.ply')
    write_ply(tmp_path / 'cut.ply', np.ones((10, 3)))
    data = (tmp_path / 'cut.ply').read_bytes()
    (tmp_path / 'cut.ply').write_bytes(data[:-5])
    with pytest.raises(ValueError, match='truncated'):
        read_ply(tmp_path / 'cut.ply')


def test_ply_stream_writes_what_write_ply_writes_for_the_concatenation(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    parts = [(rng.normal(size=(n, 3)), rng.integers(0, 256, (n, 3), dtype=np.uint8),
              rng.uniform(1, 5, n).astype(np.float32)) for n in (7, 0, 300)]
    write_ply(tmp_path / 'whole.ply', *(np.concatenate(c) for c in zip(*parts)))
    with PlyStream(tmp_path / 'streamed.ply', rgb=True, conf=True) as stream:
        for xyz, rgb, conf in parts:
            stream.append(xyz, rgb, conf)
        assert not (tmp_path / 'streamed.ply').exists()
    assert stream.count == 307
    assert (tmp_path / 'streamed.ply').read_bytes() == (tmp_path / 'whole.ply').read_bytes()
    with pytest.raises(ValueError, match='closed'):
        stream.append(np.zeros((1, 3)), np.zeros((1, 3), np.uint8), np.ones(1))
    with PlyStream(tmp_path / 'empty.ply') as stream:
        pass
    assert read_ply(tmp_path / 'empty.ply')['xyz'].shape == (0, 3)
    assert sorted(f.name for f in tmp_path.iterdir()) == ['empty.ply', 'streamed.ply',
                                                          'whole.ply']


def test_ply_stream_rejects_bad_parts_and_discards_on_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match='does not exist'):
        PlyStream(tmp_path / 'missing' / 'a.ply')
    stream = PlyStream(tmp_path / 'a.ply', rgb=True)
    with pytest.raises(ValueError, match='rgb=True'):
        stream.append(np.zeros((2, 3)))
    with pytest.raises(ValueError, match='NaN'):
        stream.append(np.full((1, 3), np.nan), np.zeros((1, 3), np.uint8))
    stream.discard()
    with pytest.raises(RuntimeError, match='stop'):
        with PlyStream(tmp_path / 'b.ply') as stream:
            stream.append(np.ones((4, 3)))
            raise RuntimeError('stop')
    assert list(tmp_path.iterdir()) == []


def test_tum_round_trip(tmp_path: Path) -> None:
    poses = _poses(5)
    stamps = 1700000000.0 + np.arange(5) * 0.033
    write_tum(tmp_path / 'traj.txt', stamps, poses)
    lines = (tmp_path / 'traj.txt').read_text().splitlines()
    assert lines[0].startswith('#') and len(lines) == 6 and len(lines[1].split()) == 8
    back_stamps, back_poses = read_tum(tmp_path / 'traj.txt')
    np.testing.assert_allclose(back_stamps, stamps, atol=1e-6)
    np.testing.assert_allclose(back_poses, poses, atol=1e-7)


def test_tum_quaternion_order_is_xyzw(tmp_path: Path) -> None:
    pose = np.eye(4)
    pose[:3, :3] = Rotation.from_euler('z', 90, degrees=True).as_matrix()
    write_tum(tmp_path / 't.txt', [0.0], pose[None])
    values = [float(v) for v in (tmp_path / 't.txt').read_text().splitlines()[1].split()]
    np.testing.assert_allclose(values[4:], [0, 0, np.sqrt(0.5), np.sqrt(0.5)], atol=1e-9)


def test_tum_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match='stamps'):
        write_tum(tmp_path / 't.txt', [0.0, 1.0], _poses(3))
    with pytest.raises(ValueError, match=r'\[N, 4, 4\]'):
        write_tum(tmp_path / 't.txt', [0.0], np.eye(4))
    (tmp_path / 'bad.txt').write_text('# header\n1.0 2.0 3.0\n')
    with pytest.raises(ValueError, match='bad.txt:2'):
        read_tum(tmp_path / 'bad.txt')


def test_transforms_json_matches_the_official_layout(tmp_path: Path) -> None:
    poses = _poses(3)
    content = write_transforms_json(tmp_path / 'transforms.json', width=224, height=224,
                                    focal=210.5, T_world_cams=poses, ply_file_path='scene.ply')
    loaded = json.loads((tmp_path / 'transforms.json').read_text())
    assert loaded == content
    assert {k: loaded[k] for k in ('w', 'h', 'fl_x', 'fl_y', 'cx', 'cy', 'camera_model')} == {
        'w': 224, 'h': 224, 'fl_x': 210.5, 'fl_y': 210.5, 'cx': 112.0, 'cy': 112.0,
        'camera_model': 'OPENCV'}
    assert all(loaded[k] == 0 for k in ('k1', 'k2', 'p1', 'p2'))
    assert loaded['ply_file_path'] == 'scene.ply'
    assert [f['file_path'] for f in loaded['frames']] == [
        'imgs/img_0000.png', 'imgs/img_0001.png', 'imgs/img_0002.png']
    gl = np.array(loaded['frames'][1]['transform_matrix'])
    # OpenGL camera: x kept, y and z flipped, position unchanged.
    np.testing.assert_allclose(gl[:3, 0], poses[1][:3, 0])
    np.testing.assert_allclose(gl[:3, 1:3], -poses[1][:3, 1:3])
    np.testing.assert_allclose(gl[:, 3], poses[1][:, 3])
    with pytest.raises(ValueError, match='file paths'):
        write_transforms_json(tmp_path / 't.json', width=4, height=4, focal=1.0,
                              T_world_cams=poses, file_paths=['a'])


def test_atomic_write_replaces_whole_file(tmp_path: Path) -> None:
    path = tmp_path / 'f.txt'
    atomic_write_text(path, 'first')
    atomic_write_bytes(path, b'second')
    assert path.read_bytes() == b'second'
    assert [p.name for p in tmp_path.iterdir()] == ['f.txt']


def test_failure_leaves_previous_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / 'cloud.ply'
    write_ply(path, np.zeros((3, 3)))
    before = path.read_bytes()
    with pytest.raises(RuntimeError):
        with atomic_output(path) as tmp:
            tmp.write_bytes(b'partial')
            raise RuntimeError('crash while writing')
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ['cloud.ply']


def test_failure_in_a_writer_leaves_previous_file(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / 'traj.txt'
    write_tum(path, [0.0], _poses(1))
    before = path.read_bytes()

    def fail_replace(src, dst):
        raise OSError('rename failed')

    monkeypatch.setattr(export.os, 'replace', fail_replace)
    with pytest.raises(OSError):
        write_tum(path, [0.0, 1.0], _poses(2))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ['traj.txt']


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match='does not exist'):
        atomic_write_text(tmp_path / 'no' / 'f.txt', 'x')
