"""Score a live demo run against the sequence's ground truth and write ``report.json`` / ``.md``.

The node publishes, per frame, a confidence-filtered cloud in the map frame (REP 103 axes) plus
the full ``[S, S]`` confidence image. The cloud keeps the pixels in row-major order, so with the
confidence image and the node's ``min_confidence`` the dense pointmap is recovered exactly and
the official pixelwise protocol applies
(:func:`spann3r_model.evaluation.scoring.score_pointmaps`, shared with ``spann3r-eval``), on
the pixels the node published. Nothing here imports ROS.
"""

from __future__ import annotations

from dataclasses import dataclass
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from spann3r_model.data.scannet import ScanNetScene
from spann3r_model.evaluation.metrics import (
    absolute_trajectory_error,
    CloudEvaluation,
    latency_stats,
)
from spann3r_model.evaluation.scoring import score_pointmaps
from spann3r_model.geometry.frames import R_BODY_OPTICAL
from spann3r_model.io.export import atomic_write_bytes
from spann3r_ros.node.player import Playback

LOG = logging.getLogger(__name__)

# The node's map frame is the first camera's optical frame in REP 103 axes:
# p_map = R_BODY_OPTICAL @ p_cam0, so p_cam0 = R_BODY_OPTICAL.T @ p_map (row vectors: @ R).
_T_OPTICAL_MAP = np.eye(4)
_T_OPTICAL_MAP[:3, :3] = R_BODY_OPTICAL.T


@dataclass
class DensePredictions:
    """The node's answers as dense pointmaps in the first camera's optical frame.

    :param frame_index: ``[N]`` positions of the answered frames in the played sequence.
    :param pts: ``[N, S, S, 3]`` float32 (NaN where the node published no point).
    :param conf: ``[N, S, S]`` float32 confidence.
    :param poses: ``[N, 4, 4]`` camera-to-first-camera poses (NaN where none was published).
    """

    frame_index: np.ndarray
    pts: np.ndarray
    conf: np.ndarray
    poses: np.ndarray


def dense_predictions(playback: Playback, min_confidence: float) -> DensePredictions:
    """Rebuild dense pointmaps from the clouds and confidence images of ``playback``.

    A frame is left out (with a warning) when its confidence image is missing or its cloud
    does not have one point per published pixel.

    :param min_confidence: the node's ``min_confidence`` during the run.
    :raises ValueError: when no frame can be rebuilt.
    """
    index = {s: i for i, s in enumerate(playback.stamps_ns)}
    kept, pts, confs, poses = [], [], [], []
    for stamp in sorted(playback.outputs, key=lambda s: index.get(s, -1)):
        out = playback.outputs[stamp]
        if stamp not in index or out.conf is None:
            LOG.warning('frame with stamp %d has no confidence image; left out', stamp)
            continue
        mask = np.isfinite(out.conf) & (out.conf >= min_confidence)
        if int(mask.sum()) != len(out.points):
            LOG.warning('frame %d: %d points for %d confident pixels; left out', index[stamp],
                        len(out.points), int(mask.sum()))
            continue
        dense = np.full(out.conf.shape + (3,), np.nan, np.float32)
        dense[mask] = out.points @ R_BODY_OPTICAL.astype(np.float32)
        pose = np.full((4, 4), np.nan)
        if out.T_map_cam is not None:
            pose = _T_OPTICAL_MAP @ out.T_map_cam
        kept.append(index[stamp])
        pts.append(dense)
        confs.append(out.conf)
        poses.append(pose)
    if not kept:
        raise ValueError('the node answered no frame that can be evaluated')
    return DensePredictions(np.asarray(kept), np.stack(pts), np.stack(confs), np.stack(poses))


def evaluate_run(scene: ScanNetScene, frame_ids: list[int], preds: DensePredictions,
                 playback: Playback) -> tuple[dict[str, Any], CloudEvaluation]:
    """Score ``preds`` against ``scene`` (frames ``frame_ids`` were played, in order).

    :return: the report dictionary and the evaluation (aligned clouds for the preview).
    :raises ValueError: when frame 0 (the reference camera) was not answered.
    """
    if preds.frame_index[0] != 0:
        raise ValueError('the first frame was not answered; the reconstruction has no reference')
    ids = [frame_ids[i] for i in preds.frame_index]
    size = preds.pts.shape[1]
    # The node's preprocessing crops around the image centre.
    ev, views, used = score_pointmaps(scene, ids, preds.pts, 'image', use_icp=True)
    published = np.isfinite(preds.pts).all(axis=-1)
    report: dict[str, Any] = {
        'sequence': scene.name,
        'frames_played': len(frame_ids),
        'frames_answered': len(playback.outputs),
        'frames_evaluated': int(len(ids)),
        'model_resolution': size,
        'published_pixel_fraction': float(published.mean()),
        'evaluated_pixels': int(used.sum()),
        'metrics': ev.metrics.to_dict(),
        'alignment': {'scale_factor': ev.alignment.factor,
                      'icp_fitness': ev.icp.fitness},
        'confidence': {'mean': float(np.nanmean(preds.conf)),
                       'median': float(np.nanmedian(preds.conf))},
    }
    ok = np.isfinite(preds.poses).all(axis=(1, 2))
    gt_centres = np.stack([v.T_world_cam[:3, 3] for v in views]).astype(np.float64)
    report['ate'] = None
    if ok.sum() >= 3:
        ate = absolute_trajectory_error(preds.poses[ok, :3, 3], gt_centres[ok])
        report['ate'] = {k: ate[k] for k in ('rmse', 'mean', 'median', 'max', 'scale', 'n')}
    if playback.latencies:
        report['latency'] = latency_stats(np.asarray(playback.latencies))
    report['throughput_fps'] = (len(playback.outputs) / playback.wall_s
                                if playback.wall_s > 0 else None)
    return report, ev


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return 'n/a'
    if isinstance(value, float):
        return f'{value:.{digits}g}'
    return str(value)


