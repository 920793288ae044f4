"""Score what a node published during a playback: dense pointmaps rebuilt, one report.

The node publishes, per frame, a confidence-filtered cloud in the map frame (REP 103 axes) plus
the full ``[S, S]`` confidence image. The cloud keeps the pixels in row-major order, so with the
confidence image and the node's ``min_confidence`` the dense pointmap is recovered exactly and
the official pixelwise protocol of ``spann3r-eval`` applies
(:func:`spann3r_model.evaluation.scoring.evaluate`) on the pixels the node published. The demo
and ``spann3r-eval --live`` both score through :func:`score_playback`. Nothing here imports ROS.
"""

from __future__ import annotations

from dataclasses import dataclass
import logging
from typing import Any, Optional

import numpy as np

from spann3r_model.data.scannet import ScanNetScene
from spann3r_model.evaluation import report as eval_report
from spann3r_model.evaluation.predictions import Predictions
from spann3r_model.evaluation.scoring import evaluate
from spann3r_model.geometry.frames import R_BODY_OPTICAL
from spann3r_ros.node.player import Playback

LOG = logging.getLogger(__name__)

# The node's map frame is the first camera's optical frame in REP 103 axes:
# p_map = R_BODY_OPTICAL @ p_cam0, so p_cam0 = R_BODY_OPTICAL.T @ p_map (row vectors: @ R).
_T_OPTICAL_MAP = np.eye(4)
_T_OPTICAL_MAP[:3, :3] = R_BODY_OPTICAL.T


@dataclass
class DensePredictions:
    """The node's answers as dense pointmaps in the first camera's optical frame.

    :param frame_index: ``[N]`` positions of the answered frames in the played sequence.
    :param pts: ``[N, S, S, 3]`` float32 (NaN where the node published no point).
    :param conf: ``[N, S, S]`` float32 confidence.
    :param poses: ``[N, 4, 4]`` camera-to-first-camera poses (NaN where none was published).
    """

    frame_index: np.ndarray
    pts: np.ndarray
    conf: np.ndarray
    poses: np.ndarray


def dense_predictions(playback: Playback, min_confidence: float) -> DensePredictions:
    """Rebuild dense pointmaps from the clouds and confidence images of ``playback``.

    A frame is left out (with a warning) when its confidence image is missing or its cloud
    does not have one point per published pixel.

    :param min_confidence: the node's ``min_confidence`` during the run.
    :raises ValueError: when no frame can be rebuilt.
    """
    index = {s: i for i, s in enumerate(playback.stamps_ns)}
    kept, pts, confs, poses = [], [], [], []
    for stamp in sorted(playback.outputs, key=lambda s: index.get(s, -1)):
        out = playback.outputs[stamp]
        if stamp not in index or out.conf is None:
            LOG.warning('frame with stamp %d has no confidence image; left out', stamp)
            continue
        mask = np.isfinite(out.conf) & (out.conf >= min_confidence)
        if int(mask.sum()) != len(out.points):
            LOG.warning('frame %d: %d points for %d confident pixels; left out', index[stamp],
                        len(out.points), int(mask.sum()))
            continue
        dense = np.full(out.conf.shape + (3,), np.nan, np.float32)
        dense[mask] = out.points @ R_BODY_OPTICAL.astype(np.float32)
        pose = np.full((4, 4), np.nan)
        if out.T_map_cam is not None:
            pose = _T_OPTICAL_MAP @ out.T_map_cam
        kept.append(index[stamp])
        pts.append(dense)
        confs.append(out.conf)
        poses.append(pose)
    if not kept:
        raise ValueError('the node answered no frame that can be evaluated')
    return DensePredictions(np.asarray(kept), np.stack(pts), np.stack(confs), np.stack(poses))


def score_playback(scene: ScanNetScene, frame_ids: list[int], playback: Playback,
                   min_confidence: float, node_name: str = '/spann3r_node',
                   use_icp: bool = True, image_topic: Optional[str] = None
                   ) -> tuple[dict, dict, dict]:
    """Rebuild the dense pointmaps of ``playback`` and score them like the offline path.

    The one scorer of a node's playback (``spann3r-eval --live`` and the demo): the report of
    :func:`spann3r_model.evaluation.scoring.evaluate` plus a ``live`` section.

    :param node_name: the node's full name, for the report.
    :param image_topic: the topic the frames went to, for the report.
    :return: ``(report, clouds, plot_data)``; ``plot_data['dense']`` holds the rebuilt
        :class:`DensePredictions`.
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
        'model_resolution': int(dense.pts.shape[1]),
        'throughput_fps': throughput,
        'min_confidence': float(min_confidence),
        'published_pixel_fraction': float(published.mean()),
        'filtered_by_min_confidence': bool(not published.all()),
    }
    plot['dense'] = dense
    return report, clouds, plot


def report_markdown(report: dict[str, Any]) -> str:
    """Return ``report.md`` of any evaluation: the summary, then the live run's section."""
    return eval_report.markdown(report) + live_markdown(report)


def live_markdown(report: dict[str, Any]) -> str:
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
