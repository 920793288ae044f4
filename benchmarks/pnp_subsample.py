"""PnP-RANSAC on a subsample of the confident pixels against PnP on all of them.

Runs the tiny demo model over a synthetic ScanNet-layout sequence (``spann3r-synth --scannet``),
estimates the focal from frame 0 as the session does, then solves each refined frame's pose
with every confident pixel (the official demo's choice) and with ``k`` of them, picked either
as the ``k`` most confident or by an even stride through the confident pixels. Prints, per
choice, the median and largest rotation difference (degrees) and camera-centre difference
(relative to the median distance of the all-pixel camera centres from the first camera) to the
all-pixel pose, and the PnP time per frame.

With the tiny demo weights the pointmaps fit a pinhole camera poorly (a few percent of the pixels
are RANSAC inliers), so even the all-pixel pose is a noisy reference. ``--gt-pointmaps`` replaces
the model by the scene's ground-truth depth, back-projected into the first camera's frame, with
noise of 2 cm divided by a random confidence in [1, 10]: a well-posed PnP whose poses are also
compared with the ground truth. Example::

    .venv/bin/spann3r-synth --out /tmp/synth --name room --frames 30 --scannet
    .venv/bin/python benchmarks/pnp_subsample.py /tmp/synth/scans/room
"""

from __future__ import annotations

import argparse
from pathlib import Path
import time
from typing import Callable, Optional

import numpy as np
import torch

from spann3r_model.config import EngineConfig
from spann3r_model.data.scannet import ScanNetScene
from spann3r_model.geometry import camera as geometry
from spann3r_model.geometry.align import transform_points
from spann3r_model.pose_estimation import POSE_CONF_THRESH
from spann3r_model.session import StreamingSession

WEIGHTS = Path(__file__).resolve().parents[1] / 'weights' / 'spann3r_tiny_demo.safetensors'


def top_k(conf: np.ndarray, confident: np.ndarray, k: int) -> np.ndarray:
    """Return the ``[H, W]`` mask of the ``k`` most confident of the ``confident`` pixels."""
    idx = np.flatnonzero(confident)
    if len(idx) > k:
        idx = idx[np.argpartition(conf.reshape(-1)[idx], len(idx) - k)[len(idx) - k:]]
    mask = np.zeros(conf.size, bool)
    mask[idx] = True
    return mask.reshape(conf.shape)


def stride(conf: np.ndarray, confident: np.ndarray, k: int) -> np.ndarray:
    """Return a mask of ``k`` confident pixels taken at an even stride (spread over the image)."""
    idx = np.flatnonzero(confident)
    if len(idx) > k:
        idx = idx[np.linspace(0, len(idx) - 1, k).astype(np.int64)]
    mask = np.zeros(conf.size, bool)
    mask[idx] = True
    return mask.reshape(conf.shape)


