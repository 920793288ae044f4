"""Distances along camera rays to the primitives of a synthetic room: boxes, the room, spheres.

Ray directions are float64 (the camera rays are), origins and box extents float32, distances
float32; every expression keeps the dtypes and the operation order of a plain ray caster, so
results do not depend on which pixels are computed together.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from spann3r_ros.synthetic.layout import Surface
from spann3r_ros.synthetic.scratch import Planes, Scratch

# Hits closer than this (ray parameter = depth in metres) are ignored.
MIN_HIT_DISTANCE = 1e-4


def local_origin(s: Surface, origin: np.ndarray) -> np.ndarray:
    """Return the ray origin ``[3]`` float32 in the frame of the surface."""
    cy, sy = np.cos(s.yaw), np.sin(s.yaw)
    o = origin - s.centre
    return np.array([cy * o[0] + sy * o[1], -sy * o[0] + cy * o[1], o[2]], np.float32)


def to_local(s: Surface, v: Planes, S: Scratch) -> Planes:
    """Rotate vectors (three arrays) into the frame of the surface (a yaw: z is kept)."""
    if s.yaw == 0.0:
        # cos = 1 and sin = 0 exactly: the rotation could only flip the sign of a zero
        # component, which changes no distance (the slab bounds straddle or share the sign).
        return v
    cy, sy = np.float32(np.cos(s.yaw)), np.float32(np.sin(s.yaw))
    x, y, tmp = S(v[0].shape), S(v[0].shape), S(v[0].shape)
    np.multiply(cy, v[0], out=x)
    x += np.multiply(sy, v[1], out=tmp)
    np.multiply(np.float32(-sy), v[0], out=y)
    y += np.multiply(cy, v[1], out=tmp)
    return [x, y, v[2]]


def distance(s: Surface, o: np.ndarray, d: Planes, inv_dz: np.ndarray, S: Scratch) -> np.ndarray:
    """Distances along the rays to the surface, float32, inf for a miss.

    :param o: local ray origin ``[3]``.
    :param d: local ray directions, three arrays of one shape.
    :param inv_dz: ``1 / d[2]`` (the same for every surface).
    """
    if s.sphere:
        t, hit = _sphere_hits(s, o, d, S)
    elif s.inside:
        return _slab_exits(s, o, d, inv_dz, S)[1]
    else:
        near, far = _slab_exits(s, o, d, inv_dz, S)
        t = near
        hit = np.less_equal(near, far, out=S(t.shape, bool))
        hit &= np.greater(near, MIN_HIT_DISTANCE, out=S(t.shape, bool))
    np.putmask(t, np.logical_not(hit, out=hit), np.inf)
    return t


def _sphere_hits(s: Surface, o: np.ndarray, d: Planes, S: Scratch
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Nearer root of the ray-sphere quadratic (float32) and where it is a hit."""
    shape = d[0].shape
    b, a, tmp = S(shape), S(shape), S(shape)
    np.multiply(d[0], o[0], out=b)
    b += np.multiply(d[1], o[1], out=tmp)
    b += np.multiply(d[2], o[2], out=tmp)
    np.multiply(d[0], d[0], out=a)
    a += np.multiply(d[1], d[1], out=tmp)
    a += np.multiply(d[2], d[2], out=tmp)
    disc = np.multiply(b, b, out=S(shape))
    disc -= np.multiply(a, np.float32(o @ o - s.half[0] ** 2), out=tmp)
    with np.errstate(invalid='ignore'):
        root = np.sqrt(disc, out=tmp)
    t = np.negative(b, out=b)
    t -= root
    t /= a
    hit = np.greater_equal(disc, 0, out=S(shape, bool))
    hit &= np.greater(t, MIN_HIT_DISTANCE, out=S(shape, bool))
    t32 = S(shape, np.float32)
    np.copyto(t32, t)
    return t32, hit


def _slab_exits(s: Surface, o: np.ndarray, d: Planes, inv_dz: np.ndarray, S: Scratch
                ) -> tuple[Optional[np.ndarray], np.ndarray]:
    """Entry (None inside the box) and exit distances, float32, of the box's three slabs.

    They are computed in float64; rounding to float32 once at the end equals rounding after
    every min/max because rounding is monotonic.
    """
    shape = d[0].shape
    far, near, t1, t2, inv = (S(shape) for _ in range(5))
    with np.errstate(divide='ignore', invalid='ignore'):
        for k in range(3):
            if k < 2:
                np.divide(np.float32(1.0), d[k], out=inv)
            inv_k = inv if k < 2 else inv_dz
            np.multiply(np.float32(-s.half[k]) - o[k], inv_k, out=t1)
            np.multiply(np.float32(s.half[k]) - o[k], inv_k, out=t2)
            if not s.inside:
                entry = np.minimum(t1, t2, out=near if k == 0 else inv)
                if k > 0:
                    np.maximum(near, entry, out=near)
            exit_ = np.maximum(t1, t2, out=far if k == 0 else t1)
            if k > 0:
                np.minimum(far, exit_, out=far)
    far32 = S(shape, np.float32)
    np.copyto(far32, far)
    if s.inside:
        return None, far32
    near32 = S(shape, np.float32)
    np.copyto(near32, near)
    return near32, far32
