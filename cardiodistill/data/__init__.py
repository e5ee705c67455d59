"""Datasets on disk: compact ``.npz`` shards that stream a cohort one shard at a time."""

from .shards import INDEX_NAME, ShardDataset, ShardWriter, iter_shards, read_shard_index, write_shard, write_shard_index

__all__ = ["INDEX_NAME", "ShardDataset", "ShardWriter", "iter_shards", "read_shard_index", "write_shard", "write_shard_index"]
