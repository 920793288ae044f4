"""TUM trajectories and transforms.json: round trips, layout, bad input, failed rewrites."""

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from spann3r_model.io import atomic
from spann3r_model.io.trajectory import read_tum, write_transforms_json, write_tum


def _poses(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    poses = np.tile(np.eye(4), (n, 1, 1))
    poses[:, :3, :3] = Rotation.from_rotvec(rng.normal(size=(n, 3))).as_matrix()
    poses[:, :3, 3] = rng.normal(size=(n, 3))
    return poses


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


def test_failure_in_a_writer_leaves_previous_file(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / 'traj.txt'
    write_tum(path, [0.0], _poses(1))
    before = path.read_bytes()

    def fail_replace(src, dst):
        raise OSError('rename failed')

    monkeypatch.setattr(atomic.os, 'replace', fail_replace)
    with pytest.raises(OSError):
        write_tum(path, [0.0, 1.0], _poses(2))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ['traj.txt']
