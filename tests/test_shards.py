"""Streaming shards: layout on disk, ordered round trip, one-shard-at-a-time loading, exact-once
delivery across DataLoader workers and ranks, resumable writing, one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import cardiodistill.data.shards as shards
import cardiodistill.data.stream as stream
from cardiodistill.data import ShardDataset, ShardWriter, iter_shards, read_shard_index
from cardiodistill.errors import DataError
from cardiodistill.privacy import pseudonym


def _study(i: int) -> dict:
    """Study ``i``: fixed-shape arrays and scalars (stacked) and a variable-length clip (ragged)."""
    rng = np.random.default_rng(i)
    return {
        "ecg": rng.normal(size=(12, 50)).astype(np.float32),
        "clip": rng.integers(0, 256, size=(3 + i % 3, 8, 8), dtype=np.uint8),
        "patient_id": f"P{i:04d}",
        "age": 40.0 + i,
        "label": np.int64(i % 2),
    }


def _stored(i: int) -> dict:
    """Study ``i`` as a shard gives it back: its patient_id as the id's pseudonym."""
    return {**_study(i), "patient_id": pseudonym(f"P{i:04d}")}


def _ids(n: int = 10) -> list[str]:
    """The stored patient ids of studies ``0..n-1``, in writing order."""
    return [_stored(i)["patient_id"] for i in range(n)]


def _write(folder, n: int, shard_size: int = 4, **kwargs) -> None:
    with ShardWriter(folder, shard_size, **kwargs) as writer:
        for i in range(n):
            writer.add(_study(i))


def _assert_same(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for key, value in want.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)


def test_ten_studies_make_three_shards_and_come_back_in_order(tmp_path):
    _write(tmp_path, 10)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["shard-00000.npz", "shard-00001.npz", "shard-00002.npz", "shards.json"]
    index = read_shard_index(tmp_path)
    assert [e["n_studies"] for e in index["shards"]] == [4, 4, 2]
    keys = index["shards"][0]["keys"]
    assert keys["ecg"] == {"stacked": True, "dtype": "<f4", "shape": [12, 50]}
    assert keys["patient_id"]["stacked"] and keys["patient_id"]["dtype"].startswith("<U")
    assert keys["clip"]["stacked"] is False and keys["clip"]["shapes"][:2] == [[3, 8, 8], [4, 8, 8]]
    with np.load(tmp_path / "shard-00000.npz") as z:  # stacked along a new first axis
        assert z["ecg"].shape == (4, 12, 50) and "clip.3" in z.files

    studies = list(iter_shards(tmp_path))
    assert len(studies) == 10
    for i, got in enumerate(studies):
        _assert_same(got, _stored(i))
        assert type(got["patient_id"]) is str and got["ecg"].dtype == np.float32
        assert got["clip"].dtype == np.uint8 and got["age"] == 40.0 + i

    only_ids = list(iter_shards(tmp_path, keys=["patient_id"]))
    assert [s["patient_id"] for s in only_ids] == _ids()
    assert all(s.keys() == {"patient_id"} for s in only_ids)


def test_iteration_holds_one_shard_at_a_time(tmp_path, monkeypatch):
    _write(tmp_path, 10)
    loads: list[tuple[str, tuple[str, ...]]] = []
    real_load = shards._load_shard

    def spy(path, entry, keys):
        loads.append((path.name, tuple(keys)))
        return real_load(path, entry, keys)

    monkeypatch.setattr(shards, "_load_shard", spy)
    seen_after_each_study = [len(loads) for _ in iter_shards(tmp_path, keys=["ecg"])]
    # Shard k is read only when its first study is needed: lazily, one at a time, each once.
    assert seen_after_each_study == [1, 1, 1, 1, 2, 2, 2, 2, 3, 3]
    assert loads == [(f"shard-0000{k}.npz", ("ecg",)) for k in range(3)]  # only the asked key


def test_dataloader_with_two_workers_sees_each_study_once(tmp_path):
    _write(tmp_path, 10)
    dataset = ShardDataset(tmp_path, keys=["patient_id", "ecg"])
    assert dataset.n_studies == 10
    loader = DataLoader(dataset, batch_size=3, num_workers=2)
    ids, ecg_sum = [], 0.0
    for batch in loader:
        assert isinstance(batch["ecg"], torch.Tensor) and batch["ecg"].shape[1:] == (12, 50)
        ids += batch["patient_id"]
        ecg_sum += float(batch["ecg"].double().sum())
    assert sorted(ids) == sorted(_ids())  # exactly once each
    assert ecg_sum == pytest.approx(sum(float(_study(i)["ecg"].astype(np.float64).sum()) for i in range(10)))


def test_distributed_ranks_split_shards_disjointly(tmp_path, monkeypatch):
    _write(tmp_path, 10, shard_size=2)  # 5 shards over 2 ranks: 3 + 2
    per_rank = []
    for rank in range(2):
        monkeypatch.setattr(stream, "_distributed_rank_and_size", lambda rank=rank: (rank, 2))
        per_rank.append([s["patient_id"] for s in ShardDataset(tmp_path, keys=["patient_id"])])
    assert [len(ids) for ids in per_rank] == [6, 4]
    assert not set(per_rank[0]) & set(per_rank[1])
    assert sorted(per_rank[0] + per_rank[1]) == sorted(_ids())


