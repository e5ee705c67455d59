"""The streaming format (LitData): the same items as the cache, shuffling, mid-epoch resume, rank shares, S3."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cardiodistill.data.paired import PairedDataset, PairedSpec, build_paired_cache
from cardiodistill.data.streaming import META_NAME, StudyStream, read_stream_meta, stream_loader, write_stream
from cardiodistill.errors import DataError


@pytest.fixture(scope="module")
def cache(small_cohort, tmp_path_factory):
    return build_paired_cache(small_cohort, tmp_path_factory.mktemp("paired") / "cache", PairedSpec())


@pytest.fixture(scope="module")
def stream(cache, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("streams") / "cohort"
    write_stream(cache, out, chunk_bytes="200kB")  # small chunks: several per split, as at scale
    return out


def _rows(cache, split: str) -> np.ndarray:
    return np.flatnonzero(cache.table["split"].astype(str).to_numpy() == split)


def _equal(a, b) -> bool:
    if isinstance(a, str):
        return a == b
    return torch.equal(a, b) or (a.dtype.is_floating_point and torch.allclose(a, b, equal_nan=True))


def test_a_stream_serves_the_caches_items(cache, stream):
    meta = read_stream_meta(stream)
    assert meta["splits"] == {s: len(_rows(cache, s)) for s in ("train", "val", "test")}
    assert len(list((stream / "train").glob("chunk-*.bin"))) > 1
    for split in ("train", "test"):
        rows = _rows(cache, split)
        cached = PairedDataset(cache, rows, modalities=("ecg", "echo", "note"))
        streamed = StudyStream(stream, split, modalities=("ecg", "echo", "note"))
        assert len(streamed) == len(rows)
        for i in range(len(rows)):
            got, want = streamed[i], cached[i]
            assert set(got) == set(want) | {"split_bucket"}
            assert all(_equal(got[k], want[k]) for k in want), [k for k in want if not _equal(got[k], want[k])]
            assert not got["has_mobile"] and got["has_ecg"]  # modalities not asked for read as absent
            assert int(got["split_bucket"]) == int(cache.table["split_bucket"].iloc[int(got["index"])])


def test_writing_again_keeps_the_stream_and_a_foreign_folder_is_refused(cache, stream, tmp_path):
    before = {p: p.stat().st_mtime_ns for p in stream.rglob("*")}
    write_stream(cache, stream)
    assert {p: p.stat().st_mtime_ns for p in stream.rglob("*")} == before
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not a stream"):
        write_stream(cache, tmp_path / "other")
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"
    with pytest.raises(DataError, match="not a stream"):
        StudyStream(tmp_path / "other")
    assert not [p for p in stream.parent.iterdir() if "partial" in p.name]


def test_shuffled_epochs_read_every_study_once_in_a_seeded_order(stream):
    def epochs(seed: int) -> list[list[int]]:  # the loader counts the epochs: each pass over it is the next
        loader = stream_loader(StudyStream(stream, shuffle=True, seed=seed), 4)
        return [[i for batch in loader for i in batch["index"].tolist()] for _ in range(2)]

    first, second = epochs(0)
    n = read_stream_meta(stream)["splits"]["train"]
    assert len(first) == len(second) == n and len(set(first)) == len(set(second)) == n
    assert [first, second] == epochs(0)
    assert first != sorted(first) and second != first and epochs(1)[0] != first


def test_a_loader_resumes_mid_epoch_where_it_stopped(stream):
    whole = [i for b in stream_loader(StudyStream(stream, shuffle=True, seed=3), 4) for i in b["index"].tolist()]
    loader = stream_loader(StudyStream(stream, shuffle=True, seed=3), 4)
    seen = []
    for k, batch in enumerate(loader):
        seen += batch["index"].tolist()
        if k == 2:
            state = loader.state_dict()
            break
    resumed = stream_loader(StudyStream(stream, shuffle=True, seed=3), 4)
    resumed.load_state_dict(state)
    rest = [i for b in resumed for i in b["index"].tolist()]
    assert seen + rest == whole  # the same studies in the same order, none twice, none skipped


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_share(rank: int, world: int, port: int, root: str, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        data = StudyStream(root, shuffle=True, seed=5, modalities=("labs",))
        queue.put((rank, len(data), [i for b in stream_loader(data, 2, num_workers=1) for i in b["index"].tolist()]))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_two_ranks_share_an_epoch_without_overlap_in_equal_parts(stream):
    ctx = mp.get_context("spawn")
    queue, port = ctx.Queue(), _free_port()
    procs = [ctx.Process(target=_rank_share, args=(r, 2, port, str(stream), queue)) for r in range(2)]
    for p in procs:
        p.start()
    shares = dict((rank, (n, ids)) for rank, n, ids in (queue.get(timeout=240) for _ in procs))
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    (n0, a), (n1, b) = shares[0], shares[1]
    total = read_stream_meta(stream)["splits"]["train"]
    # drop_last under DDP: equal shares in whole batches, so at most (ranks x batch - 1) studies wait for the
    # next epoch, as with DistributedSampler(drop_last=True); none is read twice
    assert len(a) == len(b) and len(a) % 2 == 0 and n0 == n1 >= len(a)
    assert not set(a) & set(b)
    assert len(set(a) | set(b)) == len(a) + len(b) >= total - (2 * 2 - 1)


def test_a_stream_in_s3_compatible_storage_is_written_and_read(cache, tmp_path, monkeypatch):
    boto3 = pytest.importorskip("boto3")
    server = pytest.importorskip("moto.server")
    for key, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    moto = server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    try:
        host, port = moto.get_host_and_port()
        options = {"endpoint_url": f"http://{host}:{port}"}
        boto3.client("s3", **options).create_bucket(Bucket="cohorts")
        meta = write_stream(cache, "s3://cohorts/site-a", chunk_bytes="200kB", storage_options=options)
        assert read_stream_meta("s3://cohorts/site-a", options) == meta
        data = StudyStream("s3://cohorts/site-a", "val", storage_options=options, cache_dir=str(tmp_path / "c"))
        local = PairedDataset(cache, _rows(cache, "val"))
        got = sorted((int(b["index"][0]), b["ecg"][0]) for b in stream_loader(data, 1))
        assert [r for r, _ in got] == _rows(cache, "val").tolist()
        assert all(torch.equal(x, local[i]["ecg"]) for i, (_, x) in enumerate(got))
    finally:
        moto.stop()


def test_an_incomplete_stream_is_not_read(stream, tmp_path):
    import shutil

    copy = Path(shutil.copytree(stream, tmp_path / "copy"))
    (copy / META_NAME).unlink()
    with pytest.raises(DataError, match="not a stream"):
        StudyStream(copy)


def test_writing_a_stream_holds_one_cache_chunk_at_a_time(small_cohort, tmp_path, monkeypatch):
    """A pass over a memory-mapped cache keeps every page it read resident until the files are unmapped, so writing a
    20k-study stream ended holding the whole cache. The writer unmaps at each new chunk: between two releases it reads
    from one chunk file only, and it leaves nothing mapped."""
    cache = build_paired_cache(small_cohort, tmp_path / "cache", PairedSpec(), chunk_studies=7)
    assert len(cache.meta["chunks"]) > 2
    touched: set[int] = set()
    widest = [0]
    item, release = cache.item, cache.release

    def reading(name: str, i: int):
        touched.add(cache.chunk_of(i))
        widest[0] = max(widest[0], len(touched))
        return item(name, i)

    def releasing() -> None:
        touched.clear()
        release()

    monkeypatch.setattr(cache, "item", reading)
    monkeypatch.setattr(cache, "release", releasing)
    write_stream(cache, tmp_path / "stream", chunk_bytes="200kB")
    assert widest[0] == 1 and not cache._maps
    assert sum(read_stream_meta(tmp_path / "stream")["splits"].values()) == len(cache)
