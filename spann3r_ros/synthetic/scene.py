"""Deterministic synthetic RGB-D sequences with exact ground truth (numpy only, no ROS).

A room (textured walls, floor and ceiling) holds furniture-like boxes rotated about the vertical
axis and a few spheres. Every surface carries a procedural texture (checker, stripes, bricks,
value noise) so a network sees enough texture to match, plus Lambertian shading from a point
light. A camera moves smoothly around the room centre and looks around; each view is ray cast
(:mod:`spann3r_ros.synthetic.renderer`).

World frame: z up. Camera frame: OpenCV (x right, y down, z forward). Poses are camera-to-world.
Depth is the z coordinate in the camera frame, in metres.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from spann3r_ros.synthetic.camera import intrinsics, trajectory_pose
from spann3r_ros.synthetic.layout import lay_out_room
from spann3r_ros.synthetic.renderer import Renderer
from spann3r_ros.synthetic.shading import light_position, Shader
from spann3r_ros.synthetic.textures import TextureSampler, value_noise


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
class SyntheticScene:
    """A random room built from a seed; :meth:`render` draws any camera pose.

    :param config: rendering settings.
    """

    config: SyntheticConfig
    surfaces: list = field(init=False)
    noise: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        """Lay out the room from the seed."""
        c = self.config
        rng = np.random.default_rng(c.seed)
        self.noise = value_noise(rng)
        room = np.asarray(c.room_size, dtype=np.float64)
        self.room_half = room / 2
        self.surfaces = lay_out_room(rng, room, c.num_boxes, c.num_spheres)
        shader = Shader(TextureSampler(self.noise, max(c.room_size)),
                        light_position(c.room_size[2]))
        self._renderer = Renderer(c.width, c.height, self.K, shader)

    @property
    def K(self) -> np.ndarray:
        """``[3, 3]`` pinhole intrinsics (square pixels, centred principal point)."""
        c = self.config
        return intrinsics(c.width, c.height, c.fov_x_deg)

    def pose_at(self, t: float) -> np.ndarray:
        """Analytic ``[4, 4]`` camera-to-world pose at time ``t`` seconds after the start."""
        return trajectory_pose(self.config.seed, self.config.angular_speed, t)

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
        return self._renderer.render(self.surfaces, T_world_cam)
