"""Which camera poses an export writes: TF, a pose topic, or none.

``--pose auto`` takes TF when the images' ``header.frame_id`` hangs in a TF tree below a moving
edge: poses are looked up from the root of that tree to the image frame, static and dynamic
edges chained and interpolated. Otherwise it takes the bag's only pose topic (PoseStamped,
Odometry, ...), and otherwise writes no poses (NaN pose files; the manifest says why).
``tf:PARENT:CHILD`` and ``topic:NAME`` are taken as given. A source that yields no pose for any
image is refused with what went wrong, rather than exporting frames without poses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from spann3r_ros.bags.tf_buffer import TfBuffer, TfLookupError

KINDS = ('tf', 'topic', 'none')
_LISTED_FRAMES = 12


def parse_pose_spec(spec: str) -> tuple[str, ...]:
    """``auto``, ``none``, ``tf:PARENT:CHILD`` or ``topic:NAME`` as a tuple.

    :raises ValueError: for anything else.
    """
    if spec in ('auto', 'none'):
        return (spec,)
    kind, _, rest = spec.partition(':')
    if kind == 'tf':
        parent, _, child = rest.partition(':')
        if parent and child:
            return ('tf', parent, child)
    elif kind == 'topic' and rest:
        return ('topic', rest)
    raise ValueError(f'--pose must be auto, none, tf:PARENT:CHILD or topic:NAME, got {spec!r}')


@dataclass
class PoseSamples:
    """Stamped ``[4, 4]`` poses of one pose topic, in bag order."""

    stamps: list[float] = field(default_factory=list)
    poses: list[np.ndarray] = field(default_factory=list)


@dataclass(frozen=True)
class PoseSource:
    """The chosen source.

    :param kind: one of :data:`KINDS`.
    :param chain: for ``tf``, the frames from the parent (the tree's root under ``auto``) down
        to the camera frame.
    :param topic: for ``topic``, its name.
    :param reason: why this source was chosen (for ``none``: why there are no poses).
    """

    kind: str
    chain: tuple[str, ...] = ()
    topic: Optional[str] = None
    reason: str = ''

    def spec(self) -> str:
        """Return the ``--pose`` value that selects this source."""
        if self.kind == 'tf':
            return f'tf:{self.chain[0]}:{self.chain[-1]}'
        return f'topic:{self.topic}' if self.kind == 'topic' else 'none'

    def describe(self) -> str:
        """``tf map -> camera_link -> camera_color_optical_frame``, ``topic /odom`` or ``none``."""
        if self.kind == 'tf':
            return 'tf ' + ' -> '.join(self.chain)
        return f'topic {self.topic}' if self.kind == 'topic' else 'none'

    def manifest(self, requested: str) -> dict:
        """Build the manifest's ``pose`` object."""
        return {'source': self.kind, 'requested': requested, 'description': self.describe(),
                'chain': list(self.chain) or None, 'topic': self.topic, 'reason': self.reason}


def _frames_text(buffer: TfBuffer) -> str:
    frames = buffer.frames
    more = f' and {len(frames) - _LISTED_FRAMES} more' if len(frames) > _LISTED_FRAMES else ''
    return f'{frames[:_LISTED_FRAMES]}{more}'


def _tf_chain(buffer: TfBuffer, frame: str) -> tuple[Optional[list[str]], str]:
    """Return the root-to-``frame`` chain when it moves (else None), and why."""
    if not buffer.frames:
        return None, 'the bag has no TF'
    if not frame:
        return None, 'the images have an empty header.frame_id'
    if frame not in buffer.frames:
        return None, f"the images' frame {frame!r} is not in TF (frames: {_frames_text(buffer)})"
    chain = buffer.root_chain(frame)
    if len(chain) == 1:
        return None, f"the images' frame {frame!r} is a root of TF: nothing above it moves it"
    if all(buffer.is_static(a, b) for a, b in zip(chain[:-1], chain[1:])):
        return None, (f'TF above {frame!r} is static only ({" -> ".join(chain)}): a mounting, '
                      f'and {chain[0]!r} is not attached to any moving frame')
    return chain, f"the images' frame {frame!r} is in the TF tree rooted at {chain[0]!r}"


def choose_pose_source(spec: tuple[str, ...], buffer: TfBuffer, frame_id: str,
                       samples: dict[str, PoseSamples]) -> PoseSource:
    """Pick the pose source for ``spec`` (see the module docstring).

    :param spec: from :func:`parse_pose_spec`.
    :param buffer: every TF message of the bag.
    :param frame_id: the images' ``header.frame_id``.
    :param samples: the pose topics read (all candidates under ``auto``).
    :raises ValueError: when an explicit TF chain does not connect its two frames.
    """
    frame = frame_id.lstrip('/')
    if spec[0] == 'none':
        return PoseSource('none', reason='--pose none')
    if spec[0] == 'topic':
        return PoseSource('topic', topic=spec[1], reason=f'--pose {":".join(spec)}')
    if spec[0] == 'tf':
        try:
            chain = buffer.check_chain(spec[1], spec[2])
        except TfLookupError as exc:
            raise ValueError(f'cannot resolve the pose chain {spec[1]} -> {spec[2]}: {exc}; the '
                             f'images are in frame {frame!r}; try --pose auto or --pose none'
                             ) from None
        return PoseSource('tf', tuple(chain), reason=f'--pose {":".join(spec)}')
    chain, why = _tf_chain(buffer, frame)
    if chain is not None:
        return PoseSource('tf', tuple(chain), reason=why)
    topics = sorted(t for t, s in samples.items() if s.stamps)
    if len(topics) == 1:
        return PoseSource('topic', topic=topics[0], reason=f'{why}; {topics[0]} is the only '
                          'pose topic')
    if topics:
        return PoseSource('none', reason=f'{why}; several pose topics {topics}: choose one with '
                          '--pose topic:NAME')
    return PoseSource('none', reason=f'{why}; no pose topic')


def interpolate_pose(stamps: np.ndarray, poses: np.ndarray, t: float, max_dt: float
                     ) -> Optional[np.ndarray]:
    """Pose at ``t`` when a sample lies within ``max_dt``; bracketed stamps interpolate.

    :param stamps: ``[N]`` sorted seconds.
    :param poses: ``[N, 4, 4]``.
    """
    i = int(np.searchsorted(stamps, t))
    near = [k for k in (i - 1, i) if 0 <= k < len(stamps)]
    if not near or min(abs(stamps[k] - t) for k in near) > max_dt:
        return None
    buffer = TfBuffer(tolerance=max_dt)
    for k in near:
        buffer.add('world', 'cam', float(stamps[k]), poses[k], static=False)
    return buffer.lookup('world', 'cam', t)


def _span(stamps: list[float]) -> str:
    return f'[{min(stamps):.3f}, {max(stamps):.3f}] s' if stamps else 'nothing'


def poses_at(source: PoseSource, buffer: TfBuffer, samples: dict[str, PoseSamples],
             stamps: list[float], max_dt: float) -> list[Optional[np.ndarray]]:
    """``[4, 4]`` camera-to-world at each image stamp, None where the source has none.

    :raises ValueError: when the source gives no pose for any image, saying why.
    """
    if source.kind == 'none' or not stamps:
        return [None] * len(stamps)
    poses: list[Optional[np.ndarray]] = []
    if source.kind == 'tf':
        first_error = ''
        for t in stamps:
            try:
                poses.append(buffer.lookup(source.chain[0], source.chain[-1], t))
            except TfLookupError as exc:
                first_error = first_error or str(exc)
                poses.append(None)
        if any(p is not None for p in poses):
            return poses
        spans = [f'{a} -> {b} {_span(list(span))}' for a, b in zip(source.chain[:-1],
                                                                    source.chain[1:])
                 if (span := buffer.sample_span(a, b) or buffer.sample_span(b, a))]
        raise ValueError(f'no image could be given a pose from {source.describe()}: '
                         f'{first_error}; the images span {_span(stamps)}, the moving TF '
                         f'{", ".join(spans) or "nothing"} (tolerance --max-dt {max_dt:g} s); '
                         'pass --pose none to export without poses')
    topic = samples.get(source.topic or '', PoseSamples())
    if topic.stamps:
        order = np.argsort(topic.stamps, kind='stable')
        t_sorted, p_sorted = np.asarray(topic.stamps)[order], np.stack(topic.poses)[order]
        poses = [interpolate_pose(t_sorted, p_sorted, t, max_dt) for t in stamps]
    if any(p is not None for p in poses):
        return poses
    raise ValueError(f'no image could be given a pose from topic {source.topic}: its '
                     f'{len(topic.stamps)} messages span {_span(topic.stamps)}, the images '
                     f'{_span(stamps)} (tolerance --max-dt {max_dt:g} s); pass --pose none to '
                     'export without poses')
