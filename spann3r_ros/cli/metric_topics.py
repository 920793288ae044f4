"""The bag topics a metric run reads, chosen and checked before the model loads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from spann3r_ros.bags.reader import pose_candidates, select_topics, TF_TYPES
from spann3r_ros.pipeline.config import NodeConfig

#: Message types of the node's odometry sources (ROS 2 and ROS 1 names alike).
ODOMETRY_TYPES = {'odometry_topic': ('nav_msgs/msg/Odometry',),
                  'pose_topic': ('geometry_msgs/msg/PoseStamped',)}
POSE_STAMPED = 'geometry_msgs/msg/PoseStamped'
#: The TF topics the node subscribes to, and whether each is static.
NODE_TF = {'/tf': False, '/tf_static': True}


@dataclass(frozen=True)
class MetricTopics:
    """The topics of one metric run.

    :param image: the colour topic.
    :param camera_info: its camera_info.
    :param depth: the aligned depth topic (ground truth; scale of ``depth`` / ``both``).
    :param depth_info: the camera_info beside it, when the bag has one.
    :param gt_pose: the ground-truth PoseStamped topic (None: the truth is a TF chain).
    :param odometry: the odometry or pose topic (odometry sources other than TF).
    :param tf: ``{topic: is_static}`` of the TF topics the odometry reads (odometry through TF).
    :param truth_tf: ``{topic: is_static}`` of the TF topics the ground truth reads.
    :param gt_tf: ``(world, camera)`` of the ground truth's TF chain, or None.
    """

    image: str
    camera_info: str
    depth: str
    depth_info: Optional[str]
    gt_pose: Optional[str]
    odometry: Optional[str] = None
    tf: tuple[tuple[str, bool], ...] = ()
    truth_tf: tuple[tuple[str, bool], ...] = ()
    gt_tf: Optional[tuple[str, str]] = None

    def all(self) -> list[str]:
        """Every topic read."""
        names = [self.image, self.camera_info, self.depth, self.depth_info, self.gt_pose,
                 self.odometry, *dict(self.tf), *dict(self.truth_tf)]
        return list(dict.fromkeys(n for n in names if n is not None))


def camera_info_beside(topic: str) -> str:
    """Return the camera_info topic next to an image topic (as the node pairs them)."""
    return topic.rstrip('/').rsplit('/', 1)[0] + '/camera_info'


def metric_topics(topics: dict[str, str], cfg: NodeConfig, image: Optional[str],
                  depth: Optional[str], gt_pose: str,
                  gt_tf: Optional[tuple[str, str]] = None) -> MetricTopics:
    """Choose and check the topics of a metric run.

    :param topics: ``{topic: msgtype}`` of the bag.
    :param cfg: the node configuration (its odometry settings).
    :param image: ``--image-topic``, or None to choose the only colour topic.
    :param depth: ``--depth-topic``, or None to choose the registered depth topic.
    :param gt_pose: the ground-truth pose topic.
    :param gt_tf: ``(world, camera)``: the ground truth is this TF chain instead of a topic.
    :raises ValueError: naming what is missing: a topic, or the TF the odometry needs.
    """
    chosen = select_topics(topics, image, depth, need_depth=True)
    if chosen.depth is None:
        raise ValueError('no depth topic in the bag: the ground-truth points need one (and '
                         f'--metric depth / both its scale); topics: {sorted(topics)}')
    if chosen.camera_info is None:
        raise ValueError('no camera_info topic in the bag: the ground truth needs the colour '
                         "camera's intrinsics")
    bag_tf = tuple((t, s) for t, s in NODE_TF.items() if topics.get(t) in TF_TYPES)
    if gt_tf is not None:
        if not bag_tf:
            raise ValueError(f'no ground truth: --gt-pose-tf {gt_tf[0]}:{gt_tf[1]} needs TF, and '
                             'the bag has no /tf or /tf_static topic')
        gt_pose = None
    elif gt_pose not in topics:
        raise ValueError(f'no ground truth: the bag has no topic {gt_pose} (--gt-pose-topic); '
                         f'its pose topics: {pose_candidates(topics) or "none"}; for a TF '
                         'chain use --gt-pose-tf WORLD:CAMERA_FRAME')
    elif topics[gt_pose] != POSE_STAMPED:
        raise ValueError(f'ground-truth topic {gt_pose} has type {topics[gt_pose]}, expected '
                         f'{POSE_STAMPED}')
    info = camera_info_beside(chosen.depth)
    found = MetricTopics(image=chosen.image, camera_info=chosen.camera_info, depth=chosen.depth,
                         depth_info=info if info in topics else None, gt_pose=gt_pose,
                         truth_tf=bag_tf if gt_tf is not None else (), gt_tf=gt_tf)
    if not cfg.metric_settings().uses_odometry:
        return found
    if cfg.odometry_source == 'tf':
        tf = bag_tf
        if not any(not s for _, s in tf):
            raise ValueError(f'no odometry: the bag has no /tf topic, so there is no TF chain '
                             f'{cfg.odom_frame} -> <image frame_id>; for an odometry topic use '
                             '--odometry-source odometry_topic --odometry-topic NAME')
        return MetricTopics(**{**found.__dict__, 'tf': tf})
    name, allowed = cfg.odometry_topic, ODOMETRY_TYPES[cfg.odometry_source]
    if name not in topics:
        raise ValueError(f'no odometry: the bag has no topic {name} (--odometry-topic); its '
                         f'pose topics: {pose_candidates(topics) or "none"}')
    if topics[name] not in allowed:
        raise ValueError(f'odometry topic {name} has type {topics[name]}; '
                         f'--odometry-source {cfg.odometry_source} reads {allowed[0]}')
    return MetricTopics(**{**found.__dict__, 'odometry': name})
