"""The evidence for stages 2 and 3: the teacher and the students on the held-out test studies.

:func:`evaluate_pipeline` reads a teacher, its students and (optionally) the aligned model, and
writes ``metrics.json`` and the figures of the report into one folder:

* per model (the teacher with all its modalities and with some left out; every student): triage
  AUROC / AUPRC / balanced accuracy / F1 / sensitivity / specificity with bootstrap 95 % CIs at a
  threshold chosen on validation, the diagnoses' AUROC (macro and each) and their operating points
  (each diagnosis's threshold chosen on validation by the same rule as triage's), LVEF agreement
  (MAE, Bland-Altman), calibration (ECE, Brier, NLL with CIs) before and after temperature scaling
  (the temperature fitted on validation);
* what distillation costs: each student's triage AUROC minus the teacher's, a paired bootstrap
  difference on the same test studies;
* subgroups (sex, age band) of the teacher and the students;
* stage 2: ECG -> echo retrieval recall@k of the aligned model, the accuracy of the cardiac
  phases the temporal objective uses against the simulator's truth, the label-fraction curve
  of frozen-embedding probes, attention rollout and relative source variance of the fusion;
* failure examples: the student's most confident wrong triage calls.

Nothing here trains a network; thresholds and temperatures see validation studies only. Patients
are named by :func:`~cardiodistill.privacy.pseudonym` of their ``patient_id`` in ``metrics.json``
and the figures; ``show_ids=True`` (an explicit opt-in) adds the real ids.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..errors import DataError
from ..io.atomic import write_json_atomic
from ..models.fusion import CardioTeacher
from ..privacy import pseudonym
from ..train.checkpoints import load_model, read_model_file
from ..train.teacher import predict_studies
from .calibration import apply_temperature, calibration_report, fit_temperature, plot_reliability
from .clinical import (
    age_bands,
    binary_metrics,
    choose_threshold,
    multilabel_metrics,
    paired_difference,
    plot_label_fraction_curve,
    plot_roc,
    recall_at_k,
    subgroup_metrics,
)
from .regression import regression_metrics

if TYPE_CHECKING:  # evaluation reads a cohort; it does not depend on the pipeline that built it
    from ..data.cohort import Cohort

__all__ = ["MODALITY_SETS", "evaluate_pipeline", "failure_examples", "model_metrics"]

#: Teacher variants scored on test: which modalities it is given.
MODALITY_SETS = {
    "all modalities": ("ecg", "echo", "labs", "note"),
    "12-lead ECG only": ("ecg",),
    "no echo": ("ecg", "labs", "note"),
    "echo only": ("echo",),
}


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _threshold_or_nan(y_val: np.ndarray, p_val: np.ndarray, rule: str) -> float:
    """:func:`choose_threshold` on validation, NaN when validation lacks a class (no operating point is reported)."""
    try:
        return choose_threshold(y_val, p_val, rule=rule)
    except DataError:
        return float("nan")


def model_metrics(val: Mapping[str, np.ndarray], test: Mapping[str, np.ndarray], cohort: Cohort, *,
                  n_boot: int, rule: str, seed: int = 0) -> dict[str, Any]:
    """Test metrics of one model from its ``logits [n, C]`` and ``lvef_pct [n]`` on val and test
    (each with ``index``, the cache rows): the temperature and every output's threshold (triage and
    each diagnosis, by ``rule``) come from val; a diagnosis without both classes on val has no
    threshold and no operating-point metrics."""
    y_val, y_test = cohort.labels[val["index"]], cohort.labels[test["index"]]
    temperature = fit_temperature(val["logits"], y_val)
    p_val = apply_temperature(val["logits"], temperature)
    p_test = apply_temperature(test["logits"], temperature)
    threshold = choose_threshold(y_val[:, 0], p_val[:, 0], rule=rule)
    out = {
        "temperature": temperature,
        "triage": binary_metrics(y_test[:, 0], p_test[:, 0], threshold=threshold, n_boot=n_boot, seed=seed),
        "calibration": calibration_report(y_test[:, 0], test["logits"][:, 0], temperature, n_boot=n_boot, seed=seed),
    }
    if len(cohort.outputs) > 1:
        cuts = [_threshold_or_nan(y_val[:, c], p_val[:, c], rule) for c in range(1, y_val.shape[1])]
        out["diagnoses"] = multilabel_metrics(y_test[:, 1:], p_test[:, 1:], cohort.outputs[1:], thresholds=cuts,
                                              n_boot=n_boot, seed=seed)
    lvef_true = cohort.lvef_labels[test["index"]]
    if np.isfinite(lvef_true).sum() >= 3:
        out["lvef"] = regression_metrics(lvef_true, test["lvef_pct"], n_boot=n_boot, seed=seed)
    out["_p_test"] = p_test
    return out


def _strip(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if not k.startswith("_")}


class _TeacherView(torch.nn.Module):
    """The teacher with some modalities withheld, as a ``batch -> outputs`` function."""

    def __init__(self, teacher: CardioTeacher, modalities: Sequence[str]):
        super().__init__()
        self.teacher, self.modalities = teacher, set(modalities)

    def forward(self, batch):
        drop = {m: torch.ones(len(batch["index"]), dtype=torch.bool) for m in self.teacher.fusion.modalities
                if m not in self.modalities}
        out = self.teacher(batch, drop=drop)
        return {**out, "lvef_pct": self.teacher.lvef_percent(out["lvef"])}


def _predict(forward: Callable, cohort: Cohort, rows: np.ndarray, modalities=("ecg", "mobile", "echo", "labs", "note"),
             batch_size: int = 64) -> dict[str, np.ndarray]:
    return predict_studies(forward, cohort.dataset(rows, modalities=modalities), batch_size=batch_size,
                           keys=("logits", "lvef_pct"))


def _student_forward(student) -> Callable:
    n = len(student.leads)

    def forward(batch):
        out = student(batch["mobile"][:, :n].float())
        return {**out, "lvef_pct": out["lvef"] * student.lvef_std + student.lvef_mean}

    return forward


def phase_accuracy(cohort: Cohort) -> dict[str, Any]:
    """Detected cardiac phases (what the temporal objective uses) against the simulator's truth:
    median and 90th-percentile absolute error in ms, and the share found, over all studies."""
    cache, spec = cohort.cache, cohort.cache.spec
    result = {}
    ecg, gt_ecg = cache.load("ecg_phase"), cache.load("gt_ecg_phase")
    echo, gt_echo = cache.load("echo_phase"), cache.load("gt_echo_phase")
    frame_ms = 1000.0 * (spec.clip.cycles or 1.0) * 60.0 / 70.0 / spec.clip.frames  # nominal, at 70 bpm
    for name, det, gt, unit in (("R-peak", ecg[:, 0], gt_ecg[:, 0], 1000.0 / spec.ecg.fs),
                                ("T end", ecg[:, 1], gt_ecg[:, 1], 1000.0 / spec.ecg.fs),
                                ("end-diastole", echo[:, 0], gt_echo[:, 0], frame_ms),
                                ("end-systole", echo[:, 1], gt_echo[:, 1], frame_ms)):
        has_truth = gt >= 0
        both = has_truth & (det >= 0)
        err = np.abs(det[both] - gt[both]).astype(float) * unit
        result[name] = {"n_truth": int(has_truth.sum()), "found": float(both.sum() / max(1, has_truth.sum())),
                        "median_ms": float(np.median(err)) if len(err) else None,
                        "p90_ms": float(np.percentile(err, 90)) if len(err) else None}
    result["note"] = (f"ECG errors at {spec.ecg.fs:g} Hz samples; echo errors in frames of the model's clip "
                      f"({spec.clip.frames} per cycle), shown in ms at a nominal 70 bpm")
    return result


@torch.no_grad()
def _embeddings(aligned, cohort: Cohort, rows: np.ndarray, batch_size: int = 64) -> dict[str, np.ndarray]:
    out: dict[str, list[np.ndarray]] = {"pooled": [], "ecg": [], "echo": [], "ecg_unimodal": []}
    aligned.eval()
    for batch in DataLoader(cohort.dataset(rows), batch_size=batch_size):
        fused = aligned(batch)
        clip = aligned.clip_embeddings(fused)
        out["pooled"].append(fused.pooled.numpy())
        out["ecg_unimodal"].append(fused.unimodal["ecg"].numpy())
        for m in ("ecg", "echo"):
            if m in clip:
                out[m].append(clip[m].numpy())
    return {k: np.concatenate(v) for k, v in out.items() if v}


def _probe_curve(emb_train: np.ndarray, emb_test: np.ndarray, y_train: np.ndarray, y_test: np.ndarray,
                 fractions: Sequence[float], seed: int, n_boot: int, method: str) -> list[dict[str, Any]]:
    """Macro AUROC of logistic probes (one per output) on nested label fractions."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(emb_train))
    rows = []
    scaler = StandardScaler().fit(emb_train)
    a, b = scaler.transform(emb_train), scaler.transform(emb_test)
    for fraction in fractions:
        take = order[: max(10, int(round(fraction * len(order))))]
        scores = np.full(y_test.shape, np.nan)
        for c in range(y_test.shape[1]):
            y = y_train[take, c]
            known = np.isfinite(y)
            if len(np.unique(y[known])) < 2:
                continue
            clf = LogisticRegression(C=0.1, max_iter=2000).fit(a[take][known], y[known])
            scores[:, c] = clf.predict_proba(b)[:, 1]
        ok = ~np.isnan(scores).all(0)
        macro = multilabel_metrics(y_test[:, ok], scores[:, ok], [str(i) for i in np.flatnonzero(ok)],
                                   n_boot=n_boot, seed=seed)["macro"]["auroc"]
        rows.append({"method": method, "fraction": float(fraction), "n_labelled": len(take),
                     "auroc": macro["value"], "ci_low": macro["ci_low"], "ci_high": macro["ci_high"]})
    return rows


