"""A long run of the live node: resident memory, latency and the node's own time per frame.

A real :class:`~spann3r_ros.node.node.Spann3rNode` (real rclpy, its timers spinning in a
``MultiThreadedExecutor``, every output on) runs the ``tiny`` preset (the demo weights) at
224 x 224 on ``--frames`` frames of a cheap moving pattern: a window panning and drifting over
a smooth random texture, so that the memory keeps taking new frames and the map keeps growing
up to its cap. Frames go through the node's own image callback in lock-step: the next one once
the worker has published (or handled) the previous one, so no frame is dropped and every
figure is that of one frame.

Printed: resident memory (RSS) at frames 200, 1000, 2000 and the last, with its change from
frame 200; then per window of ``--window`` frames the latency percentiles of the published
frames (from their arrival in the image callback to the end of their publishing) and the
node's own time per frame, that is the latency minus the model time of the two steps it
spans (its own step and, results lagging one frame, the next one that releases it). No
assertion: figures only. Example::

    .venv/bin/python benchmarks/long_run_node.py --frames 3000
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
import threading
import time
from typing import Any

import numpy as np
import rclpy  # noqa: TID251  (this benchmark measures the node over real rclpy)
from rclpy.executors import MultiThreadedExecutor  # noqa: TID251
from rclpy.parameter import Parameter  # noqa: TID251
from sensor_msgs.msg import Image  # noqa: TID251

from spann3r_ros.node.node import Spann3rNode
from spann3r_ros.pipeline.output import Output

WEIGHTS = Path(__file__).resolve().parents[1] / 'weights' / 'spann3r_tiny_demo.safetensors'
SIZE = 224
RSS_AT = (200, 1000, 2000)


def rss_mib() -> float:
    """Return the resident set size of this process in MiB (Linux)."""
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024.0
    return float('nan')


class MovingPattern:
    """Frames of a window moving over a smooth random texture.

    :param size: side of the square frames in pixels.
    :param seed: texture seed.
    """

    def __init__(self, size: int = SIZE, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        coarse = rng.uniform(0, 255, (48, 48, 3))
        # Bilinear upsampling of a coarse noise gives blobs the model can match between frames.
        side = 4 * size
        grid = np.linspace(0, coarse.shape[0] - 1.001, side)
        i0 = np.floor(grid).astype(int)
        frac = (grid - i0)[:, None]
        rows = coarse[i0] * (1 - frac[..., None]) + coarse[i0 + 1] * frac[..., None]
        cols = rows[:, i0] * (1 - frac.T[..., None]) + rows[:, i0 + 1] * frac.T[..., None]
        self.texture = np.clip(cols, 0, 255).astype(np.uint8)
        self.size = size

    def frame(self, i: int) -> np.ndarray:
        """Return frame ``i``, ``[size, size, 3]`` uint8."""
        span = self.texture.shape[0] - self.size
        x = int((0.5 + 0.45 * np.sin(0.004 * i)) * span)
        y = int((0.5 + 0.45 * np.sin(0.0027 * i + 1.0)) * span)
        return np.ascontiguousarray(self.texture[y:y + self.size, x:x + self.size])


def image_msg(rgb: np.ndarray, stamp: float) -> Image:
    """Return an rgb8 ``sensor_msgs/Image`` of ``rgb`` stamped ``stamp``."""
    height, width = rgb.shape[:2]
    msg = Image(height=height, width=width, encoding='rgb8', step=3 * width, data=rgb.tobytes())
    msg.header.frame_id = 'camera'
    msg.header.stamp.sec = int(stamp)
    msg.header.stamp.nanosec = int((stamp % 1.0) * 1e9)
    return msg


class Recorder:
    """Wraps the session step and the publish callback of a worker to time every frame."""

    def __init__(self, worker: Any) -> None:
        self.lock = threading.Lock()
        self.step_time: dict[float, float] = {}
        self.rows: list[tuple[int, float, float]] = []  # (index, latency s, node time s)
        session_step, publish = worker.session.step, worker.publish

        def step(rgb: np.ndarray, stamp: float, **kwargs: Any) -> Any:
            t0 = time.monotonic()
            out = session_step(rgb, stamp, **kwargs)
            with self.lock:
                self.step_time[float(stamp)] = time.monotonic() - t0
            return out

        def timed_publish(out: Output) -> None:
            publish(out)
            latency = time.monotonic() - out.received
            with self.lock:
                own = self.step_time.pop(float(out.frame.stamp), 0.0)
                self.rows.append((out.index, latency, latency - own - out.model_time))

        worker.session.step = step
        worker.publish = timed_publish


def percentiles(values: list[float]) -> str:
    """Return ``p50 / p90 / p99 / max`` of seconds, in ms."""
    arr = 1000.0 * np.asarray(values)
    p50, p90, p99 = np.percentile(arr, (50, 90, 99))
    return f'p50 {p50:7.1f}  p90 {p90:7.1f}  p99 {p99:7.1f}  max {arr.max():7.1f}'


def main() -> None:
    """Run the node on the moving pattern and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--frames', type=int, default=3000)
    parser.add_argument('--window', type=int, default=500)
    parser.add_argument('--weights', type=Path, default=WEIGHTS)
    args = parser.parse_args()
    if args.frames < 2 or args.window < 1:
        parser.error('--frames must be at least 2 and --window at least 1')
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    rclpy.init()
    params = {'checkpoint': str(args.weights), 'device': 'cpu', 'num_threads': 1,
              'image_size': SIZE, 'long_mem_size': 4000, 'work_mem_size': 5}
    node = Spann3rNode('long_run',
                       parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    worker = node.worker
    recorder = Recorder(worker)
    pattern = MovingPattern()
    cfg = node.config
    print(f'{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; tiny preset '
          f'({args.weights.name}), {SIZE}x{SIZE}, long-term memory {cfg.long_mem_size} tokens, '
          f'working memory {cfg.work_mem_size} frames, map cap {cfg.map_max_points:,d} points; '
          f'{args.frames} frames in lock-step', flush=True)
    rss: dict[int, float] = {}
    stamp0, start = 1000.0, time.monotonic()
    try:
        for i in range(args.frames):
            handled = worker.processed
            node._on_image(0, image_msg(pattern.frame(i), stamp0 + 0.1 * i))
            deadline = time.monotonic() + 60.0
            while worker.processed == handled and time.monotonic() < deadline:
                time.sleep(0.0005)
            if worker.processed == handled:
                print(f'frame {i}: not handled within 60 s; stopping', flush=True)
                break
            n = i + 1
            if n in RSS_AT or n == args.frames:
                rss[n] = rss_mib()
                memory = worker.last_memory
                print(f'frame {n:5d}: RSS {rss[n]:7.1f} MiB, memory {memory.tokens} tokens / '
                      f'{memory.working_frames} working frames, map {len(worker.voxel_map):,d} '
                      f'points, {time.monotonic() - start:6.0f} s', flush=True)
    finally:
        worker.stop()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    base = rss.get(RSS_AT[0])
    if base:
        print('RSS change from frame 200: ' + ', '.join(
            f'{n}: {100.0 * (v / base - 1):+.1f}%' for n, v in sorted(rss.items()) if n > 200))
    rows = recorder.rows
    print(f'{len(rows)} frames published, {worker.queue.dropped} input frames dropped; '
          'per window (ms):')
    for lo in range(0, args.frames, args.window):
        window = [r for r in rows if lo <= r[0] < lo + args.window]
        if window:
            print(f'  frames {lo:5d}-{lo + args.window - 1:5d}: latency '
                  f'{percentiles([r[1] for r in window])} | node time '
                  f'{percentiles([r[2] for r in window])}', flush=True)


if __name__ == '__main__':
    main()