def test_shuffle_is_a_permutation_fixed_by_seed_and_epoch(tmp_path):
    _write(tmp_path, 10, shard_size=3)
    dataset = ShardDataset(tmp_path, keys=["patient_id"], shuffle=True, seed=7)
    epoch0 = [s["patient_id"] for s in dataset]
    assert [s["patient_id"] for s in dataset] == epoch0  # deterministic
    dataset.set_epoch(1)
    epoch1 = [s["patient_id"] for s in dataset]
    assert sorted(epoch0) == sorted(epoch1) == sorted(_ids())
    assert epoch0 != epoch1 and epoch0 != _ids()
    # The order depends on (seed, epoch) only, not on how many workers read it.
    dataset.set_epoch(0)
    two_workers = [s["patient_id"] for s in DataLoader(dataset, batch_size=None, num_workers=2)]
    assert sorted(two_workers) == sorted(epoch0)


def test_resume_continues_numbering_after_a_crash(tmp_path):
    with pytest.raises(RuntimeError, match="killed"):
        with ShardWriter(tmp_path, 4) as writer:
            for i in range(10):
                if i == 9:
                    raise RuntimeError("killed")
                writer.add(_study(i))
    index = read_shard_index(tmp_path)
    assert [e["file"] for e in index["shards"]] == ["shard-00000.npz", "shard-00001.npz"]  # partial dropped

    done = sum(e["n_studies"] for e in index["shards"])
    with ShardWriter(tmp_path, 4, start_index=len(index["shards"])) as writer:
        assert writer.next_index == 2
        for i in range(done, 10):
            writer.add(_study(i))
    assert [e["n_studies"] for e in read_shard_index(tmp_path)["shards"]] == [4, 4, 2]
    for i, got in enumerate(iter_shards(tmp_path)):
        _assert_same(got, _stored(i))  # the resumed writer gives the same pseudonyms

    with pytest.raises(DataError, match=r"start_index=5: the index lacks shard-00003\.npz"):
        ShardWriter(tmp_path, 4, start_index=5)
    _write(tmp_path, 3, start_index=0)  # a fresh run replaces the listing instead of mixing with it
    assert [e["n_studies"] for e in read_shard_index(tmp_path)["shards"]] == [3]


def test_writer_rejects_inconsistent_or_unsupported_studies(tmp_path):
    with ShardWriter(tmp_path, 4) as writer:
        writer.add(_study(0))
        with pytest.raises(DataError, match=r"missing \['label'\], extra \['sex'\]"):
            writer.add({**{k: v for k, v in _study(1).items() if k != "label"}, "sex": "F"})
        with pytest.raises(DataError, match="unsupported type object"):
            writer.add({**_study(1), "age": {"not": "an array"}})
        with pytest.raises(DataError, match="study keys may only contain"):
            writer.add({"a.b": 1})
    with pytest.raises(DataError, match="shard_size must be at least 1"):
        ShardWriter(tmp_path / "x", 0)


def test_reader_errors_name_the_file(tmp_path):
    with pytest.raises(DataError) as info:
        list(iter_shards(tmp_path))
    assert str(tmp_path / "shards.json") in str(info.value) and "no shard index" in str(info.value)

    _write(tmp_path, 10)
    (tmp_path / "shard-00001.npz").write_bytes(b"\x00" * 100)  # corrupt the middle shard
    stream = iter_shards(tmp_path)
    assert [next(stream) for _ in range(4)]  # shard 0 still streams
    with pytest.raises(DataError) as info:
        next(stream)
    message = str(info.value)
    assert message.startswith(str(tmp_path / "shard-00001.npz")) and "corrupt shard" in message
    assert "\n" not in message

    fresh = tmp_path / "fresh"
    _write(fresh, 10)
    (fresh / "shard-00002.npz").unlink()
    with pytest.raises(DataError, match=r"shard-00002\.npz: shard listed in shards\.json is missing"):
        list(iter_shards(fresh, keys=["age"]))
    with pytest.raises(DataError, match=r"unknown key\(s\) \['sex'\]"):
        next(iter_shards(tmp_path, keys=["sex"]))
    (tmp_path / "shards.json").write_text(json.dumps({"shards": []}))
    with pytest.raises(DataError, match="not a cardiodistill-shards index"):
        read_shard_index(tmp_path)


def test_identifiers_are_pseudonyms_unless_real_ids_are_asked_for(tmp_path, monkeypatch):
    study = {"patient_id": "MRN12345", "record": np.int64(4711), "mrn": "MRN999", "age": 50.0}

    def written(folder, **kwargs) -> dict:
        with ShardWriter(folder, 4, **kwargs) as writer:
            writer.add(study)
        (got,) = iter_shards(folder)
        return got

    got = written(tmp_path / "default")
    assert got["patient_id"] == pseudonym("MRN12345") and got["record"] == pseudonym("4711")
    assert got["mrn"] == "MRN999" and got["age"] == 50.0  # not an id key: stored as given
    assert b"MRN12345" not in (tmp_path / "default" / "shard-00000.npz").read_bytes()
    assert written(tmp_path / "keys", id_keys=("mrn",))["mrn"] == pseudonym("MRN999")
    real = written(tmp_path / "real", real_ids=True)
    assert real["patient_id"] == "MRN12345" and real["record"] == 4711
    monkeypatch.setenv("CARDIODISTILL_REAL_IDS", "1")
    assert written(tmp_path / "env")["patient_id"] == "MRN12345"
