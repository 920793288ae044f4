"""``spann3r-eval --live``: play a sequence into a running node and score what it publishes.

The frames go to the node's image topic through the demo's player
(:func:`spann3r_ros.node.player.play_lockstep`): in lock-step by default (frame ``i + 1`` goes
out when the node has answered for frame ``i - 1``, so no frame is lost on a slow machine), or
at a fixed ``rate`` like a camera (the node drops what it cannot keep up with; that mode
measures drops). The node's clouds and confidence images are rebuilt into dense pointmaps
(:func:`spann3r_ros.cli.playback_score.dense_predictions`) and scored exactly like the offline path
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
from typing import Optional

from spann3r_model.data.scannet import ScanNetScene
from spann3r_model.evaluation.scoring import model_input
from spann3r_ros.cli.playback_score import score_playback
from spann3r_ros.node.player import BagFrame, play_lockstep
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
