"""``spann3r-eval --live``: play a sequence into a running node and score what it publishes.

The frames go to the node's image topic through the demo's player
(:func:`spann3r_ros.node.player.play_lockstep`): in lock-step by default (frame ``i + 1`` goes
out when the node has answered for frame ``i - 1``, so no frame is lost on a slow machine), or
at a fixed ``rate`` like a camera (the node drops what it cannot keep up with; that mode
measures drops). The node's clouds and confidence images are rebuilt into dense pointmaps
(:func:`spann3r_ros.cli.demo_report.dense_predictions`) and scored exactly like the offline path
(:func:`spann3r_model.evaluation.scoring.evaluate`): Acc / Comp / NC after median shift/scale
alignment and ICP, ATE after Sim(3), throughput and per-frame latency percentiles.

The official protocol uses every pixel. The node publishes only pixels whose confidence
reaches its ``min_confidence`` parameter (1.0, the lowest possible confidence, publishes all),
so the report says which fraction of the pixels was published and evaluated.

The node is reset (``~/reset``) before the playback, so the reconstruction starts from empty
memory as the offline path does; its map and trajectory so far are cleared.

The node is found on the ROS graph (:func:`spann3r_ros.node.discovery.find_node`): in any
namespace (``live.launch.py`` starts it in ``/spann3r``) when exactly one Spann3R node runs,
otherwise as chosen by namespace and name. Its image topic is the raw image topic the graph
lists for it, i.e. after namespacing and remapping, unless one is given.

The ROS side (the rclpy context, the graph, the node's parameters) is
:mod:`spann3r_ros.node.remote`.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

import numpy as np

from spann3r_model.data.scannet import ScanNetScene
from spann3r_model.evaluation.predictions import Predictions
from spann3r_model.evaluation.scoring import evaluate, model_input
from spann3r_ros.cli.demo_report import dense_predictions
from spann3r_ros.node.player import BagFrame, play_lockstep, Playback
from spann3r_ros.node.remote import locate_node, node_min_confidence, ros_context

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
    :return: ``(report, clouds, plot_data)`` as
        :func:`spann3r_model.evaluation.scoring.evaluate` returns.
    :raises ValueError: on a bad rate, when the node cannot be found or reached, or when its
        answers cannot be evaluated (no answer for the reference frame 0).
    """
    if rate is not None and not rate > 0:
        raise ValueError(f'--rate must be positive, got {rate}')
    if len(frame_ids) < 2:
        raise ValueError(f'--live needs at least 2 frames (the last is never refined), '
                         f'got {len(frame_ids)}')
    frames = scene_frames(scene, frame_ids, rate)
    with ros_context():
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
