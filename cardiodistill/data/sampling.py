"""Map-style datasets over in-memory or cached ECG windows, and a sampler that resumes mid-epoch.

:class:`ResumableSampler` is what makes a resumed training run *exactly* the run that was
interrupted: the order of epoch ``e`` is a permutation drawn from ``(seed, e)`` alone, every
rank takes an equal-length strided share of it (like ``DistributedSampler`` with
``drop_last=True``), and :meth:`ResumableSampler.resume_at` tells it how many optimizer steps
were already done, so the first epoch after a restart skips exactly the batches consumed before
the checkpoint. The trainer calls :meth:`~ResumableSampler.set_epoch` at the start of every epoch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

__all__ = ["ArrayDataset", "CachedWindowDataset", "ResumableSampler"]


class CachedWindowDataset(Dataset):
    """Windows of a :class:`~cardiodistill.data.ecg_windows.WindowCache`, optionally a subset:
    items are ``{"x": float32 [12, S], "present": bool [12]}``."""

    def __init__(self, cache, indices: Sequence[int] | np.ndarray | None = None):
        self.cache = cache
        self.indices = np.arange(len(cache)) if indices is None else np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        x, present = self.cache[int(self.indices[i])]
        return {"x": torch.from_numpy(x), "present": torch.from_numpy(np.asarray(present, dtype=bool))}


class ArrayDataset(Dataset):
    """Named arrays with a shared first axis (``x``, ``present``, ``y`` ...) as a dataset of dicts."""

    def __init__(self, **arrays: np.ndarray | torch.Tensor):
        lengths = {len(a) for a in arrays.values()}
        if len(lengths) != 1:
            raise ValueError(f"arrays differ in length: { {k: len(a) for k, a in arrays.items()} }")
        self.arrays = {k: torch.as_tensor(np.asarray(a) if not isinstance(a, torch.Tensor) else a)
                       for k, a in arrays.items()}
        self.n = lengths.pop()

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: a[i] for k, a in self.arrays.items()}


class ResumableSampler(Sampler[int]):
    """Seeded, rank-sharded, resumable sample order (module doc).

    ``n``: dataset length; ``batch_size``: per-rank batch size, so that a resume position given
    in optimizer steps can be turned into samples; each rank gets ``n // world`` samples per epoch
    (the same count on every rank, so DDP ranks never wait on each other).
    """

    def __init__(
        self, n: int, batch_size: int, *, seed: int = 0, shuffle: bool = True, rank: int = 0, world: int = 1,
        accumulate: int = 1,
    ):
        if n < world:
            raise ValueError(f"{n} samples cannot be shared by {world} ranks")
        self.n, self.batch_size, self.seed, self.shuffle = n, batch_size, seed, shuffle
        self.rank, self.world, self.accumulate = rank, world, accumulate
        self.epoch = 0
        self._resume_step: int | None = None

    @property
    def per_rank(self) -> int:
        return self.n // self.world

    @property
    def steps_per_epoch(self) -> int:
        """Full optimizer steps per epoch (batches are ``drop_last``; steps take ``accumulate`` batches)."""
        return self.per_rank // self.batch_size // self.accumulate

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def resume_at(self, global_step: int) -> None:
        """Skip, in the epoch the run resumes in, the batches of the ``global_step`` steps done."""
        self._resume_step = int(global_step)

    def __len__(self) -> int:
        return self.per_rank

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        else:
            order = np.arange(self.n)
        mine = order[self.rank :: self.world][: self.per_rank]
        if self._resume_step is not None:
            done_in_epoch = self._resume_step - self.epoch * self.steps_per_epoch
            self._resume_step = None
            if done_in_epoch > 0:
                mine = mine[done_in_epoch * self.accumulate * self.batch_size :]
        return iter(mine.tolist())
