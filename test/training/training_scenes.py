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
