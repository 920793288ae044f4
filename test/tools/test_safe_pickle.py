"""The restricted unpickler admits NumPy data and containers, and nothing else."""

import gzip
import io
import os
import pickle

import numpy as np
import pytest

from spann3r_model.io.safe_pickle import load_npy, restricted_loads, UnsafePickleError


def _save(path, value):
    buf = io.BytesIO()
    np.save(buf, value, allow_pickle=True)
    path.write_bytes(buf.getvalue())
    return path


def test_dict_of_arrays_and_scalars_round_trips(tmp_path):
    value = {'pts_all': np.arange(24, dtype=np.float32).reshape(2, 2, 2, 3),
             'masks': np.ones((2, 2), bool), 'poses': [np.eye(4)], 'n': 3, 'f': np.float64(2.5),
             'name': 'scene', 'nested': {'a': (1, 2.0, None)}}
    loaded = load_npy(_save(tmp_path / 'p.npy', value))
    assert loaded.keys() == value.keys()
    assert np.array_equal(loaded['pts_all'], value['pts_all'])
    assert loaded['pts_all'].dtype == np.float32
    assert loaded['f'] == 2.5 and loaded['nested'] == {'a': (1, 2.0, None)}


def test_gzip_and_plain_arrays(tmp_path):
    arr = np.random.default_rng(0).normal(size=(3, 4))
    raw = _save(tmp_path / 'a.npy', arr).read_bytes()
    (tmp_path / 'a.npy.gz').write_bytes(gzip.compress(raw))
    assert np.array_equal(load_npy(tmp_path / 'a.npy.gz'), arr)
    assert np.array_equal(load_npy(tmp_path / 'a.npy'), arr)


class _Evil:
    def __reduce__(self):
        return (os.system, ('echo pwned > /dev/null',))


def test_crafted_pickle_is_refused(tmp_path):
    payload = pickle.dumps(_Evil())
    with pytest.raises(UnsafePickleError, match='system'):
        restricted_loads(payload)
    # The same payload inside a .npy object array.
    path = _save(tmp_path / 'evil.npy', {'pts_all': np.zeros(3), 'x': _Evil()})
    with pytest.raises(UnsafePickleError):
        load_npy(path)
    with pytest.raises(UnsafePickleError):
        restricted_loads(pickle.dumps({'f': eval}))


def test_truncated_and_missing_files_are_clear_errors(tmp_path):
    path = _save(tmp_path / 'p.npy', {'a': np.zeros(100)})
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match='cannot read'):
        load_npy(path)
    with pytest.raises(ValueError, match='does not exist'):
        load_npy(tmp_path / 'none.npy')
