"""Would features made for atrial fibrillation help the bundled CinC 2017 model? A diagnostic on its own folds.

The bundled model (``ship_cinc2017_student.py``) misses its AF F1 goal mostly between AF and the other rhythms
(66 AF recordings called other, 69 other recordings called AF, out of fold). The AF detectors of the literature
read two things the toolkit's rhythm and beat features (``cardiodistill/signals/rhythm.py``, ``beats.py``) read
only in part:

* **how random the RR sequence is**, beyond how variable: the coefficient of sample entropy of the RR intervals
  (COSEn, Lake and Moorman, Am J Physiol 2011: sample entropy with ``m = 1``, ``r = 30 ms``, plus ``log(2 r)``
  minus the log of the mean RR), the share of occupied 40-ms cells in the plot of each successive RR difference
  against the next (after Sarkar et al., IEEE TBME 2008), and the irregularity of the most and the share of
  irregular 8-beat stretches (paroxysms in part of a recording);
* **the atrial activity left when the beats are cancelled**: each beat minus the recording's median beat scaled to
  it (QRST cancellation), then the residual's power (over the QRS amplitude), its share in the f-wave band
  (4-9 Hz), the peak of that band over the median of the spectrum, the frequency of the spectrum's peak, and the
  residual between beats alone.

Nothing here ships. Each candidate set joins the 27 features of the bundled trees member (scikit-learn's
``GradientBoostingClassifier`` with its defaults, fitted on each fold's training recordings, as
``bench_real_students.py --trees`` fits it), and the trees are scored alone and as the third member beside the
bundled networks' out-of-fold predictions (``cv5-ensemble-...+passes24/oof.npz``, kept by
``bench_real_students.py --cv-ensemble``), each against the same with the 27 features only, paired over the 6000
recordings (challenge score and AF F1, bootstrap 95 % CIs). Two or three minutes on one core::

    OMP_NUM_THREADS=1 python benchmarks/bench_cinc_af_features.py --out runs/real
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import signal as sps
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.metrics import f1_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cinc_features import diagnostic_setup  # noqa: E402
from bench_real_students import FS, TREES_TAG, _clean, challenge_scores, paired_challenge  # noqa: E402

from cardiodistill.evaluate.metrics import bootstrap_interval  # noqa: E402
from cardiodistill.io.atomic import write_json_atomic  # noqa: E402
from cardiodistill.records import EcgRecord  # noqa: E402
from cardiodistill.signals.beats import MIN_BEATS  # noqa: E402
from cardiodistill.signals.rpeaks import detect_r_peaks  # noqa: E402

RESULT = Path(__file__).resolve().parent / "results" / "cinc2017_af_features.json"
#: the run folders of the bundled model's two networks, cross-validated as one ensemble, and of its trees member
NETWORKS = "cv5-ensemble-passes24-rhythm-beats-distill.backbone={name: student_cnn, temporal: gru}+passes24"
TREES = f"cv5-{TREES_TAG}"
RR_FEATURES = ("cosen", "rr_sample_entropy", "drr_cell_share", "local_irregularity_max", "local_irregular_share")
RESIDUAL_FEATURES = ("residual_log", "fwave_band_share", "fwave_peak_log", "residual_peak_hz", "residual_tq_log")
SETS = {"RR randomness": RR_FEATURES, "atrial residual": RESIDUAL_FEATURES,
        "both": RR_FEATURES + RESIDUAL_FEATURES}
SAMPEN_R_S, SAMPEN_MAX = 0.03, 3.0  # Lake and Moorman's tolerance; the entropy when no match of length 2 is found
CELL_S = 0.04
LOCAL_BEATS, LOCAL_IRREGULAR = 8, 0.08
BEAT_S = (-0.25, 0.45)
FWAVE_HZ, SPECTRUM_HZ = (4.0, 9.0), (1.0, 40.0)


def rr_randomness(peaks: np.ndarray, fs: float) -> dict[str, float]:
    """:data:`RR_FEATURES` of R-peaks ``peaks`` (samples at ``fs``); zeros below the toolkit's fewest beats."""
    rr = np.diff(peaks) / fs
    if len(peaks) < MIN_BEATS:
        return dict.fromkeys(RR_FEATURES, 0.0)
    # sample entropy, m = 1: pairs of intervals within r, and of successive pairs within r in both
    close = np.abs(rr[:-1, None] - rr[None, :-1]) <= SAMPEN_R_S
    both = close & (np.abs(rr[1:, None] - rr[None, 1:]) <= SAMPEN_R_S)
    b, a = np.triu(close, 1).sum(), np.triu(both, 1).sum()
    entropy = min(-np.log(a / b), SAMPEN_MAX) if a > 0 and b > 0 else SAMPEN_MAX
    d = np.diff(rr)
    cells = np.floor(np.c_[d[:-1], d[1:]] / CELL_S).astype(int)
    local = np.array([np.median(np.abs(np.diff(rr[s:s + LOCAL_BEATS]))) / np.median(rr[s:s + LOCAL_BEATS])
                      for s in range(max(len(rr) - LOCAL_BEATS, 0) + 1)])
    return {"cosen": entropy + np.log(2 * SAMPEN_R_S) - np.log(rr.mean()), "rr_sample_entropy": entropy,
            "drr_cell_share": len({tuple(c) for c in cells}) / len(cells),
            "local_irregularity_max": float(local.max()),
            "local_irregular_share": float(np.mean(local > LOCAL_IRREGULAR))}


