"""The checkpoint digest is computed once, in the background, and equals a plain SHA-256."""

import hashlib

import pytest

from spann3r_ros.pipeline.session_store import FileDigest


def test_the_background_digest_equals_the_sha256_of_the_file(tmp_path):
    path = tmp_path / 'weights.bin'
    data = bytes(range(256)) * 40000
    path.write_bytes(data)
    digest = FileDigest(path)
    assert digest.result(timeout=30) == hashlib.sha256(data).hexdigest()
    assert digest.done


def test_a_missing_file_fails_when_the_digest_is_asked_for(tmp_path):
    digest = FileDigest(tmp_path / 'missing.bin')
    with pytest.raises(OSError):
        digest.result(timeout=30)