def _fusion_analysis(teacher: CardioTeacher, cohort: Cohort, rows: np.ndarray, figures: Path, seed: int) -> dict:
    """Attention rollout (modality x modality share) and relative source variance of the teacher's fusion."""
    from .analysis import (
        attention_rollout,
        modality_attention_share,
        plot_modality_attention,
        plot_rsv,
        relative_source_variance,
    )

    fusion = teacher.fusion
    take = rows[: min(64, len(rows))]
    batch = next(iter(DataLoader(cohort.dataset(take), batch_size=len(take))))
    if "note" in fusion.modalities:
        batch["note_ids"], batch["note_mask"] = fusion.encoders["note"].encode_texts(list(batch.pop("note")))
    else:
        batch.pop("note")
    maps, out = fusion.attention_maps(batch)
    rollout = attention_rollout(maps, out.key_mask)
    names = list(fusion.modalities)
    share = modality_attention_share(rollout, out.token_modality, len(names), out.key_mask)
    plot_modality_attention(share, names, figures / "attention_rollout.png")
    groups = {"ecg": ["ecg", "ecg_present", "has_ecg"], "echo": ["echo", "echo_mask", "has_echo"],
              "labs": ["labs", "has_labs"], "note": ["note_ids", "note_mask", "has_note"]}
    groups = {m: groups[m] for m in names}
    tensors = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
    rsv, rsv_names = relative_source_variance(lambda b: fusion(b).pooled, tensors, groups,
                                              n_anchor=8, n_vary=min(32, len(take)), seed=seed)
    plot_rsv(rsv, rsv_names, figures / "rsv.png")
    share = share.numpy() if isinstance(share, torch.Tensor) else np.asarray(share)
    dominant = np.asarray(rsv).argmax(1)
    return {"attention_share": {a: {b: float(share[i, j]) for j, b in enumerate(names)} for i, a in enumerate(names)},
            "rsv_mean": {m: float(np.asarray(rsv)[:, i].mean()) for i, m in enumerate(rsv_names)},
            "rsv_dominant_units": {m: int((dominant == i).sum()) for i, m in enumerate(rsv_names)}}


