"""A weighted mix of datasets with a fixed number of samples per epoch each, and its sampler.

``MixedDataset([(scannet, 10000), (arkit, 10000)])`` is the official ``10000 @ A + 10000 @ B``
without string evaluation: every epoch each part contributes exactly its number of samples,
drawn as a fresh permutation of the part (repeated when the part is smaller), seeded by
``(seed, epoch)``.

:class:`EpochBatchSampler` splits every *global* batch (``batch_size * world_size`` samples)
among the ranks, so one process with the global batch sees the same samples in the same order
as N processes together; it can skip the batches already consumed when a run resumes mid-epoch.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
from torch.utils.data import Dataset, Sampler

from training.datasets.base import SequenceDataset


class MixedDataset(Dataset):
    """Concatenation of re-sampled parts.

    :param parts: ``(dataset, samples_per_epoch)`` pairs.
    :param seed: base of the per-epoch permutations.
    """

    def __init__(self, parts: Sequence[tuple[SequenceDataset, int]], seed: int = 0) -> None:
        if not parts:
            raise ValueError('a dataset mix needs at least one part')
        for dataset, count in parts:
            if count < 1:
                raise ValueError(f'{dataset.name}: samples_per_epoch must be >= 1, got {count}')
            if len(dataset) == 0:
                raise ValueError(f'{dataset.name}: the dataset is empty')
        self.parts = list(parts)
        self.seed = seed
        self.epoch = 0
        self._offsets = np.cumsum([0] + [count for _, count in self.parts])
        self._index: list[np.ndarray] = []
        self.set_epoch(0, 0.0)

    def set_epoch(self, epoch: int, ratio: float) -> None:
        """Draw this epoch's samples of every part and pass the curriculum ratio on."""
        self.epoch = int(epoch)
        self._index = []
        for k, (dataset, count) in enumerate(self.parts):
            dataset.set_epoch(epoch, ratio)
            rng = np.random.default_rng((self.seed, self.epoch, k))
            reps = -(-count // len(dataset))
            order = np.concatenate([rng.permutation(len(dataset)) for _ in range(reps)])
            self._index.append(order[:count])

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def __getitem__(self, index: int):
        """Return sample ``index`` of the current epoch."""
        if not 0 <= index < len(self):
            raise IndexError(f'index {index} out of range [0, {len(self)})')
        part = int(np.searchsorted(self._offsets, index, side='right')) - 1
        dataset, _ = self.parts[part]
        return dataset[int(self._index[part][index - self._offsets[part]])]


class EpochBatchSampler(Sampler):
    """Per-rank batches of a seeded, per-epoch shuffled order; drops the last partial batch.

    :param length: dataset length.
    :param batch_size: samples per process and step.
    :param rank: this process's rank.
    :param world_size: number of processes.
    :param seed: base of the shuffle.
    :param shuffle: shuffle every epoch (else keep the dataset order).
    """

    def __init__(self, length: int, batch_size: int, *, rank: int = 0, world_size: int = 1,
                 seed: int = 0, shuffle: bool = True) -> None:
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f'bad sampler settings: batch_size={batch_size}, rank={rank}, '
                             f'world_size={world_size}')
        self.length = length
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.skip = 0
        if len(self) == 0:
            raise ValueError(f'{length} samples per epoch do not fill one global batch of '
                             f'{batch_size * world_size}')

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        """Select the epoch's order and how many leading batches to skip (resume)."""
        self.epoch = int(epoch)
        self.skip = int(skip_batches)

    def __len__(self) -> int:
        return self.length // (self.batch_size * self.world_size)

    def __iter__(self) -> Iterator[list[int]]:
        """Yield this rank's share of every remaining global batch."""
        if self.shuffle:
            order = np.random.default_rng((self.seed, self.epoch)).permutation(self.length)
        else:
            order = np.arange(self.length)
        global_batch = self.batch_size * self.world_size
        for b in range(self.skip, len(self)):
            start = b * global_batch + self.rank * self.batch_size
            yield [int(i) for i in order[start:start + self.batch_size]]
