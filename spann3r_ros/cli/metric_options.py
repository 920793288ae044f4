"""The options of ``spann3r-eval --metric`` and the node configuration they describe."""

from __future__ import annotations

import argparse
from typing import Any, Optional

import yaml

from spann3r_ros.pipeline.config import NodeConfig, ODOMETRY_SOURCES, param_specs

#: ``--metric`` choices: the node's ``metric_source`` values that align to metres.
METRIC_CHOICES = ('odometry', 'depth', 'both')
#: Options that only apply with ``--metric`` (dest: flag), all defaulting to None.
METRIC_ONLY = {'odometry_source': '--odometry-source', 'odometry_topic': '--odometry-topic',
               'odom_frame': '--odom-frame', 'depth_topic': '--depth-topic',
               'image_topic': '--image-topic', 'gt_pose_topic': '--gt-pose-topic',
               'gt_pose_tf': '--gt-pose-tf'}
#: Node parameters that have their own option, so ``--param`` does not set them.
OWN_OPTIONS = {'checkpoint': '--checkpoint', 'metric_source': '--metric',
               'odometry_source': '--odometry-source', 'odometry_topic': '--odometry-topic',
               'odom_frame': '--odom-frame', 'depth_topic': '--depth-topic',
               'device': '--device', 'precision': '--precision', 'image_size': '--image-size',
               'model_preset': '--preset', 'estimate_pose': '--no-pose'}
DEFAULT_ODOMETRY_TOPIC = '/odom'
DEFAULT_GT_POSE_TOPIC = '/ground_truth/pose'


def add_metric_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--metric`` and the options that go with it."""
    g = parser.add_argument_group(
        "metric scale (--metric: a bag, played through the node's own online alignment and "
        "scored in metres without any alignment of the evaluation's own)")
    g.add_argument('--metric', choices=METRIC_CHOICES,
                   help="the node's metric_source: odometry (outputs in --odom-frame), depth "
                   '(the first camera, scale from --depth-topic) or both')
    g.add_argument('--odometry-source', choices=ODOMETRY_SOURCES,
                   help='where odometry comes from, as the node parameter odometry_source '
                   '(default tf: --odom-frame -> the image frame_id through /tf, /tf_static)')
    g.add_argument('--odometry-topic',
                   help='Odometry / PoseStamped topic of the base in --odom-frame for '
                   f'odometry_topic / pose_topic (default {DEFAULT_ODOMETRY_TOPIC}; composed '
                   'with the node parameter base_to_camera, set it with --param)')
    g.add_argument('--odom-frame', help='the odometry frame (default odom)')
    g.add_argument('--depth-topic',
                   help="aligned depth topic: the ground truth's depth, and the scale of "
                   "--metric depth / both (default: the bag's registered depth topic)")
    g.add_argument('--image-topic', help="colour topic (default: the bag's only one)")
    g.add_argument('--gt-pose-topic',
                   help='PoseStamped of the camera optical frame in the ground-truth world '
                   f'(default {DEFAULT_GT_POSE_TOPIC}). For odometry / both a world of another '
                   'name than --odom-frame is related to it at the first scored frame')
    g.add_argument('--gt-pose-tf', metavar='WORLD:CAMERA_FRAME',
                   help="the ground truth as a TF chain of the bag instead (motion capture, a "
                   "simulator's truth): WORLD -> the camera's optical frame")
    g.add_argument('--param', action='append', default=[], metavar='NAME=VALUE',
                   help='a node parameter, as YAML (repeatable), e.g. '
                   'alignment_min_baseline=0.05 or base_to_camera=[0,0,0,-0.5,0.5,-0.5,0.5]')


def check_metric_options(args: argparse.Namespace) -> None:
    """Refuse metric options without ``--metric``, and ``--metric`` with other sources.

    :raises ValueError: naming the offending option.
    """
    if args.metric is None:
        given = [flag for dest, flag in METRIC_ONLY.items() if getattr(args, dest) is not None]
        if args.param:
            given.append('--param')
        if given:
            raise ValueError(f'{", ".join(given)} needs --metric')
        return
    if args.checkpoint is None:
        raise ValueError('--metric runs the node on the bag: it needs --checkpoint')
    if args.no_pose:
        raise ValueError('--metric needs camera poses: leave out --no-pose')
    if args.scene is not None:
        raise ValueError('--metric reads a bag: --scene does not apply')
    if args.gt_pose_tf is not None:
        if args.gt_pose_topic is not None:
            raise ValueError('--gt-pose-topic and --gt-pose-tf both give the ground truth: '
                             'choose one')
        gt_tf_chain(args.gt_pose_tf)
    if getattr(args, 'pose', None) is not None:
        raise ValueError('--metric takes the ground truth from --gt-pose-topic: --pose does '
                         'not apply')


def gt_tf_chain(spec: Optional[str]) -> Optional[tuple[str, str]]:
    """Return ``(world, camera)`` of ``--gt-pose-tf WORLD:CAMERA_FRAME`` (None: not given).

    :raises ValueError: for anything but two non-empty frame names.
    """
    if spec is None:
        return None
    parts = [p.strip().lstrip('/') for p in spec.split(':')]
    if len(parts) != 2 or not all(parts):
        raise ValueError(f'--gt-pose-tf takes WORLD:CAMERA_FRAME, got {spec!r}')
    return parts[0], parts[1]


def parse_params(items: list[str]) -> dict[str, Any]:
    """Return ``{name: value}`` of ``NAME=VALUE`` items; values are YAML, strings stay strings.

    :raises ValueError: for a malformed item, an unknown name or one with its own option.
    """
    types = {spec.name: spec.type_name for spec in param_specs()}
    values: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition('=')
        name = name.strip()
        if not sep or not name:
            raise ValueError(f'--param takes NAME=VALUE, got {item!r}')
        if name not in types:
            raise ValueError(f'--param {name}: no such node parameter')
        if name in OWN_OPTIONS:
            raise ValueError(f'--param {name}: set it with {OWN_OPTIONS[name]}')
        if types[name] == 'str':
            values[name] = text
            continue
        try:
            values[name] = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f'--param {name}: {text!r} is not a YAML value ({exc})') from None
    return values


def absolute(topic: str) -> str:
    """Return a topic name as a bag records it (leading slash)."""
    return '/' + topic.lstrip('/')


def node_config(args: argparse.Namespace, depth_topic: str) -> NodeConfig:
    """Return the node configuration of a ``--metric`` run.

    :param depth_topic: the bag's depth topic the run reads.
    :raises ValueError: for an invalid parameter (the node's own message).
    """
    values = {'checkpoint': str(args.checkpoint), 'metric_source': args.metric,
              'odometry_source': args.odometry_source or 'tf',
              'odometry_topic': absolute(args.odometry_topic or DEFAULT_ODOMETRY_TOPIC),
              'odom_frame': args.odom_frame or 'odom', 'depth_topic': depth_topic,
              'device': args.device, 'precision': args.precision,
              'image_size': args.image_size, 'model_preset': args.preset or '',
              'estimate_pose': True}
    values.update(parse_params(args.param))
    return NodeConfig.from_mapping(values)
