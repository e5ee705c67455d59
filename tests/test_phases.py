"""Cardiac phases from the signals: ECG R-peak / T-end and echo end-diastole / end-systole.

Accuracy is checked against the simulator's ground truth (``beats`` for the ECG, ``ed_frames`` /
``es_frames`` for the echo); the real apical echo is used when ``/work/shared/data`` is present.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cardiodistill.config import SynthConfig
from cardiodistill.errors import ConfigError, DataError
from cardiodistill.records import EcgRecord
from cardiodistill.signals.leads import LEADS_12
from cardiodistill.signals.phases import EcgPhases, ecg_phases
from cardiodistill.synth.cohort import generate_chunk
from cardiodistill.video.phases import EchoPhases, echo_phases

REAL_DICOM = Path(__file__).resolve().parents[2] / "shared" / "data" / "dicom"
ECHO_TOL = 2  # frames (40 ms at 50 fps)


def _chunk(af: float, patients: int, seed: int):
    cfg = SynthConfig(patients=patients, chunk_size=patients, seed=seed, mobile={"enabled": False},
                      echo={"size": 64, "fps": 50.0}, prevalence={"af": af})
    return cfg, generate_chunk(cfg, 0)


@pytest.fixture(scope="module")
def sim():
    """Eight simulated patients (sinus rhythm and atrial fibrillation at the default prevalence)."""
    return _chunk(0.1, 8, 0)


@pytest.fixture(scope="module")
def af_sim():
    """Two patients in atrial fibrillation."""
    return _chunk(1.0, 2, 1)


def _ecg(cfg, chunk, i: int) -> EcgRecord:
    return EcgRecord(chunk.ecg[i], cfg.ecg.fs, LEADS_12)


def _nearest(found: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Distance from each true event to the nearest found one (inf if none was found)."""
    if len(found) == 0:
        return np.full(len(true), np.inf)
    return np.abs(np.asarray(found)[None, :] - np.asarray(true)[:, None]).min(axis=1).astype(float)


def _alternate(ed: np.ndarray, es: np.ndarray) -> bool:
    """ED and ES frames interleave (never two of a kind in a row)."""
    kinds = np.r_[np.zeros(len(ed)), np.ones(len(es))][np.argsort(np.r_[ed, es], kind="stable")]
    return bool(np.all(np.diff(kinds) != 0))


# ------------------------------------------------------------------------------------------------
# ECG
# ------------------------------------------------------------------------------------------------


def test_ecg_r_peaks_and_t_ends_match_the_simulated_beats(sim):
    cfg, chunk = sim
    fs = cfg.ecg.fs
    r_err, wide_r_err, t_err, failed = [], [], [], 0
    for i in range(len(chunk)):
        phases = ecg_phases(_ecg(cfg, chunk, i))
        assert isinstance(phases, EcgPhases) and phases.fs == fs
        assert phases.r.dtype == np.int64 and phases.t_end.dtype == np.int64 and len(phases.r) == len(phases.t_end)
        ok = phases.t_end >= 0
        assert np.all(phases.t_end[ok] > phases.r[ok])
        np.testing.assert_allclose(phases.r_s, phases.r / fs)
        assert np.isnan(phases.t_end_s[~ok]).all()
        true_r = chunk.beats.r[i][np.isfinite(chunk.beats.r[i])]
        inside = np.round(true_r[(true_r >= 0) & (true_r < chunk.beats.duration_s)] * fs)
        (wide_r_err if chunk.pop.bbb[i] else r_err).append(_nearest(phases.r, inside))
        # the T end of every detected beat against its true beat's
        j = np.abs(true_r[None, :] * fs - phases.r[:, None]).argmin(axis=1)
        t_err.append(np.abs(phases.t_end[ok] - chunk.beats.t_end[i][j[ok]] * fs))
        failed += int((~ok).sum())
    r_err, t_err = np.concatenate(r_err) / fs, np.concatenate(t_err) / fs
    assert np.mean(r_err <= 0.020) >= 0.98, np.percentile(r_err, [50, 90, 100])
    # bundle branch block: the refined peak is the broad complex's late (LBBB) or early (RBBB)
    # deflection, measured 18-30 ms from the simulator's R time
    assert all(np.all(e <= 0.040 * fs) for e in wide_r_err)
    # measured: median 2-4 ms, 97-98 % of delineated beats within 60 ms, about 6 % not delineated
    assert np.median(t_err) <= 0.010 and np.mean(t_err <= 0.060) >= 0.9, np.percentile(t_err, [50, 90])
    assert failed <= 0.15 * (len(t_err) + failed)


def test_ecg_phases_of_a_flat_record_are_empty():
    phases = ecg_phases(EcgRecord(np.zeros((12, 5000), np.float32), 500.0, LEADS_12))
    assert phases.r.shape == phases.t_end.shape == (0,)


