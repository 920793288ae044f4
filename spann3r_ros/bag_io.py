"""Open ROS 1 / rosbag2 (sqlite3, mcap) bags with ``rosbags`` and pick their camera topics.

Everything here raises ``ValueError`` with a message a user can act on: a missing or truncated
bag, a topic that does not exist, or several candidate topics when the choice is ambiguous.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

from rosbags.highlevel import AnyReader
from rosbags.typesys import get_types_from_msg, get_typestore, Stores

IMAGE = 'sensor_msgs/msg/Image'
COMPRESSED = 'sensor_msgs/msg/CompressedImage'
CAMERA_INFO = 'sensor_msgs/msg/CameraInfo'
TF = 'tf2_msgs/msg/TFMessage'
POSE_TYPES = ('geometry_msgs/msg/PoseStamped', 'nav_msgs/msg/Odometry',
              'geometry_msgs/msg/PoseWithCovarianceStamped')


class BagReader:
    """A bag opened for reading; use as a context manager.

    :param path: a rosbag2 directory (or its ``.db3`` / ``.mcap`` file) or a ROS 1 ``.bag``.
    :raises ValueError: when the bag does not exist or cannot be opened.
    """

    def __init__(self, path: Path) -> None:
        path = Path(path)
        if not path.exists():
            raise ValueError(f'bag {path} does not exist')
        if path.is_file() and path.suffix in ('.db3', '.mcap'):
            path = path.parent
        if path.is_dir() and not (path / 'metadata.yaml').exists():
            raise ValueError(f'{path} is not a rosbag2 directory (no metadata.yaml)')
        self.path = path
        typestore = get_typestore(Stores.ROS2_HUMBLE)
        self._reader = AnyReader([path], default_typestore=typestore)

    def __enter__(self) -> 'BagReader':
        try:
            self._reader.open()
        except Exception as exc:  # rosbags raises several unrelated types for bad files
            raise ValueError(f'cannot open bag {self.path}: {exc}') from exc
        if not self._reader.is2 and TF not in self._reader.typestore.types:
            self._reader.typestore.register(get_types_from_msg(
                'geometry_msgs/TransformStamped[] transforms', TF))
        return self

    def __exit__(self, *exc: object) -> None:
        self._reader.close()

    @property
    def topics(self) -> dict[str, str]:
        """``{topic: msgtype}`` of every connection."""
        return {c.topic: c.msgtype for c in self._reader.connections}

    def message_count(self, topics: list[str]) -> int:
        """Count the messages on ``topics``."""
        return sum(c.msgcount for c in self._reader.connections if c.topic in topics)

    def messages(self, topics: list[str]) -> Iterator[tuple[str, int, Any]]:
        """Yield ``(topic, receive_ns, message)`` in bag order for ``topics``.

        :raises ValueError: when the bag is truncated or a message cannot be decoded.
        """
        conns = [c for c in self._reader.connections if c.topic in topics]
        try:
            for conn, ns, raw in self._reader.messages(connections=conns):
                yield conn.topic, ns, self._reader.deserialize(raw, conn.msgtype)
        except ValueError:
            raise
        except Exception as exc:
            raise ValueError(f'cannot read bag {self.path} (truncated or corrupt?): '
                             f'{type(exc).__name__}: {exc}') from exc


@dataclass
class CameraTopics:
    """The topics an export reads."""

    image: str
    depth: Optional[str]
    camera_info: Optional[str]
    pose_topic: Optional[str]


def _looks_like_depth(topic: str) -> bool:
    return 'depth' in topic.lower()


def _choose(kind: str, candidates: list[str], hint: str) -> Optional[str]:
    if len(candidates) > 1:
        raise ValueError(f'several {kind} topics: {candidates}; choose one with {hint}')
    return candidates[0] if candidates else None


def _check(topics: dict[str, str], name: str, allowed: tuple[str, ...], flag: str) -> str:
    if name not in topics:
        raise ValueError(f'topic {name!r} ({flag}) is not in the bag; topics: {sorted(topics)}')
    if topics[name] not in allowed:
        raise ValueError(f'topic {name!r} has type {topics[name]}, expected one of {allowed}')
    return name


def select_topics(topics: dict[str, str], image: Optional[str] = None,
                  depth: Optional[str] = None, camera_info: Optional[str] = None,
                  pose_topic: Optional[str] = None, need_depth: bool = True) -> CameraTopics:
    """Resolve the camera topics, explicit names first, otherwise the unambiguous candidate.

    Colour candidates are Image topics without ``depth`` in their name (CompressedImage topics
    only when there is no raw one); depth candidates are Image / compressedDepth topics with
    ``depth`` in their name.

    :raises ValueError: for a missing topic, a wrong type, or an ambiguous choice.
    """
    images = (IMAGE, COMPRESSED)
    if image is not None:
        image = _check(topics, image, images, '--image-topic')
    else:
        raw = [t for t, m in topics.items() if m == IMAGE and not _looks_like_depth(t)]
        comp = [t for t, m in topics.items() if m == COMPRESSED and not _looks_like_depth(t)]
        image = _choose('colour image', raw or comp, '--image-topic')
        if image is None:
            raise ValueError(f'no colour image topic in the bag; topics: {sorted(topics)}')
    if depth is not None:
        depth = _check(topics, depth, images, '--depth-topic')
    elif need_depth:
        cands = [t for t, m in topics.items() if m in images and _looks_like_depth(t)]
        raw_depth = [t for t in cands if topics[t] == IMAGE]
        depth = _choose('depth image', raw_depth or cands, '--depth-topic')
    if camera_info is not None:
        camera_info = _check(topics, camera_info, (CAMERA_INFO,), '--camera-info-topic')
    else:
        infos = [t for t, m in topics.items() if m == CAMERA_INFO]
        # Prefer the info published next to the colour image (same namespace).
        prefix = image.rsplit('/', 2)[0] if image.count('/') >= 2 else image.rsplit('/', 1)[0]
        near = [t for t in infos if t.startswith(prefix + '/') and not _looks_like_depth(t)]
        camera_info = _choose('camera_info', near or infos, '--camera-info-topic')
    if pose_topic is not None:
        pose_topic = _check(topics, pose_topic, POSE_TYPES, '--pose topic:NAME')
    return CameraTopics(image, depth, camera_info, pose_topic)


def pose_candidates(topics: dict[str, str]) -> list[str]:
    """Topics carrying poses (PoseStamped, Odometry, PoseWithCovarianceStamped)."""
    return sorted(t for t, m in topics.items() if m in POSE_TYPES)
