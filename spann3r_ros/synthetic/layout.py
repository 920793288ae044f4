"""The room of a synthetic scene: textured walls, furniture-like boxes and spheres, from a seed.

World frame: z up, the floor at z = 0, the room centred on the z axis.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TEXTURES = ('checker', 'stripes', 'bricks', 'noise')

# Corner i of a box has sign bit 0, 1, 2 for x, y, z; edges join corners that differ in one bit.
CORNER_SIGNS = np.array([[1 if i & b else -1 for b in (1, 2, 4)] for i in range(8)], np.float64)
BOX_EDGES = np.array([(i, i | b) for b in (1, 2, 4) for i in range(8) if not i & b])


@dataclass
class Surface:
    """A box rotated about the vertical axis (the room seen from inside), or a sphere.

    :param centre: ``[3]`` world centre.
    :param half: ``[3]`` half extents in the frame of the surface (the radius, for a sphere).
    :param yaw: rotation about the world z axis, radians.
    :param inside: whether the camera sees it from inside (the room).
    :param texture: one of :data:`TEXTURES`.
    :param colours: ``[2, 3]`` float32 colours that the texture blends.
    :param scale: texture repetitions per metre.
    :param sphere: whether it is a sphere of radius ``half[0]``.
    """

    centre: np.ndarray
    half: np.ndarray
    yaw: float
    inside: bool
    texture: str
    colours: np.ndarray
    scale: float
    sphere: bool = False

    def corners_world(self) -> np.ndarray:
        """``[8, 3]`` corners of the oriented bounding box (a cube for a sphere)."""
        cy, sy = np.cos(self.yaw), np.sin(self.yaw)
        Rz = np.array([[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]])
        return self.centre + (CORNER_SIGNS * self.half) @ Rz.T


def lay_out_room(rng: np.random.Generator, room: np.ndarray, num_boxes: int,
                 num_spheres: int) -> list[Surface]:
    """Draw the room, then the boxes, then the spheres, from ``rng``.

    :param room: ``[3]`` float64 extent of the room in metres.
    :return: the surfaces, the room first.
    """
    surfaces = [_surface(rng, np.array([0, 0, room[2] / 2]), room / 2, 0.0, True)]
    for _ in range(num_boxes):
        half = rng.uniform([0.2, 0.2, 0.2], [0.6, 0.45, 0.6])
        # Furniture stands against the walls so the middle stays free for the camera.
        angle = rng.uniform(0, 2 * np.pi)
        r = rng.uniform(0.55, 0.8)
        xy = np.array([np.cos(angle), np.sin(angle)]) * r * (room[:2] / 2 - 0.6)
        centre = np.array([xy[0], xy[1], half[2]])
        surfaces.append(_surface(rng, centre, half, rng.uniform(0, np.pi), False))
    for _ in range(num_spheres):
        radius = rng.uniform(0.2, 0.35)
        angle = rng.uniform(0, 2 * np.pi)
        xy = np.array([np.cos(angle), np.sin(angle)]) * 0.7 * (room[:2] / 2 - 0.5)
        centre = np.array([xy[0], xy[1], rng.uniform(radius, 1.6)])
        surface = _surface(rng, centre, np.full(3, radius), 0.0, False)
        surface.sphere = True
        surfaces.append(surface)
    return surfaces


def _surface(rng: np.random.Generator, centre: np.ndarray, half: np.ndarray, yaw: float,
             inside: bool) -> Surface:
    colours = rng.uniform(0.15, 0.95, (2, 3)).astype(np.float32)
    return Surface(centre, np.asarray(half, float), yaw, inside,
                   TEXTURES[rng.integers(len(TEXTURES))], colours, rng.uniform(3.0, 9.0))
