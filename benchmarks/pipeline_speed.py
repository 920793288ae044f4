"""Sustained frames/s of the live node's pipeline around the model, serial against pipelined.

A real :class:`~spann3r_ros.node.node.Spann3rNode` (real rclpy publishers, its timers spinning in a
``MultiThreadedExecutor``) gets ``sensor_msgs/Image`` messages through its own image callback
(decode, admission, queue) as fast as ``--rate`` allows; its worker is swapped for one whose
session is a zero-cost stand-in: it preprocesses the image as the model would, then returns
precomputed ``[224, 224, 3]`` pointmaps and confidences of a slanted wall (shifted each frame
so that fusion keeps adding voxels) with the focal set, so PnP, geometry, trajectory, cloud
packing, every topic, TF and map fusion run for real. Modes, interleaved run by run:

* ``today``: one thread, PnP on every confident pixel (the worker before the two stages);
* ``serial``: one thread, PnP on :data:`~spann3r_model.pose_estimation.PNP_MAX_POINTS` pixels;
* ``pipelined``: model and output stages on two threads, same PnP.

Each run prints published frames/s, the median time per frame of each stage, how long the
model stage waited for room in the result queue and the input frames dropped; the summary
prints the median frames/s per mode and the ratios. ``--tiny`` then compares serial and
pipelined with the tiny demo model as the session. No assertion: figures only. Example::

    .venv/bin/python benchmarks/pipeline_speed.py --seconds 3 --repeats 2 --tiny
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
import threading
import time
from typing import Any, Optional

import numpy as np
import rclpy  # noqa: TID251  (this benchmark measures the node over real rclpy)
from rclpy.executors import MultiThreadedExecutor  # noqa: TID251
from rclpy.parameter import Parameter  # noqa: TID251
from sensor_msgs.msg import Image  # noqa: TID251

from spann3r_model.geometry.camera import pixel_grid
from spann3r_model.mapping.voxel_map import VoxelMap
from spann3r_model.pose_estimation import attach_pnp_pose, PNP_MAX_POINTS
from spann3r_model.preprocess import preprocess
from spann3r_model.results import FrameResult, MemoryStats, StepOutput
from spann3r_ros.node.node import Spann3rNode
from spann3r_ros.pipeline.worker import ReconstructionWorker, STAGES

WEIGHTS = Path(__file__).resolve().parents[1] / 'weights' / 'spann3r_tiny_demo.safetensors'
SIZES = ((224, 224), (640, 480))


class StandInSession:
    """The session's interface with precomputed results (no network, no memory).

    :param size: model resolution (the pointmaps are ``[size, size, 3]``).
    """

    device = 'cpu'

    def __init__(self, size: int = 224) -> None:
        focal = 0.9 * size
        uv = pixel_grid(size, size) - size / 2.0
        depth = 2.0 + 0.004 * uv[..., 0] + 0.002 * uv[..., 1]
        rng = np.random.default_rng(0)
        self.pts3d = np.stack([uv[..., 0] / focal * depth, uv[..., 1] / focal * depth, depth],
                              -1).astype(np.float32)
        self.pts3d += rng.normal(0, 0.003, self.pts3d.shape).astype(np.float32)
        self.conf = rng.uniform(1.0, 10.0, (size, size)).astype(np.float32)
        self.focal = focal
        self.size = size
        self.pnp_max_points: Optional[int] = PNP_MAX_POINTS
        self.defer_pnp = False
        self.reset()

    def reset(self) -> None:
        """Forget the previous frame."""
        self._prev: Optional[tuple[int, float, Any]] = None
        self.count = 0

    @property
    def frame_count(self) -> int:
        """Frames stepped since the reset."""
        return self.count

    def step(self, rgb: np.ndarray, stamp: float, camera: int = 0,
             K: Optional[np.ndarray] = None) -> StepOutput:
        """Preprocess ``rgb`` and return the previous frame's precomputed result."""
        pre = preprocess(rgb, size=self.size)
        refined = None
        if self._prev is not None:
            index, prev_stamp, prev = self._prev
            shift = np.float32(0.02 * index)
            refined = FrameResult(index=index, stamp=prev_stamp, pts3d=self.pts3d + shift,
                                  conf=self.conf, rgb=prev.rgb, crop=prev.crop,
                                  focal=self.focal)
            if not self.defer_pnp:
                attach_pnp_pose(refined, self.pnp_max_points)
        self._prev = (self.count, float(stamp), pre)
        self.count += 1
        return StepOutput(refined=refined, provisional=None, memory=MemoryStats())


def image_msg(width: int, height: int) -> Image:
    """Return a smooth rgb8 test image."""
    yy, xx = np.mgrid[0:height, 0:width]
    rgb = np.stack([xx % 256, (2 * yy) % 256, (xx + yy) % 256], -1).astype(np.uint8)
    msg = Image(height=height, width=width, encoding='rgb8', step=3 * width, data=rgb.tobytes())
    msg.header.frame_id = 'camera'
    return msg


