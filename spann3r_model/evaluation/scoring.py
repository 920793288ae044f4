"""Scoring of predictions against a ScanNet-layout sequence with ground truth.

The library behind ``spann3r-eval`` (:mod:`spann3r_ros.cli.eval`): run a session over the
frames, and score any predictions the same way: the reconstruction with the official
protocol (:mod:`spann3r_model.evaluation.metrics`), poses with ATE after Sim(3) alignment, the
run with FPS and latency percentiles.
"""

from __future__ import annotations

import logging
import time
from typing import Optional

import cv2
import numpy as np

from spann3r_model.data.scannet import ScanNetScene
from spann3r_model.evaluation.gt_views import GroundTruthView, load_views, to_first_camera
from spann3r_model.evaluation.metrics import (
    absolute_trajectory_error,
    CloudEvaluation,
    evaluate_pointmaps,
    latency_stats,
)
from spann3r_model.evaluation.predictions import Predictions

LOG = logging.getLogger(__name__)


def model_input(scene: ScanNetScene, frame_id: int) -> np.ndarray:
    """Return the RGB image the model sees: colour resized to the depth resolution.

    The official loader does the same, so prediction pixels line up with the depth crop.
    """
    rgb = scene.color(frame_id)
    depth_hw = scene.depth_mm(frame_id).shape
    if rgb.shape[:2] != depth_hw:
        rgb = cv2.resize(rgb, (depth_hw[1], depth_hw[0]), interpolation=cv2.INTER_LINEAR)
    return rgb


def run_session(session, scene: ScanNetScene, frame_ids: list[int]
                ) -> tuple[Predictions, np.ndarray]:
    """Stream the frames through ``session``; return the predictions and per-step latencies."""
    results, latencies = [], []
    session.reset()
    for fid in frame_ids:
        rgb = model_input(scene, fid)
        t0 = time.perf_counter()
        out = session.step(rgb, float(fid))
        latencies.append(time.perf_counter() - t0)
        if out.refined is not None:
            results.append(out.refined)
    t0 = time.perf_counter()
    last = session.flush()
    latencies[-1] += time.perf_counter() - t0
    if last is not None:
        results.append(last)
    if len(results) != len(frame_ids):
        raise ValueError(f'the session returned {len(results)} results for {len(frame_ids)} '
                         'frames (at least 2 frames are needed)')
    poses = np.stack([r.T_world_cam if r.T_world_cam is not None else np.full((4, 4), np.nan)
                      for r in results])
    preds = Predictions(np.stack([r.pts3d for r in results]),
                        np.stack([r.conf for r in results]), np.stack([r.rgb for r in results]),
                        np.arange(len(results)), poses, 'image', 'ours')
    return preds, np.asarray(latencies)


def score_pointmaps(scene: ScanNetScene, frame_ids: list[int], pts3d: np.ndarray,
                    centre: str, use_icp: bool = True
                    ) -> tuple[CloudEvaluation, list[GroundTruthView], np.ndarray]:
    """Run the official protocol on pointmaps of the frames ``frame_ids``.

    :param pts3d: ``[N, S, S, 3]`` predictions in the first frame's camera; NaN pixels (a live
        node did not publish them) are left out on both sides.
    :param centre: crop centre of the predictions (``image`` or ``principal``).
    :return: the evaluation, the ground-truth views and the ``[N, S, S]`` evaluated mask.
    """
    views = load_views(scene, frame_ids, size=pts3d.shape[1], centre=centre)
    gt_cam0, valid, T0 = to_first_camera(views)
    predicted = np.isfinite(pts3d).all(axis=-1)
    valid = valid & predicted
    pts = np.where(predicted[..., None], pts3d, 0).astype(np.float32)
    return evaluate_pointmaps(pts, gt_cam0, valid, T0, use_icp=use_icp), views, valid


def evaluate(scene: ScanNetScene, frame_ids: list[int], preds: Predictions,
             latencies: Optional[np.ndarray] = None, use_icp: bool = True
             ) -> tuple[dict, dict, dict]:
    """Score ``preds`` against the scene's ground truth.

    :return: ``(report, clouds, plot_data)``: the JSON-ready report; the aligned prediction
        and ground-truth clouds; the data of the figures (positions, distances, latencies) and
        the :class:`CloudEvaluation` itself (``'evaluation'``: aligned points for previews).
    """
    if preds.source is not None and preds.origin == 'ours':
        if preds.source.max(initial=-1) >= len(frame_ids):
            raise ValueError(f'predictions refer to input frame {int(preds.source.max())}, '
                             f'the sequence has {len(frame_ids)} selected frames: evaluate with '
                             'the --every / --max-frames the reconstruction used')
        frame_ids = [frame_ids[int(i)] for i in preds.source]
    if len(preds.pts3d) != len(frame_ids):
        raise ValueError(f'{len(preds.pts3d)} predicted frames for {len(frame_ids)} ground-truth '
                         'frames: match them with --every / --max-frames')
    ev, views, valid = score_pointmaps(scene, frame_ids, preds.pts3d, preds.crop_centre,
                                       use_icp)
    report = {'sequence': scene.name, 'n_frames': len(frame_ids), 'frame_ids': frame_ids,
              'source': preds.origin, 'crop_centre': preds.crop_centre,
              'evaluated_pixels': int(valid.sum()), **ev.to_dict()}
    report['icp'] = report['icp'] if use_icp else None
    plot: dict = {'gt_positions': np.stack([v.T_world_cam[:3, 3] for v in views]).astype(float)}
    if preds.poses is not None:
        ok = np.isfinite(preds.poses).all(axis=(1, 2))
        if ok.sum() >= 3:
            ate = absolute_trajectory_error(preds.poses[ok, :3, 3], plot['gt_positions'][ok])
            plot['est_positions'] = np.full_like(plot['gt_positions'], np.nan)
            plot['est_positions'][ok] = ate.pop('aligned')
            ate['R'], ate['t'] = ate['R'].tolist(), ate['t'].tolist()
            ate['frames_without_pose'] = int((~ok).sum())
            report['ate'] = ate
    if latencies is not None:
        report['latency'] = latency_stats(latencies)
        plot['latency'] = latencies
    plot['acc_dist'], plot['comp_dist'] = ev.distances['acc'], ev.distances['comp']
    gt_rgb = np.stack([v.rgb for v in views])[valid]
    pred_rgb = preds.rgb[valid] if preds.rgb is not None else gt_rgb
    clouds = {'prediction': (ev.pred_points, pred_rgb), 'ground_truth': (ev.gt_points, gt_rgb)}
    plot['evaluation'] = ev
    return report, clouds, plot
