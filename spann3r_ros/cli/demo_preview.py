"""``preview.png`` of a demo run: the reconstructed map beside the ground truth, and confidence.

Both clouds are drawn in the ground-truth world frame (the map carried through the evaluation's
alignment), from the same viewpoint and with the same axis limits, so they can be compared by
eye. Matplotlib's Agg backend renders off-screen; nothing here needs a display or ROS.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from spann3r_model.io.atomic import atomic_output

#: Points drawn per cloud; more only slows matplotlib down.
MAX_DRAWN = 30_000


def _subsample(xyz: np.ndarray, rgb: Optional[np.ndarray], n: int, seed: int = 0
               ) -> tuple[np.ndarray, Optional[np.ndarray]]:
    if len(xyz) <= n:
        return xyz, rgb
    keep = np.random.default_rng(seed).choice(len(xyz), n, replace=False)
    return xyz[keep], None if rgb is None else rgb[keep]


def _limits(xyz: np.ndarray) -> np.ndarray:
    """Robust ``[3, 2]`` axis limits (1st-99th percentile with a margin), equal aspect."""
    lo, hi = np.percentile(xyz, 1, axis=0), np.percentile(xyz, 99, axis=0)
    centre, half = (lo + hi) / 2, max(float((hi - lo).max()) / 2 * 1.1, 1e-6)
    return np.stack([centre - half, centre + half], axis=1)


def render_preview(path: Path, map_xyz: np.ndarray, map_rgb: Optional[np.ndarray],
                   gt_xyz: np.ndarray, gt_rgb: Optional[np.ndarray], conf: np.ndarray,
                   image: Optional[np.ndarray] = None, title: str = '') -> Path:
    """Write the preview PNG atomically.

    :param map_xyz: ``[M, 3]`` reconstructed points in the ground-truth world frame.
    :param map_rgb: ``[M, 3]`` uint8 colours, or None.
    :param gt_xyz: ``[K, 3]`` ground-truth points in the world frame.
    :param gt_rgb: ``[K, 3]`` uint8 colours, or None.
    :param conf: ``[S, S]`` confidence image of one frame.
    :param image: ``[S, S, 3]`` uint8 model input of the same frame, shown beside it.
    :param title: figure title.
    :return: ``path``.
    :raises ValueError: when a cloud is empty.
    """
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot as plt

    if len(map_xyz) == 0 or len(gt_xyz) == 0:
        raise ValueError('cannot render an empty cloud')
    limits = _limits(np.asarray(gt_xyz, np.float64))
    panels = 4 if image is not None else 3
    fig = plt.figure(figsize=(5 * panels, 5.2))
    for k, (name, xyz, rgb) in enumerate((('reconstructed map (aligned)', map_xyz, map_rgb),
                                          ('ground truth', gt_xyz, gt_rgb))):
        xyz, rgb = _subsample(np.asarray(xyz), rgb, MAX_DRAWN, seed=k)
        ax = fig.add_subplot(1, panels, k + 1, projection='3d')
        colour = rgb / 255.0 if rgb is not None else 'tab:blue'
        ax.scatter(xyz[:, 0], xyz[:, 1], xyz[:, 2], c=colour, s=0.6, linewidths=0)
        ax.set_xlim(*limits[0])
        ax.set_ylim(*limits[1])
        ax.set_zlim(*limits[2])
        ax.view_init(elev=55, azim=-60)
        ax.set_title(f'{name}\n{len(xyz)} of the points drawn', fontsize=10)
        ax.set_xlabel('x [m]')
        ax.set_ylabel('y [m]')
    if image is not None:
        ax = fig.add_subplot(1, panels, 3)
        ax.imshow(image)
        ax.set_title('model input', fontsize=10)
        ax.axis('off')
    ax = fig.add_subplot(1, panels, panels)
    shown = ax.imshow(conf, cmap='viridis')
    ax.set_title('confidence', fontsize=10)
    ax.axis('off')
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.92) if title else None)
    path = Path(path)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=90, format='png')
    plt.close(fig)
    return path
