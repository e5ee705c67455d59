"""PyTorch streaming over a shard folder (:mod:`cardiodistill.data.shards`).

Kept apart from the shard reader and writer so that writing shards (the simulator's workers) does
not import torch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from .shards import _check_keys, _iter_entries, read_shard_index

__all__ = ["ShardDataset"]


def _distributed_rank_and_size() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class ShardDataset(IterableDataset):
    """A ``torch.utils.data.IterableDataset`` over a shard folder.

    Whole shards are dealt round-robin to the ``world_size * num_workers`` consumers (the
    distributed rank and DataLoader worker of the current process), so each study is read by
    exactly one of them per epoch and each process holds at most one shard. With
    ``shuffle=True`` shard order and study order within each shard are permuted from
    ``(seed, epoch)``, independently of the number of workers; call :meth:`set_epoch` each
    epoch, as with ``DistributedSampler``. Ranks may receive different numbers of studies when
    shards do not divide evenly (drop or pad batches accordingly under DDP).
    """

    def __init__(
        self,
        folder: str | PathLike[str],
        keys: Sequence[str] | None = None,
        *,
        shuffle: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.folder = Path(folder)
        self.entries: list[dict[str, Any]] = read_shard_index(self.folder)["shards"]
        if self.entries:
            _check_keys(self.entries[0], keys, self.folder)
        self.keys = None if keys is None else list(keys)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.epoch = 0

    @property
    def n_studies(self) -> int:
        """Studies in the whole folder (all ranks together)."""
        return sum(int(e["n_studies"]) for e in self.entries)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _my_entries(self) -> list[tuple[int, dict[str, Any]]]:
        """The (number, entry) shards of this rank and worker, in this epoch's order."""
        worker = get_worker_info()
        worker_id, n_workers = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        rank, world = _distributed_rank_and_size()
        order = np.arange(len(self.entries))
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(order)
        mine = order[rank * n_workers + worker_id :: world * n_workers]
        return [(int(k), self.entries[int(k)]) for k in mine]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        seed = (self.seed, self.epoch) if self.shuffle else None
        return _iter_entries(self.folder, self._my_entries(), self.keys, seed)
