"""Deterministic synthetic RGB-D sequences with exact ground truth (numpy only, no ROS).

A room (textured walls, floor and ceiling) holds furniture-like boxes rotated about the vertical
axis and a few spheres. Every surface carries a procedural texture (checker, stripes, bricks,
value noise) so a network sees enough texture to match, plus Lambertian shading from a point
light. A camera moves smoothly around the room centre and looks around. Rendering is vectorised
ray casting, one ray per pixel: the room is intersected over the whole image, every other
primitive only inside the bounding rectangle of its projection, and each surface is shaded only
at the pixels it wins.

The arithmetic (dtypes, operation order) is that of a plain per-pixel ray caster, so the output
does not depend on which pixels a primitive is tested against; ``test_synthetic_speed_equivalence``
checks that against such a ray caster.

World frame: z up. Camera frame: OpenCV (x right, y down, z forward). Poses are camera-to-world.
Depth is the z coordinate in the camera frame, in metres.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Optional, Sequence

import numpy as np

TEXTURES = ('checker', 'stripes', 'bricks', 'noise')
NOISE_SIZE = 128
# Hits closer than this (ray parameter = depth in metres) are ignored.
MIN_HIT_DISTANCE = 1e-4
# Margin, in pixels, around the projected bounding box of a primitive: the float rays deviate from
# the exact projection by far less than a pixel, so two pixels make the rectangle conservative.
RECT_MARGIN_PX = 2
# Box geometry is clipped at this camera depth before projection; it is below MIN_HIT_DISTANCE, so
# no hit is lost, and keeps the projection finite for boxes that straddle the image plane.
CLIP_DEPTH = 1e-5
# Rows per matrix product; 16384 x 3 x 3 stays under OpenBLAS's single-thread threshold (2**18).
GEMM_ROWS = 16384

# Corner i of a box has sign bit 0, 1, 2 for x, y, z; edges join corners that differ in one bit.
_CORNER_SIGNS = np.array([[1 if i & b else -1 for b in (1, 2, 4)] for i in range(8)], np.float64)
_EDGES = np.array([(i, i | b) for b in (1, 2, 4) for i in range(8) if not i & b])

Planes = Sequence[np.ndarray]


@dataclass(frozen=True)
class SyntheticConfig:
    """What to render.

    :param width: image width in pixels.
    :param height: image height in pixels.
    :param fov_x_deg: horizontal field of view.
    :param num_frames: frames in the sequence.
    :param fps: frame rate (stamps are ``start_time + i / fps``).
    :param seed: seed of the scene layout, textures and trajectory.
    :param room_size: ``(x, y, z)`` extent of the room in metres.
    :param num_boxes: furniture-like boxes.
    :param num_spheres: spheres.
    :param angular_speed: how fast the camera turns around the room centre, rad/s.
    :param start_time: stamp of frame 0, seconds.
    """

    width: int = 640
    height: int = 480
    fov_x_deg: float = 62.7
    num_frames: int = 30
    fps: float = 10.0
    seed: int = 0
    room_size: tuple[float, float, float] = (6.0, 5.0, 2.8)
    num_boxes: int = 6
    num_spheres: int = 2
    angular_speed: float = 0.25
    start_time: float = 1_700_000_000.0

    def __post_init__(self) -> None:
        """Reject settings that cannot render."""
        if self.width < 8 or self.height < 8:
            raise ValueError(f'image must be at least 8x8, got {self.width}x{self.height}')
        if not 10.0 <= self.fov_x_deg <= 150.0:
            raise ValueError(f'fov_x_deg must be in [10, 150], got {self.fov_x_deg}')
        if self.num_frames < 1 or self.fps <= 0:
            raise ValueError('num_frames must be >= 1 and fps > 0')
        if min(self.room_size) < 1.5:
            raise ValueError(f'room_size must be >= 1.5 m on every axis, got {self.room_size}')
        if self.num_boxes < 0 or self.num_spheres < 0:
            raise ValueError('num_boxes and num_spheres must be >= 0')


@dataclass
class SyntheticFrame:
    """One rendered frame.

    :param index: frame index.
    :param stamp: seconds.
    :param rgb: ``[H, W, 3]`` uint8.
    :param depth: ``[H, W]`` float32 metres (all pixels valid inside the room).
    :param T_world_cam: ``[4, 4]`` float64 camera-to-world.
    :param K: ``[3, 3]`` float64 intrinsics.
    """

    index: int
    stamp: float
    rgb: np.ndarray
    depth: np.ndarray
    T_world_cam: np.ndarray
    K: np.ndarray


@dataclass
class _Surface:
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
        return self.centre + (_CORNER_SIGNS * self.half) @ Rz.T


def _value_noise(rng: np.random.Generator, size: int = NOISE_SIZE, octaves: int = 4) -> np.ndarray:
    out = np.zeros((size, size), np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        cells = 4 * 2 ** o
        grid = rng.random((cells + 1, cells + 1)).astype(np.float32)
        grid[-1], grid[:, -1] = grid[0], grid[:, 0]  # tileable
        x = np.linspace(0, cells, size, endpoint=False)
        i = x.astype(int)
        f = (x - i) * (x - i) * (3 - 2 * (x - i))
        rows = grid[i] * (1 - f)[:, None] + grid[i + 1] * f[:, None]
        out += amp * (rows[:, i] * (1 - f) + rows[:, i + 1] * f)
        total += amp
        amp *= 0.5
    return out / total


def screen_rect(corners_world: np.ndarray, T_world_cam: np.ndarray, K: np.ndarray, width: int,
                height: int) -> Optional[tuple[slice, slice]]:
    """Pixel rectangle that holds the projection of a convex polyhedron.

    The part of the polyhedron in front of :data:`CLIP_DEPTH` is the convex hull of its corners
    there and of the points where its edges cross that depth; the projection of the hull is
    bounded by the projections of those points.

    :param corners_world: ``[8, 3]`` box corners, indexed as in :data:`_CORNER_SIGNS`.
    :param T_world_cam: ``[4, 4]`` camera-to-world pose.
    :param K: ``[3, 3]`` pinhole intrinsics.
    :param width: image width.
    :param height: image height.
    :return: ``(rows, cols)`` slices, or None when nothing of the box can be seen.
    """
    cam = (corners_world - T_world_cam[:3, 3]) @ T_world_cam[:3, :3]
    z = cam[:, 2]
    a, b = _EDGES[:, 0], _EDGES[:, 1]
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


@dataclass
class SyntheticScene:
    """A random room built from a seed; :meth:`render` draws any camera pose.

    :param config: rendering settings.
    """

    config: SyntheticConfig
    surfaces: list = field(init=False)
    noise: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        """Lay out the room from the seed."""
        rng = np.random.default_rng(self.config.seed)
        self.noise = _value_noise(rng)
        room = np.asarray(self.config.room_size, dtype=np.float64)
        self.room_half = room / 2
        self.surfaces = [self._surface(rng, np.array([0, 0, room[2] / 2]), room / 2, 0.0, True)]
        for _ in range(self.config.num_boxes):
            half = rng.uniform([0.2, 0.2, 0.2], [0.6, 0.45, 0.6])
            # Furniture stands against the walls so the middle stays free for the camera.
            angle = rng.uniform(0, 2 * np.pi)
            r = rng.uniform(0.55, 0.8)
            xy = np.array([np.cos(angle), np.sin(angle)]) * r * (room[:2] / 2 - 0.6)
            centre = np.array([xy[0], xy[1], half[2]])
            self.surfaces.append(self._surface(rng, centre, half, rng.uniform(0, np.pi), False))
        for _ in range(self.config.num_spheres):
            radius = rng.uniform(0.2, 0.35)
            angle = rng.uniform(0, 2 * np.pi)
            xy = np.array([np.cos(angle), np.sin(angle)]) * 0.7 * (room[:2] / 2 - 0.5)
            centre = np.array([xy[0], xy[1], rng.uniform(radius, 1.6)])
            surface = self._surface(rng, centre, np.full(3, radius), 0.0, False)
            surface.sphere = True
            self.surfaces.append(surface)
        self._noise_flat = self.noise.ravel()
        self._rays: Optional[np.ndarray] = None

    @staticmethod
    def _surface(rng: np.random.Generator, centre: np.ndarray, half: np.ndarray, yaw: float,
                 inside: bool) -> _Surface:
        colours = rng.uniform(0.15, 0.95, (2, 3)).astype(np.float32)
        return _Surface(centre, np.asarray(half, float), yaw, inside,
                        TEXTURES[rng.integers(len(TEXTURES))], colours, rng.uniform(3.0, 9.0))

    @property
    def K(self) -> np.ndarray:
        """``[3, 3]`` pinhole intrinsics (square pixels, centred principal point)."""
        c = self.config
        f = (c.width / 2) / np.tan(np.deg2rad(c.fov_x_deg) / 2)
        return np.array([[f, 0, (c.width - 1) / 2], [0, f, (c.height - 1) / 2], [0, 0, 1]])

    def pose_at(self, t: float) -> np.ndarray:
        """Analytic ``[4, 4]`` camera-to-world pose at time ``t`` seconds after the start."""
        c = self.config
        rng = np.random.default_rng(c.seed + 1)
        phase, radius = rng.uniform(0, 2 * np.pi), rng.uniform(0.3, 0.6)
        a = phase + c.angular_speed * t
        eye = np.array([radius * np.cos(a), 0.8 * radius * np.sin(a),
                        1.3 + 0.1 * np.sin(1.7 * c.angular_speed * t)])
        look = a + np.pi / 2 + 0.6 * np.sin(0.9 * c.angular_speed * t)
        target = eye + np.array([np.cos(look), np.sin(look), -0.15])
        forward = target - eye
        forward /= np.linalg.norm(forward)
        right = np.cross(forward, [0.0, 0.0, 1.0])
        right /= np.linalg.norm(right)
        down = np.cross(forward, right)
        T = np.eye(4)
        T[:3, 0], T[:3, 1], T[:3, 2], T[:3, 3] = right, down, forward, eye
        return T

    # Ray casting. Ray directions are float64 (the camera rays are), origins and box extents
    # float32, distances float32; every expression keeps the dtypes of a plain ray caster.

    @staticmethod
    def _local_origin(s: _Surface, origin: np.ndarray) -> np.ndarray:
        """Return the ray origin ``[3]`` float32 in the frame of the surface."""
        cy, sy = np.cos(s.yaw), np.sin(s.yaw)
        o = origin - s.centre
        return np.array([cy * o[0] + sy * o[1], -sy * o[0] + cy * o[1], o[2]], np.float32)

    @staticmethod
    def _local_dirs(s: _Surface, dirs: Planes) -> Planes:
        """Ray directions rotated into the frame of the surface (only yaw, so z is shared)."""
        if s.yaw == 0.0:
            # cos = 1 and sin = 0 exactly: the rotation could only flip the sign of a zero
            # component, which changes no distance (the slab bounds straddle or share the sign).
            return dirs
        cy, sy = np.float32(np.cos(s.yaw)), np.float32(np.sin(s.yaw))
        return (cy * dirs[0] + sy * dirs[1], np.float32(-sy) * dirs[0] + cy * dirs[1], dirs[2])

    @staticmethod
    def _distance(s: _Surface, o: np.ndarray, d: Planes, inv_dz: np.ndarray) -> np.ndarray:
        """Distances along the rays to the surface, float32, inf for a miss.

        :param o: local ray origin ``[3]``.
        :param d: local ray directions, three arrays of one shape.
        :param inv_dz: ``1 / d[2]`` (the same for every surface).
        """
        if s.sphere:
            b = d[0] * o[0] + d[1] * o[1] + d[2] * o[2]
            a = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
            disc = b * b - a * np.float32(o @ o - s.half[0] ** 2)
            with np.errstate(invalid='ignore'):
                t = (-b - np.sqrt(disc)) / a
            return np.where((disc >= 0) & (t > MIN_HIT_DISTANCE), t, np.inf).astype(np.float32)
        # Exits (and, outside, entries) of the three slabs, in float64; rounding to float32 once
        # at the end equals rounding after every min/max because rounding is monotonic.
        near = far = None
        with np.errstate(divide='ignore', invalid='ignore'):
            for k in range(3):
                inv = inv_dz if k == 2 else np.float32(1.0) / d[k]
                t1 = (np.float32(-s.half[k]) - o[k]) * inv
                t2 = (np.float32(s.half[k]) - o[k]) * inv
                exit_k = np.maximum(t1, t2)
                far = exit_k if far is None else np.minimum(far, exit_k, out=far)
                if not s.inside:
                    entry_k = np.minimum(t1, t2, out=t1)
                    near = entry_k if near is None else np.maximum(near, entry_k, out=near)
        far = far.astype(np.float32)
        if s.inside:
            return far
        near = near.astype(np.float32)
        return np.where((near <= far) & (near > MIN_HIT_DISTANCE), near, np.inf).astype(np.float32)

    def _camera_rays(self) -> np.ndarray:
        if self._rays is None:
            c, K = self.config, self.K
            u, v = np.meshgrid(np.arange(c.width, dtype=np.float32),
                               np.arange(c.height, dtype=np.float32))
            self._rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1],
                                   np.ones_like(u)], axis=-1).reshape(-1, 3)
        return self._rays

    def _world_dirs(self, R: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Directions of the camera rays in the world frame.

        :param R: ``[3, 3]`` float32 camera-to-world rotation.
        :return: x, y and z components, three ``[H, W]`` float64 arrays.
        """
        rays = self._camera_rays()
        R_T = R.astype(np.float64).T
        dirs = np.empty((3, len(rays)))
        # One small GEMM per block of rows: OpenBLAS starts threads for a single large one,
        # which on a busy machine costs up to a hundred times the product itself. Each element
        # is the same chain of fused multiply-adds over k, however the rows are blocked.
        for start in range(0, len(rays), GEMM_ROWS):
            block = slice(start, start + GEMM_ROWS)
            dirs[:, block] = (rays[block] @ R_T).T
        return tuple(dirs.reshape(3, self.config.height, self.config.width))

    # Shading.

    def _texture(self, s: _Surface, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Blend weight in [0, 1] (float32) of the second colour at face coordinates ``u, v``."""
        u, v = u * s.scale, v * s.scale
        if s.texture == 'checker':
            w = ((np.floor(u) + np.floor(v)) % 2).astype(np.float32)
        elif s.texture == 'stripes':
            w = 0.5 + 0.5 * np.sin(2.0 * u + 0.7 * v).astype(np.float32)
        elif s.texture == 'bricks':
            row = np.floor(v * 2)
            uu = u + 0.5 * (row % 2)
            mortar = ((v * 2) % 1 < 0.12) | (uu % 1 < 0.06)
            w = np.where(mortar, 1.0, 0.0).astype(np.float32)
        else:
            w = None
        # The noise table is NOISE_SIZE (a power of two) square, so "& (size - 1)" is the
        # non-negative modulo; one flat take is much cheaper than 2D fancy indexing.
        mask = NOISE_SIZE - 1
        row_idx = (v * 9).astype(np.int64) & mask
        col_idx = (u * 9).astype(np.int64) & mask
        grain = self._noise_flat.take(row_idx * NOISE_SIZE + col_idx)
        return grain if w is None else 0.75 * w + 0.25 * grain

    def _shade(self, s: _Surface, origin: np.ndarray, t: np.ndarray, d_local: Planes,
               d_world: Planes) -> list[np.ndarray]:
        """Colour of the surface where it is hit at distance ``t``.

        :param origin: ``[3]`` float32 ray origin (world).
        :param t: hit distances (float32, finite), any shape.
        :param d_local: ray directions in the surface frame, three arrays shaped like ``t``.
        :param d_world: ray directions in the world frame, three arrays shaped like ``t``.
        :return: red, green and blue uint8 arrays shaped like ``t``.
        """
        o = self._local_origin(s, origin)
        t_world = [t * dk for dk in d_world]
        t_local = t_world if d_local is d_world else [t * d_local[0], t * d_local[1], t_world[2]]
        p = [o[k] + t_local[k] for k in range(3)]
        to_light = [np.float32(light_k) - (origin[k] + t_world[k])
                    for k, light_k in enumerate(self._light())]
        norm = np.sqrt(to_light[0] ** 2 + to_light[1] ** 2 + to_light[2] ** 2)
        if s.sphere:
            u = np.arctan2(p[1], p[0]) * s.half[0]
            v = p[2]
            # The normal is stored in float32 before it meets the float64 light vector.
            n = [(p[k] / np.float32(s.half[0])).astype(np.float32) for k in range(3)]
            facing = n[0] * to_light[0] + n[1] * to_light[1] + n[2] * to_light[2]
        else:
            axis = self._face_axis(s, p)
            u = np.where(axis == 0, p[1], p[0])
            v = np.where(axis == 2, p[1], p[2])
            # The face normal is +-(one rotated axis); the sign drops out of |n . L|.
            facing = np.choose(axis, self._local_dirs(s, to_light))
        lambert = np.abs(facing) / norm
        shade = np.float32(0.35 * 255) + np.float32(0.65 * 255) * lambert
        w = self._texture(s, u, v)
        one_minus_w = 1 - w
        rgb = []
        for c in range(3):
            colour = s.colours[0, c] * one_minus_w + s.colours[1, c] * w
            value = colour * shade
            value += 0.5
            rgb.append(np.clip(value, 0, 255, out=value).astype(np.uint8))
        return rgb

    @staticmethod
    def _face_axis(s: _Surface, p: Planes) -> np.ndarray:
        """Which local axis (0, 1, 2) the box face at local points ``p`` is normal to.

        The axis where ``|p / half|`` is largest, the first one on ties (as ``argmax``).
        """
        rel = [np.abs(p[k] / np.float32(s.half[k])) for k in range(3)]
        axis = (rel[1] > rel[0]).astype(np.int8)
        axis[rel[2] > np.maximum(rel[0], rel[1])] = 2
        return axis

    def _light(self) -> tuple[float, float, float]:
        """Point light near the ceiling (world)."""
        return (0.5, -0.4, self.config.room_size[2] - 0.3)

    def render(self, T_world_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Render one view.

        :param T_world_cam: ``[4, 4]`` camera-to-world pose (inside the room).
        :return: ``(rgb [H, W, 3] uint8, depth [H, W] float32 metres)``.
        """
        c, K = self.config, self.K
        shape = (c.height, c.width)
        origin = T_world_cam[:3, 3].astype(np.float32)
        dirs = self._world_dirs(T_world_cam[:3, :3].astype(np.float32))
        with np.errstate(divide='ignore'):
            inv_dz = np.float32(1.0) / dirs[2]
        # The room (first surface) encloses the camera, so it is hit everywhere and fills the
        # image; the other primitives are tested only inside their projected rectangles.
        room = self.surfaces[0]
        best = self._distance(room, self._local_origin(room, origin), dirs, inv_dz)
        owner = np.zeros(shape, np.int32)
        winners = []
        for i, s in enumerate(self.surfaces[1:], start=1):
            rect = screen_rect(s.corners_world(), T_world_cam, K, c.width, c.height)
            if rect is None:
                continue
            d_world = tuple(d[rect] for d in dirs)
            d_local = self._local_dirs(s, d_world)
            t = self._distance(s, self._local_origin(s, origin), d_local, inv_dz[rect])
            closer = t < best[rect]
            if closer.any():
                np.copyto(owner[rect], i, where=closer)
                np.minimum(best[rect], t, out=best[rect])
                winners.append((i, s, rect, d_world, d_local))
        # Shade the room everywhere (it wins most pixels), then paint the winners over it.
        rgb = np.empty(shape + (3,), np.uint8)
        for k, plane in enumerate(self._shade(room, origin, best, dirs, dirs)):
            rgb[..., k] = plane
        for i, s, rect, d_world, d_local in winners:
            mine = owner[rect] == i
            if not mine.any():  # hidden behind a primitive later in the list
                continue
            t = best[rect][mine]
            d_world = [d[mine] for d in d_world]
            d_local = d_world if s.yaw == 0.0 else [d_local[0][mine], d_local[1][mine],
                                                    d_world[2]]
            rgb[rect][mine] = np.stack(self._shade(s, origin, t, d_local, d_world), axis=-1)
        # Rays have unit z in the camera frame, so the ray parameter is the z-depth.
        return rgb, best

    def frames(self) -> Iterator[SyntheticFrame]:
        """Yield every :class:`SyntheticFrame` of the sequence in order."""
        c = self.config
        for i in range(c.num_frames):
            rel = i / c.fps
            T = self.pose_at(rel)
            rgb, depth = self.render(T)
            yield SyntheticFrame(i, c.start_time + rel, rgb, depth, T, self.K)
