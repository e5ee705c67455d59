"""`cardiodistill inspect`: what was read, per-lead quality, R-peaks per lead set, as text, JSON and PNG."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cardiodistill.config import SynthConfig
from cardiodistill.io.tabular import write_csv_ecg
from cardiodistill.io.wfdb import write_wfdb
from cardiodistill.records import EcgRecord
from cardiodistill.signals.leads import LEADS_12
from cardiodistill.synth.ecg import render_12lead, sample_ecg_params
from cardiodistill.synth.population import sample_population
from cardiodistill.synth.rhythm import sample_beats

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def inspect(*args):
    proc = subprocess.run([sys.executable, "-m", "cardiodistill.cli", "inspect", *map(str, args)], capture_output=True, text=True)
    return proc


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """A simulated 12-lead written as WFDB, with its ground-truth R-peaks; lead V3 flattened (electrode off).

    Normal conduction: with a bundle branch block the largest deflection of a single lead can be the
    broad S wave, tens of ms after the R-peak (see signals.rpeaks), which is not what this checks."""
    rng = np.random.default_rng(3)
    pop = sample_population(1, SynthConfig().prevalence.model_copy(update={"bbb": 0.0}), rng)
    beats = sample_beats(pop, 10.0, rng)
    signal = render_12lead(pop, beats, sample_ecg_params(pop, rng), 500.0, rng)[0]
    signal[LEADS_12.index("V3")] = 0.0
    folder = tmp_path_factory.mktemp("inspect")
    write_wfdb(EcgRecord(signal, 500.0, LEADS_12), folder / "sim")
    return folder / "sim.hea", beats.r_peak_samples(500.0)[0], signal


def test_json_summary_has_quality_and_true_r_peaks(simulated):
    path, truth, _ = simulated
    proc = inspect(path, "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["fs"] == 500 and summary["leads"] == list(LEADS_12) and summary["n_samples"] == 5000
    assert summary["quality"]["V3"]["usable"] is False and "flat" in summary["quality"]["V3"]["reasons"]
    assert all(q["usable"] for lead, q in summary["quality"].items() if lead != "V3")
    assert set(summary["r_peaks"]) == {"all", "six_lead", "single_lead"}
    assert "V3" not in summary["r_peaks"]["all"]["leads"]
    for entry in summary["r_peaks"].values():
        found = np.asarray(entry["samples"])
        inner = truth[(truth > 50) & (truth < 4950)]  # beats cut by the record's ends may be dropped
        nearest = np.abs(found[:, None] - inner[None, :]).min(axis=0)
        assert np.all(nearest <= 15), entry["leads"]  # within 30 ms at 500 Hz


def test_text_summary_and_png(simulated, tmp_path):
    path, _, _ = simulated
    png = tmp_path / "ecg.png"
    proc = inspect(path, "--png", png)
    assert proc.returncode == 0, proc.stderr
    assert "12 leads, 500 Hz, 10 s" in proc.stdout and "NOT USABLE: flat" in proc.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_csv_needs_and_takes_rate_and_leads(simulated, tmp_path):
    _, _, signal = simulated
    csv = tmp_path / "two.csv"
    write_csv_ecg(EcgRecord(signal[:2], 500.0, ("I", "II")), csv, include_time=False)
    proc = inspect(csv, "--fs", 500, "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["leads"] == ["I", "II"] and summary["fs"] == 500
    assert "single_lead" in summary["r_peaks"] and "six_lead" not in summary["r_peaks"]


def test_bad_files_are_one_line_errors(tmp_path):
    junk = tmp_path / "junk.hea"
    junk.write_text("this is not a header\n")
    for path in (junk, tmp_path / "missing.hea"):
        proc = inspect(path)
        assert proc.returncode == 2 and str(path) in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


@pytest.mark.skipif(not (SHARED / "wfdb_formats" / "100.hea").exists(), reason="shared data not present")
def test_mit_bih_100_beats_match_the_reference_count():
    summary = json.loads(inspect(SHARED / "wfdb_formats" / "100.hea", "--json").stdout)
    assert summary["leads"] == ["II", "V5"] and summary["fs"] == 360
    assert len(summary["r_peaks"]["all"]["samples"]) == 2273  # the cardiologists' beat annotations


def test_paper_draws_only_the_leads_a_record_has():
    from cardiodistill.viz import plot_ecg_paper

    two = plot_ecg_paper(EcgRecord(np.zeros((2, 3000), np.float32), 300.0, ("II", "V5")))
    assert [t.get_text() for t in two.texts] == ["II", "V5"] and two.get_ylim() == (0.0, 60.0)  # two strips
    full = plot_ecg_paper(EcgRecord(np.zeros((12, 3000), np.float32), 300.0, LEADS_12))
    assert len(full.texts) == 13 and full.get_ylim() == (0.0, 120.0)  # 3 x 4 layout + rhythm strip of II


def test_one_lead_is_singular_and_free_text_views_are_not_shown(tmp_path):
    from cardiodistill.inspection import format_summary, summarize_ecg, summarize_video
    from cardiodistill.io.dicom import write_echo_dicom
    from cardiodistill.records import VideoClip

    t = np.arange(3000) / 300.0
    one = EcgRecord(np.exp(-0.5 * (((t % 0.8) - 0.3) / 0.012) ** 2)[None].astype(np.float32), 300.0, ("I",))
    assert ", 1 lead, 300 Hz" in format_summary(summarize_ecg(one))
    yy, xx = np.mgrid[:64, :64]
    frames = np.stack([(128 + 100 * np.sin(xx / 6 + k / 3) * (yy > 8)).astype(np.uint8) for k in range(40)])
    for view, shown in (("DOE^JANE 1970-01-01", None), ("a4c", "a4c")):
        path = write_echo_dicom(VideoClip(frames, 25.0, view=view), tmp_path / "echo.dcm", patient_id="P1")
        summary = summarize_video(path)
        assert summary["view"] == shown and "DOE" not in json.dumps(summary)
