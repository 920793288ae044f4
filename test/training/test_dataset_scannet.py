"""The ScanNet-layout dataset: its reader, its ground truth and the sequence sampling."""

import numpy as np
import pytest
import torch
from training_scenes import render_sequence, write_scannet_scene

from spann3r_model.data.scannet import ScanNetScene
from spann3r_model.evaluation.gt_views import load_views
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


def test_training_ground_truth_is_the_evaluation_ground_truth(scannet_root):
    # One crop and one back-projection: a training sample holds exactly what the evaluation
    # loads for the same frames.
    ds = ScanNetLayout(str(scannet_root), num_frames=8, min_gap=1, max_gap=1, image_size=64,
                       sequences_per_scene=1, color_jitter=False)
    sample = ds[0]
    scene = ScanNetScene(scannet_root / 'scans' / ds.scenes[0])
    views = load_views(scene, scene.frame_ids, size=64, centre='principal')
    assert len(views) == 8
    for i in range(8):
        pose = sample['camera_pose'][i].numpy()
        view = next(v for v in views if np.array_equal(v.T_world_cam, pose))
        assert np.array_equal(sample['pts3d'][i].numpy(), view.pts_world)
        assert np.array_equal(sample['valid_mask'][i].numpy(), view.valid)
        assert np.array_equal(sample['camera_intrinsics'][i].numpy(), view.K)
        assert np.array_equal(sample['rgb'][i].numpy(), view.rgb)


def test_frame_names_of_any_digit_count_and_jpeg_are_read(tmp_path):
    frames = render_sequence(6, 96, 72, seed=2)
    data = write_scannet_scene(tmp_path / 'root', 'scene0000_00', frames) / 'sensor_data'
    # Frame i is renamed frame-<i * 7> (no padding, or seven digits), some colour as .jpeg.
    for i in range(6):
        stem = f'frame-{i * 7}' if i % 2 else f'frame-{i * 7:07d}'
        for kind, ext in (('color', 'png'), ('depth', 'png'), ('pose', 'txt')):
            new_ext = 'jpeg' if kind == 'color' and i in (1, 4) else ext
            (data / f'frame-{i:06d}.{kind}.{ext}').rename(data / f'{stem}.{kind}.{new_ext}')
    scene = ScanNetScene(data.parent)
    assert scene.frame_ids == [0, 7, 14, 21, 28, 35]
    assert scene.color_path(7).name == 'frame-7.color.jpeg'
    assert scene.depth_path(14).name == 'frame-0000014.depth.png'
    assert np.array_equal(scene.pose(21), frames[3][3])
    ds = ScanNetLayout(str(tmp_path / 'root'), num_frames=4, min_gap=1, max_gap=2,
                       image_size=32, sequences_per_scene=2)
    assert ds.scene_frames('scene0000_00') == scene.frame_ids
    frame = ds.load_frame('scene0000_00', 7)
    assert frame.name == 'scene0000_00/frame-7'
    assert np.array_equal(frame.depth, scene.depth(7))
    assert np.array_equal(frame.K, scene.K_depth)
    assert bool(ds[1]['valid_mask'].any())


def test_one_frame_in_two_colour_files_counts_once_and_reads_the_png(tmp_path):
    frames = render_sequence(3, 96, 72, seed=3)
    data = write_scannet_scene(tmp_path / 'root', 'scene0000_00', frames) / 'sensor_data'
    (data / 'frame-000001.color.jpg').write_bytes((data / 'frame-000000.color.png').read_bytes())
    (data / 'frame-1.color.jpeg').write_bytes((data / 'frame-000000.color.png').read_bytes())
    scene = ScanNetScene(data.parent)
    assert scene.frame_ids == [0, 1, 2]
    assert scene.color_path(1).name == 'frame-000001.color.png'
    assert np.array_equal(scene.color(1), frames[1][0])


def test_scene_without_intrinsics_is_refused_when_the_dataset_is_built(scannet_root):
    (scannet_root / 'scans' / 'scene0001_00' / 'intrinsic' / 'intrinsic_depth.txt').unlink()
    with pytest.raises(ValueError, match='scene0001_00.*intrinsics.*--intrinsics'):
        ScanNetLayout(str(scannet_root), num_frames=3)


def test_worker_processes_give_the_same_samples(scannet_root):
    ds = ScanNetLayout(str(scannet_root), num_frames=3, min_gap=1, max_gap=4, image_size=32,
                       sequences_per_scene=2)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    for index, sample in enumerate(loader):
        direct = ds[index]
        assert all(torch.equal(sample[k], direct[k]) for k in direct)
