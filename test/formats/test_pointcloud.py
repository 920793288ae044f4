"""Cloud packing: bytes from the PointCloud2 definition, buffer reuse, masks, threads."""

import struct
import sys
import threading
import tracemalloc

import numpy as np
import pytest

from spann3r_ros.formats.pointcloud import cloud_array, CLOUD_DTYPE, CloudPacker

ORDER = '<' if sys.byteorder == 'little' else '>'


def _cloud(rng, shape):
    xyz = rng.normal(size=shape + (3,)).astype(np.float32)
    rgb = rng.integers(0, 256, size=shape + (3,), dtype=np.uint8)
    conf = rng.uniform(1, 5, size=shape).astype(np.float32)
    return xyz, rgb, conf


def _expected(xyz, rgb, conf, mask=None):
    """The records written one by one with struct, straight from the field definitions."""
    xyz, rgb, conf = xyz.reshape(-1, 3), rgb.reshape(-1, 3), conf.reshape(-1)
    keep = np.ones(len(xyz), bool) if mask is None else mask.reshape(-1)
    out = b''
    for p, c, k, m in zip(xyz.tolist(), rgb.tolist(), conf.tolist(), keep.tolist()):
        if m:
            out += struct.pack(ORDER + 'fffIf', *p, (c[0] << 16) | (c[1] << 8) | c[2], k)
    return out


@pytest.mark.parametrize('mask_kind', ['none', 'half', 'all', 'empty'])
def test_packed_bytes_match_the_definition(mask_kind):
    rng = np.random.default_rng(1)
    xyz, rgb, conf = _cloud(rng, (6, 7))
    mask = {'none': None, 'half': conf > 3, 'all': np.ones((6, 7), bool),
            'empty': np.zeros((6, 7), bool)}[mask_kind]
    data, n = CloudPacker().pack(xyz, rgb, conf, mask)
    expected = _expected(xyz, rgb, conf, mask)
    assert n * 20 == len(expected) == len(data)
    assert data.typecode == 'B' and data.tobytes() == expected
    structured = cloud_array(xyz, rgb, conf, mask)
    assert structured.dtype == CLOUD_DTYPE and structured.tobytes() == expected


def test_extreme_colours_and_float64_points():
    rgb = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [1, 2, 3]],
                   np.uint8)
    xyz = np.arange(15, dtype=np.float64).reshape(5, 3) / 7.0
    conf = np.arange(5, dtype=np.float64)
    data, _ = CloudPacker().pack(xyz, rgb, conf)
    words = np.frombuffer(data.tobytes(), np.uint32).reshape(5, 5)
    assert words[:, 3].tolist() == [0xFF0000, 0x00FF00, 0x0000FF, 0xFFFFFF, 0x010203]
    floats = np.frombuffer(data.tobytes(), np.float32).reshape(5, 5)
    np.testing.assert_array_equal(floats[:, :3], xyz.astype(np.float32))
    np.testing.assert_array_equal(floats[:, 4], conf.astype(np.float32))


def test_reused_buffers_never_leak_between_calls():
    rng = np.random.default_rng(2)
    packer = CloudPacker()
    clouds = [_cloud(rng, (n,)) for n in (50, 20, 80, 5, 80)]
    masks = [c[2] > 2.5 for c in clouds]
    results = [packer.pack(*c, m) for c, m in zip(clouds, masks)]
    # Every earlier result is still intact after the buffers were rewritten by later calls.
    for (data, n), cloud, mask in zip(results, clouds, masks):
        assert data.tobytes() == _expected(*cloud, mask) and n == int(mask.sum())


def test_retain_limit_packs_large_clouds_in_temporary_buffers():
    rng = np.random.default_rng(3)
    packer = CloudPacker(retain_points=10)
    small, large = _cloud(rng, (8,)), _cloud(rng, (30,))
    packer.pack(*small)
    kept = packer._rows
    data, n = packer.pack(*large)
    assert n == 30 and data.tobytes() == _expected(*large)
    assert packer._rows is kept and len(kept) == 8
    with pytest.raises(ValueError, match='retain_points'):
        CloudPacker(retain_points=-1)


def test_steady_state_allocates_only_the_message_bytes():
    rng = np.random.default_rng(4)
    xyz, rgb, conf = _cloud(rng, (224, 224))
    mask = conf > 1.5
    packer = CloudPacker()
    packer.pack(xyz, rgb, conf, mask)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        data, n = packer.pack(xyz, rgb, conf, mask)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(data) == n * 20
    # The returned bytes and the row indices np.compress builds (8 bytes per kept point), no
    # full-size cloud on the way (unpacked, packing in fresh arrays takes three of them).
    assert peak < len(data) + 8 * n + 128 * 1024, (peak, len(data))


def test_concurrent_packing_gives_each_caller_its_own_cloud():
    packer = CloudPacker()
    errors = []

    def work(seed):
        rng = np.random.default_rng(seed)
        for _ in range(20):
            cloud = _cloud(rng, (int(rng.integers(100, 400)),))
            mask = cloud[2] > 2
            data, _ = packer.pack(*cloud, mask)
            if data.tobytes() != _expected(*cloud, mask):
                errors.append(seed)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors


@pytest.mark.parametrize('args, match', [
    ((np.zeros((3, 3)), np.zeros((2, 3), np.uint8), np.zeros(3)), 'disagree'),
    ((np.zeros((3, 3)), np.zeros((3, 3), np.uint8), np.zeros(4)), 'disagree'),
    ((np.zeros((3, 2)), np.zeros((3, 3), np.uint8), np.zeros(3)), r'\[\.\.\., 3\]'),
    ((np.zeros((3, 3)), np.zeros((3, 3), np.int64), np.zeros(3)), 'uint8'),
])
def test_inconsistent_input_is_a_value_error(args, match):
    with pytest.raises(ValueError, match=match):
        CloudPacker().pack(*args)
    with pytest.raises(ValueError, match='mask has 2 entries'):
        CloudPacker().pack(np.zeros((3, 3)), np.zeros((3, 3), np.uint8), np.zeros(3),
                           mask=np.ones(2, bool))
