"""The demo's report (``report.json`` / ``.md``) and its map in the ground truth's frame."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from spann3r_model.data.scannet import ScanNetScene
from spann3r_model.evaluation import report as eval_report
from spann3r_model.evaluation.metrics import (
    CloudEvaluation,
)
from spann3r_model.geometry.align import transform_points
from spann3r_model.geometry.frames import R_BODY_OPTICAL
from spann3r_ros.cli.playback_score import report_markdown

LOG = logging.getLogger(__name__)

def markdown(report: dict[str, Any]) -> str:
    """Return the demo's ``report.md``: the evaluation's summary, its live run, the demo's run."""
    run = report.get('run', {})
    lines = ['', '## Demo run', '', f'Weights: `{run.get("checkpoint", "n/a")}`; '
             f'{report.get("map_points", 0)} points in the saved map.', '']
    files = report.get('files')
    if files:
        lines += ['## Files', ''] + [f'- {k}: `{v}`' for k, v in files.items()] + ['']
    return report_markdown(report) + '\n'.join(lines)


def write_reports(out: Path, report: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.md`` into ``out`` atomically.

    :return: the two paths.
    """
    out = Path(out)
    eval_report.write_report(out, report, text=markdown(report))
    return out / 'report.json', out / 'report.md'


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
    return transform_points(ev.icp.transformation, transform_points(T_world_cam0, pts))


def first_camera_pose(scene: ScanNetScene, frame_id: int) -> np.ndarray:
    """Ground-truth ``[4, 4]`` pose of the first camera as the evaluation casts it."""
    return scene.pose(frame_id).astype(np.float32).astype(np.float64)

