"""Datasets on disk: compact ``.npz`` shards that stream a cohort one shard at a time.

``ShardDataset`` (torch) is imported on first use, so writing shards stays torch-free.
"""

from typing import Any

from .shards import INDEX_NAME, ShardWriter, iter_shards, read_shard_index, write_shard, write_shard_index

__all__ = ["INDEX_NAME", "ShardDataset", "ShardWriter", "iter_shards", "read_shard_index", "write_shard", "write_shard_index"]


def __getattr__(name: str) -> Any:
    if name == "ShardDataset":
        from .stream import ShardDataset

        return ShardDataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
