"""GPU check of the released Spann3R: accuracy against the CPU, reduced precision, speed, memory.

Builds the ``released`` architecture with seeded random weights (nothing is downloaded; speed
and memory do not depend on the weights' values) and runs :class:`StreamingSession` on
synthetic 224x224 frames of a moving texture. It reports:

1. fp32 on the GPU against fp32 on the CPU over the first frames; passes when the largest
   pointmap error relative to the pointmap's extent, and the largest relative confidence
   error, are at most 1e-3 (TF32 is off: fp32 means fp32);
2. the same errors of fp16 and bf16 (autocast) against GPU fp32;
3. frames per second of fp32, fp16 and bf16 over 200 frames after a warm-up (the paper: 65 FPS
   on an A100; the target: at least 60 FPS in bf16 on an H100-class GPU);
4. peak GPU memory over frames 50-100 and 150-200 of those runs, and whether it stays flat;
5. the node pipeline's frames per second with the released model over real rclpy
   (``benchmarks/ros_node_fps.py``), or N/A and why (no rclpy, say).

Run it through ``benchmarks/gpu_check.sh``. Exit status: 0 when every check passes, 1 when one
fails (the speed target counts on an H100-class GPU only), 2 when CUDA is not available.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path
import sys
import tempfile
import time
from typing import Any, Optional, Sequence

import cv2
import numpy as np
import torch

from spann3r_model.config import EngineConfig, ModelConfig
from spann3r_model.results import FrameResult
from spann3r_model.session import StreamingSession
from spann3r_model.spann3r import Spann3R

#: fp32 on the device against the CPU: largest relative error allowed.
FP32_TOLERANCE = 1e-3
#: bf16 frames per second the released model should reach on an H100-class GPU.
TARGET_BF16_FPS = 60.0
#: GPUs the speed target is stated for.
H100_CLASS = ('H100', 'H200', 'H800', 'GH200')
#: Peak memory of the later window may exceed the earlier one by this fraction (or 1 MiB).
FLAT_TOLERANCE = 0.01


def build_model(preset: str, seed: int = 0) -> Spann3R:
    """Build a preset architecture on the CPU with weights drawn from ``seed``.

    :param preset: a :data:`~spann3r_model.config.PRESETS` name.
    :param seed: torch seed of the initialisation.
    :return: the model in eval mode, float32.
    """
    torch.manual_seed(seed)
    return Spann3R(ModelConfig.preset(preset)).eval()


def make_frames(n: int, size: int = 224, seed: int = 0) -> list[np.ndarray]:
    """Frames of a camera panning over a smooth random texture.

    :param n: number of frames.
    :param size: side of the square ``[size, size, 3]`` uint8 frames.
    :param seed: texture seed.
    :return: the frames.
    """
    rng = np.random.default_rng(seed)
    side = 2 * size
    coarse = rng.integers(0, 256, (side // 8, side // 8, 3), dtype=np.uint8)
    texture = cv2.resize(coarse, (side, side), interpolation=cv2.INTER_CUBIC)
    frames = []
    for i in range(n):
        t = 2 * np.pi * i / max(n, 1)
        x = int((side - size) * (0.5 + 0.45 * np.cos(t)))
        y = int((side - size) * (0.5 + 0.45 * np.sin(2 * t)))
        frames.append(np.ascontiguousarray(texture[y:y + size, x:x + size]))
    return frames


def engine(device: str, precision: str, image_size: int = 224) -> EngineConfig:
    """Engine settings of the check: no process-wide CPU settings, no packed weights."""
    return EngineConfig(device=device, precision=precision, image_size=image_size,
                        pack_weights=False, keep_freed_memory=False)


def run_frames(session: StreamingSession, frames: Sequence[np.ndarray]
               ) -> tuple[list[FrameResult], list[bool]]:
    """Reconstruct ``frames`` from a reset session.

    :return: the refined results and the flushed last one, and per step whether the memory
        skipped the frame.
    """
    session.reset()
    results, skipped = [], []
    for i, rgb in enumerate(frames):
        out = session.step(rgb, float(i))
        if out.refined is not None:
            results.append(out.refined)
            skipped.append(out.memory.skipped)
    results.append(session.flush())
    return results, skipped


def output_error(ref: Sequence[FrameResult], got: Sequence[FrameResult]) -> dict[str, float]:
    """Largest differences of ``got`` from ``ref`` over all frames.

    :return: ``pts3d_abs`` (largest absolute pointmap error), ``pts3d_rel`` (that over the
        largest absolute coordinate of ``ref``), ``conf_rel`` (largest relative confidence
        error; confidences are >= 1) and ``nonfinite`` (non-finite values in ``got``).
    """
    if len(ref) != len(got):
        raise ValueError(f'{len(got)} results to compare with {len(ref)}')
    pts_abs, scale, conf_rel, nonfinite = 0.0, 0.0, 0.0, 0
    for a, b in zip(ref, got):
        nonfinite += int((~np.isfinite(b.pts3d)).sum() + (~np.isfinite(b.conf)).sum())
        pts_abs = max(pts_abs, float(np.nanmax(np.abs(a.pts3d - b.pts3d))))
        scale = max(scale, float(np.abs(a.pts3d).max()))
        conf_rel = max(conf_rel, float(np.nanmax(np.abs(a.conf - b.conf) / np.abs(a.conf))))
    return {'pts3d_abs': pts_abs, 'pts3d_rel': pts_abs / max(scale, 1e-12),
            'conf_rel': conf_rel, 'nonfinite': nonfinite}


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def memory_windows(n: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Frame windows whose peak memory is compared: frames 50-100 and 150-200 of 200."""
    return (n // 4, n // 2), (3 * n // 4, n)


def measure_speed(session: StreamingSession, frames: Sequence[np.ndarray], warmup: int = 10
                  ) -> dict[str, Any]:
    """Time ``session.step`` over ``frames`` after ``warmup`` untimed steps and a reset.

    Each step returns its results on the CPU, so its wall time is the frame's time.

    :return: ``fps``, latency ``p50_ms`` / ``p90_ms``, ``tokens`` and ``skipped`` frames of
        the memory, and on CUDA ``peak_mib`` of the two :func:`memory_windows` with ``flat``
        (None elsewhere).
    """
    device = session.device
    session.reset()
    for i in range(min(warmup, len(frames))):
        session.step(frames[i], float(i))
    session.reset()
    cuda = device.type == 'cuda'
    windows = memory_windows(len(frames))
    peaks: list[float] = []
    times, skipped = [], 0
    _sync(device)
    for i, rgb in enumerate(frames):
        if cuda and i in (w[0] for w in windows):
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        out = session.step(rgb, float(i))
        _sync(device)
        times.append(time.perf_counter() - t0)
        skipped += int(out.memory.skipped)
        if cuda and i + 1 in (w[1] for w in windows):
            peaks.append(torch.cuda.max_memory_allocated(device) / 2**20)
    session.flush()
    ms = 1000.0 * np.asarray(times)
    flat = None
    if len(peaks) == 2:
        flat = peaks[1] <= peaks[0] * (1 + FLAT_TOLERANCE) + 1.0
    return {'fps': len(times) / float(np.sum(times)), 'p50_ms': float(np.percentile(ms, 50)),
            'p90_ms': float(np.percentile(ms, 90)), 'tokens': session.memory_stats.tokens,
            'skipped': skipped, 'peak_mib': peaks or None, 'flat': flat}


def _load_sibling(name: str) -> Any:
    # The benchmarks are scripts, not a package: load a sibling by its path.
    path = Path(__file__).with_name(f'{name}.py')
    spec = importlib.util.spec_from_file_location(f'benchmarks_{name}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def node_pipeline(model: Spann3R, device: str, precision: str, image_size: int = 224,
                  seconds: float = 10.0) -> dict[str, Any]:
    """Frames per second of the live node with ``model`` over real rclpy, or why not.

    :return: the figures of ``ros_node_fps.node_fps``, or ``{'na': reason}`` when rclpy, the
        message packages or the node cannot be used here.
    """
    missing = [name for name in ('rclpy', 'sensor_msgs') if importlib.util.find_spec(name) is None]
    if missing:
        return {'na': f"{' and '.join(missing)} not installed here (no ROS 2 on this machine)"}
    from spann3r_model.checkpoint_safetensors import save_safetensors
    with tempfile.TemporaryDirectory(prefix='spann3r_gpu_check_') as tmp:
        checkpoint = str(Path(tmp) / 'weights.safetensors')
        # The node loads its own copy: this one leaves the device.
        save_safetensors(model.cpu(), model.config, checkpoint)
        try:
            return _load_sibling('ros_node_fps').node_fps(
                checkpoint, device, precision, image_size=image_size, seconds=seconds)
        except (ImportError, RuntimeError) as exc:
            return {'na': f'the node did not run: {exc}'}


def run_check(device: str = 'cuda', preset: str = 'released', frames: int = 200,
              compare_frames: int = 4, precisions: Sequence[str] = ('fp32', 'fp16', 'bf16'),
              image_size: int = 224, seed: int = 0, node_precision: Optional[str] = 'bf16',
              node_seconds: float = 10.0) -> dict[str, Any]:
    """Run every part of the check and return the figures (see :func:`format_report`).

    :param device: device under test (``cuda``; ``cpu`` exercises the same code without a GPU).
    :param preset: model architecture.
    :param frames: frames of each speed run.
    :param compare_frames: frames of the accuracy comparisons.
    :param precisions: precisions to compare and time; ``fp32`` must be among them.
    :param image_size: model resolution (and frame size).
    :param seed: weight and texture seed.
    :param node_precision: precision of the node run; None leaves the node out.
    :param node_seconds: measured window of the node run.
    """
    if 'fp32' not in precisions:
        raise ValueError('precisions must include fp32, the reference of the others')
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        return _run_check(torch.device(device), preset, frames, compare_frames, precisions,
                          image_size, seed, node_precision, node_seconds)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32


def _run_check(dev: torch.device, preset: str, frames: int, compare_frames: int,
               precisions: Sequence[str], image_size: int, seed: int,
               node_precision: Optional[str], node_seconds: float) -> dict[str, Any]:
    device = str(dev)
    model = build_model(preset, seed)
    clip = make_frames(compare_frames, image_size, seed)
    # The CPU reference first: the sessions below move the model to the device.
    cpu_ref, cpu_skips = run_frames(
        StreamingSession(model, engine_config=engine('cpu', 'fp32', image_size),
                         estimate_pose=False), clip)
    report: dict[str, Any] = {
        'device': torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'cpu',
        'preset': preset, 'image_size': image_size, 'frames': frames,
        'torch': torch.__version__, 'errors': {}, 'speed': {}}
    sequence = make_frames(frames, image_size, seed + 1)
    device_ref = None
    for precision in precisions:
        session = StreamingSession(model, engine_config=engine(device, precision, image_size),
                                   estimate_pose=False)
        results, skips = run_frames(session, clip)
        if precision == 'fp32':
            device_ref = results
            err = output_error(cpu_ref, results)
            err['reference'] = 'cpu fp32'
            err['same_skips'] = skips == cpu_skips
            err['pass'] = bool(err['pts3d_rel'] <= FP32_TOLERANCE
                               and err['conf_rel'] <= FP32_TOLERANCE
                               and err['nonfinite'] == 0 and err['same_skips'])
            report['errors'][precision] = err
        else:
            report['errors'][precision] = {'reference': f'{device} fp32', 'results': results}
        report['speed'][precision] = measure_speed(session, sequence)
        del session
        if dev.type == 'cuda':
            torch.cuda.empty_cache()
    for precision, err in report['errors'].items():
        if 'results' in err:
            results = err.pop('results')
            err.update(output_error(device_ref, results))
            err['pass'] = err['nonfinite'] == 0
    report['node'] = None
    if node_precision is not None:
        report['node'] = node_pipeline(model, device, node_precision, image_size,
                                       node_seconds)
        report['node']['precision'] = node_precision
    report['checks'] = checks(report)
    return report


def checks(report: dict[str, Any]) -> dict[str, bool]:
    """Pass or fail of each check in ``report`` (the speed target on H100-class GPUs only)."""
    out = {f'{p} accuracy': bool(e['pass']) for p, e in report['errors'].items()}
    flats = [s['flat'] for s in report['speed'].values() if s['flat'] is not None]
    if flats:
        out['memory flat'] = all(flats)
    bf16 = report['speed'].get('bf16')
    if bf16 is not None and any(name in report['device'] for name in H100_CLASS):
        out[f'bf16 >= {TARGET_BF16_FPS:.0f} FPS'] = bf16['fps'] >= TARGET_BF16_FPS
    return out


def format_report(report: dict[str, Any]) -> str:
    """Return the report as lines of text."""
    lines = [f"Spann3R GPU check: {report['preset']} model, random weights, "
             f"{report['image_size']}x{report['image_size']}, device {report['device']}, "
             f"torch {report['torch']}"]
    lines.append('accuracy (largest pointmap error relative to its extent; largest relative '
                 'confidence error):')
    for precision, err in report['errors'].items():
        extra = '' if 'same_skips' not in err else \
            f", same memory skips {'yes' if err['same_skips'] else 'NO'}"
        lines.append(f"  {precision:5s} vs {err['reference']:9s} pts3d {err['pts3d_rel']:.2e} "
                     f"(abs {err['pts3d_abs']:.2e})  conf {err['conf_rel']:.2e}  non-finite "
                     f"{err['nonfinite']}{extra}  {'PASS' if err['pass'] else 'FAIL'}")
    lines.append(f"speed over {report['frames']} frames (paper: 65 FPS on an A100; target: "
                 f'>= {TARGET_BF16_FPS:.0f} FPS bf16 on an H100-class GPU):')
    w1, w2 = memory_windows(report['frames'])
    for precision, s in report['speed'].items():
        memory = 'peak memory n/a (not CUDA)'
        if s['peak_mib'] is not None:
            memory = (f"peak {s['peak_mib'][0]:.0f} MiB (frames {w1[0]}-{w1[1]}) vs "
                      f"{s['peak_mib'][1]:.0f} MiB ({w2[0]}-{w2[1]}): "
                      f"{'flat' if s['flat'] else 'GROWS'}")
        lines.append(f"  {precision:5s} {s['fps']:7.1f} FPS  p50 {s['p50_ms']:.2f} ms  "
                     f"p90 {s['p90_ms']:.2f} ms  memory tokens {s['tokens']}, "
                     f"{s['skipped']} frames skipped  {memory}")
    node = report.get('node')
    if node is None:
        lines.append('node pipeline: not run')
    elif 'na' in node:
        lines.append(f"node pipeline ({node['precision']}): N/A: {node['na']}")
    else:
        lines.append(f"node pipeline ({node['precision']}): {node['fps']:.1f} FPS "
                     f"({node['clouds']} clouds in {node['window_s']:.0f} s over real rclpy)")
    failed = [name for name, ok in report['checks'].items() if not ok]
    lines.append('result: ' + ('PASS' if not failed else 'FAIL: ' + ', '.join(failed))
                 + f" ({len(report['checks'])} checks)")
    return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; see the module docstring for the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', default='cuda', help='cuda or cuda:N')
    parser.add_argument('--preset', default='released')
    parser.add_argument('--frames', type=int, default=200)
    parser.add_argument('--node-seconds', type=float, default=10.0)
    parser.add_argument('--no-node', action='store_true', help='leave the node run out')
    parser.add_argument('--json', type=Path, help='also write the figures here')
    args = parser.parse_args(argv)
    if not args.device.startswith('cuda'):
        parser.error('--device must be cuda or cuda:N (the CPU path is for the tests)')
    if not torch.cuda.is_available():
        print('gpu_check: CUDA is not available here; this check needs an NVIDIA GPU',
              file=sys.stderr)
        return 2
    report = run_check(args.device, args.preset, args.frames,
                       node_precision=None if args.no_node else 'bf16',
                       node_seconds=args.node_seconds)
    print(format_report(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + '\n')
    return 0 if all(report['checks'].values()) else 1


if __name__ == '__main__':
    sys.exit(main())
