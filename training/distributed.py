"""Process-group setup under ``torchrun`` (NCCL on GPUs, gloo on CPU) and rank helpers."""

from __future__ import annotations

from dataclasses import dataclass
import os

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits.

    :param rank: global rank.
    :param world_size: number of processes.
    :param local_rank: rank on this node (selects the GPU).
    :param device: the device this process trains on.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """True on the rank that logs and saves."""
        return self.rank == 0


def setup(device: str = 'auto') -> DistInfo:
    """Initialise the process group when launched by ``torchrun``; a no-op otherwise.

    :param device: ``auto``, ``cpu`` or ``cuda``.
    :raises ValueError: if CUDA is requested but absent.
    """
    use_cuda = torch.cuda.is_available() if device == 'auto' else device == 'cuda'
    if use_cuda and not torch.cuda.is_available():
        raise ValueError('run.device=cuda but no CUDA device is available')
    world_size = int(os.environ.get('WORLD_SIZE', '1'))
    rank = int(os.environ.get('RANK', '0'))
    local_rank = int(os.environ.get('LOCAL_RANK', '0'))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device('cuda', local_rank)
    else:
        dev = torch.device('cpu')
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend='nccl' if use_cuda else 'gloo')
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def mean_over_ranks(value: float, device: torch.device) -> float:
    """Average a scalar over ranks (the value itself without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t) / dist.get_world_size()


def teardown() -> None:
    """Destroy the process group if one was created."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
