"""Throughput of the live node over real rclpy: images in, ``points`` clouds out, per second.

A probe publishes ``rgb8`` images on ``image`` faster than the node can take them (its queue keeps
the newest frame and drops the rest), and counts the PointCloud2 messages that arrive on
``points``. The clouds per second over a window that starts after the first clouds (model load,
CUDA start-up and kernel selection excluded) are the node pipeline's frames per second: model,
output stage, packing and publishing together. With random weights the focal estimate fails, so
no PnP pose is computed (the node runs PnP beside the model, on another thread).

Used by ``benchmarks/gpu_check.py``; on its own: ``python benchmarks/ros_node_fps.py
--checkpoint weights.safetensors --device cuda --precision bf16``.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import tempfile
import threading
import time
from typing import Any

import numpy as np


def _isolate_dds() -> None:
    # A random domain on localhost only, so that nodes of other runs are not discovered.
    os.environ.setdefault('ROS_DOMAIN_ID', str(random.SystemRandom().randint(100, 200)))
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    os.environ.setdefault('ROS_LOCALHOST_ONLY', '1')


def node_fps(checkpoint: str, device: str, precision: str, *, image_size: int = 224,
             seconds: float = 10.0, warmup_clouds: int = 3, rate_hz: float = 200.0,
             start_timeout: float = 300.0) -> dict[str, Any]:
    """Run the node on ``checkpoint`` and measure the clouds it publishes per second.

    :param checkpoint: weights file the node loads.
    :param device: the node's ``device`` parameter.
    :param precision: the node's ``precision`` parameter.
    :param image_size: model resolution; the published images have this size too.
    :param seconds: length of the measured window.
    :param warmup_clouds: clouds received before the window starts.
    :param rate_hz: image publishing rate (above what the node can process).
    :param start_timeout: seconds to wait for the first clouds.
    :return: ``fps``, ``clouds`` (in the window), ``window_s`` and ``published``.
    :raises RuntimeError: when the node publishes fewer than ``warmup_clouds`` clouds in
        ``start_timeout`` seconds.
    """
    _isolate_dds()
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.parameter import Parameter
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image, PointCloud2

    from spann3r_ros.node.node import Spann3rNode

    arrivals: list[float] = []
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (image_size * 2, image_size * 2, 3), dtype=np.uint8)
    images = []
    for i in range(16):  # a moving window, so that frames differ as a camera's do
        crop = np.ascontiguousarray(base[4 * i:4 * i + image_size, 4 * i:4 * i + image_size])
        images.append(Image(height=image_size, width=image_size, encoding='rgb8',
                            step=3 * image_size, data=crop.tobytes()))
    # Random weights give no usable focal: one warning per frame would flood the output.
    session_log = logging.getLogger('spann3r_model.session')
    level = session_log.level
    session_log.setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix='spann3r_node_fps_') as out_dir:
        rclpy.init()
        node = probe = executor = None
        stop = threading.Event()
        published = 0
        try:
            params = {'checkpoint': checkpoint, 'device': device, 'precision': precision,
                      'image_size': image_size, 'output_dir': out_dir}
            node = Spann3rNode(parameter_overrides=[Parameter(k, value=v)
                                                    for k, v in params.items()])
            probe = rclpy.create_node('node_fps_probe')
            probe.create_subscription(PointCloud2, 'points',
                                      lambda msg: arrivals.append(time.perf_counter()),
                                      qos_profile_sensor_data)
            pub = probe.create_publisher(Image, 'image', qos_profile_sensor_data)
            executor = MultiThreadedExecutor(num_threads=4)
            executor.add_node(node)
            executor.add_node(probe)
            threading.Thread(target=executor.spin, daemon=True).start()

            def publish() -> None:
                nonlocal published
                while not stop.is_set():
                    msg = images[published % len(images)]
                    msg.header.stamp.sec = 1000 + published
                    pub.publish(msg)
                    published += 1
                    time.sleep(1.0 / rate_hz)

            publisher = threading.Thread(target=publish, daemon=True)
            publisher.start()
            deadline = time.monotonic() + start_timeout
            while len(arrivals) < warmup_clouds:
                if time.monotonic() > deadline:
                    raise RuntimeError(f'the node published {len(arrivals)} clouds in '
                                       f'{start_timeout:.0f} s')
                time.sleep(0.01)
            start = arrivals[warmup_clouds - 1]
            time.sleep(max(0.0, start + seconds - time.perf_counter()))
            end = start + seconds
            clouds = sum(1 for t in arrivals if start < t <= end)
        finally:
            stop.set()
            if node is not None:
                node.shutdown()
            if executor is not None:
                executor.shutdown(timeout_sec=5)
            rclpy.try_shutdown()
            session_log.setLevel(level)
    return {'fps': clouds / seconds, 'clouds': clouds, 'window_s': seconds,
            'published': published}


def main() -> None:
    """Measure one configuration."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--checkpoint', required=True)
    parser.add_argument('--device', default='cuda')
    parser.add_argument('--precision', default='fp32')
    parser.add_argument('--seconds', type=float, default=10.0)
    args = parser.parse_args()
    result = node_fps(args.checkpoint, args.device, args.precision, seconds=args.seconds)
    print(f"node pipeline: {result['fps']:.1f} FPS ({result['clouds']} clouds in "
          f"{result['window_s']:.0f} s, {result['published']} images published)")


if __name__ == '__main__':
    main()
