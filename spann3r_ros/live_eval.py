"""``spann3r-eval --live``: play a sequence into a running node and score what it publishes.

The frames go to the node's image topic through the demo's player
(:func:`spann3r_ros.demo_player.play_lockstep`): in lock-step by default (frame ``i + 1`` goes
out when the node has answered for frame ``i - 1``, so no frame is lost on a slow machine), or
at a fixed ``rate`` like a camera (the node drops what it cannot keep up with; that mode
measures drops). The node's clouds and confidence images are rebuilt into dense pointmaps
(:func:`spann3r_ros.demo_report.dense_predictions`) and scored exactly like the offline path
(:func:`spann3r_ros.replay.evaluate`): Acc / Comp / NC after median shift/scale alignment and
ICP, ATE after Sim(3), throughput and per-frame latency percentiles.

The official protocol uses every pixel. The node publishes only pixels whose confidence
reaches its ``min_confidence`` parameter (1.0, the lowest possible confidence, publishes all),
so the report says which fraction of the pixels was published and evaluated.

The node is reset (``~/reset``) before the playback, so the reconstruction starts from empty
memory as the offline path does; its map and trajectory so far are cleared.

The node is found on the ROS graph (:func:`spann3r_ros.node_discovery.find_node`): in any
namespace (``live.launch.py`` starts it in ``/spann3r``) when exactly one Spann3R node runs,
otherwise as chosen by namespace and name. Its image topic is the raw image topic the graph
lists for it, i.e. after namespacing and remapping, unless one is given.

rclpy is imported inside the functions, so the rest of the bag tools run without ROS.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

import numpy as np

from .demo_player import BagFrame, play_lockstep, Playback
from .demo_report import dense_predictions
from .node_discovery import find_node, image_topic, NodeTarget
from .predictions import Predictions
from .replay import evaluate, model_input
from .scannet import ScanNetScene

LOG = logging.getLogger(__name__)

START_STAMP_NS = 1000 * 10**9
# Stamps of lock-step playback are spaced like a 5 Hz camera (the node checks they increase).
LOCKSTEP_PERIOD_NS = 200_000_000


def scene_frames(scene: ScanNetScene, frame_ids: list[int], rate: Optional[float] = None
                 ) -> list[BagFrame]:
    """Return the model inputs of ``frame_ids`` with increasing stamps.

    :param rate: stamp spacing in Hz (the playback rate), or None for 5 Hz.
    """
    period = LOCKSTEP_PERIOD_NS if rate is None else int(round(1e9 / rate))
    return [BagFrame(START_STAMP_NS + i * period, model_input(scene, fid))
            for i, fid in enumerate(frame_ids)]


def node_min_confidence(full_name: str, timeout: float) -> float:
    """Ask the running node for its ``min_confidence`` parameter.

    rclpy must be initialised.

    :param full_name: the node's fully qualified name, e.g. ``/spann3r/spann3r_node``.
    :raises ValueError: when the node's parameter service does not answer within ``timeout``.
    """
    from rcl_interfaces.msg import ParameterType
    from rcl_interfaces.srv import GetParameters
    import rclpy

    node = rclpy.create_node('spann3r_eval_live_params')
    try:
        client = node.create_client(GetParameters, f'{full_name}/get_parameters')
        if not client.wait_for_service(timeout_sec=timeout):
            raise ValueError(f'node {full_name} has no parameter service (waited {timeout:.0f} '
                             's); is it running? Pass --namespace and --node-name, or '
                             '--min-confidence')
        future = client.call_async(GetParameters.Request(names=['min_confidence']))
        rclpy.spin_until_future_complete(node, future, timeout_sec=timeout)
        response = future.result()
        value = response.values[0] if response is not None and response.values else None
        if value is None or value.type != ParameterType.PARAMETER_DOUBLE:
            raise ValueError(f'node {full_name} did not report a float min_confidence; '
                             'pass --min-confidence')
        return float(value.double_value)
    finally:
        node.destroy_node()


def locate_node(namespace: Optional[str], node_name: Optional[str], topic: Optional[str],
                timeout: float) -> tuple[NodeTarget, str]:
    """Find the node to play into and the image topic to publish on.

    rclpy must be initialised.

    :param namespace: the node's namespace, or None to find it on the graph.
    :param node_name: the node's name, or None to find it on the graph.
    :param topic: the image topic (relative names resolve in the node's namespace), or None
        for the raw image topic the node subscribes to.
    :return: the node and the absolute image topic.
    :raises ValueError: when no node or several match, or its image topic is not clear.
    """
    import rclpy

    node = rclpy.create_node('spann3r_eval_live_discovery')
    try:
        target = find_node(node, namespace=namespace, name=node_name, timeout=timeout)
        if topic is None:
            return target, image_topic(node, target, timeout)
        return target, target.topic(topic)
    finally:
        node.destroy_node()


def run_live(scene: ScanNetScene, frame_ids: list[int], *, node_name: Optional[str] = None,
             namespace: Optional[str] = None, topic: Optional[str] = None,
             rate: Optional[float] = None, timeout: float = 60.0,
             min_confidence: Optional[float] = None, use_icp: bool = True
             ) -> tuple[dict, dict, dict]:
    """Play the frames into a running node and evaluate its outputs with the official protocol.

    :param node_name: the node's name, or None to find the node on the graph.
    :param namespace: its namespace, or None to find the node on the graph.
    :param topic: its image topic, or None for the one it subscribes to.
    :param rate: fixed publishing rate in Hz, or None for lock-step playback.
    :param timeout: seconds to wait for the node and for each answer.
    :param min_confidence: the node's ``min_confidence``; asked from the node when None.
    :param use_icp: run the ICP refinement of the protocol.
    :return: ``(report, clouds, plot_data)`` as :func:`spann3r_ros.replay.evaluate` returns.
    :raises ValueError: on a bad rate, when the node cannot be found or reached, or when its
        answers cannot be evaluated (no answer for the reference frame 0).
    """
    import rclpy

    if rate is not None and not rate > 0:
        raise ValueError(f'--rate must be positive, got {rate}')
    if len(frame_ids) < 2:
        raise ValueError(f'--live needs at least 2 frames (the last is never refined), '
                         f'got {len(frame_ids)}')
    frames = scene_frames(scene, frame_ids, rate)
    owns_context = not rclpy.ok()
    if owns_context:
        rclpy.init()
    try:
        target, image = locate_node(namespace, node_name, topic, timeout)
        LOG.info('playing into %s on %s', target.full_name, image)
        if min_confidence is None:
            min_confidence = node_min_confidence(target.full_name, timeout)
        try:
            playback = play_lockstep(frames, node_name=target.name,
                                     namespace=target.namespace, image_topic=image,
                                     timeout=timeout, save_map=False, rate=rate, reset=True)
        except (TimeoutError, RuntimeError) as exc:
            raise ValueError(str(exc)) from exc
    finally:
        if owns_context:
            rclpy.try_shutdown()
    return score_playback(scene, frame_ids, playback, min_confidence, target.full_name,
                          use_icp, image)


def score_playback(scene: ScanNetScene, frame_ids: list[int], playback: Playback,
                   min_confidence: float, node_name: str = '/spann3r_node',
                   use_icp: bool = True, image_topic: Optional[str] = None
                   ) -> tuple[dict, dict, dict]:
    """Rebuild the dense pointmaps of ``playback`` and score them like the offline path.

    :param node_name: the node's full name, for the report.
    :param image_topic: the topic the frames went to, for the report.
    :raises ValueError: when frame 0, the reference camera, was not answered or rebuilt.
    """
    dense = dense_predictions(playback, min_confidence)
    if dense.frame_index[0] != 0:
        hint = '' if playback.rate is None else (
            f' (it dropped it: {playback.rate:.3g} Hz is faster than it runs; lower --rate or '
            'leave it out for lock-step playback)')
        raise ValueError('the node did not answer frame 0, the reference camera of the '
                         f'reconstruction: nothing can be aligned{hint}')
    preds = Predictions(dense.pts, dense.conf, None, dense.frame_index, dense.poses, 'image',
                        'ours')
    latencies = np.asarray(playback.latencies) if playback.latencies else None
    report, clouds, plot = evaluate(scene, frame_ids, preds, latencies, use_icp)
    throughput = len(playback.outputs) / playback.wall_s if playback.wall_s > 0 else None
    if report.get('latency') is not None:
        # Frames answered per second of playback, not the inverse of the mean latency.
        report['latency']['fps'] = throughput
    published = np.isfinite(dense.pts).all(axis=-1)
    report['source'] = 'live'
    report['live'] = {
        'node': node_name,
        'image_topic': image_topic,
        'mode': 'lockstep' if playback.rate is None else 'fixed_rate',
        'rate_hz': playback.rate,
        'frames_published': len(playback.stamps_ns),
        # The last frame is only refined when another one arrives: it never comes back.
        'frames_expected': len(playback.stamps_ns) - 1,
        'frames_answered': len(playback.outputs),
        'frames_dropped': max(0, len(playback.stamps_ns) - 1 - len(playback.outputs)),
        'frames_evaluated': int(len(dense.frame_index)),
        'throughput_fps': throughput,
        'min_confidence': float(min_confidence),
        'published_pixel_fraction': float(published.mean()),
        'filtered_by_min_confidence': bool(not published.all()),
    }
    return report, clouds, plot


def markdown(report: dict[str, Any]) -> str:
    """Return the live-run section appended to ``report.md`` (empty for other runs)."""
    live = report.get('live')
    if not live:
        return ''
    if live['mode'] == 'lockstep':
        how = ('lock-step (frame i went out once the node had returned the result of frame '
               'i - 2; no frame is dropped, latency is one model step plus transport)')
    else:
        how = (f'fixed rate {live["rate_hz"]:.3g} Hz (the node drops frames it cannot keep '
               'up with; latency includes one frame period, as a frame is refined when the '
               'next one arrives)')
    topic = f' (frames on `{live["image_topic"]}`)' if live.get('image_topic') else ''
    lines = ['', '## Live run', '',
             f'Node `{live["node"]}`{topic}, playback {how}.', '',
             f'Frames published {live["frames_published"]}, answered '
             f'{live["frames_answered"]} of {live["frames_expected"]} expected (the last is '
             f'never refined), dropped {live["frames_dropped"]}, evaluated '
             f'{live["frames_evaluated"]}.', '']
    if live['throughput_fps'] is not None:
        lines += [f'Throughput: {live["throughput_fps"]:.3g} frames/s.', '']
    fraction = 100 * live['published_pixel_fraction']
    if live['filtered_by_min_confidence']:
        lines += ["**Not the full official protocol**: the node's min_confidence "
                  f'{live["min_confidence"]:.3g} filtered pixels; only {fraction:.1f}% of the '
                  'predicted pixels were published and evaluated (the protocol uses all: run '
                  'the node with min_confidence 1.0).', '']
    else:
        lines += [f'All predicted pixels were published (min_confidence '
                  f'{live["min_confidence"]:.3g}): the full official protocol applies.', '']
    return '\n'.join(lines)