def test_ecg_phases_in_atrial_fibrillation(af_sim):
    cfg, chunk = af_sim
    for i in range(len(chunk)):
        phases = ecg_phases(_ecg(cfg, chunk, i))
        true_r = chunk.beats.r_peak_samples(cfg.ecg.fs)[i]
        assert np.mean(_nearest(phases.r, true_r) <= 0.02 * cfg.ecg.fs) >= 0.95


# ------------------------------------------------------------------------------------------------
# echo
# ------------------------------------------------------------------------------------------------


def test_echo_end_diastole_and_end_systole_match_the_simulator(sim):
    _, chunk = sim
    echo = chunk.echo
    errors = {"ed": [], "es": []}
    false = 0
    for i in range(len(chunk)):
        phases = echo_phases(echo.frames[i], echo.fps)
        assert isinstance(phases, EchoPhases) and phases.method
        assert phases.ed.dtype == np.int64 and phases.es.dtype == np.int64 and phases.signal.shape == (echo.frames.shape[1],)
        assert _alternate(phases.ed, phases.es)
        # the proxy follows the true LV volume
        assert np.corrcoef(phases.signal, echo.lv_volume_ml[i])[0, 1] > 0.9
        for kind, found, true in (("ed", phases.ed, echo.ed_frames[i]), ("es", phases.es, echo.es_frames[i])):
            errors[kind].append(_nearest(found, true))
            false += int((_nearest(true, found) > ECHO_TOL).sum())
    for kind, err in errors.items():
        err = np.concatenate(err)
        # measured (bench_phases, 200 patients): 97.5 % within 2 frames; the misses are at the clip ends
        assert np.mean(err <= ECHO_TOL) >= 0.9, (kind, err)
        assert np.median(err) <= 1
    assert false <= 2


def test_echo_phases_use_a_given_period_and_mask(sim):
    _, chunk = sim
    echo = chunk.echo
    frames, truth = echo.frames[0], echo.ed_frames[0]
    mask = np.zeros(frames.shape[1:], bool)
    mask[:, 8:-8] = True  # a crude field of view: the whole frame less its side margins
    period = float(np.median(np.diff(truth))) / echo.fps
    phases = echo_phases(frames, echo.fps, mask=mask, period_s=period)
    assert np.mean(_nearest(phases.ed, truth) <= ECHO_TOL) >= 0.6


def test_echo_phases_in_atrial_fibrillation_return_arrays(af_sim):
    _, chunk = af_sim
    echo = chunk.echo
    for i in range(len(chunk)):
        phases = echo_phases(echo.frames[i], echo.fps)
        assert phases.ed.ndim == phases.es.ndim == 1 and _alternate(phases.ed, phases.es)
        assert np.all(_nearest(echo.ed_frames[i], phases.ed) <= ECHO_TOL)  # fewer events maybe, no false ones


@pytest.mark.parametrize("grey", [0, 100, 200])
def test_flat_or_tiny_video_gives_empty_phases(grey):
    for frames in (np.full((60, 48, 48), grey, np.uint8), np.full((2, 48, 48), grey, np.uint8)):
        phases = echo_phases(frames, 50.0)
        assert phases.ed.shape == phases.es.shape == (0,) and phases.signal.shape == (len(frames),)


def test_echo_phases_reject_bad_input():
    frames = np.zeros((10, 16, 16), np.uint8)
    with pytest.raises(ConfigError, match="fps"):
        echo_phases(frames, 0.0)
    with pytest.raises(ConfigError, match="period_s"):
        echo_phases(frames, 50.0, period_s=-1.0)
    with pytest.raises(DataError, match="mask"):
        echo_phases(frames, 50.0, mask=np.ones((8, 8), bool))
    with pytest.raises(DataError, match="uint8"):
        echo_phases(frames.astype(np.float32), 50.0)
    with pytest.raises(DataError, match=r"\[T, H, W\]"):
        echo_phases(frames[0], 50.0)


def test_real_apical_echo_phases_are_physiological():
    from cardiodistill.io import read_video

    path = REAL_DICOM / "color3d_jpeg_baseline.dcm"
    if not path.is_file():
        pytest.skip(f"real DICOM sample {path} not available")
    clip = read_video(path)
    phases = echo_phases(clip.frames, clip.fps)
    assert 3 <= len(phases.ed) <= 5 and _alternate(phases.ed, phases.es)
    rr = np.diff(phases.ed) / clip.fps
    assert np.all((rr > 0.6) & (rr < 1.5))  # 40-100 bpm, as the cycle length found from the pixels
    systole = np.array([phases.es[phases.es > e][0] - e for e in phases.ed if (phases.es > e).any()]) / clip.fps
    assert np.all((systole > 0.15) & (systole < 0.5))  # ED to ES: ejection lasts 0.2-0.45 s
