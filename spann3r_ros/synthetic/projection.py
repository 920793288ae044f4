"""Pixel rectangles that hold the projection of a box: the only pixels a primitive is tested at."""

from __future__ import annotations

from typing import Optional

import numpy as np

from spann3r_ros.synthetic.layout import BOX_EDGES

# Margin, in pixels, around the projected bounding box of a primitive: the float rays deviate from
# the exact projection by far less than a pixel, so two pixels make the rectangle conservative.
RECT_MARGIN_PX = 2
# Box geometry is clipped at this camera depth before projection; it is below
# spann3r_ros.synthetic.intersect.MIN_HIT_DISTANCE, so no hit is lost, and keeps the projection
# finite for boxes that straddle the image plane.
CLIP_DEPTH = 1e-5


def screen_rect(corners_world: np.ndarray, T_world_cam: np.ndarray, K: np.ndarray, width: int,
                height: int) -> Optional[tuple[slice, slice]]:
    """Pixel rectangle that holds the projection of a convex polyhedron.

    The part of the polyhedron in front of :data:`CLIP_DEPTH` is the convex hull of its corners
    there and of the points where its edges cross that depth; the projection of the hull is
    bounded by the projections of those points.

    :param corners_world: ``[8, 3]`` box corners, indexed as in
        :data:`spann3r_ros.synthetic.layout.CORNER_SIGNS`.
    :param T_world_cam: ``[4, 4]`` camera-to-world pose.
    :param K: ``[3, 3]`` pinhole intrinsics.
    :param width: image width.
    :param height: image height.
    :return: ``(rows, cols)`` slices, or None when nothing of the box can be seen.
    """
    cam = (corners_world - T_world_cam[:3, 3]) @ T_world_cam[:3, :3]
    z = cam[:, 2]
    a, b = BOX_EDGES[:, 0], BOX_EDGES[:, 1]
    crossing = (z[a] >= CLIP_DEPTH) != (z[b] >= CLIP_DEPTH)
    a, b = a[crossing], b[crossing]
    s = (CLIP_DEPTH - z[a]) / (z[b] - z[a])
    points = np.concatenate([cam[z >= CLIP_DEPTH], cam[a] + s[:, None] * (cam[b] - cam[a])])
    if len(points) == 0:
        return None
    depth = np.maximum(points[:, 2], CLIP_DEPTH)  # the crossings sit on CLIP_DEPTH up to rounding
    u = np.clip(K[0, 0] * points[:, 0] / depth + K[0, 2], -1.0, width + 1.0)
    v = np.clip(K[1, 1] * points[:, 1] / depth + K[1, 2], -1.0, height + 1.0)
    x0 = max(int(np.floor(u.min())) - RECT_MARGIN_PX, 0)
    x1 = min(int(np.ceil(u.max())) + RECT_MARGIN_PX + 1, width)
    y0 = max(int(np.floor(v.min())) - RECT_MARGIN_PX, 0)
    y1 = min(int(np.ceil(v.max())) + RECT_MARGIN_PX + 1, height)
    if x0 >= x1 or y0 >= y1:
        return None
    return slice(y0, y1), slice(x0, x1)
