"""Deterministic synthetic RGB-D sequences with exact ground truth (numpy only, no ROS).

A room (textured walls, floor and ceiling) holds furniture-like boxes rotated about the vertical
axis and a few spheres. Every surface carries a procedural texture (checker, stripes, bricks,
value noise) so a network sees enough texture to match, plus Lambertian shading from a point
light. A camera moves smoothly around the room centre and looks around. Rendering is vectorised
ray casting: one ray per pixel, intersected with every primitive at once.

World frame: z up. Camera frame: OpenCV (x right, y down, z forward). Poses are camera-to-world.
Depth is the z coordinate in the camera frame, in metres.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

TEXTURES = ('checker', 'stripes', 'bricks', 'noise')


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


def _value_noise(rng: np.random.Generator, size: int = 128, octaves: int = 4) -> np.ndarray:
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

    @staticmethod
    def _to_local(s: _Surface, origin: np.ndarray, dirs: np.ndarray
                  ) -> tuple[np.ndarray, list[np.ndarray]]:
        cy, sy = np.cos(s.yaw), np.sin(s.yaw)
        o = origin - s.centre
        o = np.array([cy * o[0] + sy * o[1], -sy * o[0] + cy * o[1], o[2]], np.float32)
        d = [np.float32(cy) * dirs[0] + np.float32(sy) * dirs[1],
             np.float32(-sy) * dirs[0] + np.float32(cy) * dirs[1], dirs[2]]
        return o, d

    def _distance(self, s: _Surface, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        """Distances ``[N]`` along the rays to the surface (inf for a miss)."""
        o, d = self._to_local(s, origin, dirs)
        if s.sphere:
            b = d[0] * o[0] + d[1] * o[1] + d[2] * o[2]
            a = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
            disc = b * b - a * np.float32(o @ o - s.half[0] ** 2)
            with np.errstate(invalid='ignore'):
                t = (-b - np.sqrt(disc)) / a
            return np.where((disc >= 0) & (t > 1e-4), t, np.inf).astype(np.float32)
        near = np.full(len(d[0]), -np.inf, np.float32)
        far = np.full(len(d[0]), np.inf, np.float32)
        with np.errstate(divide='ignore', invalid='ignore'):
            for k in range(3):
                inv = np.float32(1.0) / d[k]
                t1 = (np.float32(-s.half[k]) - o[k]) * inv
                t2 = (np.float32(s.half[k]) - o[k]) * inv
                np.maximum(near, np.minimum(t1, t2), out=near)
                np.minimum(far, np.maximum(t1, t2), out=far)
        if s.inside:
            return far
        return np.where((near <= far) & (near > 1e-4), near, np.inf).astype(np.float32)

    def _local_hit(self, s: _Surface, origin: np.ndarray, dirs: np.ndarray, t: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
        """Local hit points ``[N, 3]`` and local normals ``[N, 3]`` for rays that hit."""
        o, d = self._to_local(s, origin, dirs)
        p = np.stack([o[k] + t * d[k] for k in range(3)], axis=1)
        if s.sphere:
            return p, p / np.float32(s.half[0])
        rel = np.abs(p / s.half.astype(np.float32))
        axis = rel.argmax(axis=1)
        rows = np.arange(len(p))
        n = np.zeros_like(p)
        n[rows, axis] = np.sign(p[rows, axis])
        return p, (-n if s.inside else n)

    def _texture(self, s: _Surface, p: np.ndarray, n: np.ndarray) -> np.ndarray:
        axis = np.abs(n).argmax(axis=1)
        # 2D surface coordinates: the two local axes that lie in the hit face.
        u = np.where(axis == 0, p[:, 1], p[:, 0])
        v = np.where(axis == 2, p[:, 1], p[:, 2])
        if s.sphere:
            u = np.arctan2(p[:, 1], p[:, 0]) * s.half[0]
            v = p[:, 2]
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
            w = np.zeros(len(u), np.float32)
        size = self.noise.shape[0]
        grain = self.noise[(v * 9).astype(np.int64) % size, (u * 9).astype(np.int64) % size]
        w = 0.75 * w + 0.25 * grain if s.texture != 'noise' else grain
        return s.colours[0] * (1 - w[:, None]) + s.colours[1] * w[:, None]

    def _camera_rays(self) -> np.ndarray:
        if getattr(self, '_rays', None) is None:
            c, K = self.config, self.K
            u, v = np.meshgrid(np.arange(c.width, dtype=np.float32),
                               np.arange(c.height, dtype=np.float32))
            self._rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1],
                                   np.ones_like(u)], axis=-1).reshape(-1, 3)
        return self._rays

    def render(self, T_world_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Render one view.

        :param T_world_cam: ``[4, 4]`` camera-to-world pose (inside the room).
        :return: ``(rgb [H, W, 3] uint8, depth [H, W] float32 metres)``.
        """
        c = self.config
        rays_cam = self._camera_rays()
        R = T_world_cam[:3, :3].astype(np.float32)
        origin = T_world_cam[:3, 3].astype(np.float32)
        dirs = [np.ascontiguousarray(col) for col in (rays_cam @ R.T).T]
        best = np.full(len(dirs[0]), np.inf, np.float32)
        owner = np.full(len(dirs[0]), -1, np.int64)
        for i, s in enumerate(self.surfaces):
            t = self._distance(s, origin, dirs)
            np.copyto(owner, i, where=t < best)
            np.minimum(best, t, out=best)
        colour = np.zeros((len(best), 3), np.float32)
        normal = np.zeros((len(best), 3), np.float32)
        for i, s in enumerate(self.surfaces):
            sel = np.flatnonzero(owner == i)
            if sel.size == 0:
                continue
            p, n = self._local_hit(s, origin, [d[sel] for d in dirs], best[sel])
            colour[sel] = self._texture(s, p, n)
            cy, sy = np.cos(s.yaw), np.sin(s.yaw)
            Rs = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]], np.float32)
            normal[sel] = n @ Rs.T
        # Lambert term from a point light near the ceiling, one coordinate at a time (faster than
        # [N, 3] rows in numpy).
        light = (0.5, -0.4, c.room_size[2] - 0.3)
        to_light = [np.float32(light[k]) - (origin[k] + best * dirs[k]) for k in range(3)]
        norm = np.sqrt(to_light[0] ** 2 + to_light[1] ** 2 + to_light[2] ** 2)
        lambert = np.abs(sum(normal[:, k] * to_light[k] for k in range(3))) / norm
        shade = (np.float32(0.35 * 255) + np.float32(0.65 * 255) * lambert)[:, None]
        rgb = np.clip(colour * shade + 0.5, 0, 255).astype(np.uint8).reshape(c.height, c.width, 3)
        # Rays have unit z in the camera frame, so the ray parameter is the z-depth.
        return rgb, best.reshape(c.height, c.width)

    def frames(self):
        """Yield every :class:`SyntheticFrame` of the sequence in order."""
        c = self.config
        for i in range(c.num_frames):
            rel = i / c.fps
            T = self.pose_at(rel)
            rgb, depth = self.render(T)
            yield SyntheticFrame(i, c.start_time + rel, rgb, depth, T, self.K)
