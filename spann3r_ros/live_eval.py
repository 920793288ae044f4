"""``spann3r-eval --live``: publish a sequence to a running node and collect its outputs.

The frames go out on the node's ``image`` topic (sensor_msgs/Image, rgb8) at a fixed rate with
increasing stamps; the node's ``pose`` and ``points`` outputs are matched to them by stamp. The
report holds what a live run can be judged on: how many frames came back, end-to-end latency
(publish to output, which includes the one-frame delay of the refined result), throughput, and
ATE of the published poses after Sim(3) alignment. The node publishes confidence-filtered clouds
rather than full pointmaps, so the pixelwise official protocol does not apply here; the received
cloud is written as a PLY, mapped into the ground-truth frame by the trajectory alignment.

rclpy is imported here only, so the rest of the bag tools run without ROS.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from spann3r_model.evaluation import absolute_trajectory_error, latency_stats

from .replay import model_input
from .scannet import ScanNetScene

START_STAMP = 1000.0
_FIELD_DTYPES = {7: '<f4', 8: '<f8'}


def _cloud_xyz(msg: Any) -> np.ndarray:
    """``[N, 3]`` float32 x, y, z of a PointCloud2 with float32/float64 coordinates."""
    fields = {f.name: f for f in msg.fields}
    if not {'x', 'y', 'z'} <= set(fields):
        raise ValueError('point cloud has no x, y, z fields')
    n = msg.width * msg.height
    raw = np.frombuffer(bytes(msg.data), np.uint8)[:n * msg.point_step]
    rows = raw.reshape(n, msg.point_step)
    cols = []
    for name in 'xyz':
        f = fields[name]
        dtype = np.dtype(_FIELD_DTYPES[f.datatype])
        cols.append(rows[:, f.offset:f.offset + dtype.itemsize].copy().view(dtype)[:, 0])
    return np.stack(cols, axis=1).astype(np.float32)


def _stamp(header: Any) -> float:
    return round(header.stamp.sec + header.stamp.nanosec * 1e-9, 6)


def run_live(scene: ScanNetScene, frame_ids: list[int], topic: str = 'image',
             rate: float = 2.0, timeout: float = 60.0) -> tuple[dict, dict, dict]:
    """Publish the frames to a running node and evaluate what it sends back.

    :return: ``(report, plot_data, clouds)`` for :func:`replay.write_outputs_live`.
    :raises ValueError: when no node subscribes to ``topic`` within ``timeout`` seconds.
    """
    from geometry_msgs.msg import PoseStamped
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image, PointCloud2

    if rate <= 0:
        raise ValueError(f'--rate must be positive, got {rate}')
    owns_context = not rclpy.ok()
    if owns_context:
        rclpy.init()
    node = rclpy.create_node('spann3r_eval_live')
    lock = threading.Lock()
    poses: dict[float, tuple[float, np.ndarray]] = {}
    clouds: dict[float, tuple[float, np.ndarray]] = {}

    def on_pose(msg: Any) -> None:
        p, q = msg.pose.position, msg.pose.orientation
        from .bag_messages import matrix_from
        T = matrix_from(p, q)
        with lock:
            poses[_stamp(msg.header)] = (time.monotonic(), T)

    def on_points(msg: Any) -> None:
        with lock:
            clouds[_stamp(msg.header)] = (time.monotonic(), _cloud_xyz(msg))

    node.create_subscription(PoseStamped, 'pose', on_pose, 10)
    node.create_subscription(PointCloud2, 'points', on_points, qos_profile_sensor_data)
    pub = node.create_publisher(Image, topic, 10)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    published: dict[float, float] = {}
    try:
        deadline = time.monotonic() + timeout
        while pub.get_subscription_count() == 0:
            if time.monotonic() > deadline:
                raise ValueError(f'no node subscribes to {pub.topic_name} (waited {timeout} s)')
            time.sleep(0.05)
        stamps = []
        for i, fid in enumerate(frame_ids):
            rgb = model_input(scene, fid)
            stamp = round(START_STAMP + i / rate, 6)
            msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding='rgb8',
                        step=rgb.shape[1] * 3, data=rgb.tobytes())
            msg.header.frame_id = 'camera'
            msg.header.stamp.sec = int(stamp)
            msg.header.stamp.nanosec = int(round((stamp - int(stamp)) * 1e9))
            published[stamp] = time.monotonic()
            pub.publish(msg)
            stamps.append(stamp)
            time.sleep(1.0 / rate)
        # The node refines frame i when frame i + 1 arrives: the last one never comes back.
        expected = stamps[:-1]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with lock:
                if all(s in clouds for s in expected):
                    break
            time.sleep(0.05)
    finally:
        executor.shutdown()
        spinner.join(timeout=5)
        node.destroy_node()
        if owns_context:
            rclpy.try_shutdown()
    return _summarise(scene, frame_ids, stamps, published, poses, clouds)


def _summarise(scene: ScanNetScene, frame_ids: list[int], stamps: list[float],
               published: dict, poses: dict, clouds: dict) -> tuple[dict, dict, dict]:
    index = {s: i for i, s in enumerate(stamps)}
    gt = np.stack([scene.pose(fid)[:3, 3] for fid in frame_ids])
    latency = [clouds[s][0] - published[s] for s in stamps if s in clouds]
    report: dict = {'sequence': scene.name, 'n_frames': len(frame_ids), 'source': 'live',
                    'frame_ids': frame_ids, 'frames_published': len(stamps),
                    'clouds_received': len(clouds), 'poses_received': len(poses)}
    if latency:
        report['latency'] = latency_stats(np.asarray(latency))
        span = max(clouds[s][0] for s in clouds) - min(published.values())
        report['output_rate_hz'] = len(clouds) / span if span > 0 else None
    plot: dict = {'gt_positions': gt, 'latency': np.asarray(latency)}
    matched = sorted(s for s in poses if s in index)
    cloud_pts = np.concatenate([c[1] for c in clouds.values()]) if clouds else np.zeros((0, 3))
    out_clouds: dict = {}
    if len(matched) >= 3:
        est = np.stack([poses[s][1][:3, 3] for s in matched])
        ate = absolute_trajectory_error(est, gt[[index[s] for s in matched]])
        est_full = np.full_like(gt, np.nan)
        est_full[[index[s] for s in matched]] = ate.pop('aligned')
        plot['est_positions'] = est_full
        if len(cloud_pts):
            aligned = ate['scale'] * cloud_pts @ ate['R'].T + ate['t']
            out_clouds['prediction'] = (aligned.astype(np.float32), None)
        ate['R'], ate['t'] = ate['R'].tolist(), ate['t'].tolist()
        report['ate'] = ate
    elif len(cloud_pts):
        out_clouds['prediction_map_frame'] = (cloud_pts, None)
    return report, plot, out_clouds
