#!/usr/bin/env python3
"""Cost of the ROS layer around the model, per frame at the model resolution.

1. Conversion + packing + publishing: decode an ``rgb8`` Image, build the ``points`` cloud
   (224 x 224 points), the ``confidence`` and ``depth`` images, and publish them to a subscriber.
2. End to end: publish an image to a live node (tiny preset, random weights, CPU) and time its
   arrival as a PointCloud2 at a probe; subtract the model time the worker measured.

Usage: ``python benchmarks/ros_overhead.py [--frames N]``. Prints figures; exit code 0.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import threading
import time

import numpy as np


def _stats(values: list[float]) -> str:
    arr = 1000.0 * np.asarray(values)
    return (f'mean {arr.mean():.2f} ms, p50 {np.percentile(arr, 50):.2f} ms, '
            f'p95 {np.percentile(arr, 95):.2f} ms (n={arr.size})')


def bench_packing(frames: int) -> None:
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image, PointCloud2
    from std_msgs.msg import Header

    from spann3r_model.geometry.frames import optical_to_rep103_points
    from spann3r_ros.formats.images import image_to_rgb
    from spann3r_ros.formats.pointcloud import CloudPacker
    from spann3r_ros.node.conversions import cloud_msg, float_image_msg

    node = rclpy.create_node('bench_pack')
    pub_cloud = node.create_publisher(PointCloud2, 'bench_points', qos_profile_sensor_data)
    pub_img = node.create_publisher(Image, 'bench_conf', qos_profile_sensor_data)
    node.create_subscription(PointCloud2, 'bench_points', lambda m: None,
                             qos_profile_sensor_data)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
    msg = Image(height=224, width=224, encoding='rgb8', step=672, data=rgb.tobytes())
    pts = rng.normal(size=(224, 224, 3)).astype(np.float32)
    conf = rng.uniform(1, 5, (224, 224)).astype(np.float32)
    header = Header(frame_id='map')
    packer = CloudPacker()  # as the node's worker thread keeps one
    parts = {'decode': [], 'pack': [], 'publish': [], 'total': [], 'total_cpu': []}
    for _ in range(frames):
        c0 = time.thread_time()
        t0 = time.perf_counter()
        image_to_rgb(msg)
        t1 = time.perf_counter()
        mask = conf >= 1.5
        cloud = cloud_msg(header, optical_to_rep103_points(pts), rgb, conf, mask=mask,
                          packer=packer)
        conf_img = float_image_msg(header, conf)
        depth_img = float_image_msg(header, pts[..., 2])
        t2 = time.perf_counter()
        pub_cloud.publish(cloud)
        pub_img.publish(conf_img)
        pub_img.publish(depth_img)
        t3 = time.perf_counter()
        cpu = time.thread_time() - c0
        for key, value in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t3 - t0, cpu)):
            parts[key].append(value)
    print(f'per frame at 224x224 ({int(mask.sum())} of 50176 points kept):')
    for key, values in parts.items():
        print(f'  {key:9s} {_stats(values)}')
    print('  (total_cpu is CPU time of the thread: insensitive to other load on the machine)')
    node.destroy_node()


def bench_end_to_end(frames: int) -> None:
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.parameter import Parameter
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image, PointCloud2
    import torch

    from spann3r_model.checkpoint_safetensors import save_safetensors
    from spann3r_model.config import TINY
    from spann3r_model.spann3r import Spann3R
    from spann3r_ros.node.node import Spann3rNode

    tmp = tempfile.mkdtemp(prefix='spann3r_bench_')
    ckpt = os.path.join(tmp, 'tiny.safetensors')
    torch.manual_seed(0)
    save_safetensors(Spann3R(TINY), TINY, ckpt)
    params = {'checkpoint': ckpt, 'device': 'cpu', 'min_confidence': 1.0, 'output_dir': tmp,
              'estimate_pose': False, 'map_publish_rate': 0.0}
    node = Spann3rNode(parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    probe = rclpy.create_node('bench_probe')
    arrivals: dict[float, float] = {}
    got = threading.Event()

    def on_cloud(msg: PointCloud2) -> None:
        arrivals[msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9] = time.perf_counter()
        got.set()


    probe.create_subscription(PointCloud2, 'points', on_cloud, qos_profile_sensor_data)
    pub = probe.create_publisher(Image, 'image', 10)
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    executor.add_node(probe)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    while pub.get_subscription_count() == 0:
        time.sleep(0.05)
    yy, xx = np.mgrid[0:224, 0:224]
    sent: dict[float, float] = {}
    model_times: list[float] = []
    # The node publishes frame i's refined cloud while it processes frame i + 1, so the
    # latency of a cloud is measured from the publish of the image that released it.
    for i in range(frames + 1):
        rgb = np.stack([(xx + 3 * i) % 256, yy % 256, (xx + yy) % 256], -1).astype(np.uint8)
        msg = Image(height=224, width=224, encoding='rgb8', step=672, data=rgb.tobytes())
        msg.header.stamp.sec = 1000 + i
        published = node.worker.published
        sent[1000.0 + i] = time.perf_counter()
        pub.publish(msg)
        deadline = time.monotonic() + 60
        while node.worker.processed <= i and time.monotonic() < deadline:
            time.sleep(0.002)
        if i > 0:
            while node.worker.published <= published and time.monotonic() < deadline:
                time.sleep(0.002)
            model_times.append(node.worker.model_times[-1])
            got.wait(1.0)
            got.clear()
    pairs = [(arrivals[1000.0 + i] - sent[1000.0 + i + 1], model_times[i])
             for i in range(frames) if 1000.0 + i in arrivals]
    lost = frames - len(pairs)
    latencies = [lat for lat, _ in pairs]
    model_times = [m for _, m in pairs]
    overhead = [lat - m for lat, m in pairs]
    print('end to end, image publish -> PointCloud2 receipt (tiny model, CPU):')
    print(f'  latency        {_stats(latencies)}')
    print(f'  model time     {_stats(model_times)}')
    print(f'  ROS overhead   {_stats(overhead)}')
    print(f'  clouds lost (best-effort QoS): {lost} of {frames}')
    node.shutdown()
    executor.shutdown(timeout_sec=5)
    thread.join(5)


def main() -> None:
    """Run both benchmarks."""
    parser = argparse.ArgumentParser(description='ROS layer overhead per frame.')
    parser.add_argument('--frames', type=int, default=50)
    parser.add_argument('--packing-only', action='store_true',
                        help='skip the end-to-end run through a live node')
    args = parser.parse_args()
    os.environ.setdefault('ROS_DOMAIN_ID', str(random.SystemRandom().randint(100, 200)))
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    import rclpy
    rclpy.init()
    try:
        load = ', '.join(f'{v:.2f}' for v in os.getloadavg())
        print(f'load average before: {load} on {os.cpu_count()} CPUs')
        bench_packing(args.frames)
        if not args.packing_only:
            bench_end_to_end(max(5, args.frames // 5))
        print('load average after: ' + ', '.join(f'{v:.2f}' for v in os.getloadavg()))
    finally:
        rclpy.try_shutdown()


if __name__ == '__main__':
    main()
