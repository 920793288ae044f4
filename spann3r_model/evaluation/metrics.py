"""Reconstruction and trajectory metrics, following the official Spann3R evaluation protocol.

The official ``eval.py`` aligns a prediction to the ground truth in three steps and then scores it:

1. median shift of z and median scale (ground-truth valid pixels only, lower medians as
   ``torch.nanmedian`` returns them), prediction rescaled to the ground-truth scale;
2. Open3D's legacy point-to-point ICP (1 nearest neighbour within 0.1, rigid Umeyama on all
   correspondences, at most 30 updates, relative fitness / RMSE criteria of 1e-6);
3. Acc / Comp (mean and median nearest-neighbour distances) and normal consistency from
   KNN-30 PCA normals.

Everything here is numpy + scipy (``cKDTree``); no Open3D. The ICP and the normals reproduce
Open3D's defaults closely enough that the official numbers come out within the tolerances of the
reference fixture (see ``test/tools/test_eval_reference.py``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
import logging
from typing import Optional

import numpy as np
from scipy.spatial import cKDTree

from spann3r_model.geometry.align import transform_points, umeyama

LOG = logging.getLogger(__name__)

#: Official ICP settings (``registration_icp`` defaults and eval.py's threshold).
ICP_MAX_DISTANCE = 0.1
ICP_MAX_ITERATIONS = 30
ICP_RELATIVE_FITNESS = 1e-6
ICP_RELATIVE_RMSE = 1e-6
#: Neighbourhood of Open3D's default ``estimate_normals()`` (the point itself included).
NORMAL_KNN = 30


def lower_median(values: np.ndarray) -> float:
    """Return the median as ``torch.nanmedian`` defines it: the lower middle value, NaNs ignored.

    :param values: any array; NaNs are dropped.
    :return: the element of rank ``(n - 1) // 2``.
    :raises ValueError: when no finite value remains.
    """
    flat = np.asarray(values, dtype=np.float64).ravel()
    flat = flat[~np.isnan(flat)]
    if flat.size == 0:
        raise ValueError('median of an empty selection')
    k = (flat.size - 1) // 2
    return float(np.partition(flat, k)[k])


@dataclass
class Alignment:
    """The median shift/scale alignment of eval.py.

    :param gt_shift_z: lower median of the ground-truth z (camera-0 frame).
    :param pred_shift_z: lower median of the predicted z over the same pixels.
    :param gt_scale: lower median distance of the shifted ground truth from its median centre.
    :param pred_scale: the same for the prediction, clipped to [1e-3, 1e3].
    :param n_points: ground-truth valid pixels used.
    """

    gt_shift_z: float
    pred_shift_z: float
    gt_scale: float
    pred_scale: float
    n_points: int

    @property
    def factor(self) -> float:
        """Factor applied to the prediction."""
        return self.gt_scale / self.pred_scale


def _shift_and_scale(points: np.ndarray) -> tuple[float, float, np.ndarray]:
    shift_z = lower_median(points[:, 2])
    shifted = points.copy()
    shifted[:, 2] -= shift_z
    centre = np.array([lower_median(shifted[:, i]) for i in range(3)])
    scale = lower_median(np.linalg.norm(shifted - centre, axis=1))
    return shift_z, scale, shifted


def align_shift_scale(pred_cam0: np.ndarray, gt_cam0: np.ndarray, valid: np.ndarray,
                      T_world_cam0: np.ndarray) -> tuple[np.ndarray, np.ndarray, Alignment]:
    """Align a prediction to the ground truth as eval.py does, and return both in world frame.

    :param pred_cam0: ``[N, H, W, 3]`` predicted pointmaps in camera 0's frame (any scale).
    :param gt_cam0: ``[N, H, W, 3]`` ground-truth pointmaps in camera 0's frame (metres).
    :param valid: ``[N, H, W]`` bool, ground-truth valid pixels (the only ones used).
    :param T_world_cam0: ``[4, 4]`` camera-0-to-world pose of the ground truth.
    :return: ``(pred [M, 3], gt [M, 3], alignment)`` float64 world points of the valid pixels in
        (frame, row, col) order.
    :raises ValueError: on mismatched shapes or no valid pixel.
    """
    pred_cam0 = np.asarray(pred_cam0)
    gt_cam0 = np.asarray(gt_cam0)
    valid = np.asarray(valid, dtype=bool)
    if pred_cam0.shape != gt_cam0.shape or pred_cam0.shape[:-1] != valid.shape:
        raise ValueError(f'prediction {pred_cam0.shape}, ground truth {gt_cam0.shape} and mask '
                         f'{valid.shape} do not match')
    if pred_cam0.shape[-1] != 3:
        raise ValueError(f'pointmaps must end in 3 coordinates, got {pred_cam0.shape}')
    if not valid.any():
        raise ValueError('no valid ground-truth pixel to evaluate')
    pred = pred_cam0[valid].astype(np.float64)
    gt = gt_cam0[valid].astype(np.float64)
    if not np.isfinite(pred).all():
        raise ValueError('prediction has non-finite points at ground-truth valid pixels')
    gt_shift, gt_scale, gt = _shift_and_scale(gt)
    pred_shift, pred_scale, pred = _shift_and_scale(pred)
    pred_scale = float(np.clip(pred_scale, 1e-3, 1e3))
    pred *= gt_scale / pred_scale
    # eval.py adds the ground-truth shift back to both clouds before mapping them to the world.
    pred[:, 2] += gt_shift
    gt[:, 2] += gt_shift
    pred = transform_points(T_world_cam0, pred)
    gt = transform_points(T_world_cam0, gt)
    return pred, gt, Alignment(gt_shift, pred_shift, gt_scale, pred_scale, int(valid.sum()))


@dataclass
class IcpResult:
    """Outcome of :func:`icp_point_to_point`.

    :param transformation: ``[4, 4]`` source-to-target transform.
    :param fitness: fraction of source points with a correspondence.
    :param inlier_rmse: RMSE over the correspondences.
    :param n_correspondences: number of correspondences.
    :param iterations: transformation updates made.
    """

    transformation: np.ndarray
    fitness: float
    inlier_rmse: float
    n_correspondences: int
    iterations: int


def _correspondences(tree: cKDTree, points: np.ndarray, max_distance: float
                     ) -> tuple[np.ndarray, np.ndarray, float, float]:
    dist, idx = tree.query(points, k=1, distance_upper_bound=max_distance, workers=-1)
    found = np.isfinite(dist)
    n = int(found.sum())
    fitness = n / len(points) if len(points) else 0.0
    rmse = float(np.sqrt(np.sum(dist[found] ** 2) / n)) if n else 0.0
    return np.flatnonzero(found), idx[found], fitness, rmse


def icp_point_to_point(source: np.ndarray, target: np.ndarray,
                       max_distance: float = ICP_MAX_DISTANCE,
                       init: Optional[np.ndarray] = None,
                       max_iterations: int = ICP_MAX_ITERATIONS,
                       relative_fitness: float = ICP_RELATIVE_FITNESS,
                       relative_rmse: float = ICP_RELATIVE_RMSE) -> IcpResult:
    """Point-to-point ICP with the semantics of Open3D's legacy ``registration_icp``.

    Each update fits a rigid transform to all current correspondences (nearest target point
    within ``max_distance``) and is composed on the left; the loop stops when both fitness and
    RMSE change by less than their thresholds, or after ``max_iterations`` updates.

    :param source: ``[N, 3]`` points to move.
    :param target: ``[M, 3]`` fixed points.
    :param max_distance: correspondence radius.
    :param init: ``[4, 4]`` initial transform (identity by default).
    :param max_iterations: maximum number of updates.
    :param relative_fitness: convergence threshold on the fitness change.
    :param relative_rmse: convergence threshold on the RMSE change.
    :return: the transform and the statistics of the final correspondences.
    """
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if source.ndim != 2 or source.shape[1] != 3 or target.ndim != 2 or target.shape[1] != 3:
        raise ValueError(f'expected [N, 3] clouds, got {source.shape} and {target.shape}')
    T = np.eye(4) if init is None else np.asarray(init, dtype=np.float64).copy()
    current = transform_points(T, source)
    tree = cKDTree(target)
    src_idx, dst_idx, fitness, rmse = _correspondences(tree, current, max_distance)
    iterations = 0
    for _ in range(max_iterations):
        if len(src_idx) < 3:
            break
        _, R, t = umeyama(current[src_idx], target[dst_idx], with_scale=False)
        update = np.eye(4)
        update[:3, :3], update[:3, 3] = R, t
        T = update @ T
        current = current @ R.T + t
        iterations += 1
        prev_fitness, prev_rmse = fitness, rmse
        src_idx, dst_idx, fitness, rmse = _correspondences(tree, current, max_distance)
        if (abs(prev_fitness - fitness) < relative_fitness
                and abs(prev_rmse - rmse) < relative_rmse):
            break
    return IcpResult(T, fitness, rmse, len(src_idx), iterations)


def estimate_normals(points: np.ndarray, knn: int = NORMAL_KNN,
                     tree: Optional[cKDTree] = None) -> np.ndarray:
    """Estimate unit normals by PCA of each point's ``knn`` nearest neighbours (itself included).

    Matches Open3D's default ``estimate_normals()`` up to the sign, which the normal-consistency
    metric ignores.

    :param points: ``[N, 3]`` cloud.
    :param knn: neighbourhood size.
    :param tree: a ``cKDTree`` of ``points`` to reuse.
    :return: ``[N, 3]`` float64 unit normals.
    """
    points = np.asarray(points, dtype=np.float64)
    k = min(knn, len(points))
    if k < 3:
        raise ValueError(f'need at least 3 points for normals, got {len(points)}')
    tree = tree if tree is not None else cKDTree(points)
    normals = np.empty_like(points)
    # Chunked so that the [chunk, k, 3] neighbourhoods stay a few tens of MB.
    chunk = 65536
    for start in range(0, len(points), chunk):
        _, idx = tree.query(points[start:start + chunk], k=k, workers=-1)
        nb = points[idx.reshape(len(idx), k)]
        centred = nb - nb.mean(axis=1, keepdims=True)
        cov = np.einsum('nki,nkj->nij', centred, centred) / k
        _, vecs = np.linalg.eigh(cov)
        normals[start:start + chunk] = vecs[:, :, 0]
    return normals


def _nn_scores(tree: cKDTree, query: np.ndarray, tree_normals: np.ndarray,
               query_normals: np.ndarray) -> tuple[np.ndarray, float, float, float, float]:
    dist, idx = tree.query(query, k=1, workers=-1)
    cos = np.abs(np.sum(tree_normals[idx] * query_normals, axis=-1))
    return (dist, float(np.mean(dist)), float(np.median(dist)), float(np.mean(cos)),
            float(np.median(cos)))


@dataclass
class ReconstructionMetrics:
    """Official Acc / Comp / NC plus the derived means (NC, chamfer)."""

    acc: float
    acc_med: float
    comp: float
    comp_med: float
    nc1: float
    nc1_med: float
    nc2: float
    nc2_med: float

    @property
    def nc(self) -> float:
        """Mean of NC1 and NC2."""
        return (self.nc1 + self.nc2) / 2

    @property
    def nc_med(self) -> float:
        """Mean of the NC1 and NC2 medians."""
        return (self.nc1_med + self.nc2_med) / 2

    @property
    def chamfer(self) -> float:
        """Mean of Acc and Comp."""
        return (self.acc + self.comp) / 2

    def to_dict(self) -> dict[str, float]:
        """All values, derived ones included."""
        out = asdict(self)
        out.update(nc=self.nc, nc_med=self.nc_med, chamfer=self.chamfer)
        return out


def reconstruction_metrics(pred: np.ndarray, gt: np.ndarray, distances: Optional[dict] = None
                           ) -> ReconstructionMetrics:
    """Acc, Comp and normal consistency of two aligned clouds (official definitions).

    :param pred: ``[N, 3]`` predicted points.
    :param gt: ``[M, 3]`` ground-truth points.
    :param distances: if given, receives the per-point ``acc`` ``[N]`` and ``comp`` ``[M]``
        nearest-neighbour distances.
    :return: the metrics; Acc looks up ``pred`` in ``gt``, Comp ``gt`` in ``pred``.
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    gt_tree, pred_tree = cKDTree(gt), cKDTree(pred)
    n_gt = estimate_normals(gt, tree=gt_tree)
    n_pred = estimate_normals(pred, tree=pred_tree)
    acc_dist, acc, acc_med, nc1, nc1_med = _nn_scores(gt_tree, pred, n_gt, n_pred)
    comp_dist, comp, comp_med, nc2, nc2_med = _nn_scores(pred_tree, gt, n_pred, n_gt)
    if distances is not None:
        distances.update(acc=acc_dist, comp=comp_dist)
    return ReconstructionMetrics(acc, acc_med, comp, comp_med, nc1, nc1_med, nc2, nc2_med)