def run(node: Spann3rNode, session: Any, pipelined: bool, size: tuple[int, int],
        seconds: float, rate: float) -> dict[str, float]:
    """Feed the node for ``seconds`` and return frames/s and median stage times (ms)."""
    node.worker.stop()
    cfg = node.config
    worker = ReconstructionWorker(session, VoxelMap(cfg.map_voxel_size, cfg.map_max_points),
                                  cfg, node._publish_output, node.get_logger(),
                                  pipelined=pipelined)
    node.worker = worker
    node.gate.reset()
    worker.start()
    msg = image_msg(*size)
    decode: list[float] = []
    done = threading.Event()
    stamp = [time.time()]

    def feed() -> None:
        period = 1.0 / rate
        while not done.is_set():
            stamp[0] += period
            msg.header.stamp.sec = int(stamp[0])
            msg.header.stamp.nanosec = int((stamp[0] % 1.0) * 1e9)
            t0 = time.perf_counter()
            node._on_image(0, msg)
            decode.append(time.perf_counter() - t0)
            time.sleep(max(0.0, period - (time.perf_counter() - t0)))

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    time.sleep(0.5)  # warm-up
    for times in worker.stage_times.values():
        times.clear()
    published, t0 = worker.published, time.perf_counter()
    time.sleep(seconds)
    fps = (worker.published - published) / (time.perf_counter() - t0)
    done.set()
    feeder.join()
    worker.stop()
    figures = {'fps': fps, 'decode': 1000 * float(np.median(decode[-200:]))}
    for name in STAGES:
        values = list(worker.stage_times[name])
        figures[name] = 1000 * float(np.median(values)) if values else float('nan')
    figures['dropped_input'] = worker.queue.dropped
    waits = list(worker.model_waits)
    figures['model_wait'] = 1000 * float(np.median(waits)) if waits else float('nan')
    return figures


def report(label: str, figures: dict[str, float]) -> None:
    """Print one run."""
    stages = ', '.join(f'{name} {figures[name]:.2f}' for name in ('decode',) + STAGES)
    print(f'{label:28s} {figures["fps"]:7.1f} frames/s  (ms/frame: {stages}; model waited '
          f'{figures["model_wait"]:.2f} for room; input frames dropped '
          f'{figures["dropped_input"]})', flush=True)


def main() -> None:
    """Run the interleaved comparison and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--seconds', type=float, default=3.0, help='per run')
    parser.add_argument('--repeats', type=int, default=2)
    parser.add_argument('--rate', type=float, default=300.0, help='input frames/s offered')
    parser.add_argument('--tiny', action='store_true', help='also with the tiny demo model')
    parser.add_argument('--weights', type=Path, default=WEIGHTS)
    args = parser.parse_args()
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    rclpy.init()
    params = {'checkpoint': str(args.weights), 'device': 'cpu', 'num_threads': 1,
              'min_confidence': 1.5, 'map_voxel_size': 0.01}
    node = Spann3rNode('pipeline_speed',
                       parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    print(f'{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; stand-in model, '
          f'every output on (points, confidence, depth, camera_info, pose, path, TF, map 1 Hz)')
    results: dict[tuple[str, tuple[int, int]], list[float]] = {}
    try:
        for repeat in range(args.repeats):
            for size in SIZES:
                for mode in ('today', 'serial', 'pipelined'):
                    session = StandInSession()
                    if mode == 'today':
                        session.pnp_max_points = None
                    figures = run(node, session, mode == 'pipelined', size, args.seconds,
                                  args.rate)
                    results.setdefault((mode, size), []).append(figures['fps'])
                    report(f'{mode} {size[0]}x{size[1]} #{repeat + 1}', figures)
        print('median frames/s:')
        for size in SIZES:
            fps = {mode: float(np.median(results[(mode, size)]))
                   for mode in ('today', 'serial', 'pipelined')}
            print(f'  {size[0]}x{size[1]}: today {fps["today"]:.1f}, serial {fps["serial"]:.1f}, '
                  f'pipelined {fps["pipelined"]:.1f}; pipelined/today '
                  f'{fps["pipelined"] / fps["today"]:.2f}x, pipelined/serial '
                  f'{fps["pipelined"] / fps["serial"]:.2f}x')
        if args.tiny:
            from spann3r_model.backends.process import apply_process_settings
            from spann3r_model.config import EngineConfig
            from spann3r_model.session import StreamingSession
            apply_process_settings(EngineConfig(device='cpu', num_threads=1))
            tiny: dict[bool, list[float]] = {}
            for repeat in range(args.repeats):
                for pipelined in (False, True):
                    session = StreamingSession.from_checkpoint(
                        str(args.weights), EngineConfig(device='cpu', num_threads=1))
                    figures = run(node, session, pipelined, SIZES[1], args.seconds, args.rate)
                    tiny.setdefault(pipelined, []).append(figures['fps'])
                    report(f'tiny {"pipelined" if pipelined else "serial"} 640x480 '
                           f'#{repeat + 1}', figures)
            serial, piped = float(np.median(tiny[False])), float(np.median(tiny[True]))
            print(f'tiny model, 640x480: serial {serial:.1f}, pipelined {piped:.1f} frames/s '
                  f'({piped / serial:.2f}x)')
    finally:
        node.worker.stop()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == '__main__':
    main()
