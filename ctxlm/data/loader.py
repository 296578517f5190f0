"""Micro-batches prepared ahead of the model: a `torch.utils.data.DataLoader` over the pure
micro-batch function of `training.BatchStream`.

Item `g` of `MicroBatches` is micro-batch `g` of the run (a pure function of the seed and g), so
the loader's worker processes, prefetching and pinned memory change when a batch is built, never
what it holds: a run resumed at micro-batch g reads exactly what the uninterrupted run read, at
any number of ranks (rank r of W reads g ≡ r mod W).
"""

from __future__ import annotations

import os

import torch
from torch.utils.data import DataLoader, Dataset


class MicroBatches(Dataset):
    """Micro-batch `g` → (epoch, collated tensors) of a `BatchStream`."""

    def __init__(self, stream, pad_id: int):
        self.stream, self.pad_id = stream, pad_id

    def __getitem__(self, micro_batch: int):
        return self.stream.batch(micro_batch, self.pad_id)


def rank_micro_batches(start: int, stop: int, rank: int, world: int) -> range:
    """The micro-batches in [start, stop) that `rank` of `world` reads: every world-th, from its own."""
    return range(start + rank, stop, world)


def default_workers(device: torch.device) -> int:
    """Worker processes: a few on a GPU (the host must keep ahead of it), none on the CPU (the
    model already uses every core there)."""
    return min(4, os.cpu_count() or 1) if device.type == "cuda" else 0


def micro_batch_loader(
    stream, pad_id: int, micro_batches: range, device: torch.device, workers: int | None = None, prefetch: int = 4
) -> DataLoader:
    """The given micro-batches, in order, built by `workers` processes (None: see
    `default_workers`) up to `prefetch` batches per worker ahead, in pinned memory on CUDA."""
    workers = default_workers(device) if workers is None else workers
    return DataLoader(
        MicroBatches(stream, pad_id),
        batch_size=None,  # every item already is a batch
        sampler=micro_batches,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=prefetch if workers > 0 else None,
        persistent_workers=False,
    )
