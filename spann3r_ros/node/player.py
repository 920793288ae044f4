"""Play colour frames into a running node and collect what comes back.

The node keeps only the newest pending frame, so a player that publishes faster than the model
runs loses frames. By default this player therefore runs in lock-step: it publishes frame
``i + 1`` only after the node has answered for frame ``i - 1`` (the refined result of a frame
is published when the next frame is processed), which makes a replay reproducible on any
machine and turns the wait between publishing a frame and receiving the previous frame's output
into a per-frame latency. Frame 0 produces no output; the player waits for the node's
diagnostics to report it processed.

With a fixed ``rate`` the player instead publishes like a camera, without waiting: frames the
node cannot keep up with are dropped by the node, which is what that mode measures. Its latency
is from publishing frame ``i`` to receiving frame ``i``'s own output (one extra frame period,
since a frame is refined when the next one arrives).

rclpy is imported inside :func:`play_lockstep`, so importing this module needs no ROS.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import logging
from pathlib import Path
import threading
import time
from typing import Any, Callable, Optional

import numpy as np

from spann3r_ros.bags.reader import BagReader
from spann3r_ros.formats.images import decode_color
from spann3r_ros.formats.message_fields import matrix_from
from spann3r_ros.node.discovery import NodeTarget

LOG = logging.getLogger(__name__)

_FLOAT_TYPES = {7: np.dtype('<f4'), 8: np.dtype('<f8')}


@dataclass
class BagFrame:
    """One colour frame of the bag.

    :param stamp_ns: header stamp in nanoseconds (the key the node's outputs carry back).
    :param rgb: ``[H, W, 3]`` uint8.
    """

    stamp_ns: int
    rgb: np.ndarray


@dataclass
class NodeOutput:
    """What the node published for one frame.

    :param points: ``[N, 3]`` float32 points in the map frame (confidence-filtered).
    :param point_conf: ``[N]`` float32 confidence of those points.
    :param conf: ``[H, W]`` float32 confidence image, or None if it did not arrive.
    :param T_map_cam: ``[4, 4]`` camera pose in the map frame, or None.
    :param received: monotonic time the first output of this frame arrived.
    """

    points: np.ndarray
    point_conf: np.ndarray
    conf: Optional[np.ndarray] = None
    T_map_cam: Optional[np.ndarray] = None
    received: float = 0.0


@dataclass
class Playback:
    """The result of one replay.

    :param stamps_ns: stamps of the published frames, in order.
    :param published: ``{stamp_ns: monotonic publish time}``.
    :param outputs: ``{stamp_ns: NodeOutput}`` for every frame the node answered for.
    :param latencies: ``[K]`` seconds from publishing frame ``i`` to receiving frame ``i - 1``.
    :param wall_s: seconds from the first publish to the last output.
    :param saved_map: path reported by ``~/save_map``, or None when it was not called.
    :param rate: the fixed publishing rate in Hz, or None for lock-step playback.
    """

    stamps_ns: list[int] = field(default_factory=list)
    published: dict[int, float] = field(default_factory=dict)
    outputs: dict[int, NodeOutput] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    saved_map: Optional[str] = None
    rate: Optional[float] = None


def read_bag_frames(bag: Path, topic: str, max_frames: int = 0) -> list[BagFrame]:
    """Read the colour frames of ``topic`` (Image or CompressedImage) in bag order.

    :param max_frames: stop after this many (0 = all).
    :raises ValueError: when the topic is missing or holds no frame.
    """
    frames = []
    with BagReader(bag) as reader:
        if topic not in reader.topics:
            raise ValueError(f'bag {bag} has no topic {topic}; it has {sorted(reader.topics)}')
        for _, _, msg in reader.messages([topic]):
            stamp = msg.header.stamp
            frames.append(BagFrame(int(stamp.sec) * 10**9 + int(stamp.nanosec),
                                   decode_color(msg)))
            if max_frames and len(frames) >= max_frames:
                break
    if not frames:
        raise ValueError(f'topic {topic} of bag {bag} holds no frame')
    return frames


def cloud_arrays(msg: Any) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(xyz [N, 3], confidence [N])`` float32 of a PointCloud2.

    :raises ValueError: when x, y, z are missing or not float32/float64.
    """
    fields = {f.name: f for f in msg.fields}
    if not {'x', 'y', 'z'} <= set(fields):
        raise ValueError(f'point cloud without x, y, z fields: {sorted(fields)}')
    n = msg.width * msg.height
    rows = np.frombuffer(bytes(msg.data), np.uint8)[:n * msg.point_step].reshape(
        n, msg.point_step)

    def column(name: str) -> np.ndarray:
        f = fields[name]
        if f.datatype not in _FLOAT_TYPES:
            raise ValueError(f'point field {name} has datatype {f.datatype}, expected a float')
        dtype = _FLOAT_TYPES[f.datatype].newbyteorder('>' if msg.is_bigendian else '<')
        return rows[:, f.offset:f.offset + dtype.itemsize].copy().view(dtype)[:, 0]

    xyz = np.stack([column(c) for c in 'xyz'], axis=1).astype(np.float32)
    conf = column('confidence').astype(np.float32) if 'confidence' in fields else \
        np.ones(n, np.float32)
    return xyz, conf


def float_image(msg: Any) -> np.ndarray:
    """Return a ``32FC1`` Image as a ``[H, W]`` float32 array."""
    if msg.encoding != '32FC1':
        raise ValueError(f'expected a 32FC1 image, got {msg.encoding!r}')
    dtype = np.dtype('>f4' if msg.is_bigendian else '<f4')
    rows = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.step)
    return rows[:, :msg.width * 4].copy().view(dtype).astype(np.float32)