def _float_or_none(value: Any) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


def failure_examples(table, rows: np.ndarray, y: np.ndarray, p_student: np.ndarray, p_teacher: np.ndarray | None,
                     threshold: float, n: int, dx_columns: Sequence[str], *,
                     show_ids: bool = False) -> list[tuple[int, dict[str, Any]]]:
    """The student's ``n`` most confident wrong triage calls among the test ``rows`` of the manifest ``table``:
    ``(table row, example)`` pairs, the most confident first.

    An example names the patient by ``"patient"``, the keyed :func:`~cardiodistill.privacy.pseudonym` of the
    manifest's ``patient_id``; ``show_ids=True`` adds the real ``"patient_id"``. It also holds the true
    ``"label"``, ``"student_p"``, ``"teacher_p"``, ``"lvef"``, ``"diagnoses"`` (the ``dx_columns`` set, without
    their ``dx_`` prefix), ``"age"`` and ``"sex"``.
    """
    wrong = np.flatnonzero(np.isfinite(y) & ((p_student >= threshold) != (y == 1)))
    wrong = wrong[np.argsort(-np.abs(p_student[wrong] - threshold))][:n]
    out = []
    for k in wrong:
        row = int(rows[k])
        pid = str(table.at[row, "patient_id"])
        example: dict[str, Any] = {"patient": pseudonym(pid)}
        if show_ids:
            example["patient_id"] = pid
        dx = [c.removeprefix("dx_") for c in dx_columns if table.at[row, c] == 1]
        example.update({"label": int(y[k]), "student_p": float(p_student[k]),
                        "teacher_p": None if p_teacher is None else float(p_teacher[k]),
                        "lvef": _float_or_none(table.at[row, "lvef"]), "diagnoses": ", ".join(dx) or "none",
                        "age": _float_or_none(table.at[row, "age"]), "sex": str(table.at[row, "sex"])})
        out.append((row, example))
    return out


