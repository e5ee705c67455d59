"""How much could any model read from each modality? Oracle ceilings for every label.

The simple probes (:mod:`cardiodistill.evaluate.probes`) read the written, noisy files and give a
lower bound on what a modality carries. The **oracle** here gives the matching upper bound, up to
the noise the simulator adds: for every modality set it sees the *noise-free* quantities that the
simulator renders into that modality, and a flexible classifier is fitted on them out-of-fold.
The stage-3 student (and any later model) is judged by how much of its lead set's ceiling it
reaches, and a calibration of the simulator's physiology is checked by where these ceilings land.

Because an oracle is by definition a measurement of the simulator, this module imports
:mod:`cardiodistill.synth` (the probes only read files); nothing outside the evaluation tools
depends on it.

Same patients as the probes
    The cohort of ``config.synth`` is regenerated chunk by chunk with
    :func:`~cardiodistill.synth.cohort.generate_chunk`, with the echo and handheld renders switched
    off (they draw from their own random streams, so the population, beats, ECG morphology, labs and
    labels are unchanged) and the 12-lead rendered with ``noise=0``. Labels are the recorded
    manifest labels, so triage keeps its label noise (``synth.label_noise``): no model can undo it.

ECG sets (12-lead; 6-lead handheld I, II, III, aVR, aVL, aVF; 2-lead I, II; 1-lead I)
    The 12-lead of the same population, beats and morphology parameters with every noise source off
    (only the 1 uV ADC step remains). Per lead, the median beat from -300 ms to +600 ms around the
    true R-peaks of the beat train, resampled to 250 Hz: without noise, beats differ only by the
    rate adaptation of the QT and by AF's f-waves, so the median beat keeps the morphology exactly;
    plus RR statistics from the true beat times (mean, coefficient of variation, RMSSD / mean,
    min / max). The handheld sets use the limb leads as the 12-lead renders them: the handheld
    device records the same lead vectors from the same dipole, and what differs (its 0.5-40 Hz
    band-pass, a per-patient gain of 0.85-1.0, a 10 uV ADC step, more noise) is device and noise,
    which the oracle removes. III, aVR, aVL and aVF are exact linear combinations of I and II, so the
    6-lead and the 2-lead carry the same information and their ceilings differ only by fitting.
Echo
    The latent quantities the echo renderer (:mod:`cardiodistill.synth.echo`) takes from the
    population: LVEF, end-diastolic and end-systolic volume, wall thickness, left-atrial size,
    valve type (aortic stenosis / mitral regurgitation) and severity, infarct territory (the
    hypokinetic segment), AF (no atrial kick), heart rate, and the atrial kick's lead on the
    R-peak (PR + 0.45 QRS, the one way PR and QRS enter the cine: in a noise-free cine the shape
    of late filling shows it, so bundle branch block and a long PR leave a faint trace there).
Labs
    The true analyte values before assay error, haemolysis, reporting precision, assay limits and
    missingness: NT-proBNP, BNP, hs-troponin T, sodium, glucose, LDL and CRP as the lab simulator
    draws them (biological variation included; redrawn with its own functions from its own random
    stream, which a test pins against the measured panel), potassium, eGFR and haemoglobin from
    the population, creatinine from eGFR (CKD-EPI 2021). Skewed ones enter as logarithms.
All
    The union: the 12-lead's median beats and RR statistics, echo, labs and notes.
Notes
    What the note states before it is worded: the clinician's calls (:func:`~cardiodistill.synth.notes.note_content`,
    with the reader's errors and hedges of ``synth.notes.style``), the reported measurements and
    the quoted labs, redrawn from the notes' own random stream; omissions and typos are the noise
    removed. Missing values (no echo yet, labs not given) are filled with the median and flagged.

Model and protocol
    Fixed in advance, the same for every label and modality set (nothing is chosen on a test
    fold): waveforms are standardised and reduced by PCA (``min(64, n_train // 10)`` components,
    fitted on each training fold without labels), tabular features standardised, and the score is
    the mean probability of two classifiers fitted on the training fold: logistic regression
    (C = 1) and histogram gradient boosting (which finds thresholds and interactions such as the
    triage rule's "any of"). Averaging rather than picking one per fold keeps the pooled
    out-of-fold scores on one scale. 5-fold stratified cross-validation like the probes, every
    score out-of-fold, AUROC with a percentile bootstrap 95 % interval
    (:func:`~cardiodistill.evaluate.metrics.auroc_ci`).

What the ceiling is, and is not
    A strong generic model on the modality's noise-free content: "up to the noise the simulator
    adds", and up to what such a model learns from the cohort's size (with few positives the
    ceiling is itself an estimate; its interval says how good). It is not the
    information-theoretic limit of a noise-free signal: the simulator writes some latents into
    small, exact details of the waveform (the left atrium, enlarged when LVEF < 40 %, sets the size
    and timing of the P wave's left-atrial component), which a model handed the rendering
    parameters themselves could read but which any recording's noise hides.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.signal import resample_poly

from ..config import Config, SynthConfig
from ..signals.leads import LEADS_12, LIMB_LEADS
from ..synth.cohort import CohortChunk, chunk_bounds, chunk_rng, generate_chunk
from ..synth.labs import true_labs as synth_true_labs
from ..synth.notes import note_content
from ..synth.population import Population
from .metrics import auroc_ci

#: modality set -> display name; the ECG keys match the probes' (``probes.MODALITY_NAMES``)
ORACLE_SETS = {
    "ecg12": "12-lead ECG",
    "mobile6": "6-lead handheld",
    "mobile2": "2-lead (I, II)",
    "mobile1": "1-lead handheld",
    "echo": "echo",
    "labs": "labs",
    "notes": "notes",
    "all": "all",
}
ECG_LEADS = {"ecg12": LEADS_12, "mobile6": LIMB_LEADS, "mobile2": ("I", "II"), "mobile1": ("I",)}


@dataclass(frozen=True)
class Published:
    """A published deep-learning AUROC range for a label from a lead set, and where it comes from."""

    low: float
    high: float
    source: str


#: What deep learning reads from real ECGs (echo- or lab-defined labels, same study where possible): the
#: ranges the simulated ECG's oracle ceilings are calibrated to (docs/simulator.md, "Calibration").
PUBLISHED: dict[tuple[str, str], Published] = {
    ("dx_reduced_ef", "ecg12"): Published(0.90, 0.96, "LVEF <= 35-40 %: 0.93 (Attia, Nat Med 2019); 0.962 (Lim, EHJ-DH 2025)"),
    ("dx_reduced_ef", "mobile6"): Published(0.85, 0.93, "6-lead KardiaMobile 0.924 (Lim, EHJ-DH 2025)"),
    ("dx_reduced_ef", "mobile1"): Published(0.85, 0.92, "Apple Watch lead I 0.88 (Attia, Nat Med 2022); single-lead "
                                                        "stethoscope ECG 0.85-0.88 (EHJ-DH 2022); noisy lead I 0.87-0.90 "
                                                        "(Khunte, npj DM 2023)"),
    ("dx_aortic_stenosis", "ecg12"): Published(0.80, 0.90, "moderate/severe AS 0.884 internal, 0.861 external "
                                                           "(Kwon, JAHA 2020)"),
    ("dx_aortic_stenosis", "mobile1"): Published(0.78, 0.88, "single lead 0.845 internal, 0.821 external (Kwon, JAHA 2020)"),
    ("dx_hyperkalaemia", "mobile2"): Published(0.83, 0.90, "two leads about 0.85-0.88 (Galloway, JAMA Cardiol 2019)"),
    ("triage", "ecg12"): Published(0.80, 0.92, "several structural diseases at once: EchoNext 0.85 (Nature 2025)"),
    ("triage", "mobile1"): Published(0.80, 0.92, "single lead from the 12-lead 0.92, smartwatch 0.88 (Yale, AHA 2025 "
                                                 "abstract)"),
}
BEAT_WINDOW_S = (-0.30, 0.60)
BEAT_FS = 250
_LOG_LABS = ("nt_probnp", "bnp", "troponin_t_hs", "creatinine", "glucose", "crp")


@dataclass
class OracleFeatures:
    """Per patient: clean median beats ``[n, 12, window]`` (LEADS_12 order), RR statistics, the echo
    and labs latents, and the manifest labels."""

    beats: np.ndarray
    rhythm: np.ndarray
    echo: np.ndarray
    labs: np.ndarray
    notes: np.ndarray
    labels: dict[str, np.ndarray]


# ---------------------------------------------------------------------------------------------
# features from the noise-free simulator


def oracle_synth_config(cfg: SynthConfig) -> SynthConfig:
    """``cfg`` with the 12-lead noise off and the echo and handheld renders skipped (same patients)."""
    return cfg.model_copy(update={
        "ecg": cfg.ecg.model_copy(update={"noise": 0.0}),
        "mobile": cfg.mobile.model_copy(update={"enabled": False}),
        "echo": cfg.echo.model_copy(update={"enabled": False}),
    })


def median_beats(ecg: np.ndarray, r_peaks: list[np.ndarray], fs: float) -> np.ndarray:
    """Median beat of every lead ``[n, leads, window]`` at :data:`BEAT_FS` around the given R-peaks."""
    pre, post = (round(abs(w) * fs) for w in BEAT_WINDOW_S)
    out = []
    for x, peaks in zip(ecg, r_peaks):
        peaks = peaks[(peaks >= pre) & (peaks + post <= x.shape[-1])]
        window = x[:, peaks[:, None] + np.arange(-pre, post)]  # [leads, beats, window]
        out.append(np.median(window, axis=1))
    return resample_poly(np.stack(out).astype(np.float64), BEAT_FS, round(fs), axis=-1)


def rhythm_features(r_peaks: list[np.ndarray], fs: float) -> np.ndarray:
    """Mean RR (s), its coefficient of variation, RMSSD / mean and shortest / longest RR."""
    rows = []
    for peaks in r_peaks:
        rr = np.diff(peaks) / fs
        rows.append([rr.mean(), rr.std() / rr.mean(), np.sqrt(np.mean(np.diff(rr) ** 2)) / rr.mean(), rr.min() / rr.max()])
    return np.asarray(rows)


def echo_latents(pop: Population) -> np.ndarray:
    """What the echo renderer reads from the population (see the module docstring)."""
    return np.column_stack([
        pop.lvef, pop.lvedv, pop.lvesv, pop.wall_thickness, pop.la_scale,
        pop.valve == 1, pop.valve == 2, (pop.valve > 0) & pop.valve_severe,
        *(pop.mi_territory == k for k in (1, 2, 3)),
        pop.af, pop.heart_rate, np.where(pop.af, 0.0, pop.pr_ms + 0.45 * pop.qrs_ms),
    ]).astype(np.float64)


def true_labs(pop: Population, cfg: SynthConfig, chunk_index: int) -> np.ndarray:
    """The analytes of chunk ``chunk_index`` before measurement: the lab simulator's own draws, in its order."""
    values = synth_true_labs(pop, chunk_rng(cfg, chunk_index, "labs"))
    return np.column_stack([np.log(v) if k in _LOG_LABS else v for k, v in sorted(values.items())])