def atrial_residual(x: np.ndarray, peaks: np.ndarray, fs: float) -> dict[str, float]:
    """:data:`RESIDUAL_FEATURES` of lead ``x [T]`` after QRST cancellation on its R-peaks ``peaks``."""
    before, after = int(-BEAT_S[0] * fs), int(BEAT_S[1] * fs)
    whole = peaks[(peaks - before >= 0) & (peaks + after <= len(x))]
    residual, qrs = x.astype(np.float64), np.ptp(x) + 1e-9
    if len(whole) >= MIN_BEATS:
        template = np.median(x[whole[:, None] + np.arange(-before, after)[None]], axis=0)
        centred = template - template.mean()
        for p in whole:  # each beat minus the template scaled to it by least squares
            beat = x[p - before:p + after]
            scale = np.dot(beat - beat.mean(), centred) / (np.dot(centred, centred) + 1e-9)
            residual[p - before:p + after] = beat - beat.mean() - scale * centred
        qrs = np.ptp(template[before - int(0.06 * fs):before + int(0.07 * fs)]) + 1e-9
    f, power = sps.welch(residual, fs=fs, nperseg=min(512, len(residual)))
    spectrum = power[(f >= SPECTRUM_HZ[0]) & (f <= SPECTRUM_HZ[1])]
    band = power[(f >= FWAVE_HZ[0]) & (f <= FWAVE_HZ[1])]
    gaps = [residual[a + int(0.35 * fs):b - int(0.15 * fs)] for a, b in zip(peaks[:-1], peaks[1:])
            if b - a > int(0.6 * fs)]
    gaps = [g for g in gaps if len(g) > 5]
    return {"residual_log": float(np.log(np.std(residual) / qrs + 1e-6)),
            "fwave_band_share": float(band.sum() / (spectrum.sum() + 1e-12)),
            "fwave_peak_log": float(np.log(band.max() / (np.median(spectrum) + 1e-12) + 1e-9)),
            "residual_peak_hz": float(f[(f >= SPECTRUM_HZ[0]) & (f <= SPECTRUM_HZ[1])][np.argmax(spectrum)]),
            "residual_tq_log": float(np.log(np.mean([np.std(g) for g in gaps]) / qrs + 1e-6)) if gaps else 0.0}