def _failure_figure(cohort: Cohort, rows: np.ndarray, p_student: np.ndarray, p_teacher: np.ndarray | None,
                    threshold: float, n: int, path: Path, show_ids: bool = False) -> list[dict[str, Any]]:
    """:func:`failure_examples` of the cohort's test ``rows``, their lead-I strips in one figure at ``path``
    (titled with the same patient names as the examples)."""
    from ..evaluate.regression import save_figure
    from ..viz import _plt

    picked = failure_examples(cohort.table, rows, cohort.labels[rows, 0], p_student, p_teacher, threshold, n,
                              cohort.cache.dx_names, show_ids=show_ids)
    if not picked:
        return []
    fig, axes = _plt().subplots(len(picked), 1, figsize=(9, 1.5 * len(picked)), squeeze=False)
    fs = cohort.cache.spec.ecg.fs
    for ax, (row, example) in zip(axes[:, 0], picked):
        strip = np.asarray(cohort.cache.item("mobile", row), dtype=np.float32)[0]
        t = np.arange(len(strip)) / fs
        ax.plot(t, strip, lw=0.6, color="black")
        teacher = "" if example["teacher_p"] is None else f", teacher {example['teacher_p']:.2f}"
        lvef = "n/a" if example["lvef"] is None else f"{example['lvef']:.0f} %"
        ax.set_title(f"{example.get('patient_id', example['patient'])}: urgent={example['label']}, student "
                     f"{example['student_p']:.2f}{teacher}; LVEF {lvef}, dx: {example['diagnoses']}",
                     fontsize=8, loc="left")
        ax.set_yticks([])
        ax.set_xlim(0, t[-1])
    axes[-1, 0].set_xlabel("time (s), handheld lead I, standardised")
    fig.tight_layout()
    save_figure(fig, path)
    return [example for _, example in picked]


def evaluate_pipeline(
    cohort: Cohort,
    out: str | Path,
    *,
    teacher: str | Path,
    students: Mapping[str, str | Path],
    aligned: str | Path | None = None,
    label_fractions: Sequence[float] = (0.1, 0.3, 1.0),
    n_boot: int = 1000,
    rule: str = "youden",
    failures: int = 6,
    seed: int = 0,
    show_ids: bool = False,
) -> dict[str, Any]:
    """Score the teacher (with every modality set of :data:`MODALITY_SETS` it can take) and the
    ``students`` (name -> ``student.pt``) on the test split; write
    ``out/metrics.json`` and ``out/figures/*.png``; return the metrics (module doc).

    ``show_ids``: also write the manifest's real ``patient_id`` next to each pseudonym (failure examples,
    skipped files); off by default, so neither ``metrics.json`` nor a figure names a patient."""
    out = Path(out)
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    val_rows, test_rows = cohort.splits["val"], cohort.splits["test"]
    results: dict[str, Any] = {"cohort": cohort_summary(cohort, show_ids=show_ids), "models": {}}
    probs: dict[str, np.ndarray] = {}

    def score(name: str, forward: Callable, modalities=("ecg", "mobile", "echo", "labs", "note"), kind="teacher",
              **info):
        val = _predict(forward, cohort, val_rows, modalities)
        test = _predict(forward, cohort, test_rows, modalities)
        metrics = model_metrics(val, test, cohort, n_boot=n_boot, rule=rule, seed=seed)
        probs[name] = metrics["_p_test"][:, 0]
        results["models"][name] = {"kind": kind, **info, **_strip(metrics)}

    main_teacher = load_model(teacher)
    for label, modalities in MODALITY_SETS.items():
        if set(modalities) <= set(main_teacher.fusion.modalities):
            score(f"teacher ({label})", _TeacherView(main_teacher, modalities), modalities=modalities,
                  modalities_used=list(modalities))
    student_models = {}
    for name, path in students.items():
        student = load_model(path)
        student_models[name] = student
        info = read_model_file(path)
        score(name, _student_forward(student), modalities=("mobile",), kind="student",
              leads=list(student.leads), distilled=bool(info.get("distilled", True)),
              parameters=sum(p.numel() for p in student.parameters()))

    teacher_name = "teacher (all modalities)" if "teacher (all modalities)" in probs else next(iter(probs))
    y_test = cohort.labels[test_rows, 0]
    plot_roc({name: (y_test, p) for name, p in probs.items()}, figures / "roc_triage.png", title="Urgent referral")
    if teacher_name in probs:
        results["distillation_cost"] = {
            "reference": teacher_name, "metric": "triage AUROC, student minus reference (paired bootstrap)",
            "students": {name: paired_difference(y_test, probs[name], probs[teacher_name], n_boot=n_boot, seed=seed)
                         for name in students}}
    table = cohort.table.iloc[test_rows]
    groups = {"sex": table["sex"].astype(str).to_numpy(), "age": age_bands(table["age"].to_numpy(float))}
    results["subgroups"] = {
        name: subgroup_metrics(y_test, probs[name], groups, threshold=results["models"][name]["triage"]["threshold"],
                               n_boot=n_boot, seed=seed)
        for name in [teacher_name, *students]
    }
    calib = {name: (y_test, probs[name]) for name in [teacher_name, *students]}
    plot_reliability(calib, figures / "reliability.png", title="Urgent referral, after temperature scaling")
    if students:
        first = next(iter(students))
        threshold = results["models"][first]["triage"]["threshold"]
        results["failures"] = {"model": first, "examples": _failure_figure(
            cohort, test_rows, probs[first], probs.get(teacher_name), threshold, failures, figures / "failures.png",
            show_ids=show_ids)}

    results["phases"] = phase_accuracy(cohort)
    if aligned is not None:
        results["stage2"] = _stage2(load_model(aligned), cohort, figures, label_fractions, n_boot, seed)
    results["fusion_analysis"] = _fusion_analysis(main_teacher, cohort, test_rows, figures, seed)
    results = _json_ready(results)
    write_json_atomic(out / "metrics.json", results)
    return results


