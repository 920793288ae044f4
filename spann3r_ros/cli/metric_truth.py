"""The ground truth of a metric run, gathered while its bag streams past.

Each colour frame is paired with the depth image of its stamp and the ground-truth pose at
that stamp, and becomes the :class:`~spann3r_model.evaluation.gt_views.GroundTruthView` the
existing evaluation builds from an exported scene: the official crop at model resolution
(:func:`~spann3r_model.data.crop.crop_rgbd`, centred on the image as the model input is), the
depth back-projected with the pose (:func:`~spann3r_model.geometry.camera.backproject`). Only
the crops are kept (a few hundred KB a frame), not the full-resolution images.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Optional

import numpy as np

from spann3r_model.data.crop import crop_rgbd, CroppedRGBD
from spann3r_model.evaluation.gt_views import GroundTruthView
from spann3r_model.geometry.camera import backproject
from spann3r_ros.bags.tf_buffer import TfBuffer, TfLookupError
from spann3r_ros.formats.message_fields import matrix_from
from spann3r_ros.pipeline.metric_inputs import stamp_seconds
from spann3r_ros.pipeline.pose_buffer import PoseBuffer

#: Colour or depth images waiting for their partner.
PENDING = 16
#: Ground-truth poses kept (all of a long bag; a pose is 128 bytes).
MAX_POSES = 10_000_000


class TruthCollector:
    """Ground-truth views of the colour frames of a bag.

    :param size: the model resolution (side of the crop).
    :param max_dt: the largest stamp difference between a colour and its depth image, seconds.
    :param timeout: ground-truth poses further apart than this are not interpolated, seconds.
    :param tolerance: a frame may lie this far beyond the first or last pose, seconds.
    :param tf_chain: ``(world, camera optical frame)`` to take the poses from the bag's TF
        (:meth:`add_tf`) instead of a pose topic (:meth:`add_pose`).
    """

    def __init__(self, size: int, max_dt: float, timeout: float = 0.5,
                 tolerance: float = 0.05, tf_chain: Optional[tuple[str, str]] = None) -> None:
        self.size = size
        self.max_dt = max_dt
        self.poses = PoseBuffer(timeout, tolerance, MAX_POSES)
        self.tf_chain = tf_chain
        self.tf = TfBuffer(tolerance) if tf_chain is not None else None
        #: The ground-truth world's frame name (the pose topic's frame_id, or the TF parent).
        self.world_frame: Optional[str] = None if tf_chain is None else tf_chain[0].lstrip('/')
        self._colour: OrderedDict[float, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._depth: OrderedDict[float, np.ndarray] = OrderedDict()
        self._crops: dict[float, CroppedRGBD] = {}
        #: Colour frames without intrinsics (no camera_info yet, or for another size).
        self.without_intrinsics = 0

    def add_colour(self, stamp: float, rgb: np.ndarray, K: Optional[np.ndarray]) -> None:
        """Add a colour frame given to the node, with its camera_info intrinsics."""
        if K is None:
            self.without_intrinsics += 1
            return
        found = _take_near(self._depth, stamp, self.max_dt)
        if found is None:
            _keep(self._colour, stamp, (rgb, K))
        else:
            self._crop(stamp, rgb, K, found[1])

    def add_depth(self, stamp: float, depth: np.ndarray) -> None:
        """Add a decoded depth image (``[h, w]`` float32 metres, 0 invalid)."""
        found = _take_near(self._colour, stamp, self.max_dt)
        if found is None:
            _keep(self._depth, stamp, depth)
        else:
            colour_stamp, (rgb, K) = found
            self._crop(colour_stamp, rgb, K, depth)

    def _crop(self, stamp: float, rgb: np.ndarray, K: np.ndarray, depth: np.ndarray) -> None:
        if rgb.shape[1] * depth.shape[0] != rgb.shape[0] * depth.shape[1]:
            return  # not registered to the colour image: no ground truth for this frame
        scale = depth.shape[1] / rgb.shape[1]
        K_depth = np.asarray(K, np.float64).copy()
        K_depth[:2] *= scale
        self._crops[stamp] = crop_rgbd(rgb, depth, K_depth, self.size, 'image')

    def add_pose(self, stamp: float, T_world_cam: np.ndarray,
                 frame_id: Optional[str] = None) -> None:
        """Add a ground-truth pose of the camera optical frame (in world ``frame_id``)."""
        self.poses.add(stamp, T_world_cam)
        if frame_id and self.world_frame is None:
            self.world_frame = frame_id.lstrip('/')

    def add_tf(self, msg: Any, static: bool) -> None:
        """Add the transforms of a ``tf2_msgs/TFMessage`` (the ground truth's TF chain)."""
        for t in msg.transforms:
            try:
                T = matrix_from(t.transform.translation, t.transform.rotation)
            except ValueError:
                continue  # the node drops and counts it; the truth is read from the rest
            self.tf.add(t.header.frame_id, t.child_frame_id, stamp_seconds(t.header), T, static)

    def check_tf(self) -> None:
        """Refuse a TF chain that never connects.

        :raises ValueError: naming the chain and the frames the bag's TF has.
        """
        if self.tf is None:
            return
        world, camera = self.tf_chain
        try:
            self.tf.check_chain(world, camera)
        except TfLookupError as exc:
            raise ValueError(f'no ground truth: --gt-pose-tf {world}:{camera}: {exc}') from None

    def pose(self, stamp: float) -> Optional[np.ndarray]:
        """Return the ground-truth pose at ``stamp`` (interpolated), or None."""
        if self.tf is not None:
            try:
                return self.tf.lookup(*self.tf_chain, stamp)
            except TfLookupError:
                return None
        found = self.poses.lookup(stamp)
        return found.T if found.state == 'ok' else None

    def view(self, stamp: float) -> Optional[GroundTruthView]:
        """Return the ground-truth view of the colour frame at ``stamp``, or None."""
        cropped = self._crops.get(stamp)
        T = self.pose(stamp)
        if cropped is None or T is None:
            return None
        T = T.astype(np.float32)
        pts, valid = backproject(cropped.depth, cropped.K, T)
        return GroundTruthView(cropped.depth, cropped.K, cropped.rgb, pts, valid, T)


def _keep(items: OrderedDict, stamp: float, value: Any) -> None:
    items[stamp] = value
    while len(items) > PENDING:
        items.popitem(last=False)


def _take_near(items: OrderedDict, stamp: float, max_dt: float) -> Optional[tuple[float, Any]]:
    """Remove and return ``(its stamp, value)`` of the item nearest ``stamp`` within ``max_dt``."""
    best = min(items, key=lambda s: abs(s - stamp), default=None)
    if best is None or abs(best - stamp) > max_dt:
        return None
    return best, items.pop(best)
