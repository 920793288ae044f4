"""``metric_map.png``: floor plans of the node's metric output beside the ground truth.

A metric map is right when it lies on the ground truth without any alignment, so the figure draws
both in the output frame as published (``odom`` or the first camera's frame, z up): a horizontal
slice of each cloud seen from above (the floor and ceiling left out, walls and furniture as
outlines), the camera paths on top, and the two overlaid. A wrong scale shows as a smaller or
larger room, a wrong rotation as a turned one. Matplotlib's Agg backend renders off-screen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from spann3r_model.io.atomic import atomic_output

#: Points drawn per cloud.
MAX_DRAWN = 40_000
#: The slice kept: between these fractions of the ground truth's height range.
SLICE = (0.2, 0.8)


def height_band(gt_xyz: np.ndarray) -> tuple[float, float]:
    """Return the ``(low, high)`` z of the slice, from the ground truth's 1st-99th percentiles."""
    lo, hi = np.percentile(np.asarray(gt_xyz)[:, 2], (1, 99))
    return float(lo + SLICE[0] * (hi - lo)), float(lo + SLICE[1] * (hi - lo))


def _slice(xyz: np.ndarray, rgb: Optional[np.ndarray], band: tuple[float, float], seed: int
           ) -> tuple[np.ndarray, Optional[np.ndarray]]:
    keep = np.flatnonzero((xyz[:, 2] >= band[0]) & (xyz[:, 2] <= band[1]))
    if len(keep) > MAX_DRAWN:
        keep = np.random.default_rng(seed).choice(keep, MAX_DRAWN, replace=False)
    return xyz[keep], None if rgb is None else rgb[keep]


def render_metric_map(path: Path, pred_xyz: np.ndarray, pred_rgb: Optional[np.ndarray],
                      gt_xyz: np.ndarray, est_centres: np.ndarray, gt_centres: np.ndarray,
                      frame_id: str, title: str = '') -> Path:
    """Write the figure atomically.

    :param pred_xyz: ``[M, 3]`` published points in the output frame, metres.
    :param pred_rgb: ``[M, 3]`` uint8 colours, or None.
    :param gt_xyz: ``[K, 3]`` ground-truth points in the same frame.
    :param est_centres: ``[P, 3]`` published camera centres.
    :param gt_centres: ``[Q, 3]`` ground-truth camera centres in the same frame.
    :param frame_id: the output frame, for the axis labels.
    :return: ``path``.
    :raises ValueError: when a cloud is empty.
    """
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot as plt

    pred_xyz, gt_xyz = np.asarray(pred_xyz, np.float64), np.asarray(gt_xyz, np.float64)
    if len(pred_xyz) == 0 or len(gt_xyz) == 0:
        raise ValueError('cannot render an empty cloud')
    band = height_band(gt_xyz)
    gt_xy, _ = _slice(gt_xyz, None, band, 0)
    pred_xy, pred_c = _slice(pred_xyz, pred_rgb, band, 1)
    lo, hi = np.percentile(gt_xyz[:, :2], 1, axis=0), np.percentile(gt_xyz[:, :2], 99, axis=0)
    centre, half = (lo + hi) / 2, float((hi - lo).max()) / 2 * 1.25
    est_centres = np.asarray(est_centres, np.float64).reshape(-1, 3)
    gt_centres = np.asarray(gt_centres, np.float64).reshape(-1, 3)
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.6), layout='constrained')
    panels = (
        ('ground truth', [(gt_xy, 'k', None)], [(gt_centres, 'tab:green', 'true path')]),
        ('published, not re-aligned', [(pred_xy, None, pred_c)],
         [(est_centres, 'tab:red', 'published path')]),
        ('overlaid (published red, truth black)', [(pred_xy, 'tab:red', None), (gt_xy, 'k', None)],
         [(gt_centres, 'tab:green', 'true path'), (est_centres, 'tab:red', 'published path')]),
    )
    for ax, (name, clouds, paths) in zip(axes, panels):
        for xyz, colour, rgb in clouds:
            c = rgb / 255.0 if rgb is not None else colour
            ax.scatter(xyz[:, 0], xyz[:, 1], c=c, s=0.4, linewidths=0,
                       alpha=0.35 if len(clouds) > 1 and colour == 'k' else 1.0)
        for centres, colour, label in paths:
            if len(centres):
                ax.plot(centres[:, 0], centres[:, 1], '-', color=colour, lw=1.6, label=label)
                ax.plot(centres[:1, 0], centres[:1, 1], 'o', color=colour, ms=4)
        ax.set_xlim(centre[0] - half, centre[0] + half)
        ax.set_ylim(centre[1] - half, centre[1] + half)
        ax.set_aspect('equal')
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(f'x in {frame_id} [m]')
        ax.set_ylabel(f'y in {frame_id} [m]')
        ax.grid(True, lw=0.3)
        if paths:
            ax.legend(loc='lower right', fontsize=8)
    fig.suptitle(title or f'slice z {band[0]:.2f} to {band[1]:.2f} m, seen from above',
                 fontsize=11)
    path = Path(path)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=80, format='png')
    plt.close(fig)
    return path
