"""What does each modality carry about each label?

A deliberately simple, generic probe per modality, fitted with cross-validation so every score is
out-of-fold (no patient is scored by a model that saw it):

* **ECG** (12-lead, six-lead handheld, single-lead handheld): the median beat of every lead
  (-250 ms to +450 ms around the R-peaks of :func:`~cardiodistill.signals.detect_r_peaks`, at 100 Hz) plus RR-interval
  statistics -> standardise -> PCA -> logistic regression.
* **Echo**: per-pixel temporal mean, spread and range of the cine at 28 x 28, plus how much the
  dark (blood) area changes over the clip -> standardise -> PCA -> logistic regression.
* **Labs**: values (log of the skewed ones) with median imputation and missing-value indicators
  -> logistic regression.
* **Notes**: TF-IDF of word uni- and bigrams -> logistic regression.

The probes know nothing about how the simulator works: they read the cohort's clinical files
through the same readers a user's data goes through. Their AUROCs are a lower bound on what a
modality carries, and the gap between the rich modalities and the handheld ECG is the room that
cross-modal training and distillation have to work with.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.signal import resample

from ..config import ProbeConfig
from ..errors import DataError
from ..io.dicom import read_video_dicom
from ..io.wfdb import read_wfdb
from ..records import DEFAULT_BAND, EcgRecord
from ..signals import bandpass, detect_r_peaks, select_leads
from .metrics import auroc_ci

BEAT_WINDOW_S = (-0.25, 0.45)
BEAT_FS = 100.0
SKEWED_LABS = ("nt_probnp", "bnp", "troponin_t_hs", "crp", "creatinine")
MODALITY_NAMES = {
    "ecg12": "12-lead ECG",
    "mobile6": "6-lead handheld",
    "mobile1": "1-lead handheld",
    "echo": "echo",
    "labs": "labs",
    "notes": "notes",
}


# ---------------------------------------------------------------------------------------------
# feature extraction


def ecg_features(record: EcgRecord, leads: tuple[str, ...] | None = None) -> np.ndarray:
    """Median beat per lead plus RR statistics: a fixed-length vector for any lead set and rate."""
    leads = tuple(leads or record.leads)
    record = bandpass(select_leads(record, leads), *DEFAULT_BAND)
    x = record.signal.astype(np.float64)
    peaks = detect_r_peaks(record)
    pre, post = (int(round(abs(w) * record.fs)) for w in BEAT_WINDOW_S)
    peaks = peaks[(peaks >= pre) & (peaks + post < x.shape[1])]
    n_out = int(round((BEAT_WINDOW_S[1] - BEAT_WINDOW_S[0]) * BEAT_FS))
    if len(peaks) >= 2:
        beats = np.stack([x[:, p - pre : p + post] for p in peaks])  # [beats, leads, window]
        median = resample(np.median(beats, axis=0), n_out, axis=1)
        rr = np.diff(peaks) / record.fs
        rhythm = [rr.mean(), rr.std() / rr.mean(), np.sqrt(np.mean(np.diff(rr) ** 2)) / rr.mean() if len(rr) > 1 else 0.0]
    else:
        median = np.zeros((len(leads), n_out))
        rhythm = [0.0, 0.0, 0.0]
    return np.concatenate([median.ravel(), rhythm]).astype(np.float32)


def echo_features(frames: np.ndarray) -> np.ndarray:
    """Per-pixel temporal statistics at 28 x 28 plus the relative change of the dark area."""
    t, h, w = frames.shape
    f = 4 if h % 4 == 0 and w % 4 == 0 else 1
    small = frames.reshape(t, h // f, f, w // f, f).mean(axis=(2, 4)) / 255.0
    stats = [small.mean(0), small.std(0), small.max(0) - small.min(0)]
    inside = small.mean(0) > 0.02  # the ultrasound sector
    dark = ((small < 0.12) & inside).sum(axis=(1, 2)).astype(float)
    area = [dark.min() / max(dark.max(), 1.0), dark.std() / max(dark.mean(), 1.0)]
    return np.concatenate([s.ravel() for s in stats] + [np.asarray(area)]).astype(np.float32)


def labs_features(labs: pd.DataFrame) -> np.ndarray:
    values = labs.copy()
    for name in SKEWED_LABS:
        if name in values:
            values[name] = np.log1p(values[name].clip(lower=0))
    missing = values.isna().astype(float).add_suffix("_missing")
    values = values.fillna(values.median())
    return pd.concat([values, missing], axis=1).to_numpy(np.float32)


def cohort_features(cohort: str | Path) -> tuple[dict[str, np.ndarray | list[str]], pd.DataFrame]:
    """Read a written cohort folder and return per-modality features plus the manifest."""
    cohort = Path(cohort)
    manifest_path = cohort / "manifest.csv"
    if not manifest_path.is_file():
        raise DataError("no manifest.csv: not a cohort folder (write one with `cardiodistill synth`)", cohort)
    manifest = pd.read_csv(manifest_path, dtype={"patient_id": str})
    feats: dict[str, list] = {k: [] for k in MODALITY_NAMES}
    for row in manifest.itertuples():
        if isinstance(getattr(row, "ecg_path", None), str):
            feats["ecg12"].append(ecg_features(read_wfdb(cohort / row.ecg_path)))
        if isinstance(getattr(row, "mobile_path", None), str):
            mobile = read_wfdb(cohort / row.mobile_path)
            if len(mobile.leads) >= 6:
                feats["mobile6"].append(ecg_features(mobile))
            feats["mobile1"].append(ecg_features(mobile, ("I",)))
        if isinstance(getattr(row, "echo_path", None), str):
            feats["echo"].append(echo_features(read_video_dicom(cohort / row.echo_path).frames))
        if isinstance(getattr(row, "note_path", None), str):
            feats["notes"].append((cohort / row.note_path).read_text())
    labs_path = cohort / "labs.csv"
    if labs_path.is_file():
        labs = pd.read_csv(labs_path, dtype={"patient_id": str}).set_index("patient_id").loc[manifest["patient_id"]]
        feats["labs"] = labs_features(labs)
    out = {}
    for name, values in feats.items():
        if len(values) == len(manifest):
            out[name] = values if name == "notes" else np.stack(values) if isinstance(values, list) else values
    return out, manifest


# ---------------------------------------------------------------------------------------------
# probing


def _probe_model(modality: str, n_samples: int):
    from sklearn.decomposition import PCA
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    logistic = LogisticRegression(C=0.5, max_iter=2000)
    if modality == "notes":
        return make_pipeline(TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True), logistic)
    if modality == "labs":
        return make_pipeline(StandardScaler(), logistic)
    n_components = max(2, min(32, n_samples // 8))
    return make_pipeline(StandardScaler(), PCA(n_components=n_components, random_state=0), logistic)


def label_columns(manifest: pd.DataFrame) -> list[str]:
    return ["triage"] + [c for c in manifest.columns if c.startswith("dx_")]


def run_modality_probes(cohort: str | Path, config: ProbeConfig) -> dict:
    """Cross-validated AUROC (with bootstrap CI) of every modality's probe for every label."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    features, manifest = cohort_features(cohort)
    results: dict = {"patients": int(len(manifest)), "folds": config.folds, "bootstrap": config.bootstrap, "labels": {}}
    for label in label_columns(manifest):
        y = manifest[label].to_numpy().astype(int)
        positives = int(y.sum())
        entry = {"positives": positives, "auroc": {}}
        if min(positives, len(y) - positives) < config.folds:
            entry["note"] = f"fewer than {config.folds} patients in a class: not probed"
            results["labels"][label] = entry
            continue
        folds = StratifiedKFold(n_splits=config.folds, shuffle=True, random_state=0)
        for modality, x in features.items():
            model = _probe_model(modality, len(y))
            score = cross_val_predict(model, x, y, cv=folds, method="predict_proba")[:, 1]
            auc, lo, hi = auroc_ci(y, score, n_boot=config.bootstrap, seed=0)
            entry["auroc"][modality] = {"auc": round(auc, 4), "ci_low": round(lo, 4), "ci_high": round(hi, 4)}
        results["labels"][label] = entry
    return json.loads(json.dumps(results))


def modality_table_markdown(results: dict) -> str:
    """A markdown table: one row per label, one column per modality, AUROC [95 % CI]."""
    modalities = [m for m in MODALITY_NAMES if any(m in e["auroc"] for e in results["labels"].values())]
    header = "| label | positives | " + " | ".join(MODALITY_NAMES[m] for m in modalities) + " |"
    lines = [header, "|" + "---|" * (len(modalities) + 2)]
    for label, entry in results["labels"].items():
        cells = []
        for m in modalities:
            a = entry["auroc"].get(m)
            cells.append("n/a" if a is None else f"{a['auc']:.2f} [{a['ci_low']:.2f}, {a['ci_high']:.2f}]")
        lines.append(f"| {label} | {entry['positives']} | " + " | ".join(cells) + " |")
    n = results["patients"]
    lines.append("")
    lines.append(f"Out-of-fold AUROC of simple per-modality probes, {results['folds']}-fold CV on {n} patients, "
                 f"95 % bootstrap CI ({results['bootstrap']} resamples).")
    return "\n".join(lines) + "\n"