@dataclass
class CloudEvaluation:
    """Everything :func:`evaluate_pointmaps` computed."""

    alignment: Alignment
    icp: IcpResult
    metrics: ReconstructionMetrics
    pred_points: np.ndarray
    gt_points: np.ndarray
    distances: dict

    def to_dict(self) -> dict:
        """JSON-ready summary (no point arrays)."""
        return {
            'alignment': {**asdict(self.alignment), 'factor': self.alignment.factor},
            'icp': {'transformation': self.icp.transformation.tolist(),
                    'fitness': self.icp.fitness, 'inlier_rmse': self.icp.inlier_rmse,
                    'n_correspondences': self.icp.n_correspondences,
                    'iterations': self.icp.iterations},
            'metrics': self.metrics.to_dict(),
        }


def evaluate_pointmaps(pred_cam0: np.ndarray, gt_cam0: np.ndarray, valid: np.ndarray,
                       T_world_cam0: np.ndarray, use_icp: bool = True) -> CloudEvaluation:
    """Run the whole official protocol on pointmaps.

    :param pred_cam0: ``[N, H, W, 3]`` predicted pointmaps in camera 0's frame.
    :param gt_cam0: ``[N, H, W, 3]`` ground-truth pointmaps in camera 0's frame.
    :param valid: ``[N, H, W]`` ground-truth valid mask.
    :param T_world_cam0: ``[4, 4]`` ground-truth pose of camera 0.
    :param use_icp: run the ICP refinement (the official protocol does).
    :return: alignment, ICP, metrics, the final world-frame clouds and the per-point
        nearest-neighbour distances (``distances['acc']``, ``distances['comp']``).
    """
    pred, gt, alignment = align_shift_scale(pred_cam0, gt_cam0, valid, T_world_cam0)
    if use_icp:
        icp = icp_point_to_point(pred, gt)
        pred = transform_points(icp.transformation, pred)
    else:
        icp = IcpResult(np.eye(4), float('nan'), float('nan'), 0, 0)
    LOG.info('aligned %d points (scale factor %.6g), ICP fitness %.4f after %d updates',
             alignment.n_points, alignment.factor, icp.fitness, icp.iterations)
    distances: dict = {}
    metrics = reconstruction_metrics(pred, gt, distances)
    return CloudEvaluation(alignment, icp, metrics, pred, gt, distances)


