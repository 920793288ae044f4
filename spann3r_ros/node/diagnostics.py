"""Counters of the node and their ``/diagnostics`` message."""

from __future__ import annotations

from collections import Counter, deque
import threading
import time
from typing import Any, Optional

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
import numpy as np

#: Diagnostics warn about malformed input while a frame was dropped within this many seconds.
RECENT_WINDOW_S = 10.0


class NodeStats:
    """Thread-safe counters of received, rejected, skipped and published frames."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.received = 0
        self.paused = 0
        self.skipped = 0
        self.rejected: Counter[str] = Counter()
        self._last_warn: dict[str, float] = {}
        self._reject_times: deque[float] = deque(maxlen=100_000)
        self._rate_marks: dict[str, tuple[float, int]] = {}

    def count(self, what: str) -> None:
        """Add one to ``received``, ``paused`` or ``skipped``."""
        with self._lock:
            setattr(self, what, getattr(self, what) + 1)

    def reject(self, reason: str, throttle_s: float = 5.0) -> bool:
        """Count a rejected frame; return True when a warning is due for this reason."""
        now = time.monotonic()
        with self._lock:
            self.rejected[reason] += 1
            self._reject_times.append(now)
            last = self._last_warn.get(reason)
            if last is None or now - last >= throttle_s:
                self._last_warn[reason] = now
                return True
            return False

    def recent_rejections(self, window_s: Optional[float] = None) -> int:
        """Return how many frames were rejected in the last ``window_s`` seconds.

        :param window_s: the window; None for :data:`RECENT_WINDOW_S`.
        """
        since = time.monotonic() - (RECENT_WINDOW_S if window_s is None else window_s)
        with self._lock:
            while self._reject_times and self._reject_times[0] < since:
                self._reject_times.popleft()
            return len(self._reject_times)

    def rate(self, name: str, count: int) -> float:
        """Return the rate of a monotonically growing ``count`` since the previous call."""
        now = time.monotonic()
        with self._lock:
            t0, c0 = self._rate_marks.get(name, (now, count))
            self._rate_marks[name] = (now, count)
        return (count - c0) / (now - t0) if now > t0 else 0.0


def _ms(values: Any, q: float) -> str:
    arr = np.asarray(list(values), dtype=np.float64)
    return f'{1000.0 * np.percentile(arr, q):.3f}' if arr.size else 'n/a'


def diagnostics_msg(stamp: Any, *, node_name: str, device: str, stats: NodeStats,
                    worker: Any, paused: bool, map_points: int,
                    error: Optional[BaseException], full_name: Optional[str] = None,
                    intrinsics: Optional[dict[str, str]] = None,
                    metric: Optional[dict[str, str]] = None) -> DiagnosticArray:
    """Build the ``DiagnosticArray`` with rates, latency, drops, stage times, memory and device.

    Latency is that of the published frames, from the arrival of each one's image to the end
    of its publishing. ``<stage>_time_p50_ms`` is the median time per frame of each stage of
    ``worker.stage_times``; ``model_wait_p50_ms`` the median time the model stage waited for
    room in the result queue (the output stage is the bottleneck when it is large), and
    ``pending_results`` the results waiting for the output stage. No computed result is ever
    dropped: stale frames are dropped before the model, at the input (``dropped_queue``).

    :param node_name: the node's name, which starts the status name (``NAME: reconstruction``).
    :param full_name: its fully qualified name, reported as the value ``node`` (the status name
        alone cannot tell same-named nodes in different namespaces apart).
    :param intrinsics: values on the cameras' intrinsics (``intrinsics_camera_<i>``: their
        source) and the metric inputs, added as they are.
    :param metric: the metric alignment's values (``metric_state`` and its figures): its state
        is named in the message (``lost`` warns).
    """
    level, message = DiagnosticStatus.OK, 'reconstructing'
    if paused:
        level, message = DiagnosticStatus.WARN, 'paused'
    recent = stats.recent_rejections()
    if recent:
        level, message = DiagnosticStatus.WARN, (f'{recent} malformed input frames dropped in '
                                                 f'the last {RECENT_WINDOW_S:.0f} s')
    state = (metric or {}).get('metric_state', 'off')
    if state != 'off' and level == DiagnosticStatus.OK:
        message = f'reconstructing; metric {state}'
        if state == 'lost':
            level = DiagnosticStatus.WARN
    if error is not None or not worker.alive:
        level, message = DiagnosticStatus.ERROR, f'worker failed: {error!r}'
    memory = worker.last_memory
    values = {
        'node': full_name or node_name,
        'device': device,
        'input_rate_hz': f'{stats.rate("in", stats.received):.2f}',
        'processed_rate_hz': f'{stats.rate("proc", worker.processed):.2f}',
        'output_rate_hz': f'{stats.rate("out", worker.published):.2f}',
        'latency_p50_ms': _ms(worker.latencies, 50),
        'latency_p95_ms': _ms(worker.latencies, 95),
        'model_time_p50_ms': _ms(worker.model_times, 50),
        **{f'{name}_time_p50_ms': _ms(times, 50) for name, times in worker.stage_times.items()
           if name != 'model'},
        'model_wait_p50_ms': _ms(worker.model_waits, 50),
        'pending_results': str(worker.pending_results),
        'pipelined': str(worker.pipelined).lower(),
        'frames_received': str(stats.received),
        'frames_processed': str(worker.processed),
        'frames_published': str(worker.published),
        'dropped_queue': str(worker.queue.dropped),
        'dropped_malformed': str(sum(stats.rejected.values())),
        'dropped_malformed_recent': str(recent),
        'skipped_keyframing': str(stats.skipped),
        'skipped_paused': str(stats.paused),
        'nonfinite_outputs': str(worker.nonfinite_outputs),
        'memory_tokens': str(memory.tokens),
        'memory_working_frames': str(memory.working_frames),
        'segment': str(worker.segment),
        'map_points': str(map_points),
        'paused': str(paused).lower(),
    }
    values.update({f'malformed_{k}': str(v) for k, v in sorted(stats.rejected.items())})
    values.update(intrinsics or {})
    values.update(metric or {})
    status = DiagnosticStatus(level=level, name=f'{node_name}: reconstruction', message=message,
                              hardware_id=device,
                              values=[KeyValue(key=k, value=v) for k, v in values.items()])
    msg = DiagnosticArray(status=[status])
    msg.header.stamp = stamp
    return msg
