"""Write rosbag2 (sqlite3, mcap) and ROS 1 bags with ``rosbags``, and synthetic RGB-D bags.

The synthetic bag carries what a real RGB-D driver publishes (RealSense-style names):

=========================================== ====================================================
``/camera/color/image_raw``                 Image rgb8 (unless ``raw_color=False``)
``/camera/color/image_raw/compressed``      CompressedImage jpeg or png (when requested)
``/camera/color/camera_info``               CameraInfo
``/camera/aligned_depth_to_color/image_raw`` Image 16UC1 millimetres or 32FC1 metres, optionally
                                            noisy and with invalid (0) pixels
``/tf``                                     ``map -> camera_link`` (moving, the ground truth);
                                            with ``odometry``: ``odom -> base_link`` instead
``/tf_static``                              ``camera_link -> camera_color_optical_frame``; with
                                            ``odometry`` also ``base_link -> camera_link``
``/odom``                                   with ``odometry`` only: nav_msgs/Odometry
                                            ``odom -> base_link``, the poses and stamps of the
                                            TF, a pose covariance from the noise and drift
``/ground_truth/pose``                      PoseStamped of the optical frame in ``map``
=========================================== ====================================================

With ``odometry`` the TF tree is ``odom -> base_link -> camera_link -> *_optical_frame``, the
odometry as :mod:`spann3r_ros.synthetic.odometry` models it (``odom`` coincides with ``map`` at
the first sample); ``/ground_truth/pose`` keeps the truth.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
import shutil
from typing import Any, Optional

import numpy as np
from rosbags.rosbag1 import Writer as Writer1
from rosbags.rosbag2 import StoragePlugin
from rosbags.rosbag2 import Writer as Writer2
from rosbags.typesys import get_types_from_msg, get_typestore, Stores

from spann3r_model.data.scannet import depth_to_millimetres
from spann3r_model.geometry.frames import R_BODY_OPTICAL
from spann3r_ros.bags import messages as bm
from spann3r_ros.synthetic import odometry as od
from spann3r_ros.synthetic.scene import SyntheticScene
from spann3r_ros.synthetic.sensor_noise import check_depth_degradation, degrade_depth

STORAGES = ('sqlite3', 'mcap', 'ros1')

#: ROS 1 Noetic's store lacks tf2_msgs; its definition is one line.
_TF_MESSAGE_DEF = 'geometry_msgs/TransformStamped[] transforms'

TOPIC_COLOR = '/camera/color/image_raw'
TOPIC_COMPRESSED = '/camera/color/image_raw/compressed'
TOPIC_INFO = '/camera/color/camera_info'
TOPIC_DEPTH = '/camera/aligned_depth_to_color/image_raw'
TOPIC_DEPTH_COMPRESSED = '/camera/aligned_depth_to_color/image_raw/compressedDepth'
TOPIC_GT_POSE = '/ground_truth/pose'
TOPIC_ODOM = '/odom'
MAP_FRAME, LINK_FRAME, OPTICAL_FRAME = 'map', 'camera_link', 'camera_color_optical_frame'
ODOM_FRAME, BASE_FRAME = 'odom', 'base_link'


def typestore_for(storage: str) -> Any:
    """Return the typestore that writes ``storage`` bags."""
    if storage == 'ros1':
        ts = get_typestore(Stores.ROS1_NOETIC)
        ts.register(get_types_from_msg(_TF_MESSAGE_DEF, 'tf2_msgs/msg/TFMessage'))
        return ts
    return get_typestore(Stores.ROS2_HUMBLE)


class BagWriter:
    """Append messages to a new bag; topics are registered on first use.

    :param path: output (a directory for rosbag2, a ``.bag`` file for ROS 1).
    :param storage: ``sqlite3``, ``mcap`` or ``ros1``.
    :raises ValueError: for an unknown storage or an existing output path.
    """

    def __init__(self, path: Path, storage: str = 'sqlite3') -> None:
        if storage not in STORAGES:
            raise ValueError(f'storage must be one of {STORAGES}, got {storage!r}')
        self.path = Path(path)
        if self.path.exists():
            raise ValueError(f'{self.path} exists already; bags are never overwritten')
        self.storage = storage
        self.typestore = typestore_for(storage)
        self.ros1 = storage == 'ros1'
        if self.ros1:
            self._writer: Any = Writer1(self.path)
        else:
            plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
            self._writer = Writer2(self.path, version=9, storage_plugin=plugin)
        self._connections: dict[str, Any] = {}

    def __enter__(self) -> 'BagWriter':
        self._writer.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self._writer.close()

    def write(self, topic: str, msg: Any, ns: int) -> None:
        """Serialise ``msg`` and append it on ``topic`` at receive time ``ns``."""
        msgtype = msg.__msgtype__
        conn = self._connections.get(topic)
        if conn is None:
            kwargs = {'latching': 1} if self.ros1 and topic == '/tf_static' else {}
            conn = self._writer.add_connection(topic, msgtype, typestore=self.typestore,
                                               **kwargs)
            self._connections[topic] = conn
        if self.ros1:
            data = self.typestore.serialize_ros1(msg, msgtype)
        else:
            data = self.typestore.serialize_cdr(msg, msgtype)
        self._writer.write(conn, ns, data)


@dataclass(frozen=True)
class BagOptions:
    """Which topics and encodings a synthetic bag gets.

    :param raw_color: publish the rgb8 Image topic.
    :param compressed: ``none``, ``jpeg`` or ``png`` for the CompressedImage topic.
    :param jpeg_quality: JPEG quality.
    :param depth: ``16UC1`` (millimetres), ``32FC1`` (metres), ``compressedDepth`` or ``none``.
    :param tf_rate: TF messages per image (1 = at the image stamps; more are spread between).
    :param tf_offset: TF stamps are shifted by this fraction of the TF period (0 = aligned).
    :param gt_pose: publish the PoseStamped ground truth.
    :param odometry: publish the odometry of a robot carrying the camera (``odom -> base_link``
        on ``/tf`` and ``/odom``, the mount on ``/tf_static``) instead of the ground-truth TF.
    :param odometry_noise: its noise and drift (only with ``odometry``).
    :param depth_noise: relative Gaussian noise of the depth topic (0.02 = 2 %).
    :param depth_invalid: fraction of depth pixels set to 0 (invalid), drawn anew per frame.
        Depth degradation is drawn from the scene's seed and the frame index.
    """

    raw_color: bool = True
    compressed: str = 'none'
    jpeg_quality: int = 90
    depth: str = '16UC1'
    tf_rate: int = 1
    tf_offset: float = 0.0
    gt_pose: bool = True
    odometry: bool = False
    odometry_noise: od.OdometryNoise = od.OdometryNoise()
    depth_noise: float = 0.0
    depth_invalid: float = 0.0

    def __post_init__(self) -> None:
        """Reject combinations that produce no usable colour or an unknown encoding."""
        if self.compressed not in ('none', 'jpeg', 'png'):
            raise ValueError(f'compressed must be none, jpeg or png, got {self.compressed!r}')
        if self.depth not in ('16UC1', '32FC1', 'compressedDepth', 'none'):
            raise ValueError(f'unknown depth encoding {self.depth!r}')
        if not self.raw_color and self.compressed == 'none':
            raise ValueError('a bag needs a colour topic: raw_color or compressed')
        if self.tf_rate < 1 or not 0.0 <= self.tf_offset < 1.0:
            raise ValueError('tf_rate must be >= 1 and tf_offset in [0, 1)')
        if not isinstance(self.odometry_noise, od.OdometryNoise):
            raise ValueError('odometry_noise must be an OdometryNoise')
        if not self.odometry and self.odometry_noise != od.OdometryNoise():
            raise ValueError('odometry_noise needs odometry=True')
        check_depth_degradation(self.depth_noise, self.depth_invalid)
        if self.depth == 'none' and (self.depth_noise or self.depth_invalid):
            raise ValueError('depth_noise and depth_invalid need a depth topic')


def link_pose(T_world_optical: np.ndarray) -> np.ndarray:
    """``map -> camera_link`` for an optical-frame pose (inverse of the static transform)."""
    T_link_optical = np.eye(4)
    T_link_optical[:3, :3] = R_BODY_OPTICAL
    return T_world_optical @ np.linalg.inv(T_link_optical)


def write_synthetic_bag(scene: SyntheticScene, path: Path, storage: str = 'sqlite3',
                        options: Optional[BagOptions] = None) -> Path:
    """Render ``scene`` into a bag; the bag appears under ``path`` only when complete.

    :return: the bag path.
    """
    options = options or BagOptions()
    path = Path(path)
    if path.exists():
        raise ValueError(f'{path} exists already; bags are never overwritten')
    # Written under its final name inside a hidden staging folder (rosbag2 names its storage
    # file after the bag folder), then moved into place.
    staging = path.with_name(f'.{path.name}.partial')
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        with BagWriter(staging / path.name, storage) as bag:
            _write_scene(bag, scene, options)
        (staging / path.name).rename(path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def _tf_stamps(opts: BagOptions, ns: int, period_ns: int) -> list[int]:
    """Stamps of the TF samples that belong to the image at ``ns``."""
    return [ns + int(round((j + opts.tf_offset) * period_ns / opts.tf_rate))
            for j in range(opts.tf_rate)]


def _odometry_track(scene: SyntheticScene, opts: BagOptions, start_ns: int,
                    period_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """``T_odom_base [N, 4, 4]`` and pose variances ``[N, 6]`` at every TF stamp, in order."""
    rel = [(tf_ns - start_ns) / 1e9 for i in range(scene.config.num_frames)
           for tf_ns in _tf_stamps(opts, start_ns + i * period_ns, period_ns)]
    T_world_base = od.base_poses(np.stack([scene.pose_at(t) for t in rel]))
    return (od.odometry_poses(T_world_base, opts.odometry_noise),
            od.pose_variances(T_world_base, opts.odometry_noise))


def _write_odometry(bag: BagWriter, ns: int, T_odom_base: np.ndarray,
                    variances: np.ndarray) -> None:
    ts = bag.typestore
    msg = ts.types['tf2_msgs/msg/TFMessage'](transforms=[bm.transform_stamped(
        ts, bm.header(ts, ns, ODOM_FRAME), BASE_FRAME, T_odom_base)])
    bag.write('/tf', msg, ns)
    odom = bm.odometry_msg(ts, bm.header(ts, ns, ODOM_FRAME), BASE_FRAME, T_odom_base,
                           variances)
    bag.write(TOPIC_ODOM, odom, ns)


def _write_scene(bag: BagWriter, scene: SyntheticScene, opts: BagOptions) -> None:
    ts = bag.typestore
    c = scene.config
    start_ns = int(round(c.start_time * 1e9))
    T_link_optical = np.eye(4)
    T_link_optical[:3, :3] = R_BODY_OPTICAL
    mounts = [bm.transform_stamped(ts, bm.header(ts, start_ns, LINK_FRAME), OPTICAL_FRAME,
                                   T_link_optical)]
    if opts.odometry:
        mounts.insert(0, bm.transform_stamped(ts, bm.header(ts, start_ns, BASE_FRAME),
                                              LINK_FRAME, od.T_BASE_CAMERA_LINK))
    bag.write('/tf_static', ts.types['tf2_msgs/msg/TFMessage'](transforms=mounts), start_ns)
    period_ns = int(round(1e9 / c.fps))
    track = _odometry_track(scene, opts, start_ns, period_ns) if opts.odometry else None
    for frame in scene.frames():
        ns = start_ns + frame.index * period_ns
        for j, tf_ns in enumerate(_tf_stamps(opts, ns, period_ns)):
            if track is not None:
                k = frame.index * opts.tf_rate + j
                _write_odometry(bag, tf_ns, track[0][k], track[1][k])
                continue
            T = link_pose(scene.pose_at((tf_ns - start_ns) / 1e9))
            msg = ts.types['tf2_msgs/msg/TFMessage'](transforms=[bm.transform_stamped(
                ts, bm.header(ts, tf_ns, MAP_FRAME), LINK_FRAME, T)])
            bag.write('/tf', msg, tf_ns)
        depth = frame.depth
        if opts.depth_noise or opts.depth_invalid:
            depth = degrade_depth(depth, opts.depth_noise, opts.depth_invalid, c.seed,
                                  frame.index)
        hdr = bm.header(ts, ns, OPTICAL_FRAME, seq=frame.index)
        bag.write(TOPIC_INFO, bm.camera_info_msg(ts, hdr, frame.K, c.width, c.height), ns)
        if opts.raw_color:
            bag.write(TOPIC_COLOR, bm.image_msg(ts, hdr, frame.rgb, 'rgb8'), ns)
        if opts.compressed != 'none':
            msg = bm.compressed_msg(ts, hdr, frame.rgb, opts.compressed, opts.jpeg_quality)
            bag.write(TOPIC_COMPRESSED, msg, ns)
        if opts.depth == '16UC1':
            msg = bm.image_msg(ts, hdr, depth_to_millimetres(depth), '16UC1')
            bag.write(TOPIC_DEPTH, msg, ns)
        elif opts.depth == '32FC1':
            bag.write(TOPIC_DEPTH, bm.image_msg(ts, hdr, depth, '32FC1'), ns)
        elif opts.depth == 'compressedDepth':
            msg = bm.compressed_depth_msg(ts, hdr, depth_to_millimetres(depth))
            bag.write(TOPIC_DEPTH_COMPRESSED, msg, ns)
        if opts.gt_pose:
            pose = bm.pose_stamped(ts, bm.header(ts, ns, MAP_FRAME), frame.T_world_cam)
            bag.write(TOPIC_GT_POSE, pose, ns)

