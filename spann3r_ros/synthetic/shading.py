"""Lambertian shading of textured surfaces lit by one point light near the ceiling."""

from __future__ import annotations

import numpy as np

from spann3r_ros.synthetic.intersect import local_origin, to_local
from spann3r_ros.synthetic.layout import Surface
from spann3r_ros.synthetic.scratch import Planes, Scratch
from spann3r_ros.synthetic.textures import TextureSampler


def light_position(room_height: float) -> tuple[float, float, float]:
    """Point light near the ceiling (world)."""
    return (0.5, -0.4, room_height - 0.3)


class Shader:
    """Colours of surface hits: texture times Lambertian shading.

    :param textures: the texture colours of the room's surfaces.
    :param light: world position of the point light.
    """

    def __init__(self, textures: TextureSampler, light: tuple[float, float, float]) -> None:
        self._textures = textures
        self._light = light

    def shade(self, s: Surface, origin: np.ndarray, t: np.ndarray, d_world: Planes,
              out: Planes, S: Scratch) -> None:
        """Write the colour of the surface where it is hit at distance ``t`` into ``out``.

        :param origin: ``[3]`` float32 ray origin (world).
        :param t: hit distances (float32, finite), any shape.
        :param d_world: ray directions in the world frame, three arrays shaped like ``t``.
        :param out: red, green and blue uint8 arrays shaped like ``t``, written.
        """
        shape = t.shape
        o = local_origin(s, origin)
        d_local = to_local(s, d_world, S)
        t64 = S(shape)
        np.copyto(t64, t)
        t_world = [np.multiply(t64, dk, out=S(shape)) for dk in d_world]
        t_local = t_world if d_local is d_world else [
            np.multiply(t64, d_local[0], out=S(shape)),
            np.multiply(t64, d_local[1], out=S(shape)), t_world[2]]
        p = [np.add(o[k], t_local[k], out=S(shape)) for k in range(3)]
        to_light = t_world  # overwritten in place: t_local is no longer needed
        for k, light_k in enumerate(self._light):
            np.add(origin[k], t_world[k], out=to_light[k])
            np.subtract(np.float32(light_k), to_light[k], out=to_light[k])
        norm, tmp = S(shape), S(shape)
        np.multiply(to_light[0], to_light[0], out=norm)
        norm += np.multiply(to_light[1], to_light[1], out=tmp)
        norm += np.multiply(to_light[2], to_light[2], out=tmp)
        np.sqrt(norm, out=norm)
        if s.sphere:
            u = np.arctan2(p[1], p[0], out=S(shape))
            u *= s.half[0]
            v = p[2]
            # The normal is stored in float32 before it meets the float64 light vector.
            facing = S(shape)
            facing.fill(0.0)
            n = S(shape, np.float32)
            for k in range(3):
                np.divide(p[k], np.float32(s.half[0]), out=n)
                facing += np.multiply(n, to_light[k], out=tmp)
        else:
            axis = _face_axis(s, p, S)
            # Face coordinates: the two local axes that lie in the face.
            u, v = p[0], p[2]
            normal_x = np.equal(axis, 0, out=S(shape, bool))
            np.putmask(u, normal_x, p[1])
            np.putmask(v, np.equal(axis, 2, out=S(shape, bool)), p[1])
            # The face normal is +-(one local axis), so |n . L| is one component of L in the
            # local frame; the sign drops out.
            local_light = to_local(s, to_light, S)
            facing = local_light[2]
            np.putmask(facing, normal_x, local_light[0])
            np.putmask(facing, np.equal(axis, 1, out=S(shape, bool)), local_light[1])
        shade = np.abs(facing, out=facing)
        shade /= norm
        shade *= np.float32(0.65 * 255)
        shade += np.float32(0.35 * 255)
        colour = self._textures.colour(s, u, v, S)
        value = tmp
        for k in range(3):
            np.multiply(colour[k], shade, out=value)
            value += 0.5
            np.clip(value, 0, 255, out=value)
            np.copyto(out[k], value, casting='unsafe')  # truncates, as astype(uint8)


def _face_axis(s: Surface, p: Planes, S: Scratch) -> np.ndarray:
    """Which local axis (0, 1, 2) the box face at local points ``p`` is normal to.

    The axis where ``|p / half|`` is largest, the first one on ties (as ``argmax``).
    """
    shape = p[0].shape
    rel = [np.divide(p[k], np.float32(s.half[k]), out=S(shape)) for k in range(3)]
    for r in rel:
        np.abs(r, out=r)
    axis = S(shape, np.int8)
    np.copyto(axis, np.greater(rel[1], rel[0], out=S(shape, bool)))
    largest = np.maximum(rel[0], rel[1], out=rel[0])
    np.putmask(axis, np.greater(rel[2], largest, out=S(shape, bool)), 2)
    return axis
