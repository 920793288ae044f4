"""Evaluation throughput: the official protocol (alignment, ICP, normals, Acc/Comp/NC).

Times each stage on the reference fixture (5 frames, 237,678 points) and prints points per
second; with ``--frames N`` also on N synthetic 224x224 frames.
"""

from __future__ import annotations

import argparse
from pathlib import Path
import time

import numpy as np

from spann3r_model.data.scannet import ScanNetScene
from spann3r_model.evaluation import metrics as ev
from spann3r_model.evaluation.gt_views import load_views, to_first_camera
from spann3r_model.evaluation.predictions import load_predictions
from spann3r_model.geometry.align import transform_points

FIXTURE = Path(__file__).resolve().parents[1] / 'test' / 'data' / 'tools' / 'open3d_rgbd5'


def stage_times(pred_cam0: np.ndarray, gt_cam0: np.ndarray, valid: np.ndarray,
                T0: np.ndarray) -> dict:
    times = {}
    t = time.perf_counter()
    pred, gt, al = ev.align_shift_scale(pred_cam0, gt_cam0, valid, T0)
    times['alignment'] = time.perf_counter() - t
    t = time.perf_counter()
    icp = ev.icp_point_to_point(pred, gt)
    times[f'icp ({icp.iterations} updates)'] = time.perf_counter() - t
    pred = transform_points(icp.transformation, pred)
    t = time.perf_counter()
    ev.reconstruction_metrics(pred, gt)
    times['normals + metrics'] = time.perf_counter() - t
    times['total'] = sum(times.values())
    times['points'] = al.n_points
    return times


def report(name: str, times: dict) -> None:
    n = times.pop('points')
    print(f'{name}: {n} points')
    for stage, sec in times.items():
        print(f'  {stage:22s} {sec:7.2f} s')
    print(f'  throughput {n / times["total"]:,.0f} points/s')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--frames', type=int, default=0, help='also time N synthetic frames')
    args = parser.parse_args()
    scene = ScanNetScene(FIXTURE / 'gt' / 'scans' / 'open3d_rgbd5')
    t = time.perf_counter()
    views = load_views(scene, scene.frame_ids)
    gt_cam0, valid, T0 = to_first_camera(views)
    print(f'ground truth views: {time.perf_counter() - t:.2f} s for {len(views)} frames')
    preds = load_predictions(FIXTURE / 'pred', scene.name)
    report('open3d_rgbd5 fixture', stage_times(preds.pts3d, gt_cam0, valid, T0))
    if args.frames:
        rng = np.random.default_rng(0)
        reps = int(np.ceil(args.frames / len(views)))
        gt_n = np.concatenate([gt_cam0 + k * 0.01 for k in range(reps)])[:args.frames]
        valid_n = np.concatenate([valid] * reps)[:args.frames]
        pred_n = 0.4 * gt_n + rng.normal(0, 0.004, gt_n.shape)
        report(f'{args.frames} synthetic frames', stage_times(pred_n, gt_n, valid_n, T0))


if __name__ == '__main__':
    main()