def absolute_trajectory_error(est_positions: np.ndarray, gt_positions: np.ndarray,
                              with_scale: bool = True) -> dict:
    """ATE after a Sim(3) (or SE(3)) Umeyama alignment of the estimated camera centres.

    :param est_positions: ``[N, 3]`` estimated camera centres.
    :param gt_positions: ``[N, 3]`` ground-truth camera centres.
    :param with_scale: align with a similarity (monocular estimates have no metric scale); a
        trajectory whose centres all coincide is aligned rigidly whatever this says.
    :return: ``rmse``, ``mean``, ``median``, ``max``, the alignment ``scale``, ``R``, ``t``,
        ``n`` and the ``aligned`` ``[N, 3]`` positions.
    """
    est = np.asarray(est_positions, dtype=np.float64)
    gt = np.asarray(gt_positions, dtype=np.float64)
    if est.shape != gt.shape or est.ndim != 2 or est.shape[1] != 3:
        raise ValueError(f'expected two [N, 3] position arrays, got {est.shape} and {gt.shape}')
    if len(est) < 3:
        raise ValueError(f'ATE needs at least 3 poses, got {len(est)}')
    # Centres that never moved have no scale to estimate: they are aligned rigidly.
    scale, R, t = umeyama(est, gt, with_scale=with_scale and bool(np.ptp(est, axis=0).any()))
    aligned = scale * est @ R.T + t
    err = np.linalg.norm(aligned - gt, axis=1)
    return {'rmse': float(np.sqrt(np.mean(err ** 2))), 'mean': float(err.mean()),
            'median': float(np.median(err)), 'max': float(err.max()), 'scale': scale,
            'R': R, 't': t, 'n': int(len(err)), 'aligned': aligned}


def latency_stats(seconds: np.ndarray) -> dict[str, float]:
    """Per-frame latency summary.

    :param seconds: ``[N]`` per-frame processing times in seconds.
    :return: ``fps`` (frames over total time), mean and p50/p90/p95/p99/max in milliseconds.
    """
    t = np.asarray(seconds, dtype=np.float64)
    if t.size == 0:
        raise ValueError('no latency samples')
    total = float(t.sum())
    ms = t * 1e3
    out = {'n': int(t.size), 'fps': t.size / total if total > 0 else float('inf'),
           'mean_ms': float(ms.mean())}
    for p in (50, 90, 95, 99):
        out[f'p{p}_ms'] = float(np.percentile(ms, p))
    out['max_ms'] = float(ms.max())
    return out