def _stamp_ns(header: Any) -> int:
    return int(header.stamp.sec) * 10**9 + int(header.stamp.nanosec)


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f'timed out after {timeout:.0f} s waiting for {what}')
        time.sleep(0.01)


def play_lockstep(frames: list[BagFrame], *, node_name: str = 'spann3r_node',
                  namespace: str = '/', image_topic: str = 'image', timeout: float = 120.0,
                  save_map: bool = True, on_frame: Optional[Callable[[int, int], None]] = None,
                  rate: Optional[float] = None, reset: bool = False) -> Playback:
    """Publish ``frames`` to a running node and collect its outputs.

    rclpy must be initialised by the caller (with the node's ``ROS_DOMAIN_ID``). The player's
    own node lives in the reconstruction node's namespace, so relative names (the node's
    ``points``, ``confidence``, ``pose`` and a relative ``image_topic``) resolve exactly as
    they do for the node.

    :param node_name: name of the reconstruction node (for its services and diagnostics).
    :param namespace: its absolute namespace (``/spann3r`` under ``live.launch.py``).
    :param image_topic: the node's input topic (raw ``sensor_msgs/Image``), relative to
        ``namespace`` or absolute.
    :param timeout: seconds to wait for the node to appear and for each answer (with ``rate``:
        for all answers after the last frame went out).
    :param save_map: call ``~/save_map`` after the last frame.
    :param on_frame: called with ``(frames_done, total)`` after each answer (progress).
    :param rate: publish at this fixed rate in Hz instead of in lock-step; frames the node
        drops are simply missing from the result.
    :param reset: call ``~/reset`` first, so the reconstruction starts from empty memory
        (and the node accepts stamps that an earlier playback already used).
    :raises TimeoutError: when the node does not appear or (lock-step) stops answering.
    :raises RuntimeError: when ``~/save_map`` or ``~/reset`` fails.
    :raises ValueError: when ``rate`` is not positive.
    """
    if rate is not None and not rate > 0:
        raise ValueError(f'the publishing rate must be positive, got {rate}')
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseStamped
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image, PointCloud2
    from std_srvs.srv import Trigger

    target = NodeTarget(namespace, node_name)
    node = rclpy.create_node('spann3r_demo_player', namespace=namespace)
    lock = threading.Lock()
    clouds: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    confs: dict[int, np.ndarray] = {}
    poses: dict[int, np.ndarray] = {}
    # First arrival of any output of a frame: the clouds and images are best-effort (sensor
    # QoS), so the reliable pose also counts as the node's answer.
    arrival: dict[int, float] = {}
    # Highest frames_processed the node reported, and whether any report came yet.
    processed = [0, False]

    def arrived(stamp: int) -> None:
        arrival.setdefault(stamp, time.monotonic())

    def on_points(msg: Any) -> None:
        xyz, conf = cloud_arrays(msg)
        with lock:
            clouds[_stamp_ns(msg.header)] = (xyz, conf)
            arrived(_stamp_ns(msg.header))

    def on_conf(msg: Any) -> None:
        with lock:
            confs[_stamp_ns(msg.header)] = float_image(msg)
            arrived(_stamp_ns(msg.header))

    def on_pose(msg: Any) -> None:
        with lock:
            poses[_stamp_ns(msg.header)] = matrix_from(msg.pose.position, msg.pose.orientation)
            arrived(_stamp_ns(msg.header))

    def on_diag(msg: Any) -> None:
        count = frames_processed(msg, target)
        if count is not None:
            with lock:
                processed[0] = max(processed[0], count)
                processed[1] = True

    node.create_subscription(PointCloud2, 'points', on_points, qos_profile_sensor_data)
    node.create_subscription(Image, 'confidence', on_conf, qos_profile_sensor_data)
    node.create_subscription(PoseStamped, 'pose', on_pose, 10)
    node.create_subscription(DiagnosticArray, '/diagnostics', on_diag, 10)
    pub = node.create_publisher(Image, image_topic,
                                QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    save = node.create_client(Trigger, target.service('save_map'))
    reset_client = node.create_client(Trigger, target.service('reset'))
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    result = Playback(rate=rate)
    try:
        _wait(lambda: pub.get_subscription_count() > 0
              and (save.service_is_ready() or not save_map), timeout,
              f'node {target.full_name} to subscribe to {pub.topic_name}')
        if reset:
            _call(reset_client, timeout, '~/reset')
        baseline = 0
        if rate is None:
            # frames_processed counts over the node's life: frame 0 is taken when it grows.
            _wait(lambda: processed[1], timeout, f'/diagnostics of {target.full_name} '
                  '(lock-step needs them: diagnostics_rate > 0; or play at a fixed rate)')
            with lock:
                baseline = processed[0]
        t_start = time.monotonic()
        for i, frame in enumerate(frames):
            msg = Image(height=frame.rgb.shape[0], width=frame.rgb.shape[1], encoding='rgb8',
                        step=frame.rgb.shape[1] * 3, data=frame.rgb.tobytes())
            msg.header.frame_id = 'camera_color_optical_frame'
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(frame.stamp_ns, 10**9)
            if rate is not None:
                # Scheduled from the start, so publishing time does not slow the rate down.
                time.sleep(max(0.0, t_start + i / rate - time.monotonic()))
            now = time.monotonic()
            result.published[frame.stamp_ns] = now
            result.stamps_ns.append(frame.stamp_ns)
            pub.publish(msg)
            if rate is not None:
                continue
            if i == 0:
                # No output for frame 0: wait until the worker has taken it, or frame 1
                # would replace it in the node's newest-frame slot.
                _wait(lambda: processed[0] > baseline, timeout, 'the node to process frame 0')
                continue
            previous = frames[i - 1].stamp_ns
            _wait(lambda: previous in arrival, timeout,
                  f'the output of frame {i - 1} (the node processes frame {i})')
            result.latencies.append(arrival[previous] - now)
            if on_frame is not None:
                on_frame(i, len(frames))
        if rate is not None:
            _collect_fixed_rate(frames, result, arrival, lock, timeout)
        with lock:
            result.wall_s = max(arrival.values()) - t_start if arrival else 0.0
        # Cloud, confidence and pose of a frame go out together; give the last ones a moment.
        last = frames[-2].stamp_ns if len(frames) > 1 else None
        if last is not None:
            try:
                _wait(lambda: last in clouds and last in confs, 5.0, 'the last outputs')
            except TimeoutError:
                LOG.warning('the cloud or confidence image of the last answered frame is missing')
        if save_map:
            result.saved_map = _call(save, timeout, '~/save_map')
    finally:
        executor.shutdown()
        spinner.join(timeout=5)
        node.destroy_node()
    with lock:
        empty = (np.zeros((0, 3), np.float32), np.zeros(0, np.float32))
        for stamp, received in arrival.items():
            xyz, conf = clouds.get(stamp, empty)
            result.outputs[stamp] = NodeOutput(xyz, conf, confs.get(stamp), poses.get(stamp),
                                               received)
        missing = sum(1 for s in arrival if s not in clouds)
    if missing:
        LOG.warning('%d answered frames lack their point cloud (best-effort delivery)', missing)
    return result


def frames_processed(msg: Any, target: NodeTarget) -> Optional[int]:
    """Return the ``frames_processed`` that ``target`` reports in a ``DiagnosticArray``.

    Status names start with the node's short name only, so statuses of same-named nodes in
    other namespaces are told apart by the full name the node reports as ``node`` (a status
    without it is taken by its name).

    :return: the highest count of ``target`` in ``msg``, or None when it reports none.
    """
    counts = []
    for status in msg.status:
        if not status.name.startswith(f'{target.name}:'):
            continue
        values = {kv.key: kv.value for kv in status.values}
        if values.get('node', target.full_name) == target.full_name \
                and 'frames_processed' in values:
            counts.append(int(values['frames_processed']))
    return max(counts) if counts else None


def _call(client: Any, timeout: float, what: str) -> str:
    """Call a ``Trigger`` service; return its message.

    :raises RuntimeError: when it fails.
    """
    from std_srvs.srv import Trigger

    _wait(client.service_is_ready, timeout, f'{what} to be available')
    future = client.call_async(Trigger.Request())
    _wait(future.done, timeout, what)
    response = future.result()
    if response is None or not response.success:
        raise RuntimeError(f'{what} failed: {getattr(response, "message", "no response")}')
    return response.message


def _collect_fixed_rate(frames: list[BagFrame], result: Playback, arrival: dict[int, float],
                        lock: threading.Lock, timeout: float) -> None:
    """Wait for the answers of a fixed-rate playback; frames the node dropped stay missing.

    The latency of frame ``i`` runs from its publication to its own output.
    """
    expected = [f.stamp_ns for f in frames[:-1]]  # the last frame is never refined
    # A dropped frame never answers: stop once all came back, or the node has been quiet
    # for a while, or at the timeout. The node holds at most two frames (one running, one
    # pending) when the last one went out, so a long silence means the rest were dropped.
    quiet = min(timeout, max(30.0, 5.0 / result.rate))
    deadline = time.monotonic() + timeout
    last_change, seen = time.monotonic(), -1
    while time.monotonic() < deadline:
        with lock:
            count = sum(1 for s in expected if s in arrival)
        if count == len(expected):
            break
        if count != seen:
            last_change, seen = time.monotonic(), count
        elif time.monotonic() - last_change > quiet:
            break
        time.sleep(0.02)
    with lock:
        for stamp in expected:
            if stamp in arrival:
                result.latencies.append(arrival[stamp] - result.published[stamp])
        dropped = sum(1 for s in expected if s not in arrival)
    if dropped:
        LOG.info('the node answered %d of %d frames at %.3g Hz', len(expected) - dropped,
                 len(expected), result.rate)
