"""Score a metric run in metres as the node published it: no alignment of the evaluation's own.

* **metric**: the published points of the frames not held back (masked as the node publishes
  them, in the output frame) against the ground-truth points of the same pixels expressed in
  that frame, Acc / Comp / NC with :func:`~spann3r_model.evaluation.metrics
  .reconstruction_metrics`; ATE of the published camera centres against the ground-truth
  ones, no alignment. For ``odometry`` and ``both`` the ground truth reaches ``odom`` as
  :func:`output_from_world` says (the same frame by name, or related at the odometry's first
  scored pose); for ``depth`` the output frame is the first camera's, REP 103 axes, reached
  through that camera's ground-truth pose and ``R_BODY_OPTICAL``.
* **scale error**: the node's final scale against the Sim(3) oracle, the Umeyama scale from the
  reconstruction-frame camera centres to the ground-truth ones: ``scale / oracle - 1``; and
  against the geometry's scale (:func:`geometry_scale`: true over reconstructed distance from
  each camera to its points), which differ when the model's path is wrong and its depth right.
* **unaligned**: Acc / Comp of the same pixels in the reconstruction's own frame (what the
  metric figures would be were the alignment skipped), each way on an even subsample of at
  most :data:`UNALIGNED_QUERIES` query points: far-off points are slow to look up, and these
  figures only say how far off that frame is.
* **sim3**: the same run scored the old way, every published frame: the official median
  shift / scale and ICP (:func:`~spann3r_model.evaluation.metrics.evaluate_pointmaps`), ATE
  after Sim(3).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
from scipy.spatial import cKDTree

from spann3r_model.evaluation.metrics import (
    absolute_trajectory_error,
    evaluate_pointmaps,
    reconstruction_metrics,
)
from spann3r_model.geometry.align import transform_points, umeyama
from spann3r_model.geometry.frames import R_BODY_OPTICAL
from spann3r_ros.cli.metric_run import MetricRun, Published

#: Query points of each unaligned figure, at most.
UNALIGNED_QUERIES = 20_000


def _rigid_inverse(T: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = T[:3, :3].T
    out[:3, 3] = -T[:3, :3].T @ T[:3, 3]
    return out


def output_from_world(run: MetricRun, T_world_cam0: np.ndarray) -> np.ndarray:
    """Return ``[4, 4]`` from the ground-truth world to the run's output frame.

    ``depth``: the first camera's frame, REP 103 axes. ``odometry`` / ``both``: ``odom``. When
    the ground truth is given in a frame of that name, the two are one; otherwise (a motion
    capture ``world``, a simulator's ``map``) they are related where the odometry starts to be
    scored: at the first frame with both an odometry pose and a true one, the odometry is taken
    to be exact, and its error grows from there as a robot's does.

    :raises ValueError: when no frame has both poses.
    """
    if run.config.metric_settings().uses_odometry:
        if run.truth.world_frame == run.config.odom_frame.lstrip('/'):
            return np.eye(4)
        for stamp in sorted(run.odometry_poses):
            T_world_cam = run.truth.pose(stamp)
            if T_world_cam is not None:
                return run.odometry_poses[stamp] @ _rigid_inverse(T_world_cam)
        raise ValueError('no frame has both an odometry pose and a ground-truth pose, so the '
                         'ground truth cannot be expressed in the odometry frame')
    T_map_optical = np.eye(4)
    T_map_optical[:3, :3] = R_BODY_OPTICAL
    return T_map_optical @ _rigid_inverse(T_world_cam0)


def _ate(est: np.ndarray, gt: np.ndarray) -> Optional[dict[str, float]]:
    if not len(est):
        return None
    err = np.linalg.norm(est - gt, axis=1)
    return {'rmse': float(np.sqrt(np.mean(err ** 2))), 'mean': float(err.mean()),
            'median': float(np.median(err)), 'max': float(err.max()), 'n': int(len(err))}


def unaligned_scores(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Acc / Comp (mean, median) of two clouds from subsampled queries (see the module)."""
    out = {}
    for name, query, target in (('acc', pred, gt), ('comp', gt, pred)):
        step = max(1, len(query) // UNALIGNED_QUERIES)
        dist, _ = cKDTree(target).query(query[::step], k=1, workers=-1)
        out[name], out[f'{name}_med'] = float(np.mean(dist)), float(np.median(dist))
    return out


def alignment_summary(run: MetricRun, oracle: Optional[float]) -> dict[str, Any]:
    """Frames held back, frames until aligned, the final state and scale, the scale error.

    ``frames_until_aligned`` counts the published outputs up to the first one not held back
    (1: the first was aligned already; None: none was).
    """
    held = [p.held for p in run.published]
    first = next((i for i, h in enumerate(held) if not h), None)
    scale = run.transform.scale if run.transform is not None else None
    return {
        'metric_source': run.config.metric_source, 'frame_id': run.frame_id,
        'odometry_source': run.config.odometry_source
        if run.config.metric_settings().uses_odometry else None,
        'published_frame_ids': sorted({p.frame_id for p in run.published if not p.held}),
        'final_state': run.status.get('metric_state'), 'frames_fed': run.frames_fed,
        'frames_published': len(held), 'frames_held': int(sum(held)),
        'held_fraction': float(np.mean(held)) if held else None,
        'frames_until_aligned': None if first is None else first + 1,
        'scale': scale, 'oracle_scale': oracle,
        'scale_error': scale / oracle - 1.0 if scale is not None and oracle else None,
        'status': dict(run.status), 'input_faults': dict(run.input_faults)}


def oracle_scale(run: MetricRun) -> Optional[float]:
    """Return the Umeyama scale from the reconstruction-frame centres to the ground truth."""
    pairs = [(T[:3, 3], run.truth.pose(s)) for s, T in run.trajectory]
    pairs = [(c, T[:3, 3]) for c, T in pairs if T is not None]
    if len(pairs) < 3:
        return None
    src, dst = (np.stack(x) for x in zip(*pairs))
    if not np.ptp(src, axis=0).any():
        return None
    return float(umeyama(src, dst, with_scale=True)[0])


def geometry_scale(run: MetricRun, views: list[tuple[Published, Any]]) -> Optional[float]:
    """Return the median ratio of true to reconstructed distance from camera to point.

    Over the published pixels valid in both, in the reconstruction's frame: the scale of the
    geometry the node reconstructed, which a model whose path is wrong can have right (then the
    trajectory oracle, :func:`oracle_scale`, is not what the depth route should meet).
    """
    poses = dict(run.trajectory)
    ratios = []
    for p, v in views:
        T = poses.get(p.stamp)
        valid = p.mask & v.valid
        if T is None or not valid.any():
            continue
        pred = np.linalg.norm(p.reconstruction_points()[valid] - T[:3, 3], axis=1)
        true = np.linalg.norm(v.pts_world[valid] - v.T_world_cam[:3, 3], axis=1)
        keep = pred > 0
        ratios.append(true[keep] / pred[keep])
    ratios = np.concatenate(ratios) if ratios else np.zeros(0)
    return float(np.median(ratios)) if len(ratios) else None


def score_metric_run(run: MetricRun, use_icp: bool = True) -> tuple[dict, dict]:
    """Score ``run`` (see the module docstring).

    :return: ``(report, clouds)``: the JSON-ready report and, in the output frame, the metric
        prediction and ground-truth clouds and the published and true camera centres of the
        frames scored (``prediction``, ``ground_truth``, ``published_path``, ``true_path``;
        empty before the first alignment).
    :raises ValueError: without ground truth for the first camera or for any published frame.
    """
    if run.first_stamp is None or not run.published:
        raise ValueError('the node published no frame (at least 2 colour frames are needed)')
    T0 = run.truth.pose(run.first_stamp)
    if T0 is None:
        raise ValueError(f'no ground truth: {run.topics.gt_pose} has no pose at the first '
                         f'frame (stamp {run.first_stamp:.3f})')
    T_out_world = output_from_world(run, T0)
    views = [(p, run.truth.view(p.stamp)) for p in run.published]
    views = [(p, v) for p, v in views if v is not None]
    if not views:
        raise ValueError(f'no ground truth: no published frame has a pose on '
                         f'{run.topics.gt_pose} and a depth image on {run.topics.depth}')
    report: dict[str, Any] = {'sequence': run.topics.image, 'source': 'metric',
                              'min_confidence': run.config.min_confidence,
                              'image_size': run.config.image_size,
                              'frames_without_ground_truth': len(run.published) - len(views),
                              'wall_s': run.wall_s}
    report['alignment'] = alignment_summary(run, oracle_scale(run))
    geometry = geometry_scale(run, views)
    scale = report['alignment']['scale']
    report['alignment'].update(
        geometry_scale=geometry,
        scale_error_geometry=scale / geometry - 1.0 if scale is not None and geometry else None)
    clouds, metric, unaligned = {}, None, None
    aligned = [(p, v) for p, v in views if not p.held]
    pred, pred_recon, gt, rgb = [], [], [], []
    for p, v in aligned:
        valid = p.mask & v.valid
        pred.append(p.points[valid].astype(np.float64))
        pred_recon.append(p.reconstruction_points()[valid])
        gt.append(transform_points(T_out_world, v.pts_world[valid]))
        rgb.append(p.rgb[valid])
    if aligned and sum(len(x) for x in pred) >= 3:
        pred_all, gt_all = np.concatenate(pred), np.concatenate(gt)
        metric = reconstruction_metrics(pred_all, gt_all).to_dict()
        metric.update(frames=len(aligned), points=len(pred_all))
        unaligned = unaligned_scores(np.concatenate(pred_recon), gt_all)
        posed = [(p.T[:3, 3], v.T_world_cam[:3, 3]) for p, v in aligned if p.T is not None]
        est = np.array([e for e, _ in posed]).reshape(-1, 3)
        ref = transform_points(T_out_world, np.array([g for _, g in posed]).reshape(-1, 3))
        metric['ate'] = _ate(est, ref)
        clouds = {'prediction': (pred_all, np.concatenate(rgb)), 'ground_truth': (gt_all, None),
                  'published_path': (est, None), 'true_path': (ref, None)}
    report['metric'] = metric
    report['unaligned'] = unaligned
    report['sim3'] = sim3_scores(run, views, T0, use_icp)
    return report, clouds


def sim3_scores(run: MetricRun, views: list[tuple[Published, Any]], T0: np.ndarray,
                use_icp: bool) -> dict[str, Any]:
    """Score every published frame the old way: median shift / scale, ICP, ATE after Sim(3)."""
    T_cam0_world = _rigid_inverse(T0)
    # Reconstruction frame (REP 103 axes) to the first camera's optical frame: p @ R.
    pred = np.stack([p.reconstruction_points() @ R_BODY_OPTICAL for p, _ in views])
    gt = np.stack([transform_points(T_cam0_world, v.pts_world) for _, v in views])
    valid = np.stack([p.mask & v.valid for p, v in views])
    pred = np.where(valid[..., None], pred, 0.0)
    ev = evaluate_pointmaps(pred, gt, valid, T0, use_icp=use_icp)
    out = {'frames': len(views), 'evaluated_pixels': int(valid.sum()), **ev.to_dict()}
    pairs = [(T[:3, 3], run.truth.pose(s)) for s, T in run.trajectory]
    pairs = [(c, T[:3, 3]) for c, T in pairs if T is not None]
    out['ate'] = None
    if len(pairs) >= 3:
        est, ref = (np.stack(x) for x in zip(*pairs))
        ate = absolute_trajectory_error(est, ref)
        out['ate'] = {k: ate[k] for k in ('rmse', 'mean', 'median', 'max', 'scale', 'n')}
    return out


def _f(value: Any, digits: int = 4) -> str:
    return 'n/a' if value is None else f'{value:.{digits}g}' if isinstance(value, float) \
        else str(value)


def _pct(fraction: Optional[float]) -> str:
    return 'n/a' if fraction is None else f'{100 * fraction:.3g}%'


def metric_markdown(report: dict[str, Any]) -> str:
    """Return ``report.md`` of a metric run."""
    a, m, u, s = (report.get(k) or {} for k in ('alignment', 'metric', 'unaligned', 'sim3'))
    via = f' ({a["odometry_source"]})' if a.get('odometry_source') else ''
    held = a.get('held_fraction')
    lines = [f'# Metric evaluation of {report.get("sequence")}', '',
             f'metric_source {a.get("metric_source")}{via}: outputs in `{a.get("frame_id")}`, '
             f'metres; {a.get("frames_published")} frames published of {a.get("frames_fed")} '
             f'fed; model {report.get("image_size")} px, min_confidence '
             f'{_f(report.get("min_confidence"))}.', '',
             f'Alignment: final state **{a.get("final_state")}**, first aligned output '
             f'{_f(a.get("frames_until_aligned"))}; {a.get("frames_held")} outputs held back '
             f'({_pct(held)}). Scale '
             f'{_f(a.get("scale"))} m/unit, Sim(3) oracle {_f(a.get("oracle_scale"))}: scale '
             f'error **{_pct(a.get("scale_error"))}**; against the geometry\'s scale '
             f'{_f(a.get("geometry_scale"))}: {_pct(a.get("scale_error_geometry"))}.', '',
             '| | metric, no alignment | Sim(3)-aligned (official protocol) | reconstruction '
             'frame, unaligned |', '|---|---|---|---|']
    sm = s.get('metrics') or {}
    for key, label in (('acc', 'Acc'), ('comp', 'Comp')):
        lines.append(f'| {label} mean / median (m) | {_f(m.get(key))} / '
                     f'{_f(m.get(key + "_med"))} | {_f(sm.get(key))} / {_f(sm.get(key + "_med"))}'
                     f' | {_f(u.get(key))} / {_f(u.get(key + "_med"))} |')
    lines.append(f'| NC | {_f(m.get("nc"))} | {_f(sm.get("nc"))} | |')
    m_ate, s_ate = m.get('ate') or {}, s.get('ate') or {}
    lines += [f'| ATE RMSE (m) | {_f(m_ate.get("rmse"))} | {_f(s_ate.get("rmse"))} | |',
              f'| frames scored | {_f(m.get("frames"))} | {_f(s.get("frames"))} | '
              f'{_f(m.get("frames"))} |', '']
    status = a.get('status') or {}
    lines += ['Diagnostics: ' + ', '.join(f'{k} {v}' for k, v in status.items()), '']
    if a.get('input_faults'):
        lines += ['Input messages dropped: ' + ', '.join(
            f'{k} {v}' for k, v in sorted(a['input_faults'].items())), '']
    return '\n'.join(lines)
