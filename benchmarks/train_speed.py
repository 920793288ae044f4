"""Training speed of the ``tiny`` preset on CPU and data-loader throughput.

Writes a few synthetic ScanNet-layout scenes (textured planes, known cameras) to a temporary
folder, then measures:

* optimiser-step time and samples/s of the training forward + official loss + AdamW step,
* data-loader throughput (sequences/s) with 0 and N workers, at the model resolution.

Usage: ``python benchmarks/train_speed.py [--image-size 112] [--frames 5] [--batch 2]``
"""

from __future__ import annotations

import argparse
from pathlib import Path
import statistics
import tempfile
import time

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader

from spann3r_model.config import ModelConfig
from spann3r_model.spann3r import Spann3R
from training.datasets.scannet import ScanNetLayout
from training.losses import spann3r_loss
from training.model_setup import parameter_groups, TrainingForward
from training.train import split_views


def write_scene(root: Path, name: str, n_frames: int, width: int, height: int, seed: int
                ) -> None:
    """Write one synthetic scene: a camera sliding along a textured wall."""
    rng = np.random.default_rng(seed)
    base = root / 'scans' / name
    (base / 'sensor_data').mkdir(parents=True)
    (base / 'intrinsic').mkdir()
    K = np.array([[0.8 * width, 0, width / 2 - 0.5], [0, 0.8 * width, height / 2 - 0.5],
                  [0, 0, 1]])
    K4 = np.eye(4)
    K4[:3, :3] = K
    np.savetxt(base / 'intrinsic' / 'intrinsic_depth.txt', K4)
    texture = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    for i in range(n_frames):
        T = np.eye(4)
        T[0, 3] = 0.02 * i
        shift = int(i * 4)
        rgb = cv2.resize(np.roll(texture, -shift, axis=1), (width, height),
                         interpolation=cv2.INTER_NEAREST)
        depth = np.full((height, width), 2000, np.uint16)
        stem = base / 'sensor_data' / f'frame-{i:06d}'
        cv2.imwrite(f'{stem}.color.jpg', rgb)
        cv2.imwrite(f'{stem}.depth.png', depth)
        np.savetxt(f'{stem}.pose.txt', T)


def time_steps(dataset: ScanNetLayout, batch: int, steps: int) -> list[float]:
    """Return the wall time of ``steps`` optimiser steps (after one warm-up step)."""
    torch.manual_seed(0)
    model = Spann3R(ModelConfig.preset('tiny'))
    forward = TrainingForward(model, 0.15)
    optimizer = torch.optim.AdamW(parameter_groups(model, 0.05), lr=1e-4, betas=(0.9, 0.95))
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=0)
    batches = iter(loader)
    times = []
    for step in range(steps + 1):
        data = next(batches)
        start = time.perf_counter()
        imgs, views = split_views(data, torch.device('cpu'))
        loss = spann3r_loss(views, forward(imgs), 0.4)
        loss.total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step:
            times.append(time.perf_counter() - start)
    return times


def loader_throughput(dataset: ScanNetLayout, workers: int, samples: int) -> float:
    """Return sequences per second delivered by a DataLoader."""
    loader = DataLoader(dataset, batch_size=1, shuffle=False, num_workers=workers)
    start = time.perf_counter()
    count = 0
    for _ in loader:
        count += 1
        if count >= samples:
            break
    return count / (time.perf_counter() - start)


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--image-size', type=int, default=112)
    parser.add_argument('--frames', type=int, default=5)
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--steps', type=int, default=5)
    parser.add_argument('--workers', type=int, default=2)
    parser.add_argument('--loader-samples', type=int, default=24)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for s in range(2):
            write_scene(root, f'scene{s:04d}_00', 30, 640, 480, seed=s)
        dataset = ScanNetLayout(str(root), num_frames=args.frames, min_gap=1, max_gap=5,
                                image_size=args.image_size, sequences_per_scene=50)
        print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, tiny preset, '
              f'{args.frames} frames at {args.image_size}x{args.image_size}, batch {args.batch}')
        times = time_steps(dataset, args.batch, args.steps)
        median = statistics.median(times)
        print(f'train step: median {median:.3f} s (min {min(times):.3f}, max {max(times):.3f})'
              f', {args.batch / median:.2f} sequences/s, '
              f'{args.batch * args.frames / median:.1f} frames/s')
        for workers in sorted({0, args.workers}):
            rate = loader_throughput(dataset, workers, args.loader_samples)
            print(f'data loader ({workers} workers, 640x480 JPEG+PNG input): '
                  f'{rate:.1f} sequences/s, {rate * args.frames:.1f} frames/s')


if __name__ == '__main__':
    main()
