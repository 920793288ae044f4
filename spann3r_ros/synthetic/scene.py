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
checks it against such a ray caster, bit for bit. Speed comes from doing less, not from doing it
differently: rectangles instead of whole images, work in cache-sized row blocks, temporaries in
scratch memory reused from frame to frame (fresh ones cost page faults), single-threaded matrix
products, table look-ups of values that were computed the same way. One scene may render from
several threads at once; each render uses its own scratch memory.

World frame: z up. Camera frame: OpenCV (x right, y down, z forward). Poses are camera-to-world.
Depth is the z coordinate in the camera frame, in metres.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
import math
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
# Pixels per block of work: big enough that numpy's per-call overhead is small, small enough that
# the temporaries of a block stay in cache.
BLOCK_PIXELS = 32768
# Rows per matrix product: 16384 x 3 x 3 stays under OpenBLAS's single-thread threshold (2**18).
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


class _Scratch:
    """Memory for the temporaries of a frame, kept from one frame to the next.

    Fresh numpy temporaries of a few hundred kilobytes cost a page fault per 4 KiB every frame,
    because the allocator returns freed memory to the system; that was most of the time of a
    frame. Arrays here are views of one buffer, handed out in stack order: :meth:`scope` takes
    back what was handed out inside it. A frame that needs more than the buffer gets fresh arrays
    and the buffer grows before the next frame.
    """

    def __init__(self) -> None:
        self._memory = np.empty(0, np.uint8)
        self._used = 0
        self._peak = 0

    def __call__(self, shape: tuple[int, ...] | int, dtype: type = np.float64) -> np.ndarray:
        """Return an uninitialised array valid until the enclosing scope ends."""
        dtype = np.dtype(dtype)
        nbytes = math.prod(shape if isinstance(shape, tuple) else (shape,)) * dtype.itemsize
        start = self._used
        self._used += -(-nbytes // 64) * 64  # keep every array 64-byte aligned
        self._peak = max(self._peak, self._used)
        if self._used > self._memory.size:
            return np.empty(shape, dtype)
        return self._memory[start:start + nbytes].view(dtype).reshape(shape)

    @contextmanager
    def scope(self) -> Iterator[_Scratch]:
        """Take back, on exit, every array handed out inside the block."""
        start = self._used
        try:
            yield self
        finally:
            self._used = start

    def new_frame(self) -> None:
        """Forget every array handed out so far; grow to the largest frame seen."""
        if self._peak > self._memory.size:
            self._memory = np.empty(self._peak, np.uint8)
        self._used = 0


def _row_blocks(rows: slice, width: int) -> Iterator[slice]:
    """Split ``rows`` into runs of about :data:`BLOCK_PIXELS` pixels (cache-sized temporaries)."""
    step = max(1, BLOCK_PIXELS // width)
    for start in range(rows.start, rows.stop, step):
        yield slice(start, min(start + step, rows.stop))


def _floor_mod(x: np.ndarray, m: float, out: np.ndarray) -> np.ndarray:
    """``x % m`` for ``m`` in (1, 2), bit for bit, at a fraction of numpy's cost.

    ``x / m`` and ``m * floor(x / m)`` are exact, and ``x - m * floor(x / m)`` rounds the exact
    remainder once, as numpy's ``fmod(x, m) + m`` does for negative ``x``; for ``x >= 0`` both
    are exact. The one exception is ``x = -2**-1074`` with ``m = 2`` (halving underflows to
    zero), far below any texture coordinate.
    """
    if m == 1:
        np.floor(x, out=out)
    else:
        np.multiply(x, 1.0 / m, out=out)
        np.floor(out, out=out)
        out *= m
    return np.subtract(x, out, out=out)


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
        self._colour_tables: dict[tuple, np.ndarray] = {}
        # Noise-table indices come from face coordinates times at most 81 (scale 9, then 9),
        # bounded by the room: int32 is exact unless the room is thousands of kilometres wide.
        self._index_dtype = np.int32 if max(self.config.room_size) * 81 < 2 ** 30 else np.int64
        self._rays: Optional[np.ndarray] = None
        # Idle scratch memories; a render takes one (or makes one), so threads never share one.
        self._idle_scratch: list[_Scratch] = []

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

    def frames(self) -> Iterator[SyntheticFrame]:
        """Yield every :class:`SyntheticFrame` of the sequence in order."""
        c = self.config
        for i in range(c.num_frames):
            rel = i / c.fps
            T = self.pose_at(rel)
            rgb, depth = self.render(T)
            yield SyntheticFrame(i, c.start_time + rel, rgb, depth, T, self.K)

    def render(self, T_world_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Render one view.

        :param T_world_cam: ``[4, 4]`` camera-to-world pose (inside the room).
        :return: ``(rgb [H, W, 3] uint8, depth [H, W] float32 metres)``.
        """
        scratch = self._idle_scratch.pop() if self._idle_scratch else _Scratch()
        try:
            scratch.new_frame()
            return self._render(T_world_cam, scratch)
        finally:
            self._idle_scratch.append(scratch)

    def __getstate__(self) -> dict:
        """Pickle without the scratch memory."""
        state = dict(self.__dict__)
        state['_idle_scratch'] = []
        return state

    # Ray casting. Ray directions are float64 (the camera rays are), origins and box extents
    # float32, distances float32; every expression keeps the dtypes and the operation order of a
    # plain ray caster, so results do not depend on which pixels are computed together.

    def _render(self, T_world_cam: np.ndarray, S: _Scratch) -> tuple[np.ndarray, np.ndarray]:
        c, K = self.config, self.K
        shape = (c.height, c.width)
        origin = T_world_cam[:3, 3].astype(np.float32)
        dirs = self._world_dirs(T_world_cam[:3, :3].astype(np.float32), S)
        inv_dz = S(shape)
        with np.errstate(divide='ignore'):
            np.divide(1.0, dirs[2], out=inv_dz)
        # The room (first surface) encloses the camera: its walls are the depth everywhere until
        # something nearer is found. It is shaded everywhere too (it wins most pixels), right
        # away while its rays are in cache; the primitives that win pixels paint over it.
        room = self.surfaces[0]
        room_origin = self._local_origin(room, origin)
        depth = np.empty(shape, np.float32)
        rgb = np.empty(shape + (3,), np.uint8)
        for rows in _row_blocks(slice(0, c.height), c.width):
            with S.scope():
                d = [dk[rows] for dk in dirs]
                depth[rows] = self._distance(room, room_origin, d, inv_dz[rows], S)
                self._shade(room, origin, depth[rows], d, [rgb[rows, :, k] for k in range(3)], S)
        # The other primitives are tested only inside their projected rectangles.
        owner = S(shape, np.int32)
        owner.fill(0)
        winners = []
        for i, s in enumerate(self.surfaces[1:], start=1):
            rect = screen_rect(s.corners_world(), T_world_cam, K, c.width, c.height)
            if rect is not None and self._cast(s, origin, dirs, inv_dz, rect, depth, owner, i, S):
                winners.append((i, s, rect))
        for i, s, rect in winners:
            self._shade_winner(s, i, origin, dirs, rect, depth, owner, rgb, S)
        # Rays have unit z in the camera frame, so the ray parameter is the z-depth.
        return rgb, depth

    def _camera_rays(self) -> np.ndarray:
        """``[H * W, 3]`` float64 camera-frame ray directions with unit z (cached)."""
        if self._rays is None:
            c, K = self.config, self.K
            u, v = np.meshgrid(np.arange(c.width, dtype=np.float32),
                               np.arange(c.height, dtype=np.float32))
            self._rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1],
                                   np.ones_like(u)], axis=-1).reshape(-1, 3)
        return self._rays

    def _world_dirs(self, R: np.ndarray, S: _Scratch) -> list[np.ndarray]:
        """Directions of the camera rays in the world frame.

        :param R: ``[3, 3]`` float32 camera-to-world rotation.
        :return: x, y and z components, three ``[H, W]`` float64 arrays.
        """
        rays = self._camera_rays()
        R_T = R.astype(np.float64).T
        dirs = S((3, len(rays)))
        product = S((GEMM_ROWS, 3))
        # One small GEMM per block of rows: OpenBLAS starts threads for a single large one,
        # which on a busy machine costs up to a hundred times the product itself. Each element
        # is the same chain of fused multiply-adds over k, however the rows are blocked.
        for start in range(0, len(rays), GEMM_ROWS):
            block = rays[start:start + GEMM_ROWS]
            np.matmul(block, R_T, out=product[:len(block)])
            dirs[:, start:start + len(block)] = product[:len(block)].T
        return list(dirs.reshape(3, self.config.height, self.config.width))

    @staticmethod
    def _local_origin(s: _Surface, origin: np.ndarray) -> np.ndarray:
        """Return the ray origin ``[3]`` float32 in the frame of the surface."""
        cy, sy = np.cos(s.yaw), np.sin(s.yaw)
        o = origin - s.centre
        return np.array([cy * o[0] + sy * o[1], -sy * o[0] + cy * o[1], o[2]], np.float32)

    @staticmethod
    def _to_local(s: _Surface, v: Planes, S: _Scratch) -> Planes:
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

    def _cast(self, s: _Surface, origin: np.ndarray, dirs: Planes, inv_dz: np.ndarray,
              rect: tuple[slice, slice], depth: np.ndarray, owner: np.ndarray, index: int,
              S: _Scratch) -> bool:
        """Intersect the rays in ``rect`` with ``s``; keep the nearer hits in ``depth``/``owner``.

        :param owner: ``[H, W]`` index of the nearest surface so far, per pixel.
        :return: whether ``s`` is now the nearest surface at some pixel.
        """
        o = self._local_origin(s, origin)
        won = False
        for rows in _row_blocks(rect[0], rect[1].stop - rect[1].start):
            block = rows, rect[1]
            with S.scope():
                d = self._to_local(s, [dk[block] for dk in dirs], S)
                t = self._distance(s, o, d, inv_dz[block], S)
                closer = np.less(t, depth[block], out=S(t.shape, bool))
                if closer.any():
                    won = True
                    np.copyto(owner[block], index, where=closer)
                    np.minimum(depth[block], t, out=depth[block])
        return won

    @classmethod
    def _distance(cls, s: _Surface, o: np.ndarray, d: Planes, inv_dz: np.ndarray, S: _Scratch
                  ) -> np.ndarray:
        """Distances along the rays to the surface, float32, inf for a miss.

        :param o: local ray origin ``[3]``.
        :param d: local ray directions, three arrays of one shape.
        :param inv_dz: ``1 / d[2]`` (the same for every surface).
        """
        if s.sphere:
            t, hit = cls._sphere_hits(s, o, d, S)
        elif s.inside:
            return cls._slab_exits(s, o, d, inv_dz, S)[1]
        else:
            near, far = cls._slab_exits(s, o, d, inv_dz, S)
            t = near
            hit = np.less_equal(near, far, out=S(t.shape, bool))
            hit &= np.greater(near, MIN_HIT_DISTANCE, out=S(t.shape, bool))
        np.putmask(t, np.logical_not(hit, out=hit), np.inf)
        return t

    @staticmethod
    def _sphere_hits(s: _Surface, o: np.ndarray, d: Planes, S: _Scratch
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

    @staticmethod
    def _slab_exits(s: _Surface, o: np.ndarray, d: Planes, inv_dz: np.ndarray, S: _Scratch
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

    # Shading.

    def _shade_winner(self, s: _Surface, index: int, origin: np.ndarray, dirs: Planes,
                      rect: tuple[slice, slice], depth: np.ndarray, owner: np.ndarray,
                      rgb: np.ndarray, S: _Scratch) -> None:
        """Shade the pixels of ``rect`` that surface ``index`` wins, gathered into 1D arrays."""
        for rows in _row_blocks(rect[0], rect[1].stop - rect[1].start):
            block = rows, rect[1]
            with S.scope():
                mine = np.equal(owner[block], index, out=S(depth[block].shape, bool))
                count = int(np.count_nonzero(mine))
                if count == 0:  # not in these rows, or hidden behind a later primitive
                    continue
                mine_flat = mine.reshape(-1)

                def gather(full: np.ndarray) -> np.ndarray:
                    dense = S(mine.shape, full.dtype)
                    np.copyto(dense, full[block])
                    return np.compress(mine_flat, dense.reshape(-1), out=S(count, full.dtype))

                planes = [S(count, np.uint8) for _ in range(3)]
                self._shade(s, origin, gather(depth), [gather(d) for d in dirs], planes, S)
                target = rgb[block]
                for k in range(3):
                    target[..., k][mine] = planes[k]

    def _shade(self, s: _Surface, origin: np.ndarray, t: np.ndarray, d_world: Planes,
               out: Planes, S: _Scratch) -> None:
        """Write the colour of the surface where it is hit at distance ``t`` into ``out``.

        :param origin: ``[3]`` float32 ray origin (world).
        :param t: hit distances (float32, finite), any shape.
        :param d_world: ray directions in the world frame, three arrays shaped like ``t``.
        :param out: red, green and blue uint8 arrays shaped like ``t``, written.
        """
        shape = t.shape
        o = self._local_origin(s, origin)
        d_local = self._to_local(s, d_world, S)
        t64 = S(shape)
        np.copyto(t64, t)
        t_world = [np.multiply(t64, dk, out=S(shape)) for dk in d_world]
        t_local = t_world if d_local is d_world else [
            np.multiply(t64, d_local[0], out=S(shape)),
            np.multiply(t64, d_local[1], out=S(shape)), t_world[2]]
        p = [np.add(o[k], t_local[k], out=S(shape)) for k in range(3)]
        to_light = t_world  # overwritten in place: t_local is no longer needed
        for k, light_k in enumerate(self._light()):
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
            axis = self._face_axis(s, p, S)
            # Face coordinates: the two local axes that lie in the face.
            u, v = p[0], p[2]
            normal_x = np.equal(axis, 0, out=S(shape, bool))
            np.putmask(u, normal_x, p[1])
            np.putmask(v, np.equal(axis, 2, out=S(shape, bool)), p[1])
            # The face normal is +-(one local axis), so |n . L| is one component of L in the
            # local frame; the sign drops out.
            local_light = self._to_local(s, to_light, S)
            facing = local_light[2]
            np.putmask(facing, normal_x, local_light[0])
            np.putmask(facing, np.equal(axis, 1, out=S(shape, bool)), local_light[1])
        shade = np.abs(facing, out=facing)
        shade /= norm
        shade *= np.float32(0.65 * 255)
        shade += np.float32(0.35 * 255)
        colour = self._colour(s, u, v, S)
        value = tmp
        for k in range(3):
            np.multiply(colour[k], shade, out=value)
            value += 0.5
            np.clip(value, 0, 255, out=value)
            np.copyto(out[k], value, casting='unsafe')  # truncates, as astype(uint8)

    @staticmethod
    def _face_axis(s: _Surface, p: Planes, S: _Scratch) -> np.ndarray:
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

    def _light(self) -> tuple[float, float, float]:
        """Point light near the ceiling (world)."""
        return (0.5, -0.4, self.config.room_size[2] - 0.3)

    def _colour(self, s: _Surface, u: np.ndarray, v: np.ndarray, S: _Scratch) -> Planes:
        """Texture colour (three float32 arrays) at face coordinates ``u, v`` (float64).

        The colour blends the two colours of the surface with a weight made of a pattern and
        a grain from the noise table. Except for stripes, the pattern is 0 or 1, so the colour
        is one of ``2 * NOISE_SIZE**2`` values per channel: those come from a table computed
        with the same float32 operations. ``u`` and ``v`` are scaled in place.
        """
        shape = u.shape
        u *= s.scale
        v *= s.scale
        a, b = S(shape), S(shape)
        pattern = None
        if s.texture == 'checker':
            np.floor(u, out=a)
            a += np.floor(v, out=b)
            pattern = _floor_mod(a, 2, out=b)
        elif s.texture == 'stripes':
            np.multiply(u, 2.0, out=a)
            a += np.multiply(v, 0.7, out=b)
            stripes = S(shape, np.float32)
            np.copyto(stripes, np.sin(a, out=a))
            stripes *= 0.5
            stripes += 0.5
        elif s.texture == 'bricks':
            v2 = np.multiply(v, 2, out=S(shape))
            odd_row = _floor_mod(np.floor(v2, out=a), 2, out=b)
            shifted_u = np.add(u, np.multiply(odd_row, 0.5, out=a), out=a)
            pattern = np.less(_floor_mod(v2, 1, out=b), 0.12, out=S(shape, bool))
            pattern |= np.less(_floor_mod(shifted_u, 1, out=b), 0.06, out=S(shape, bool))
        # Index into the noise table. It is NOISE_SIZE (a power of two) square, so
        # "& (size - 1)" is the non-negative modulo; int32 is exact (see _index_dtype).
        index, cols = S(shape, self._index_dtype), S(shape, self._index_dtype)
        np.copyto(index, np.multiply(v, 9, out=a), casting='unsafe')  # truncates, as astype
        np.copyto(cols, np.multiply(u, 9, out=a), casting='unsafe')
        index &= NOISE_SIZE - 1
        cols &= NOISE_SIZE - 1
        index *= NOISE_SIZE
        index += cols
        colour = [S(shape, np.float32) for _ in range(3)]
        if s.texture != 'stripes':
            if pattern is not None:
                np.copyto(cols, pattern, casting='unsafe')
                cols *= NOISE_SIZE * NOISE_SIZE
                index += cols
            for k, table in enumerate(self._colour_table(s)):
                np.take(table, index, out=colour[k])
            return colour
        w = np.take(self._noise_flat, index, out=S(shape, np.float32))
        w *= 0.25
        stripes *= 0.75
        w += stripes
        one_minus_w = np.subtract(1, w, out=S(shape, np.float32))
        for k in range(3):
            np.multiply(s.colours[0, k], one_minus_w, out=colour[k])
            colour[k] += np.multiply(s.colours[1, k], w, out=stripes)
        return colour

    def _colour_table(self, s: _Surface) -> np.ndarray:
        """``[3, 2 * NOISE_SIZE**2]`` float32 colours by (pattern 0/1, noise cell)."""
        key = (s.texture == 'noise', s.colours.tobytes())
        table = self._colour_tables.get(key)
        if table is None:
            grain = self._noise_flat
            if s.texture == 'noise':
                w = np.concatenate([grain, grain])
            else:
                pattern = np.repeat(np.array([0, 1], np.float32), grain.size)
                w = 0.75 * pattern + 0.25 * np.concatenate([grain, grain])
            table = np.stack([s.colours[0, k] * (1 - w) + s.colours[1, k] * w
                              for k in range(3)])
            self._colour_tables[key] = table
        return table
