"""The ScanNet-layout reader, the official crop and the sequence sampling."""

import numpy as np
import pytest
import torch

from training.datasets.frames import crop_frame, depth_to_world_points, Frame
from training.datasets.sampling import sample_frame_window
from training.datasets.scannet import ScanNetLayout


def test_window_respects_gap_and_reversal():
    rng = np.random.default_rng(0)
    reversed_seen = forward_seen = 0
    for _ in range(300):
        picked = sample_frame_window(40, 5, 3, rng)
        assert len(set(picked)) == 5 and all(0 <= p < 40 for p in picked)
        ordered = sorted(picked)
        assert all(0 < b - a <= 3 for a, b in zip(ordered, ordered[1:]))
        if picked == ordered:
            forward_seen += 1
        else:
            assert picked == ordered[::-1]
            reversed_seen += 1
    assert reversed_seen > 100 and forward_seen > 100
    with pytest.raises(ValueError, match='cannot give'):
        sample_frame_window(3, 5, 3, rng)


def test_sample_geometry_matches_the_scene(scannet_root):
    ds = ScanNetLayout(str(scannet_root), num_frames=4, min_gap=1, max_gap=3, image_size=64,
                       sequences_per_scene=3, seed=1)
    assert len(ds) == 6
    sample = ds[4]
    assert sample['img'].shape == (4, 3, 64, 64) and sample['img'].dtype == torch.float32
    assert sample['pts3d'].shape == (4, 64, 64, 3)
    assert float(sample['img'].min()) >= -1 and float(sample['img'].max()) <= 1
    valid = sample['valid_mask']
    assert 0.85 < float(valid.float().mean()) < 1.0  # the renderer drops 5 % of the depth
    # Every valid point lies on the wall (z = 4) or the floor (y = 1.2) of the synthetic room.
    pts = sample['pts3d'][valid]
    on_plane = ((pts[:, 2] - 4.0).abs() < 0.06) | ((pts[:, 1] - 1.2).abs() < 0.06)
    assert float(on_plane.float().mean()) > 0.99
    # Reprojecting the world points with the crop's K and pose gives back the pixel grid.
    K, T = sample['camera_intrinsics'][0].double(), sample['camera_pose'][0].double()
    cam = (sample['pts3d'][0].double() - T[:3, 3]) @ T[:3, :3]
    uv = cam[..., :2] / cam[..., 2:] * torch.stack([K[0, 0], K[1, 1]]) + K[:2, 2]
    v, u = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing='ij')
    err = (uv - torch.stack([u, v], -1).double())[valid[0]].abs().max()
    assert err < 1e-3


def test_samples_are_reproducible_and_epoch_dependent(scannet_root):
    ds = ScanNetLayout(str(scannet_root), num_frames=3, min_gap=1, max_gap=4, image_size=32)
    a, b = ds[7], ds[7]
    assert all(torch.equal(a[k], b[k]) for k in a)
    ds.set_epoch(1, 1.0)
    c = ds[7]
    assert not torch.equal(a['img'], c['img'])


def test_missing_root_and_short_scenes_are_clear_errors(tmp_path, scannet_root):
    with pytest.raises(ValueError, match='does not exist'):
        ScanNetLayout(str(tmp_path / 'nothing'))
    with pytest.raises(ValueError, match='fewer than num_frames'):
        ScanNetLayout(str(scannet_root), num_frames=20)


def test_crop_matches_the_official_table():
    # The official crop of a 640x480 frame with cx = 319.5, cy = 239.5 (eval fixture, README §2).
    K = np.array([[525.0, 0, 319.5], [0, 525.0, 239.5], [0, 0, 1]])
    depth = np.ones((480, 640), np.float32)
    depth[:, 300:] = 2.0
    frame = Frame(rgb=np.zeros((480, 640, 3), np.uint8), depth=depth, K=K, T_world_cam=np.eye(4))
    out = crop_frame(frame, 224)
    assert out.crop.crop1 == (0, 0, 640, 480)
    assert out.crop.resized_wh == (298, 224) and out.crop.offset == (37, 0)
    np.testing.assert_allclose(out.K[[0, 1, 0, 1], [0, 1, 2, 2]],
                               [245.0, 245.0, 111.499985, 111.5], atol=2e-5)
    # Nearest-neighbour depth: no blended values at the step.
    assert set(np.unique(out.depth)) == {1.0, 2.0}
    pts, valid = depth_to_world_points(out.depth, out.K, np.eye(4))
    assert valid.all() and np.allclose(pts[..., 2], out.depth)


def test_worker_processes_give_the_same_samples(scannet_root):
    ds = ScanNetLayout(str(scannet_root), num_frames=3, min_gap=1, max_gap=4, image_size=32,
                       sequences_per_scene=2)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    for index, sample in enumerate(loader):
        direct = ds[index]
        assert all(torch.equal(sample[k], direct[k]) for k in direct)