def _json_ready(value: Any) -> Any:
    """NaN / inf -> None and numpy scalars -> Python, recursively: metrics.json is strict JSON."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _stage2(aligned, cohort: Cohort, figures: Path, fractions: Sequence[float], n_boot: int, seed: int) -> dict:
    test = _embeddings(aligned, cohort, cohort.splits["test"])
    result: dict[str, Any] = {}
    if "ecg" in test and "echo" in test:
        result["retrieval_ecg_to_echo"] = recall_at_k(test["ecg"], test["echo"], ks=(1, 5, 10), n_boot=n_boot,
                                                      seed=seed)
    train = _embeddings(aligned, cohort, cohort.splits["labelled"])
    y_train, y_test = cohort.targets[cohort.splits["labelled"]], cohort.labels[cohort.splits["test"]]
    rows = _probe_curve(train["pooled"], test["pooled"], y_train, y_test, fractions, seed, n_boot,
                        "aligned fusion, frozen")
    rows += _probe_curve(train["ecg_unimodal"], test["ecg_unimodal"], y_train, y_test, fractions, seed, n_boot,
                         "aligned ECG encoder alone, frozen")
    plot_label_fraction_curve(rows, figures / "label_fraction.png", ylabel="macro AUROC (triage + diagnoses)")
    result["label_fraction"] = rows
    return result


def _skipped(entry: Any, show_ids: bool) -> Any:
    """A paired cache's skipped entry ``[patient_id, modality, reason]`` with the patient as a pseudonym."""
    if isinstance(entry, (list, tuple)) and len(entry) == 3:
        pid, modality, reason = (str(v) for v in entry)
        return {"patient": pseudonym(pid), **({"patient_id": pid} if show_ids else {}), "modality": modality,
                "reason": reason}
    return entry


def cohort_summary(cohort: Cohort, *, show_ids: bool = False) -> dict[str, Any]:
    """Counts per split, labelled studies, modality presence, label prevalence and positives (test split),
    and the skipped files (patients as pseudonyms; ``show_ids`` adds the real ids)."""
    table, splits = cohort.table, cohort.splits
    test = splits["test"]
    labels = cohort.labels[test]
    return {
        "studies": len(table),
        "splits": {k: int(len(v)) for k, v in splits.items()},
        "modalities_present": {m: float(np.mean(v)) for m, v in cohort.cache.present.items()},
        "prevalence_test": {name: float(np.nanmean(labels[:, i])) for i, name in enumerate(cohort.outputs)},
        "positives_test": {name: int(np.nansum(labels[:, i] == 1)) for i, name in enumerate(cohort.outputs)},
        "sex_test": {str(k): int(v) for k, v in table.iloc[test]["sex"].value_counts().items()},
        "age_test": {"median": float(table.iloc[test]["age"].median()),
                     "iqr": [float(table.iloc[test]["age"].quantile(q)) for q in (0.25, 0.75)]},
        "skipped": [_skipped(entry, show_ids) for entry in cohort.cache.meta.get("skipped", [])],
    }
