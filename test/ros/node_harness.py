"""Helpers for in-process node tests: DDS isolation, a tiny checkpoint, a probe node."""

from __future__ import annotations

from collections import defaultdict
import os
import random
import threading
import time

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Path
import numpy as np
import rclpy
from rclpy.executors import MultiThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

_DOMAIN_SET = False


def isolate_dds() -> None:
    """Use a random DDS domain on localhost only, once per test process (before rclpy.init)."""
    global _DOMAIN_SET
    if not _DOMAIN_SET:
        os.environ['ROS_DOMAIN_ID'] = str(random.SystemRandom().randint(100, 200))
        os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
        os.environ['ROS_LOCALHOST_ONLY'] = '1'  # Humble's spelling of the same
        _DOMAIN_SET = True


def write_tiny_checkpoint(path) -> None:
    """Save a randomly initialised tiny model (seed 0 gives a positive focal on smooth images)."""
    import torch

    from spann3r_model.checkpoint_safetensors import save_safetensors
    from spann3r_model.config import TINY
    from spann3r_model.spann3r import Spann3R

    torch.manual_seed(0)
    save_safetensors(Spann3R(TINY), TINY, path)


def synthetic_scannet(root, frames: int, name: str = 'room'):
    """Render a small synthetic sequence in ScanNet layout under ``root``; return ``root``."""
    from spann3r_ros.cli.synth import main as synth_main

    assert synth_main(['--out', str(root), '--name', name, '--frames', str(frames),
                       '--width', '160', '--height', '120', '--scannet']) == 0
    return root


def smooth_frame(i: int, width: int = 160, height: int = 120) -> np.ndarray:
    """A smooth, slowly moving RGB test image ``[H, W, 3]``."""
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([(xx + 5 * i) % 256, (yy * 2) % 256, (xx + yy) % 256], -1).astype(np.uint8)


def image_msg(rgb: np.ndarray, stamp: float, frame_id: str = 'cam') -> Image:
    msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding='rgb8', step=rgb.shape[1] * 3,
                data=rgb.tobytes())
    msg.header.frame_id = frame_id
    msg.header.stamp.sec = int(stamp)
    msg.header.stamp.nanosec = int(round((stamp - int(stamp)) * 1e9))
    return msg


OUTPUTS = {'points': PointCloud2, 'map': PointCloud2, 'confidence': Image, 'depth': Image,
           'camera_info': CameraInfo, 'pose': PoseStamped, 'path': Path,
           '/diagnostics': DiagnosticArray}


class Harness:
    """Spin the node under test and a probe node (publisher, subscribers, clients) in a thread."""

    def __init__(self, node, image_type=Image, image_topic: str = 'image') -> None:
        self.node = node
        self.probe = rclpy.create_node('probe')
        self.lock = threading.Lock()
        self.received: dict[str, list] = defaultdict(list)
        self._clients: dict = {}
        for topic, msg_type in OUTPUTS.items():
            durability = (DurabilityPolicy.TRANSIENT_LOCAL if topic == 'map'
                          else DurabilityPolicy.VOLATILE)
            qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.BEST_EFFORT,
                             durability=durability)
            self.probe.create_subscription(msg_type, topic, self._store(topic), qos)
        self.pub = self.probe.create_publisher(image_type, image_topic, 10)
        self.executor = MultiThreadedExecutor(num_threads=4)
        self.executor.add_node(node)
        self.executor.add_node(self.probe)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()
        self.wait_for(lambda: self.pub.get_subscription_count() > 0, 10, 'subscription match')

    def _store(self, topic):
        def callback(msg):
            with self.lock:
                self.received[topic].append(msg)
        return callback

    def msgs(self, topic: str) -> list:
        with self.lock:
            return list(self.received[topic])

    def clear(self) -> None:
        with self.lock:
            self.received.clear()

    def wait_for(self, predicate, timeout: float, what: str = 'condition') -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.02)
        raise AssertionError(f'timed out after {timeout}s waiting for {what}')

    def call(self, srv_type, name: str, request, timeout: float = 30.0):
        # Clients are kept: destroying one while the executor waits on it races in rclpy.
        client = self._clients.get(name)
        if client is None:
            client = self._clients[name] = self.probe.create_client(srv_type, name)
        assert client.wait_for_service(timeout_sec=10), name
        future = client.call_async(request)
        self.wait_for(future.done, timeout, f'service {name}')
        return future.result()

    def stream(self, frames, rate_hz: float, start_stamp: float = 100.0) -> list[float]:
        """Publish ``frames`` at ``rate_hz``; return their stamps."""
        stamps = []
        for i, rgb in enumerate(frames):
            stamp = start_stamp + i / rate_hz
            self.pub.publish(image_msg(rgb, stamp))
            stamps.append(stamp)
            time.sleep(1.0 / rate_hz)
        return stamps

    def feed(self, frames, start_stamp: float = 100.0, step: float = 0.1) -> list[float]:
        """Publish ``frames`` one at a time, each after the previous one was processed."""
        stamps = []
        worker = self.node.worker
        for i, rgb in enumerate(frames):
            before = worker.processed
            stamp = start_stamp + i * step
            self.pub.publish(image_msg(rgb, stamp))
            stamps.append(stamp)
            self.wait_for(lambda: worker.processed > before, 30, f'frame {i} processed')
        return stamps

    def close(self) -> None:
        self.node.shutdown()
        self.executor.shutdown(timeout_sec=5)
        self.thread.join(5)
        for node in (self.probe, self.node):
            self.executor.remove_node(node)
            node.destroy_node()
