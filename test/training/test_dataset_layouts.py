"""Every official layout: tiny directories written here, read back through the registry."""

import os
from pathlib import Path
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from training_scenes import (
    consistent_with_render,
    render_sequence,
    write_arkitscenes,
    write_blendedmvs,
    write_co3d,
    write_scannetpp,
)

from training.datasets.co3d import _uniform_combination
from training.datasets.registry import build_dataset, DATASETS

DEFAULTS = {'num_frames': 4, 'image_size': 32, 'seed': 0}
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope='module')
def frames():
    return render_sequence(8, 96, 72, seed=4)


def _check(ds, frames, n=3):
    assert len(ds) > 0
    for index in range(n):
        sample = ds[index]
        assert sample['img'].shape == (4, 3, 32, 32)
        assert bool(sample['valid_mask'].any(dim=(1, 2)).all())
        assert consistent_with_render(sample, frames) > 0.99


@pytest.mark.parametrize('kind, writer, args', [
    ('scannetpp', write_scannetpp, {'min_gap': 1, 'max_gap': 3}),
    ('arkitscenes', write_arkitscenes, {'min_gap': 1, 'max_gap': 3}),
    ('co3d', write_co3d, {'use_comb': False, 'mask_bg': False, 'min_gap': 1, 'max_gap': 3}),
    ('blendedmvs', write_blendedmvs, {}),
])
def test_layout_gives_consistent_geometry(tmp_path, frames, kind, writer, args):
    root = writer(tmp_path / kind, frames)
    ds = build_dataset(kind, {'root': str(root), 'sequences_per_scene': 4, **args},
                       defaults=DEFAULTS)
    _check(ds, frames)


def test_co3d_masks_and_combinations(tmp_path, frames):
    root = write_co3d(tmp_path / 'co3d', frames)
    ds = build_dataset('co3d', {'root': str(root), 'use_comb': True, 'mask_bg': True,
                                'sequences_per_scene': 2}, defaults=DEFAULTS)
    sample = ds[0]
    # The left quarter of every input frame is background: masked out after the crop.
    assert not bool(sample['valid_mask'][:, :, :4].any())
    assert consistent_with_render(sample, frames) > 0.99
    rng = np.random.default_rng(0)
    for _ in range(50):
        picked = _uniform_combination(5, (5, 10, 15, 20, 25, 30), rng)
        gaps = np.diff(picked)
        assert all(0 < g <= 30 and g % 5 == 0 for g in gaps) and picked[-1] < 100


def test_registry_rejects_unknown_names_and_arguments(tmp_path, frames):
    with pytest.raises(ValueError, match='unknown dataset type'):
        build_dataset('kitti', {}, defaults=DEFAULTS)
    root = write_scannetpp(tmp_path / 'pp', frames)
    with pytest.raises(ValueError, match='does not take'):
        build_dataset('scannetpp', {'root': str(root), 'colour': 1}, defaults=DEFAULTS)
    assert set(DATASETS) == {'scannet', 'scannetpp', 'arkitscenes', 'co3d', 'blendedmvs',
                             'habitat'}


def test_habitat_layout_with_exr_depth(tmp_path):
    # OpenCV decides once per process whether it reads EXR, so this runs in a fresh one.
    code = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from training_scenes import consistent_with_render, render_sequence, write_habitat
from training.datasets.registry import build_dataset
frames = render_sequence(4, 96, 72, seed=2)
root = write_habitat({str(tmp_path / 'habitat')!r}, frames)
ds = build_dataset('habitat', {{'root': str(root)}},
                   defaults={{'num_frames': 4, 'image_size': 32, 'seed': 0}})
assert len(ds) == 200, len(ds)
score = consistent_with_render(ds[1], frames)
assert score > 0.99, score
print('ok')
"""
    env = {**os.environ, 'OPENCV_IO_ENABLE_OPENEXR': '1', 'PYTHONPATH': str(REPO)}
    done = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == 'ok', done.stderr[-2000:]


def test_co3d_replaces_a_frame_without_valid_depth(tmp_path, frames):
    root = write_co3d(tmp_path / 'co3d', frames)
    empty = np.zeros(frames[0][1].shape, np.uint8)
    mask_dir = root / 'apple' / '110_13051_23361' / 'masks'
    for i in (2, 3):
        cv2.imwrite(str(mask_dir / f'frame{i:06d}.png'), empty)
    ds = build_dataset('co3d', {'root': str(root), 'use_comb': False, 'mask_bg': True,
                                'min_gap': 1, 'max_gap': 2, 'sequences_per_scene': 6},
                       defaults=DEFAULTS)
    for index in range(6):
        sample = ds[index]
        assert bool(sample['valid_mask'].any(dim=(1, 2)).all())
        # Frames 2 and 3 never appear: their depth is fully masked out.
        assert consistent_with_render(sample, frames) > 0.99
        poses = sample['camera_pose'][:, :3, 3]
        for i in (2, 3):
            assert not bool((poses - torch.from_numpy(frames[i][3][:3, 3]).float())
                            .norm(dim=1).lt(1e-5).any())
