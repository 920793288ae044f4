"""The live node's /diagnostics: stage times, backpressure and the published frames' latency."""

import time

from node_harness import Harness, smooth_frame
import numpy as np
import pytest
from rclpy.parameter import Parameter

from spann3r_ros.node.node import Spann3rNode
from spann3r_ros.pipeline.worker import STAGES


@pytest.fixture()
def live(ros, checkpoint, tmp_path):
    params = {'checkpoint': str(checkpoint), 'device': 'cpu', 'min_confidence': 1.0,
              'output_dir': str(tmp_path), 'map_voxel_size': 0.001, 'diagnostics_rate': 20.0,
              'num_threads': 1}
    harness = Harness(Spann3rNode(
        parameter_overrides=[Parameter(k, value=v) for k, v in params.items()]))
    yield harness
    harness.close()


def _values(msg):
    return {kv.key: kv.value for kv in msg.status[0].values}


def test_diagnostics_report_stage_times_backpressure_and_published_latency(live):
    worker = live.node.worker
    publish = worker.publish
    published = []  # (arrival of the published frame, end of its publishing)

    def recording(out):
        publish(out)
        published.append((out.received, time.monotonic()))

    worker.publish = recording
    start = time.monotonic()
    live.feed([smooth_frame(i) for i in range(5)])
    # Refined results lag one frame: five frames publish four.
    live.wait_for(lambda: worker.published == 4, 10, 'four outputs')
    live.wait_for(lambda: any(_values(m)['frames_published'] == '4'
                              for m in live.msgs('/diagnostics')), 10, 'diagnostics after them')
    values = next(_values(m) for m in reversed(live.msgs('/diagnostics'))
                  if _values(m)['frames_published'] == '4')
    assert values['pipelined'] == 'true' and values['pending_results'] == '0'
    stage_ms = {name: float(values[f'{name}_time_p50_ms']) for name in STAGES}
    assert all(ms > 0 for ms in stage_ms.values()), stage_ms
    assert float(values['model_wait_p50_ms']) >= 0
    # The latency is that of the published frames: from each one's arrival to its publishing.
    assert len(published) == len(worker.latencies) == 4
    assert all(start < received < done for received, done in published)
    latency_ms = float(values['latency_p50_ms'])
    assert latency_ms == pytest.approx(1000 * np.median(worker.latencies), abs=0.05)
    assert 1000 * min(d - r for r, d in published) <= latency_ms
    assert latency_ms <= 1000 * max(d - r for r, d in published)
    # A published frame waited for its own model step and the next one (results lag a frame).
    assert latency_ms > stage_ms['model']