def pose_difference(T: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """Return (rotation angle in degrees, camera-centre distance) between two poses."""
    dR = T[:3, :3] @ ref[:3, :3].T
    angle = np.degrees(np.arccos(np.clip((np.trace(dR) - 1) / 2, -1.0, 1.0)))
    return float(angle), float(np.linalg.norm(T[:3, 3] - ref[:3, 3]))


def solve(results: list, focal: float,
          pick: Optional[Callable[[np.ndarray, np.ndarray, int], np.ndarray]], k: int
          ) -> tuple[list[Optional[np.ndarray]], float]:
    """Return the poses of all results and the mean PnP time per frame (selection included)."""
    poses, t0 = [], time.perf_counter()
    for pts3d, conf in results:
        confident = (conf - 1.0) / conf > POSE_CONF_THRESH
        mask = confident if pick is None else pick(conf, confident, k)
        poses.append(geometry.estimate_pose_pnp(pts3d, focal, mask=mask))
    return poses, (time.perf_counter() - t0) / len(results)


def gt_pointmaps(scene: ScanNetScene, count: int) -> tuple[list, float]:
    """Return ``[(points [H, W, 3] in camera 0's frame, conf [H, W])]`` and the focal."""
    rng = np.random.default_rng(0)
    K = scene.K_depth[:3, :3]
    T0_inv = np.linalg.inv(scene.pose(0))
    results = []
    for i in range(count):
        depth = scene.depth(i)
        height, width = depth.shape
        uv = geometry.pixel_grid(width, height)
        cam = np.stack([(uv[..., 0] - K[0, 2]) / K[0, 0] * depth,
                        (uv[..., 1] - K[1, 2]) / K[1, 1] * depth, depth], -1)
        conf = rng.uniform(1.0, 10.0, (height, width)).astype(np.float32)
        cam = cam + rng.normal(0.0, 0.02, cam.shape) / conf[..., None]
        T = T0_inv @ scene.pose(i)
        points = transform_points(T, cam)
        points[depth <= 0] = np.nan
        results.append((points.astype(np.float32), conf))
    # The synthetic camera has its principal point at the image centre, as PnP assumes here.
    return results, float(K[0, 0])


def main() -> None:
    """Run the comparison and print one line per pixel choice."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('scene', type=Path, help='ScanNet-layout scene folder')
    parser.add_argument('--frames', type=int, default=30)
    parser.add_argument('--weights', type=Path, default=WEIGHTS)
    parser.add_argument('--sizes', type=int, nargs='+', default=[512, 1024, 2048, 4096])
    parser.add_argument('--gt-pointmaps', action='store_true',
                        help='ground-truth depth with confidence-dependent noise, no model')
    args = parser.parse_args()
    torch.set_num_threads(1)
    scene = ScanNetScene(args.scene)
    count = min(args.frames, len(scene))
    if args.gt_pointmaps:
        results, focal = gt_pointmaps(scene, count)
    else:
        session = StreamingSession.from_checkpoint(str(args.weights),
                                                   EngineConfig(device='cpu', num_threads=1),
                                                   estimate_pose=False)
        results = []
        for i in range(count):
            refined = session.step(scene.color(i), float(i)).refined
            if refined is not None:
                results.append((refined.pts3d, refined.conf))
        focal = geometry.estimate_focal(results[0][0])
    reference, ref_time = solve(results, focal, None, 0)
    if args.gt_pointmaps:
        T0_inv = np.linalg.inv(scene.pose(0))
        truth = [T0_inv @ scene.pose(i) for i in range(count)]
        gt = [pose_difference(T, G) for T, G in zip(reference, truth) if T is not None]
        print(f'all pixels against the ground truth: rotation median '
              f'{np.median([d[0] for d in gt]):.3f} deg, centre median '
              f'{np.median([d[1] for d in gt]):.4f} m')
    centres = [T[:3, 3] for T in reference if T is not None]
    scale = float(np.median([np.linalg.norm(c - centres[0]) for c in centres[1:]]) or 1.0)
    confident = np.mean([((c - 1.0) / c > POSE_CONF_THRESH).sum() for _, c in results])
    print(f'{len(results)} refined frames of {args.scene}, focal {focal:.1f} px, '
          f'{confident:.0f} confident pixels per frame on average')
    print(f'all pixels: PnP {1000 * ref_time:.1f} ms/frame, '
          f'{sum(T is not None for T in reference)} poses')
    if args.gt_pointmaps:
        print('(rotation / centre differences below are to the all-pixel pose)')
    for name, pick in (('top-k', top_k), ('stride', stride)):
        for k in args.sizes:
            poses, t = solve(results, focal, pick, k)
            diffs = [pose_difference(T, R) for T, R in zip(poses, reference)
                     if T is not None and R is not None]
            rot = np.array([d[0] for d in diffs])
            pos = np.array([d[1] for d in diffs]) / scale
            print(f'{name:6s} k={k:5d}: PnP {1000 * t:6.1f} ms/frame ({ref_time / t:4.1f}x), '
                  f'rotation diff median {np.median(rot):.3f} max {rot.max():.3f} deg, '
                  f'centre diff median {np.median(pos):.4f} max {pos.max():.4f} '
                  f'(of the median camera travel), {len(diffs)}/{len(results)} poses')


if __name__ == '__main__':
    main()