def note_latents(chunk: CohortChunk, cfg: SynthConfig) -> np.ndarray:
    """What chunk ``chunk.index``'s notes state before wording, omission and typos (the clinician's
    calls, reported measurements, quoted labs), redrawn from the notes' own random stream."""
    return note_content(chunk.pop, chunk_rng(cfg, chunk.index, "notes"), labs=chunk.labs, style=cfg.notes.style).to_numpy()


def _fill_missing(x: np.ndarray) -> np.ndarray:
    """NaN -> the column's median, plus a 0/1 column per column that has any (label-free, whole cohort)."""
    missing = np.isnan(x)
    cols = missing.any(axis=0)
    filled = np.where(missing, np.nan_to_num(np.nanmedian(np.where(missing.all(0), 0.0, x), axis=0)), x)
    return np.hstack([filled, missing[:, cols].astype(float)])


def _chunk_features(chunk: CohortChunk, cfg: SynthConfig) -> tuple[np.ndarray, ...]:
    r_peaks = chunk.beats.r_peak_samples(cfg.ecg.fs)
    return (median_beats(chunk.ecg, r_peaks, cfg.ecg.fs), rhythm_features(r_peaks, cfg.ecg.fs),
            echo_latents(chunk.pop), true_labs(chunk.pop, cfg, chunk.index), note_latents(chunk, cfg))


