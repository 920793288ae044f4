"""Speed and memory of StreamingSession (random weights; the figures do not depend on them).

For each preset and device it prints per-frame latency p50/p90 of the default mode, GFLOP per
frame (torch's flop counter), achieved GFLOP/s against the fp32 matmul peak measured in the
same run (the best of torch's default GEMM and oneDNN's, which the model uses on x86 CPUs),
latency and RSS at frame 100 (or the first timed frame) versus the last one, and the time
of two other modes relative to the default:

* ``head2``: head 2 computed on every frame, as the official loop does (``provisional=True``);
* ``int8``: the reduced-precision CPU mode (int8 linear layers, bfloat16 head convolutions
  where the processor has native bfloat16; see :mod:`spann3r_model.backends.int8`).

Targets on a 2-core CPU: default >= 90% of the matmul peak, default <= 0.85x head2,
int8 <= 0.5x default. Example::

    .venv/bin/python benchmarks/model_speed.py --presets tiny released --frames 300 6
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Callable

import numpy as np
import torch
from torch.utils import flop_counter

from spann3r_model.backends.onednn_linear import (
    onednn_linear,
    onednn_linear_available,
    pack_onednn_weights,
)
from spann3r_model.backends.process import apply_process_settings
from spann3r_model.config import EngineConfig, MemoryConfig, ModelConfig
from spann3r_model.session import StreamingSession
from spann3r_model.spann3r import Spann3R


def rss_mib() -> float:
    """Resident set size of this process in MiB (Linux)."""
    with open('/proc/self/statm') as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf('SC_PAGE_SIZE') / 2**20


def sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def matmul_kernels(device: torch.device) -> dict[str, Callable]:
    """Return the fp32 GEMM routes the model can use on ``device``: ``a, w -> a @ w.T``.

    On an x86 CPU torch's default (MKL) and oneDNN are timed, oneDNN with plain and with
    packed weights: they differ by up to 2x on some processors, and the model uses packed
    oneDNN there, so the peak is the best of them.
    """
    kernels: dict[str, Callable] = {'torch.mm': lambda a, w: torch.mm(a, w.t())}
    if device.type == 'cpu' and onednn_linear_available():
        kernels['oneDNN'] = lambda a, w: onednn_linear(a, w, None)
        kernels['oneDNN packed'] = lambda a, w: onednn_linear(a, w, None, source=w)
    return kernels


def matmul_peak(device: torch.device, seconds: float = 2.0) -> tuple[float, float]:
    """Best fp32 GFLOP/s over every GEMM route, for a few shapes and for the model's own.

    :return: the best over all shapes (large squares included: the machine's peak) and the
        best over the shapes the model runs (196 tokens of one 224x224 image).
    """
    best, best_model = 0.0, 0.0
    shapes = ((196, 1024, 4096), (392, 1024, 3072), (1024, 1024, 1024), (2048, 2048, 2048))
    kernels = matmul_kernels(device)
    for m, k, n in shapes:
        a = torch.randn(m, k, device=device)
        w = torch.randn(n, k, device=device)
        if 'oneDNN packed' in kernels:
            pack_onednn_weights([w])
        for kernel in kernels.values():
            kernel(a, w)
            sync(device)
            reps, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds / (len(shapes) * len(kernels)):
                kernel(a, w)
                reps += 1
            sync(device)
            rate = 2 * m * k * n * reps / (time.perf_counter() - t0) / 1e9
            best = max(best, rate)
            if m == 196:
                best_model = max(best_model, rate)
    return best, best_model


def frames_for(n: int, size: int = 320) -> list[np.ndarray]:
    """Return frames of a camera panning over a random texture (uint8 RGB)."""
    rng = np.random.default_rng(0)
    canvas = (rng.random((size, size + 4 * n, 3)) * 255).astype(np.uint8)
    return [canvas[:, 4 * i:4 * i + size] for i in range(n)]


def make_session(model: Spann3R, device: str, precision: str = 'fp32',
                 provisional: bool = False) -> StreamingSession:
    """Build a session with the official memory settings and no pose estimation."""
    engine = EngineConfig(device=device, precision=precision)
    apply_process_settings(engine)
    return StreamingSession(model, MemoryConfig(), engine, provisional=provisional,
                            estimate_pose=False)


def timed_step(session: StreamingSession, rgb: np.ndarray, stamp: float) -> float:
    """Run one step and return its wall time in seconds."""
    sync(session.device)
    t0 = time.perf_counter()
    session.step(rgb, stamp)
    sync(session.device)
    return time.perf_counter() - t0


def _sdpa_cpu_flops(q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(q_shape, k_shape, v_shape)


def _onednn_linear_flops(x_shape, *args, out_shape=None, **kwargs) -> int:
    # Both overloads (plain and with a fused residual sum) and packed weights, whose layout
    # is opaque: the sizes come from the input and the output.
    return 2 * int(np.prod(x_shape[:-1])) * x_shape[-1] * out_shape[-1]


def _onednn_conv_flops(x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
    groups = args[4] if len(args) > 4 else 1
    return 2 * int(np.prod(out_shape)) * (x_shape[1] // groups) * w_shape[-2] * w_shape[-1]


def count_flops(session: StreamingSession, rgb: np.ndarray) -> float:
    """GFLOP of one steady-state step of ``session``."""
    # torch's table lacks the CPU flash-attention kernel (about 3% of a released frame) and
    # oneDNN's fused linear and convolution operators (the model's GEMMs and the heads'
    # convolutions on x86 CPUs), counted like addmm and convolution.
    extra = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flops}
    if onednn_linear_available():
        extra[torch.ops.mkldnn._linear_pointwise] = _onednn_linear_flops
        extra[torch.ops.mkldnn._convolution_pointwise] = _onednn_conv_flops
    with flop_counter.FlopCounterMode(display=False, custom_mapping=extra) as counter:
        session.step(rgb, 0.0)
    return counter.get_total_flops() / 1e9


def bench(preset: str, device: str, n_frames: int, int8: bool) -> None:
    """Measure one preset on one device and print the figures."""
    torch.manual_seed(0)
    model = Spann3R(ModelConfig.preset(preset)).eval()
    frames = frames_for(n_frames + 2)
    dev = torch.device(device)
    sessions = {'default': make_session(model, device),
                'head2': make_session(model, device, provisional=True)}
    if int8 and dev.type == 'cpu':
        sessions['int8'] = make_session(model, device, precision='int8')
    # The modes and the matmul peak are measured interleaved, frame by frame, so that changes
    # in machine load hit all of them alike.
    lat: dict[str, list[float]] = {name: [] for name in sessions}
    peaks, model_peaks, rss = [], [], []
    for i, rgb in enumerate(frames):
        peak_all, peak_model = matmul_peak(dev, seconds=0.4)
        peaks.append(peak_all)
        model_peaks.append(peak_model)
        for name, session in sessions.items():
            lat[name].append(timed_step(session, rgb, float(i)))
        rss.append(rss_mib())
    lat_arr = {name: np.array(v[2:]) for name, v in lat.items()}  # 2 warm-up frames
    gflop = count_flops(sessions['default'], frames[-1])
    gflop_h2 = count_flops(sessions['head2'], frames[-1])
    peak = float(np.median(peaks))
    d = lat_arr['default']
    p50, p90 = np.percentile(d, 50), np.percentile(d, 90)
    achieved = gflop / p50
    ref = min(98, len(d) - 1)  # frame 100 of the stream
    print(f'== {preset} on {device} ({torch.get_num_threads()} threads), {len(d)} timed '
          f'frames at 224x224, modes interleaved')
    routes = ' / '.join(matmul_kernels(dev))
    print(f'  fp32 matmul peak (median) {peak:9.1f} GFLOP/s (best of {routes}); at the '
          f"model's 196-row shapes {np.median(model_peaks):.1f}")
    print(f'  default  latency p50/p90  {p50 * 1e3:9.1f} / {p90 * 1e3:.1f} ms')
    print(f'  GFLOP per frame           {gflop:9.2f} (head 2 every frame: {gflop_h2:.2f})')
    # Paired per frame (peak sample and modes measured back to back), then the median: robust
    # to load that drifts over minutes.
    paired = np.median(gflop / d / np.array(peaks[2:]))
    print(f'  achieved                  {achieved:9.1f} GFLOP/s = {achieved / peak:.2f} of peak '
          f'(paired per frame: {paired:.2f}; of the 196-row peak: '
          f'{achieved / np.median(model_peaks):.2f})')
    print(f'  latency frame {ref + 3:4d} vs {len(d) + 2:4d}  {d[ref] * 1e3:9.1f} / '
          f'{d[-1] * 1e3:.1f} ms')
    print(f'  RSS     frame {ref + 3:4d} vs {len(d) + 2:4d}  {rss[ref + 2]:9.1f} / '
          f'{rss[-1]:.1f} MiB (all modes loaded)')
    h2 = np.percentile(lat_arr['head2'], 50)
    print(f'  head2-every-frame p50     {h2 * 1e3:9.1f} ms; default / head2 = {p50 / h2:.2f} '
          f'(paired: {np.median(d / lat_arr["head2"]):.2f})')
    if 'int8' in lat_arr:
        q = np.percentile(lat_arr['int8'], 50)
        print(f'  int8 p50                  {q * 1e3:9.1f} ms; int8 / default = {q / p50:.2f} '
              f'(paired: {np.median(lat_arr["int8"] / d):.2f}); int8 / head2 = {q / h2:.2f}')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--presets', nargs='+', default=['tiny', 'released'])
    parser.add_argument('--frames', nargs='+', type=int, default=[300, 6],
                        help='timed frames per preset (one value for all, or one per preset)')
    parser.add_argument('--threads', type=int, default=0, help='CPU threads (0: torch default)')
    parser.add_argument('--no-int8', action='store_true', help='skip the int8 mode')
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    counts = args.frames if len(args.frames) == len(args.presets) else \
        [args.frames[0]] * len(args.presets)
    devices = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])
    for device in devices:
        for preset, n in zip(args.presets, counts):
            bench(preset, device, n, not args.no_int8)


if __name__ == '__main__':
    main()
