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
#: TF message types: tf2's, and ROS 1's older ``tf/tfMessage`` (same fields).
TF_TYPES = (TF, 'tf/msg/tfMessage')
POSE_TYPES = ('geometry_msgs/msg/PoseStamped', 'nav_msgs/msg/Odometry',
              'geometry_msgs/msg/PoseWithCovarianceStamped')


#: Leading bytes of the storage files ``rosbags`` reads, and the suffix it needs on each.
_MAGIC = ((b'\x89MCAP', '.mcap'), (b'SQLite format 3\x00', '.db3'), (b'#ROSBAG V2.0', '.bag'))
_STORAGE_SUFFIXES = ('.mcap', '.db3', '.bag')


def bag_files(path: Path) -> list[Path]:
    """Return the paths ``rosbags`` opens for ``path``.

    A rosbag2 directory (with ``metadata.yaml``) or a ROS 1 ``.bag`` stands for itself; a
    ``.mcap`` / ``.db3`` file inside a rosbag2 directory stands for that directory (all its
    splits); any other ``.mcap`` / ``.db3`` file is read alone (recorders other than rosbag2
    write no metadata); a folder without ``metadata.yaml`` stands for the storage files in it,
    read together as the splits of one recording.

    :raises ValueError: when ``path`` does not exist or holds nothing ``rosbags`` reads.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f'bag {path} does not exist')
    if path.is_file():
        if path.suffix in ('.mcap', '.db3') and (path.parent / 'metadata.yaml').exists():
            return [path.parent]
        if path.suffix not in _STORAGE_SUFFIXES:
            with open(path, 'rb') as f:
                head = f.read(16)
            hint = next((f'; it looks like a {suffix} file: rename it to '
                         f'{path.with_suffix(suffix).name}' for magic, suffix in _MAGIC
                         if head.startswith(magic)), '')
            raise ValueError(f'{path} is not a bag: expected a rosbag2 directory, a .mcap or '
                             f'.db3 file, or a ROS 1 .bag file{hint}')
        return [path]
    if (path / 'metadata.yaml').exists():
        return [path]
    found = {suffix: sorted(path.glob(f'*{suffix}')) for suffix in _STORAGE_SUFFIXES}
    kinds = [suffix for suffix, files in found.items() if files]
    if not kinds:
        raise ValueError(f'{path} is not a bag: no metadata.yaml and no .mcap, .db3 or .bag '
                         'file in it')
    if len(kinds) > 1:
        raise ValueError(f'{path} mixes {" and ".join(kinds)} files without a metadata.yaml; '
                         'pass one file')
    return found[kinds[0]]


class BagReader:
    """A bag opened for reading; use as a context manager.

    :param path: a rosbag2 directory (or one of its files), a bare ``.mcap`` / ``.db3`` file
        or a folder of them without ``metadata.yaml``, or a ROS 1 ``.bag``.
    :raises ValueError: when the bag does not exist or cannot be opened.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.files = bag_files(self.path)
        self._default_types = get_typestore(Stores.ROS2_HUMBLE)
        try:
            self._reader = AnyReader(self.files, default_typestore=self._default_types)
        except Exception as exc:  # rosbags raises several unrelated types for bad files
            raise ValueError(f'cannot open bag {self.path}: {exc}') from exc

    def __enter__(self) -> 'BagReader':
        try:
            self._reader.open()
        except Exception as exc:  # rosbags raises several unrelated types for bad files
            raise ValueError(f'cannot open bag {self.path}: {exc}') from exc
        types = self._reader.typestore
        if not self._reader.is2:
            if TF not in types.types:
                types.register(get_types_from_msg('geometry_msgs/TransformStamped[] transforms',
                                                  TF))
        elif any(c.msgtype not in types.types for c in self._reader.connections):
            # Some writers embed the definitions of a few topics only; the others are read
            # with the standard ROS 2 types.
            types.register({name: fields for name, fields in
                            self._default_types.fielddefs.items() if name not in types.types})
        return self

    def __exit__(self, *exc: object) -> None:
        self._reader.close()

    @property
    def topics(self) -> dict[str, str]:
        """``{topic: msgtype}`` of every connection."""
        return {c.topic: c.msgtype for c in self._reader.connections}

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


def _is_registered_depth(topic: str) -> bool:
    name = topic.lower()
    return 'aligned_depth_to_color' in name or 'depth_registered' in name


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
    ``depth`` in their name (raw ones first; of several, the only one registered to colour,
    ``aligned_depth_to_color`` or ``depth_registered``, when there is one).

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
        raw_depth = [t for t in cands if topics[t] == IMAGE] or cands
        # Drivers often record the depth registered to the colour camera beside the sensor's
        # own stream (realsense2_camera, openni2_camera); the registered one pairs with colour.
        registered = [t for t in raw_depth if _is_registered_depth(t)]
        depth = _choose('depth image', registered if len(registered) == 1 else raw_depth,
                        '--depth-topic')
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


def tf_topics(topics: dict[str, str]) -> dict[str, bool]:
    """``{topic: is_static}`` of the TF topics (``/tf``, ``/tf_static``, namespaced ones too)."""
    return {t: t.rstrip('/').endswith('tf_static') for t, m in sorted(topics.items())
            if m in TF_TYPES}


def pose_candidates(topics: dict[str, str]) -> list[str]:
    """Topics carrying poses (PoseStamped, Odometry, PoseWithCovarianceStamped)."""
    return sorted(t for t, m in topics.items() if m in POSE_TYPES)
