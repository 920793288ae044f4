"""PLY writers and reader: round trips, streaming, bad input and atomic replacement."""

from pathlib import Path

import numpy as np
import pytest

from spann3r_model.io.ply import PlyStream, read_ply, write_ply


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


def test_ply_writers_create_missing_directories(tmp_path: Path) -> None:
    write_ply(tmp_path / 'a' / 'b' / 'whole.ply', np.ones((2, 3)))
    with PlyStream(tmp_path / 'c' / 'streamed.ply') as stream:
        stream.append(np.ones((2, 3)))
    assert read_ply(tmp_path / 'a' / 'b' / 'whole.ply')['xyz'].shape == (2, 3)
    assert read_ply(tmp_path / 'c' / 'streamed.ply')['xyz'].shape == (2, 3)