def markdown(report: dict[str, Any]) -> str:
    """Human-readable summary of :func:`evaluate_run`'s report plus the run details."""
    m = report['metrics']
    lat = report.get('latency') or {}
    ate = report.get('ate') or {}
    run = report.get('run', {})
    lines = [
        '# spann3r_ros demo report', '',
        f'Sequence `{report["sequence"]}`: {report["frames_played"]} frames played into the '
        f'live node over ROS 2 topics, {report["frames_answered"]} answered, '
        f'{report["frames_evaluated"]} evaluated at {report["model_resolution"]}x'
        f'{report["model_resolution"]}.', '',
        f'Weights: `{run.get("checkpoint", "n/a")}`', '',
        '## Reconstruction (official protocol: median shift/scale, ICP; lower is better '
        'except NC)', '',
        '| Acc | Acc med | Comp | Comp med | NC | NC med |',
        '|---|---|---|---|---|---|',
        f'| {_fmt(m["acc"])} | {_fmt(m["acc_med"])} | {_fmt(m["comp"])} | '
        f'{_fmt(m["comp_med"])} | {_fmt(m["nc"])} | {_fmt(m["nc_med"])} |', '',
        f'Distances in metres (ground-truth scale). Evaluated pixels: '
        f'{report["evaluated_pixels"]} ({100 * report["published_pixel_fraction"]:.1f}% of '
        'the pixels were published).', '',
        '## Trajectory', '',
        f'ATE RMSE after Sim(3) alignment: {_fmt(ate.get("rmse"))} m over {ate.get("n", 0)} '
        'poses.' if ate else 'ATE: fewer than 3 poses were published.', '',
        '## Speed', '',
        f'Throughput: {_fmt(report.get("throughput_fps"), 3)} frames/s (lock-step playback: '
        'the next frame goes out when the node has answered).', '',
        '| mean | p50 | p90 | p95 | max |', '|---|---|---|---|---|',
        f'| {_fmt(lat.get("mean_ms"), 4)} ms | {_fmt(lat.get("p50_ms"), 4)} ms | '
        f'{_fmt(lat.get("p90_ms"), 4)} ms | {_fmt(lat.get("p95_ms"), 4)} ms | '
        f'{_fmt(lat.get("max_ms"), 4)} ms |', '',
        'Latency: from publishing frame i to receiving the refined output of frame i-1 '
        '(one model step plus transport).', '',
    ]
    files = report.get('files')
    if files:
        lines += ['## Files', ''] + [f'- {k}: `{v}`' for k, v in files.items()] + ['']
    return '\n'.join(lines)


def write_reports(out: Path, report: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.md`` into ``out`` atomically.

    :return: the two paths.
    """
    out = Path(out)
    json_path, md_path = out / 'report.json', out / 'report.md'
    atomic_write_bytes(json_path, (json.dumps(_plain(report), indent=2) + '\n').encode())
    atomic_write_bytes(md_path, markdown(report).encode())
    return json_path, md_path


def _plain(value: Any) -> Any:
    """JSON-safe copy: NumPy scalars to Python, non-finite floats to None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def map_points_to_gt_world(xyz_map: np.ndarray, ev: CloudEvaluation,
                           T_world_cam0: np.ndarray) -> np.ndarray:
    """Carry map-frame points through the same alignment the evaluation found.

    :param xyz_map: ``[M, 3]`` points of the saved map (map frame, model scale).
    :param T_world_cam0: ``[4, 4]`` ground-truth pose of the first camera.
    :return: ``[M, 3]`` float64 points in the ground-truth world frame.
    """
    a = ev.alignment
    pts = np.asarray(xyz_map, np.float64) @ R_BODY_OPTICAL  # map -> first camera
    pts[:, 2] -= a.pred_shift_z
    pts *= a.gt_scale / a.pred_scale
    pts[:, 2] += a.gt_shift_z
    pts = pts @ T_world_cam0[:3, :3].T + T_world_cam0[:3, 3]
    T = ev.icp.transformation
    return pts @ T[:3, :3].T + T[:3, 3]


def first_camera_pose(scene: ScanNetScene, frame_id: int) -> np.ndarray:
    """Ground-truth ``[4, 4]`` pose of the first camera as the evaluation casts it."""
    return scene.pose(frame_id).astype(np.float32).astype(np.float64)