def candidate_table(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """``[N, len(SETS["both"])]``: the candidates of every recording's whole lead I, on the toolkit's R-peaks."""
    rows = []
    for x, n in zip(arrays["x"], arrays["lengths"]):
        lead = np.asarray(x[0, :n], np.float32)
        peaks = detect_r_peaks(EcgRecord(lead[None], FS, ("I",))) if n >= FS else np.zeros(0, np.int64)
        values = {**rr_randomness(peaks, FS), **atrial_residual(lead, peaks, FS)}
        rows.append([values[k] for k in SETS["both"]])
    return np.asarray(rows)


def oof_trees(table: np.ndarray, target: np.ndarray, folds: list[dict[str, np.ndarray]], seed: int) -> np.ndarray:
    """Out-of-fold class probabilities of the bundled trees' recipe on ``table``."""
    probs = np.zeros((len(target), 4))
    for fold in folds:
        model = GradientBoostingClassifier(random_state=seed).fit(table[fold["train"]], target[fold["train"]])
        probs[fold["test"]] = model.predict_proba(table[fold["test"]])
    return probs


def paired(y: np.ndarray, probs_a: np.ndarray, probs_b: np.ndarray, n_boot: int, seed: int) -> dict[str, object]:
    """Challenge score and AF F1 of ``probs_a``, and their differences from ``probs_b``, paired (95 % CIs; every
    interval from the same resamples of the recordings)."""
    a, b = probs_a.argmax(1), probs_b.argmax(1)
    own = challenge_scores(y, a, n_boot, seed)

    def f1_af(idx: np.ndarray, pred: np.ndarray) -> float:
        return float(f1_score(y[idx], pred[idx], labels=[1], average=None, zero_division=0.0)[0])

    return {"challenge": own["challenge"], "f1_af": own["f1_af"],
            "challenge_minus_base": paired_challenge(y, a, b, n_boot, seed),
            "f1_af_minus_base": bootstrap_interval(lambda idx: f1_af(idx, a) - f1_af(idx, b), len(y), n_boot=n_boot,
                                                   seed=seed)}


def main() -> None:
    start = time.time()
    args, arrays, table, folds = diagnostic_setup(__doc__, RESULT)
    folder, target, seed = args.out / "cinc2017", arrays["target"], 0
    missing = [n for n in (NETWORKS, TREES) if not (folder / n / "oof.npz").is_file()]
    if missing:
        raise SystemExit(f"{folder}: no out-of-fold predictions of {missing} (bench_real_students.py --cv-ensemble)")
    candidates = candidate_table(arrays)
    networks, trees = (np.load(folder / n / "oof.npz")["probs"] for n in (NETWORKS, TREES))
    base = oof_trees(table, target, folds, seed)
    if not np.allclose(base, trees, atol=1e-5):
        raise SystemExit(f"the trees refitted here differ from {TREES}'s: not the same folds or features")
    results = {"n_recordings": len(target)}
    for name, names in SETS.items():
        cols = [SETS["both"].index(n) for n in names]
        probs = oof_trees(np.c_[table, candidates[:, cols]], target, folds, seed)
        results[name] = {"features": list(names), "trees": paired(target, probs, base, args.bootstrap, seed),
                         "ensemble": paired(target, (2 * networks + probs) / 3, (2 * networks + base) / 3,
                                            args.bootstrap, seed)}
        for member in ("trees", "ensemble"):
            r = results[name][member]
            print(f"{name:16s} {member:8s} challenge {r['challenge']['value']:.3f} "
                  f"{r['challenge_minus_base']['value']:+.3f} ({r['challenge_minus_base']['ci_low']:+.3f}, "
                  f"{r['challenge_minus_base']['ci_high']:+.3f}); AF F1 {r['f1_af']['value']:.3f} "
                  f"{r['f1_af_minus_base']['value']:+.3f} ({r['f1_af_minus_base']['ci_low']:+.3f}, "
                  f"{r['f1_af_minus_base']['ci_high']:+.3f})", flush=True)
    results["wall_seconds"] = round(time.time() - start, 1)
    write_json_atomic(args.result, json.loads(json.dumps(_clean(results), default=float)))


if __name__ == "__main__":
    main()
