"""Records per second read and preprocessed, for PTB-XL-style 12-lead records.

    python benchmarks/bench_ecg_input.py --records 600 --workers 1 2

Makes PTB-XL-style records (12 leads, 500 Hz, 10 s, WFDB format 16) with the simulator's writer in
a temporary folder (real PTB-XL cannot be shipped), then times, for each worker count:

* ``read``: ``cardiodistill.io.read_ecg`` (format detection + WFDB read + canonical leads);
* ``read+preprocess``: the same plus ``signals.preprocess.preprocess`` to the default model input
  (12 leads, 500 Hz, band-pass 0.5-40 Hz, 10 s).

With workers the records are spread over a ``torch.utils.data.DataLoader`` as a training job
would. Each figure is the median of ``--repeats`` passes. Results are appended to
benchmarks/results/ecg_input.jsonl.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "ecg_input.jsonl"


def make_records(folder: Path, n: int) -> list[Path]:
    from cardiodistill.config import SynthConfig
    from cardiodistill.io.wfdb import write_wfdb
    from cardiodistill.records import EcgRecord
    from cardiodistill.signals.leads import LEADS_12
    from cardiodistill.synth.ecg import render_12lead, sample_ecg_params
    from cardiodistill.synth.population import sample_population
    from cardiodistill.synth.rhythm import sample_beats

    cfg = SynthConfig()
    rng = np.random.default_rng(0)
    paths = []
    for start in range(0, n, 64):
        m = min(64, n - start)
        pop = sample_population(m, cfg.prevalence, rng, first_id=start)
        beats = sample_beats(pop, 10.0, rng)
        ecg = render_12lead(pop, beats, sample_ecg_params(pop, rng), 500.0, rng)
        for i, pid in enumerate(pop.patient_id):
            write_wfdb(EcgRecord(ecg[i], 500.0, LEADS_12), folder / pid)
            paths.append(folder / f"{pid}.hea")
    return paths


class _Records:
    """A map-style dataset over file paths (picklable for DataLoader workers)."""

    def __init__(self, paths: list[Path], preprocess: bool):
        self.paths, self.preprocess = paths, preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:
        from cardiodistill.io import read_ecg
        from cardiodistill.signals.preprocess import preprocess

        record = read_ecg(self.paths[i])
        if self.preprocess:
            record = preprocess(record)
        return record.signal


def one_pass(paths: list[Path], preprocess: bool, workers: int) -> float:
    from torch.utils.data import DataLoader

    data = _Records(paths, preprocess)
    start = time.perf_counter()
    if workers <= 1:
        for i in range(len(data)):
            data[i]
    else:
        loader = DataLoader(data, batch_size=None, num_workers=workers, collate_fn=lambda x: x)
        for _ in loader:
            pass
    return len(paths) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=600)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_records(Path(tmp), args.records)
        for preprocess in (False, True):
            for workers in args.workers:
                rates = [one_pass(paths, preprocess, workers) for _ in range(args.repeats)]
                rows.append({
                    "step": "read+preprocess" if preprocess else "read",
                    "workers": workers,
                    "records": args.records,
                    "records_per_s_median": round(statistics.median(rates), 1),
                    "records_per_s_all": [round(r, 1) for r in rates],
                })
                print(json.dumps(rows[-1]))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
