"""Bags laid out the way other recorders write them, built with ``rosbags`` alone.

Nothing here uses this package's bag writer: the messages are assembled field by field from
the ``rosbags`` typestores, as a RealSense driver recorded with ``ros2 bag record``, a phone
app, a Foxglove recorder or a ROS 1 ``rosbag record`` would leave them. The camera moves at a
constant linear and angular velocity, so TF interpolation between samples is exact and the
exported poses can be compared with :func:`T_world_camera` to float precision.
"""

from dataclasses import dataclass
from pathlib import Path
import shutil
import sqlite3
from typing import Any, Optional

import cv2
import numpy as np
from rosbags.rosbag1 import Writer as Writer1
from rosbags.rosbag2 import StoragePlugin
from rosbags.rosbag2 import Writer as Writer2
from rosbags.typesys import get_types_from_msg, get_typestore, Stores
from scipy.spatial.transform import Rotation
import yaml

WIDTH, HEIGHT, FRAMES = 32, 24, 10
START_NS = 1_700_000_000_000_000_000
PERIOD_NS = 100_000_000  # 10 Hz images
TF_PERIOD_NS = 33_333_333  # 30 Hz TF, never on an image stamp
K_TRUE = np.array([[30.5, 0.0, 15.25], [0.0, 30.0, 11.75], [0.0, 0.0, 1.0]])
#: camera_link (x forward, z up) -> optical frame (z forward, y down), 15 mm to the side.
T_LINK_OPTICAL = np.eye(4)
T_LINK_OPTICAL[:3, :3] = [[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]
T_LINK_OPTICAL[:3, 3] = [0.0, 0.015, 0.0]

REALSENSE_COLOR = '/camera/camera/color/image_raw'
REALSENSE_INFO = '/camera/camera/color/camera_info'
REALSENSE_DEPTH = '/camera/camera/aligned_depth_to_color/image_raw'
PHONE_IMAGE = '/camera/image/compressed'
FOX_IMAGE = '/camera/image'
ROS1_COLOR = '/camera/rgb/image_color'
ROS1_DEPTH = '/camera/depth_registered/image_raw'


def image_ns(i: int) -> int:
    """Header stamp of image ``i``."""
    return START_NS + i * PERIOD_NS


def T_world_body(t: float) -> np.ndarray:
    """``[4, 4]`` pose of the moving body at ``t`` seconds after the first image."""
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec([0.0, 0.0, 0.3 * t]).as_matrix()
    T[:3, 3] = [1.0 + 0.2 * t, 2.0 - 0.1 * t, 0.5 + 0.05 * t]
    return T


def T_world_camera(i: int) -> np.ndarray:
    """Ground-truth ``[4, 4]`` pose of the optical frame at image ``i``."""
    return T_world_body((image_ns(i) - START_NS) / 1e9) @ T_LINK_OPTICAL


def rgb_of(i: int) -> np.ndarray:
    """``[H, W, 3]`` uint8 colours of frame ``i``: smooth ramps, a different one per channel."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    return np.stack([6 * x + 10, 8 * y + 20, np.full_like(x, 40 + 15 * i)], -1).astype(np.uint8)


def depth_mm_of(i: int) -> np.ndarray:
    """``[H, W]`` uint16 millimetres of frame ``i`` (a few invalid zeros)."""
    depth = np.random.default_rng(200 + i).integers(300, 4000, (HEIGHT, WIDTH), dtype=np.uint16)
    depth[0, :3] = 0
    return depth


def jpeg_of(i: int) -> bytes:
    """A phone camera's JPEG of frame ``i`` (encoded from BGR, as OpenCV-based apps do)."""
    ok, buf = cv2.imencode('.jpg', np.ascontiguousarray(rgb_of(i)[..., ::-1]),
                           [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    return buf.tobytes()


class Recorder:
    """Writes one bag: rosbag2 (``sqlite3`` / ``mcap``, ``humble`` or ``jazzy``) or ROS 1.

    :param path: a rosbag2 folder or a ROS 1 ``.bag`` file.
    :param storage: ``sqlite3``, ``mcap`` or ``ros1``.
    :param distro: ``humble`` (metadata version 5, no definitions in sqlite3) or ``jazzy``.
    """

    def __init__(self, path: Path, storage: str, distro: str = 'jazzy') -> None:
        self.path, self.storage, self.distro = Path(path), storage, distro
        self.ros1 = storage == 'ros1'
        if self.ros1:
            self.ts = get_typestore(Stores.ROS1_NOETIC)
            for tf_type in ('tf2_msgs/msg/TFMessage', 'tf/msg/tfMessage'):
                self.ts.register(get_types_from_msg(
                    'geometry_msgs/TransformStamped[] transforms', tf_type))
            self.writer: Any = Writer1(self.path)
        else:
            store = Stores.ROS2_HUMBLE if distro == 'humble' else Stores.ROS2_JAZZY
            self.ts = get_typestore(store)
            plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
            self.writer = Writer2(self.path, version=8, storage_plugin=plugin)
        self.writer.open()
        self.connections: dict[str, Any] = {}
        self.types = self.ts.types

    def write(self, topic: str, msg: Any, ns: int) -> None:
        msgtype = msg.__msgtype__
        if topic not in self.connections:
            extra = {'latching': 1} if self.ros1 and topic == '/tf_static' else {}
            self.connections[topic] = self.writer.add_connection(topic, msgtype,
                                                                 typestore=self.ts, **extra)
        raw = (self.ts.serialize_ros1 if self.ros1 else self.ts.serialize_cdr)(msg, msgtype)
        self.writer.write(self.connections[topic], ns, raw)

    def close(self) -> Path:
        self.writer.close()
        if self.distro == 'humble' and not self.ros1:
            _to_humble_layout(self.path)
        return self.path

    # Message builders ---------------------------------------------------------------------

    def header(self, ns: int, frame_id: str) -> Any:
        stamp = self.types['builtin_interfaces/msg/Time'](sec=ns // 10**9, nanosec=ns % 10**9)
        if self.ros1:
            return self.types['std_msgs/msg/Header'](seq=0, stamp=stamp, frame_id=frame_id)
        return self.types['std_msgs/msg/Header'](stamp=stamp, frame_id=frame_id)

    def image(self, ns: int, frame_id: str, pixels: np.ndarray, encoding: str) -> Any:
        pixels = np.ascontiguousarray(pixels)
        return self.types['sensor_msgs/msg/Image'](
            header=self.header(ns, frame_id), height=pixels.shape[0], width=pixels.shape[1],
            encoding=encoding, is_bigendian=0, step=pixels.strides[0],
            data=np.frombuffer(pixels.tobytes(), np.uint8))

    def compressed(self, ns: int, frame_id: str, data: bytes, fmt: str) -> Any:
        return self.types['sensor_msgs/msg/CompressedImage'](
            header=self.header(ns, frame_id), format=fmt, data=np.frombuffer(data, np.uint8))

    def camera_info(self, ns: int, frame_id: str, K: np.ndarray) -> Any:
        cls = self.types['sensor_msgs/msg/CameraInfo']
        roi = self.types['sensor_msgs/msg/RegionOfInterest'](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
        P = np.hstack([K, np.zeros((3, 1))]).ravel()
        arrays = {'d': np.zeros(5), 'k': K.ravel(), 'r': np.eye(3).ravel(), 'p': P}
        if self.ros1:
            arrays = {name.upper(): value for name, value in arrays.items()}
        return cls(header=self.header(ns, frame_id), height=HEIGHT, width=WIDTH,
                   distortion_model='plumb_bob', binning_x=0, binning_y=0, roi=roi, **arrays)

    def tf(self, ns: int, edges: list[tuple[str, str, np.ndarray]],
           msgtype: str = 'tf2_msgs/msg/TFMessage') -> Any:
        transforms = []
        for parent, child, T in edges:
            x, y, z, w = Rotation.from_matrix(T[:3, :3]).as_quat()
            tx, ty, tz = (float(v) for v in T[:3, 3])
            transform = self.types['geometry_msgs/msg/Transform'](
                translation=self.types['geometry_msgs/msg/Vector3'](x=tx, y=ty, z=tz),
                rotation=self.types['geometry_msgs/msg/Quaternion'](x=x, y=y, z=z, w=w))
            transforms.append(self.types['geometry_msgs/msg/TransformStamped'](
                header=self.header(ns, parent), child_frame_id=child, transform=transform))
        return self.types[msgtype](transforms=transforms)

    def odometry(self, ns: int, T: np.ndarray) -> Any:
        x, y, z, w = Rotation.from_matrix(T[:3, :3]).as_quat()
        px, py, pz = (float(v) for v in T[:3, 3])
        pose = self.types['geometry_msgs/msg/Pose'](
            position=self.types['geometry_msgs/msg/Point'](x=px, y=py, z=pz),
            orientation=self.types['geometry_msgs/msg/Quaternion'](x=x, y=y, z=z, w=w))
        vec = self.types['geometry_msgs/msg/Vector3']
        return self.types['nav_msgs/msg/Odometry'](
            header=self.header(ns, 'odom'), child_frame_id='camera',
            pose=self.types['geometry_msgs/msg/PoseWithCovariance'](pose=pose,
                                                                    covariance=np.zeros(36)),
            twist=self.types['geometry_msgs/msg/TwistWithCovariance'](
                twist=self.types['geometry_msgs/msg/Twist'](linear=vec(x=0.0, y=0.0, z=0.0),
                                                            angular=vec(x=0.0, y=0.0, z=0.0)),
                covariance=np.zeros(36)))

    def moving_tf(self, parent: str, child: str, extra: tuple = (), shift_ns: int = 0,
                  msgtype: str = 'tf2_msgs/msg/TFMessage') -> None:
        """``parent -> child`` at 30 Hz from before the first image to after the last."""
        ns = START_NS - 2 * TF_PERIOD_NS + 7_000_000
        while ns < image_ns(FRAMES - 1) + 2 * TF_PERIOD_NS:
            T = T_world_body((ns - START_NS) / 1e9)
            self.write('/tf', self.tf(ns + shift_ns, [(parent, child, T), *extra], msgtype),
                       ns + shift_ns)
            ns += TF_PERIOD_NS


def _to_humble_layout(bag: Path) -> None:
    """Rewrite a rosbag2 folder as Humble's rosbag2 leaves it.

    Metadata version 5 (no type hashes, no ros_distro) and, for sqlite3, database schema 3
    without a ``message_definitions`` table: a reader must bring its own message types.
    """
    meta_path = bag / 'metadata.yaml'
    meta = yaml.safe_load(meta_path.read_text())
    info = meta['rosbag2_bagfile_information']
    info['version'] = 5
    for key in ('ros_distro', 'custom_data'):
        info.pop(key, None)
    for topic in info['topics_with_message_count']:
        topic['topic_metadata'].pop('type_description_hash', None)
    meta_path.write_text(yaml.safe_dump(meta, sort_keys=False))
    if info['storage_identifier'] == 'sqlite3':
        with sqlite3.connect(bag / info['relative_file_paths'][0]) as db:
            db.execute('DROP TABLE message_definitions')
            db.execute('ALTER TABLE topics DROP COLUMN type_description_hash')
            db.execute('UPDATE schema SET schema_version = 3')
        db.close()


@dataclass
class RealSense:
    """Options of :func:`realsense_bag`."""

    world: Optional[str] = 'map'
    camera_info: bool = True
    tf_shift_ns: int = 0
    depth_rect: bool = True


def realsense_bag(path: Path, storage: str, distro: str = 'jazzy',
                  opts: Optional[RealSense] = None) -> Path:
    """``ros2 bag record`` of realsense2_camera (ROS 2 names) with a SLAM node's TF.

    ``/tf_static`` holds the driver's ``camera_link -> camera_color_optical_frame`` (and the
    depth branch), ``/tf`` the moving ``<world> -> camera_link`` (none when ``world`` is None;
    ``tf_shift_ns`` moves its stamps); colour rgb8, aligned 16UC1 depth and, optionally, the
    unaligned depth stream at another resolution.
    """
    opts = opts or RealSense()
    rec = Recorder(path, storage, distro)
    T_link_depth = np.eye(4)
    rec.write('/tf_static', rec.tf(START_NS, [
        ('camera_link', 'camera_color_optical_frame', T_LINK_OPTICAL),
        ('camera_link', 'camera_depth_frame', T_link_depth),
        ('camera_depth_frame', 'camera_depth_optical_frame', T_LINK_OPTICAL)]), START_NS)
    if opts.world:
        rec.moving_tf(opts.world, 'camera_link', shift_ns=opts.tf_shift_ns)
    for i in range(FRAMES):
        ns = image_ns(i)
        rec.write(REALSENSE_COLOR, rec.image(ns, 'camera_color_optical_frame', rgb_of(i), 'rgb8'),
                  ns + 3_000_000)
        if opts.camera_info:
            rec.write(REALSENSE_INFO, rec.camera_info(ns, 'camera_color_optical_frame', K_TRUE),
                      ns + 3_000_000)
            rec.write('/camera/camera/aligned_depth_to_color/camera_info',
                      rec.camera_info(ns, 'camera_color_optical_frame', K_TRUE), ns + 4_000_000)
        rec.write(REALSENSE_DEPTH, rec.image(ns, 'camera_color_optical_frame', depth_mm_of(i),
                                             '16UC1'), ns + 5_000_000)
        if opts.depth_rect:
            rec.write('/camera/camera/depth/image_rect_raw',
                      rec.image(ns, 'camera_depth_optical_frame', depth_mm_of(i)[::2, ::2],
                                '16UC1'), ns + 2_000_000)
    return rec.close()


def phone_bag(path: Path, storage: str, fmt: str = 'jpeg', odometry: bool = False) -> Path:
    """A phone app's bag: JPEG CompressedImages only (optionally its VIO odometry)."""
    rec = Recorder(path, storage, 'humble')
    for i in range(FRAMES):
        ns = image_ns(i)
        rec.write(PHONE_IMAGE, rec.compressed(ns, 'phone_camera', jpeg_of(i), fmt), ns + 1000)
        if odometry:
            rec.write('/odom', rec.odometry(ns, T_world_camera(i)), ns + 2000)
    return rec.close()


def foxglove_mcap(folder: Path, parts: int = 1) -> list[Path]:
    """``.mcap`` files written by a non-ROS recorder: no ``metadata.yaml`` beside them.

    The recording is split into ``parts`` consecutive files ``<folder>/rec_<k>.mcap``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    per_part = -(-FRAMES // parts)
    for part in range(parts):
        work = folder / f'.work{part}'
        rec = Recorder(work, 'mcap', 'jazzy')
        first, last = part * per_part, min(FRAMES, (part + 1) * per_part)
        rec.write('/tf_static', rec.tf(image_ns(first), [('base_link', 'camera',
                                                           T_LINK_OPTICAL)]), image_ns(first))
        for i in range(first, last):
            ns = image_ns(i)
            for k in range(3):
                tf_ns = ns - PERIOD_NS // 2 + k * TF_PERIOD_NS + 5_000_000
                T = T_world_body((tf_ns - START_NS) / 1e9)
                rec.write('/tf', rec.tf(tf_ns, [('odom', 'base_link', T)]), tf_ns)
            rec.write(FOX_IMAGE, rec.image(ns, 'camera', rgb_of(i), 'rgb8'), ns + 10)
            rec.write('/camera/calibration', rec.camera_info(ns, 'camera', K_TRUE), ns + 20)
        tail = image_ns(last - 1) + PERIOD_NS // 2 + 5_000_000
        rec.write('/tf', rec.tf(tail, [('odom', 'base_link',
                                        T_world_body((tail - START_NS) / 1e9))]), tail)
        rec.close()
        target = folder / f'rec_{part}.mcap'
        (work / f'{work.name}.mcap').rename(target)
        shutil.rmtree(work)
        files.append(target)
    return files


def ros1_bag(path: Path) -> Path:
    """``rosbag record`` of an OpenNI camera with motion capture: bgr8 + 16UC1, no camera_info.

    Frame ids carry ROS 1's leading slash; TF is the old ``tf/tfMessage`` and the fixed
    mounting is broadcast with every motion-capture sample, as before ``/tf_static``.
    """
    rec = Recorder(path, 'ros1')
    rec.moving_tf('/world', '/kinect', extra=(('/kinect', '/openni_rgb_optical_frame',
                                               T_LINK_OPTICAL),), msgtype='tf/msg/tfMessage')
    for i in range(FRAMES):
        ns = image_ns(i)
        rec.write(ROS1_COLOR, rec.image(ns, '/openni_rgb_optical_frame', rgb_of(i)[..., ::-1],
                                        'bgr8'), ns + 1_000_000)
        rec.write(ROS1_DEPTH, rec.image(ns, '/openni_rgb_optical_frame', depth_mm_of(i),
                                        '16UC1'), ns + 2_000_000)
    return rec.close()


def odd_encoding_bag(path: Path, storage: str) -> Path:
    """Images nobody decodes: 12-bit packed Bayer frames in a sensor's own encoding."""
    rec = Recorder(path, storage)
    for i in range(FRAMES):
        ns = image_ns(i)
        rec.write('/sensor/image', rec.image(ns, 'sensor', rgb_of(i)[..., 0], 'bayer_rggb12p'),
                  ns)
    return rec.close()


def imageless_bag(path: Path, storage: str) -> Path:
    """A bag of TF only."""
    rec = Recorder(path, storage)
    rec.moving_tf('map', 'base_link')
    return rec.close()


def _flow(values: np.ndarray, cols: int) -> str:
    rows = [', '.join(f'{v:10.5f}' for v in row) for row in np.reshape(values, (-1, cols))]
    return '[' + ',\n          '.join(rows) + ']'


def calibration_yaml(path: Path, K: np.ndarray = K_TRUE, width: int = WIDTH,
                     height: int = HEIGHT) -> Path:
    """The ``ost.yaml`` that ``camera_calibration`` writes (camera_info_manager's format)."""
    P = np.hstack([K, np.zeros((3, 1))])
    path.write_text(
        f'image_width: {width}\nimage_height: {height}\ncamera_name: phone_camera\n'
        f'camera_matrix:\n  rows: 3\n  cols: 3\n  data: {_flow(K, 3)}\n'
        'distortion_model: plumb_bob\n'
        'distortion_coefficients:\n  rows: 1\n  cols: 5\n  data: [0.1, -0.05, 0, 0, 0]\n'
        f'rectification_matrix:\n  rows: 3\n  cols: 3\n  data: {_flow(np.eye(3), 3)}\n'
        f'projection_matrix:\n  rows: 3\n  cols: 4\n  data: {_flow(P, 4)}\n')
    return path
