"""Sim(3) bookkeeping of memory segments for long runs (ROS-free).

A long or multi-room sequence is split into segments, each reconstructed with a fresh spatial
memory in its own frame (the first camera of the segment). The last few frames of a segment are
re-run at the start of the next one, so both segments predict a pointmap for the *same pixels*
of those frames; a similarity transform fitted to these pixel correspondences
(:func:`spann3r_model.geometry.align.umeyama`) maps the new segment into the frame of the
first one, and the global map stays continuous.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from spann3r_model.geometry.align import Sim3, umeyama

#: Correspondences used for the fit, subsampled uniformly above this count.
MAX_CORRESPONDENCES = 20000
#: Fewer valid correspondences than this and the segments are not aligned.
MIN_CORRESPONDENCES = 100


def correspondences(old_points: list[np.ndarray], old_conf: list[np.ndarray],
                    new_points: list[np.ndarray], new_conf: list[np.ndarray],
                    min_confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Collect matching pixels of frames predicted by two segments.

    :param old_points: per shared frame, ``[H, W, 3]`` points in the world frame.
    :param old_conf: per shared frame, ``[H, W]`` confidence of the old prediction.
    :param new_points: per shared frame, ``[H, W, 3]`` points in the new segment's frame.
    :param new_conf: per shared frame, ``[H, W]`` confidence of the new prediction.
    :param min_confidence: both confidences must reach this.
    :return: ``(src [N, 3], dst [N, 3])`` = (new, old) points of the same pixels.
    """
    src, dst = [], []
    for p_old, c_old, p_new, c_new in zip(old_points, old_conf, new_points, new_conf):
        if p_old.shape != p_new.shape:
            raise ValueError(f'shared frame shapes differ: {p_old.shape} vs {p_new.shape}')
        valid = ((c_old >= min_confidence) & (c_new >= min_confidence)
                 & np.isfinite(p_old).all(-1) & np.isfinite(p_new).all(-1))
        src.append(p_new[valid])
        dst.append(p_old[valid])
    src_all = np.concatenate(src) if src else np.zeros((0, 3))
    dst_all = np.concatenate(dst) if dst else np.zeros((0, 3))
    if len(src_all) > MAX_CORRESPONDENCES:
        keep = np.linspace(0, len(src_all) - 1, MAX_CORRESPONDENCES).astype(np.int64)
        src_all, dst_all = src_all[keep], dst_all[keep]
    return src_all.astype(np.float64), dst_all.astype(np.float64)


def fit_segment(src: np.ndarray, dst: np.ndarray) -> Optional[Sim3]:
    """Fit the Sim(3) taking new-segment points ``src`` onto world points ``dst``.

    :return: the transform, or None when there are too few correspondences or the fit is
        degenerate (coincident source points, non-positive or non-finite scale).
    """
    if len(src) < MIN_CORRESPONDENCES:
        return None
    try:
        scale, R, t = umeyama(src, dst, with_scale=True)
    except ValueError:  # the new segment's points all coincide
        return None
    scale = float(scale)
    if not np.isfinite(scale) or scale <= 0 or not np.isfinite(R).all():
        return None
    return Sim3(scale=scale, R=np.asarray(R, np.float64), t=np.asarray(t, np.float64).ravel())