def oracle_features(cfg: SynthConfig) -> OracleFeatures:
    """Regenerate the cohort of ``cfg`` without noise and return the oracle's features and labels."""
    clean = oracle_synth_config(cfg)
    parts, labels = [], []
    for index in range(len(chunk_bounds(clean))):
        chunk = generate_chunk(clean, index)
        parts.append(_chunk_features(chunk, clean))
        labels.append(chunk.labels)
    beats, rhythm, echo, labs, notes = (np.concatenate(p) for p in zip(*parts))
    columns = ["triage"] + [c for c in labels[0].columns if c.startswith("dx_")]
    return OracleFeatures(beats, rhythm, echo, labs, _fill_missing(notes),
                          {c: np.concatenate([lab[c].to_numpy() for lab in labels]).astype(int) for c in columns})


def modality_blocks(features: OracleFeatures, modality: str) -> tuple[np.ndarray | None, np.ndarray]:
    """(waveform block or None, tabular block) that the oracle of ``modality`` sees."""
    if modality in ECG_LEADS:
        rows = [LEADS_12.index(lead) for lead in ECG_LEADS[modality]]
        return features.beats[:, rows].reshape(len(features.beats), -1), features.rhythm
    if modality == "echo":
        return None, features.echo
    if modality == "labs":
        return None, features.labs
    if modality == "notes":
        return None, features.notes
    if modality == "all":
        return (features.beats.reshape(len(features.beats), -1),
                np.hstack([features.rhythm, features.echo, features.labs, features.notes]))
    raise ValueError(f"unknown modality set {modality!r}; choose from {', '.join(ORACLE_SETS)}")


