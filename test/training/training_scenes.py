"""Tiny synthetic scenes for trainer tests: textured planes seen by a known moving camera."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np


def render_sequence(n_frames=8, width=96, height=72, seed=0, focal=80.0):
    """Return frames (rgb uint8, depth float32 m, K [3,3], T_world_cam [4,4]) of a small room.

    The camera looks along +z at a wall (z = 4) above a floor (y = 1.2), sliding sideways and
    yawing a little. The texture is a function of the world point, so views agree.
    """
    rng = np.random.default_rng(seed)
    freqs = rng.uniform(1.0, 4.0, size=(3, 2))
    phases = rng.uniform(0, 2 * np.pi, size=(3, 2))
    K = np.array([[focal, 0, width / 2 - 0.5], [0, focal, height / 2 - 0.5], [0, 0, 1.0]])
    u, v = np.meshgrid(np.arange(width), np.arange(height))
    rays_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1],
                         np.ones_like(u, float)], -1)
    frames = []
    for i in range(n_frames):
        yaw = 0.03 * i
        R = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
        t = np.array([0.08 * i, -0.02 * i, 0.05 * i])
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = R, t
        rays = rays_cam @ R.T
        t_wall = (4.0 - t[2]) / rays[..., 2]
        with np.errstate(divide='ignore'):
            t_floor = np.where(rays[..., 1] > 1e-6, (1.2 - t[1]) / rays[..., 1], np.inf)
        dist = np.minimum(t_wall, t_floor)
        pts = t + rays * dist[..., None]
        depth = dist.astype(np.float32)  # rays_cam has z = 1, so the ray parameter is z-depth
        a = np.where(t_wall <= t_floor, pts[..., 0], pts[..., 0])
        b = np.where(t_wall <= t_floor, pts[..., 1], pts[..., 2])
        rgb = np.stack([0.5 + 0.25 * (np.sin(freqs[c, 0] * 3 * a + phases[c, 0])
                                      + np.sin(freqs[c, 1] * 3 * b + phases[c, 1]))
                        for c in range(3)], -1)
        rgb = (np.clip(rgb, 0, 1) * 255).astype(np.uint8)
        depth[rng.random(depth.shape) < 0.05] = 0.0  # sensor dropouts
        frames.append((rgb, depth, K.copy(), T))
    return frames


def write_scannet_scene(root, scene, frames, ext='png'):
    base = Path(root) / 'scans' / scene
    data = base / 'sensor_data'
    data.mkdir(parents=True, exist_ok=True)
    (base / 'intrinsic').mkdir(exist_ok=True)
    K4 = np.eye(4)
    K4[:3, :3] = frames[0][2]
    np.savetxt(base / 'intrinsic' / 'intrinsic_depth.txt', K4)
    np.savetxt(base / 'intrinsic' / 'intrinsic_color.txt', K4)
    for i, (rgb, depth, _, T) in enumerate(frames):
        cv2.imwrite(str(data / f'frame-{i:06d}.color.{ext}'), rgb[..., ::-1])
        depth_mm = np.round(depth * 1000).astype(np.uint16)
        cv2.imwrite(str(data / f'frame-{i:06d}.depth.png'), depth_mm)
        np.savetxt(data / f'frame-{i:06d}.pose.txt', T)
    (base / 'manifest.json').write_text(json.dumps({'frames': len(frames)}))
    return base


def make_scannet_root(root, n_scenes=2, n_frames=8, width=96, height=72):
    for s in range(n_scenes):
        write_scannet_scene(root, f'scene{s:04d}_00',
                            render_sequence(n_frames, width, height, seed=s))
    return Path(root)


def _gl(T):
    out = T.copy()
    out[:3, 1:3] *= -1
    return out


def write_scannetpp(root, frames, scene='abc123'):
    root = Path(root)
    dslr = root / 'data' / scene / 'dslr'
    for sub in ('nerfstudio', 'undistorted_images', 'undistorted_depths'):
        (dslr / sub).mkdir(parents=True, exist_ok=True)
    (root / 'splits').mkdir(parents=True, exist_ok=True)
    (root / 'splits' / 'nvs_sem_train.txt').write_text(scene + '\n')
    K = frames[0][2]
    entries, names = [], []
    for i, (rgb, depth, _, T) in enumerate(frames):
        name = f'DSC{i:05d}.JPG'
        names.append(name)
        cv2.imwrite(str(dslr / 'undistorted_images' / name), rgb[..., ::-1],
                    [cv2.IMWRITE_JPEG_QUALITY, 95])
        cv2.imwrite(str(dslr / 'undistorted_depths' / f'DSC{i:05d}.png'),
                    np.round(depth * 1000).astype(np.uint16))
        entries.append({'file_path': name, 'transform_matrix': _gl(T).tolist()})
    transforms = {'fl_x': K[0, 0], 'fl_y': K[1, 1], 'cx': K[0, 2], 'cy': K[1, 2],
                  'frames': entries}
    (dslr / 'nerfstudio' / 'transforms_undistorted.json').write_text(json.dumps(transforms))
    (dslr / 'train_test_lists.json').write_text(json.dumps({'train': names, 'test': []}))
    return root


def write_arkitscenes(root, frames, scene='41069025'):
    base = Path(root) / 'raw' / 'Training' / scene
    for sub in ('lowres_wide', 'lowres_depth', 'lowres_wide_intrinsics'):
        (base / sub).mkdir(parents=True, exist_ok=True)
    lines = []
    for i, (rgb, depth, K, T) in enumerate(frames):
        stamp = f'{6000.1 + 0.1 * i:.3f}'
        cv2.imwrite(str(base / 'lowres_wide' / f'{scene}_{stamp}.png'), rgb[..., ::-1])
        cv2.imwrite(str(base / 'lowres_depth' / f'{scene}_{stamp}.png'),
                    np.round(depth * 1000).astype(np.uint16))
        h, w = depth.shape
        (base / 'lowres_wide_intrinsics' / f'{scene}_{stamp}.pincam').write_text(
            f'{w} {h} {K[0, 0]} {K[1, 1]} {K[0, 2]} {K[1, 2]}\n')
        T_cw = np.linalg.inv(T)
        rvec = cv2.Rodrigues(T_cw[:3, :3])[0].ravel()
        lines.append(' '.join(f'{v:.9f}' for v in [float(stamp), *rvec, *T_cw[:3, 3]]))
    (base / 'lowres_wide.traj').write_text('\n'.join(lines) + '\n')
    return Path(root)


def write_co3d(root, frames, category='apple', sequence='110_13051_23361'):
    root = Path(root)
    folder = root / category / sequence
    for sub in ('images', 'depths', 'masks'):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for i, (rgb, depth, K, T) in enumerate(frames):
        stem = f'frame{i:06d}'
        max_depth = float(depth.max())
        cv2.imwrite(str(folder / 'images' / f'{stem}.jpg'), rgb[..., ::-1])
        np.savez(folder / 'images' / f'{stem}.npz', camera_pose=T.astype(np.float32),
                 camera_intrinsics=K.astype(np.float32), maximum_depth=np.float32(max_depth))
        cv2.imwrite(str(folder / 'depths' / f'{stem}.jpg.geometric.png'),
                    np.round(depth / max_depth * 65535).astype(np.uint16))
        mask = np.full(depth.shape, 255, np.uint8)
        mask[:, : depth.shape[1] // 4] = 0  # background on the left quarter
        cv2.imwrite(str(folder / 'masks' / f'{stem}.png'), mask)
    selected = {category: {sequence: list(range(len(frames)))}, 'empty': {}}
    (root / 'selected_seqs_train.json').write_text(json.dumps(selected))
    return root


def write_blendedmvs(root, frames, scene='5a3ca9cb270f0e3f14d0eddb'):
    root = Path(root)
    folder = root / scene
    for sub in ('blended_images', 'rendered_depth_maps', 'cams'):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    (root / 'train_list.txt').write_text(scene + '\n')
    n = len(frames)
    for i, (rgb, depth, K, T) in enumerate(frames):
        cv2.imwrite(str(folder / 'blended_images' / f'{i:08d}.jpg'), rgb[..., ::-1])
        cv2.imwrite(str(folder / 'rendered_depth_maps' / f'{i:08d}.pfm'), depth)
        E = np.linalg.inv(T)
        text = ['extrinsic', *(' '.join(f'{v:.10f}' for v in row) for row in E), '',
                'intrinsic', *(' '.join(f'{v:.10f}' for v in row) for row in K), '',
                '0.5 0.01']
        (folder / 'cams' / f'{i:08d}_cam.txt').write_text('\n'.join(text) + '\n')
    pair = [str(n)]
    for i in range(n):
        others = [j for j in range(n) if j != i]
        pair += [str(i), ' '.join([str(len(others))] + [f'{j} 100.0' for j in others])]
    (folder / 'cams' / 'pair.txt').write_text('\n'.join(pair) + '\n')
    return root


def write_habitat(root, frames, n_seq=2, dataset='gibson', scene='Adrian'):
    folder = Path(root) / dataset / scene
    folder.mkdir(parents=True, exist_ok=True)
    for seq in range(n_seq):
        for i, (rgb, depth, K, T) in enumerate(frames, start=1):
            stem = f'{seq:08d}_{i}'
            cv2.imwrite(str(folder / f'{stem}.jpeg'), rgb[..., ::-1])
            if not cv2.imwrite(str(folder / f'{stem}_depth.exr'), depth):
                raise RuntimeError('cannot write EXR')
            (folder / f'{stem}_camera_params.json').write_text(json.dumps({
                'camera_intrinsics': K.tolist(), 'R_cam2world': T[:3, :3].tolist(),
                't_cam2world': T[:3, 3].tolist()}))
    return Path(root)


def consistent_with_render(sample, frames, tol=0.06):
    """Fraction of valid points that land on the room's planes, via the best first frame.

    World-frame conventions differ between layouts, so the check goes through frame 0's
    camera: T_a @ inv(P_0) @ X must lie on the rendered planes for the rendered frame a that
    the sample's first frame is.
    """
    import torch

    P0_inv = torch.linalg.inv(sample['camera_pose'][0].double())
    best = 0.0
    for _, _, _, T_a in frames:
        M = torch.from_numpy(T_a) @ P0_inv
        pts = sample['pts3d'].double()[sample['valid_mask']]
        pts = pts @ M[:3, :3].T + M[:3, 3]
        on = ((pts[:, 2] - 4.0).abs() < tol) | ((pts[:, 1] - 1.2).abs() < tol)
        best = max(best, float(on.double().mean()))
    return best
