"""Vectorised ray casting of a synthetic room: one ray per pixel, colour and z-depth out.

The room is intersected over the whole image, every other primitive only inside the bounding
rectangle of its projection, and each surface is shaded only at the pixels it wins.

The arithmetic (dtypes, operation order) is that of a plain per-pixel ray caster, so the output
does not depend on which pixels a primitive is tested against; ``test_synthetic_speed_equivalence``
checks it against such a ray caster, bit for bit. Speed comes from doing less, not from doing it
differently: rectangles instead of whole images, work in cache-sized row blocks, temporaries in
scratch memory reused from frame to frame (fresh ones cost page faults), single-threaded matrix
products, table look-ups of values that were computed the same way. One renderer may render from
several threads at once; each render uses its own scratch memory.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from spann3r_ros.synthetic.intersect import distance, local_origin, to_local
from spann3r_ros.synthetic.layout import Surface
from spann3r_ros.synthetic.projection import screen_rect
from spann3r_ros.synthetic.scratch import Planes, row_blocks, Scratch
from spann3r_ros.synthetic.shading import Shader

# Rows per matrix product: 16384 x 3 x 3 stays under OpenBLAS's single-thread threshold (2**18).
GEMM_ROWS = 16384


class Renderer:
    """Draws surfaces from camera poses with one pinhole camera.

    :param width: image width in pixels.
    :param height: image height in pixels.
    :param K: ``[3, 3]`` pinhole intrinsics.
    :param shader: colours of the surface hits.
    """

    def __init__(self, width: int, height: int, K: np.ndarray, shader: Shader) -> None:
        self.width = width
        self.height = height
        self.K = K
        self._shader = shader
        self._rays: Optional[np.ndarray] = None
        # Idle scratch memories; a render takes one (or makes one), so threads never share one.
        self._idle_scratch: list[Scratch] = []

    def render(self, surfaces: Sequence[Surface], T_world_cam: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        """Render one view.

        :param surfaces: the room (enclosing the camera) first, then the other primitives.
        :param T_world_cam: ``[4, 4]`` camera-to-world pose (inside the room).
        :return: ``(rgb [H, W, 3] uint8, depth [H, W] float32 metres)``.
        """
        scratch = self._idle_scratch.pop() if self._idle_scratch else Scratch()
        try:
            scratch.new_frame()
            return self._render(surfaces, T_world_cam, scratch)
        finally:
            self._idle_scratch.append(scratch)

    def __getstate__(self) -> dict:
        """Pickle without the scratch memory."""
        state = dict(self.__dict__)
        state['_idle_scratch'] = []
        return state

    def _render(self, surfaces: Sequence[Surface], T_world_cam: np.ndarray, S: Scratch
                ) -> tuple[np.ndarray, np.ndarray]:
        K = self.K
        shape = (self.height, self.width)
        origin = T_world_cam[:3, 3].astype(np.float32)
        dirs = self._world_dirs(T_world_cam[:3, :3].astype(np.float32), S)
        inv_dz = S(shape)
        with np.errstate(divide='ignore'):
            np.divide(1.0, dirs[2], out=inv_dz)
        # The room (first surface) encloses the camera: its walls are the depth everywhere until
        # something nearer is found. It is shaded everywhere too (it wins most pixels), right
        # away while its rays are in cache; the primitives that win pixels paint over it.
        room = surfaces[0]
        room_origin = local_origin(room, origin)
        depth = np.empty(shape, np.float32)
        rgb = np.empty(shape + (3,), np.uint8)
        for rows in row_blocks(slice(0, self.height), self.width):
            with S.scope():
                d = [dk[rows] for dk in dirs]
                depth[rows] = distance(room, room_origin, d, inv_dz[rows], S)
                self._shader.shade(room, origin, depth[rows], d,
                                   [rgb[rows, :, k] for k in range(3)], S)
        # The other primitives are tested only inside their projected rectangles.
        owner = S(shape, np.int32)
        owner.fill(0)
        winners = []
        for i, s in enumerate(surfaces[1:], start=1):
            rect = screen_rect(s.corners_world(), T_world_cam, K, self.width, self.height)
            if rect is not None and self._cast(s, origin, dirs, inv_dz, rect, depth, owner, i, S):
                winners.append((i, s, rect))
        for i, s, rect in winners:
            self._shade_winner(s, i, origin, dirs, rect, depth, owner, rgb, S)
        # Rays have unit z in the camera frame, so the ray parameter is the z-depth.
        return rgb, depth

    def _camera_rays(self) -> np.ndarray:
        """``[H * W, 3]`` float64 camera-frame ray directions with unit z (cached)."""
        if self._rays is None:
            K = self.K
            u, v = np.meshgrid(np.arange(self.width, dtype=np.float32),
                               np.arange(self.height, dtype=np.float32))
            self._rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1],
                                   np.ones_like(u)], axis=-1).reshape(-1, 3)
        return self._rays

    def _world_dirs(self, R: np.ndarray, S: Scratch) -> list[np.ndarray]:
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
        return list(dirs.reshape(3, self.height, self.width))

    @staticmethod
    def _cast(s: Surface, origin: np.ndarray, dirs: Planes, inv_dz: np.ndarray,
              rect: tuple[slice, slice], depth: np.ndarray, owner: np.ndarray, index: int,
              S: Scratch) -> bool:
        """Intersect the rays in ``rect`` with ``s``; keep the nearer hits in ``depth``/``owner``.

        :param owner: ``[H, W]`` index of the nearest surface so far, per pixel.
        :return: whether ``s`` is now the nearest surface at some pixel.
        """
        o = local_origin(s, origin)
        won = False
        for rows in row_blocks(rect[0], rect[1].stop - rect[1].start):
            block = rows, rect[1]
            with S.scope():
                d = to_local(s, [dk[block] for dk in dirs], S)
                t = distance(s, o, d, inv_dz[block], S)
                closer = np.less(t, depth[block], out=S(t.shape, bool))
                if closer.any():
                    won = True
                    np.copyto(owner[block], index, where=closer)
                    np.minimum(depth[block], t, out=depth[block])
        return won

    def _shade_winner(self, s: Surface, index: int, origin: np.ndarray, dirs: Planes,
                      rect: tuple[slice, slice], depth: np.ndarray, owner: np.ndarray,
                      rgb: np.ndarray, S: Scratch) -> None:
        """Shade the pixels of ``rect`` that surface ``index`` wins, gathered into 1D arrays."""
        for rows in row_blocks(rect[0], rect[1].stop - rect[1].start):
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
                self._shader.shade(s, origin, gather(depth), [gather(d) for d in dirs], planes,
                                   S)
                target = rgb[block]
                for k in range(3):
                    target[..., k][mine] = planes[k]