# ---------------------------------------------------------------------------------------------
# cross-validated fits


def _reduce(wave: np.ndarray | None, tab: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Standardise (and PCA the waveform block), fitted on the ``train`` rows without labels."""
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    blocks = [StandardScaler().fit(tab[train]).transform(tab)]
    if wave is not None:
        scaled = StandardScaler().fit(wave[train]).transform(wave)
        k = max(2, min(64, len(train) // 10, wave.shape[1]))
        pca = PCA(n_components=k, svd_solver="randomized", random_state=0).fit(scaled[train])
        blocks.insert(0, pca.transform(scaled) / np.sqrt(pca.explained_variance_[0]))
    return np.hstack(blocks)


def _models() -> list:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    return [LogisticRegression(C=1.0, max_iter=5000),
            HistGradientBoostingClassifier(max_iter=150, learning_rate=0.06, max_leaf_nodes=15, min_samples_leaf=10,
                                           l2_regularization=1.0, early_stopping=False, random_state=0)]


def _out_of_fold(x_by_fold: list[np.ndarray], y: np.ndarray, folds: list) -> np.ndarray:
    """Out-of-fold score: the mean probability of the logistic and the boosted model."""
    score = np.zeros(len(y))
    for x, (train, test) in zip(x_by_fold, folds):
        score[test] = np.mean([m.fit(x[train], y[train]).predict_proba(x[test])[:, 1] for m in _models()], axis=0)
    return score


def oracle_ceilings(config: Config, **options: Any) -> dict:
    """Out-of-fold AUROC of the noise-free oracle for every label and modality set of the cohort
    ``config.synth`` describes, JSON-ready; ``options`` as for :func:`measure_ceilings`."""
    return measure_ceilings(oracle_features(config.synth), **options)


def measure_ceilings(
    features: OracleFeatures,
    *,
    folds: int = 5,
    bootstrap: int = 200,
    seed: int = 0,
    labels: list[str] | None = None,
    modalities: list[str] | None = None,
) -> dict:
    """``{"patients", "folds", "bootstrap", "seed", "labels": {label: {"positives", "auroc": {modality:
    {"auc", "ci_low", "ci_high"}}}}}``; ``labels`` and ``modalities`` restrict it (default: all).
    A label with fewer than ``2 * folds`` patients in a class gets a ``note`` instead."""
    from sklearn.model_selection import StratifiedKFold

    modalities = list(modalities or ORACLE_SETS)
    n = len(features.rhythm)
    results: dict = {"patients": n, "folds": folds, "bootstrap": bootstrap, "seed": seed, "labels": {}}
    for label in labels or features.labels:
        y = features.labels[label]
        entry: dict = {"positives": int(y.sum()), "auroc": {}}
        results["labels"][label] = entry
        if min(y.sum(), n - y.sum()) < 2 * folds:
            entry["note"] = f"fewer than {2 * folds} patients in a class: not measured"
            continue
        splits = list(StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(y, y))
        for modality in modalities:
            wave, tab = modality_blocks(features, modality)
            score = _out_of_fold([_reduce(wave, tab, train) for train, _ in splits], y, splits)
            auc, lo, hi = auroc_ci(y, score, n_boot=bootstrap, seed=seed)
            entry["auroc"][modality] = {"auc": round(auc, 4), "ci_low": round(lo, 4), "ci_high": round(hi, 4)}
    return json.loads(json.dumps(results))


# ---------------------------------------------------------------------------------------------
# the tables


def calibration_table_markdown(results: dict, probes: dict | None = None) -> str:
    """One row per :data:`PUBLISHED` entry: the published range, the oracle ceiling [95 % CI], whether it
    lands inside, and the simple probe (``docs/simulator_results.json``'s format) where it has one."""
    lines = ["| label | lead set | published | oracle ceiling | inside | simple probe | source |",
             "|---|---|---|---|---|---|---|"]
    for (label, modality), ref in PUBLISHED.items():
        a = results["labels"].get(label, {}).get("auroc", {}).get(modality)
        probe = (probes or {}).get("labels", {}).get(label, {}).get("auroc", {}).get(modality)
        ceiling = "n/a" if a is None else f"{a['auc']:.2f} [{a['ci_low']:.2f}, {a['ci_high']:.2f}]"
        inside = "" if a is None else ("yes" if ref.low <= a["auc"] <= ref.high else "no")
        lines.append(f"| {label} | {ORACLE_SETS[modality]} | {ref.low:.2f}-{ref.high:.2f} | {ceiling} | {inside} | "
                     f"{'n/a' if probe is None else format(probe['auc'], '.2f')} | {ref.source} |")
    return "\n".join(lines) + "\n"


def ceiling_table_markdown(results: dict, probes: dict | None = None) -> str:
    """One row per label, one column per modality set: oracle AUROC [95 % CI], and the simple
    probe's AUROC next to it where ``probes`` (``docs/simulator_results.json``'s format) has one."""
    modalities = [m for m in ORACLE_SETS if any(m in e["auroc"] for e in results["labels"].values())]
    lines = ["| label | positives | " + " | ".join(ORACLE_SETS[m] for m in modalities) + " |",
             "|" + "---|" * (len(modalities) + 2)]
    for label, entry in results["labels"].items():
        probe_row = (probes or {}).get("labels", {}).get(label, {}).get("auroc", {})
        cells = []
        for m in modalities:
            a = entry["auroc"].get(m)
            cell = "n/a" if a is None else f"{a['auc']:.2f} [{a['ci_low']:.2f}, {a['ci_high']:.2f}]"
            if a is not None and m in probe_row:
                cell += f" (probe {probe_row[m]['auc']:.2f})"
            cells.append(cell)
        lines.append(f"| {label} | {entry['positives']} | " + " | ".join(cells) + " |")
    lines += ["", f"Out-of-fold AUROC of the noise-free oracle, {results['folds']}-fold CV on {results['patients']} "
              f"patients, 95 % bootstrap CI ({results['bootstrap']} resamples)"
              + ("; after it in parentheses, the simple probe of the table above (same cohort, noisy files)." if probes else ".")]
    return "\n".join(lines) + "\n"
