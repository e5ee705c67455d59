"""The clinician-readable HTML report of one pipeline run, from ``metrics.json`` and its figures.

Plain language first (what was predicted, for whom, how well, how sure), methods after. Every
number on test studies carries its 95 % bootstrap interval; "n/a" marks what could not be
computed (too few patients, one class).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..config import Config
from .report import Report

__all__ = ["headline_rows", "write_report"]


def _cell(metric: Mapping[str, Any] | None, fmt: str = "{:.3f}") -> str:
    return "n/a" if metric is None else Report.metric_cell(metric, fmt)


def _num(value: float | None, fmt: str = "{:.3f}") -> str:
    return "n/a" if value is None else fmt.format(value)


def headline_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per model: triage AUROC / AUPRC / sensitivity / specificity, macro diagnosis AUROC,
    LVEF MAE and calibration error, each with its interval."""
    rows = []
    for name, m in results["models"].items():
        t = m["triage"]
        lvef = m.get("lvef", {}).get("mae")
        rows.append({
            "model": name,
            "input": ", ".join(m.get("modalities_used", [])) or f"handheld ECG: {', '.join(m.get('leads', []))}",
            "urgent referral AUROC": _cell(t["auroc"]),
            "AUPRC": _cell(t["auprc"]),
            "sensitivity": _cell(t["sensitivity"], "{:.2f}"),
            "specificity": _cell(t["specificity"], "{:.2f}"),
            "diagnoses macro AUROC": _cell(m.get("diagnoses", {}).get("macro", {}).get("auroc")),
            "LVEF MAE (%)": _cell(lvef, "{:.1f}"),
            "ECE after scaling": _num(m["calibration"]["after"]["ece"]),
        })
    return rows


def _subgroup_rows(rows: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [{"subgroup": r["subgroup"], "group": r["group"], "patients": r["n"], "urgent": r["n_pos"],
             "AUROC": _cell(r.get("auroc")), "sensitivity": _cell(r.get("sensitivity"), "{:.2f}"),
             "specificity": _cell(r.get("specificity"), "{:.2f}"), "note": r.get("note", "")} for r in rows]


def _diagnosis_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    models = {k: v for k, v in results["models"].items() if "diagnoses" in v}
    if not models:
        return []
    names = [n for n in next(iter(models.values()))["diagnoses"] if n != "macro"]
    rows = []
    for dx in names:
        row: dict[str, Any] = {"diagnosis": dx.replace("_", " ")}
        for model, m in models.items():
            row[model] = _cell(m["diagnoses"][dx]["auroc"])
        rows.append(row)
    return rows


def _figure(report: Report, figures: Path, name: str, caption: str) -> None:
    if (figures / name).is_file():
        report.figure(figures / name, caption)


def write_report(results: Mapping[str, Any], figures: str | Path, path: str | Path, *, config: Config | None = None,
                 title: str = "cardiodistill: mobile-ECG triage report") -> Path:
    """Assemble the report (module doc) and write it atomically to ``path``."""
    figures = Path(figures)
    c = results["cohort"]
    splits = c["splits"]
    report = Report(title, f"{c['studies']} studies; every figure below is on the {splits['test']} held-out test "
                           "studies unless it says otherwise")
    report.note("Urgent referral is the triage output: LVEF < 40 %, acute ischaemia, AF faster than 100 bpm, "
                "potassium >= 6.0 mmol/L or severe valve disease. Intervals are 95 % bootstrap intervals over "
                "patients. Thresholds and calibration were chosen on validation studies, never on test.")

    report.section("Results at a glance")
    report.table(headline_rows(results), caption="Teacher (hospital data) and students (handheld ECG) on test")
    _figure(report, figures, "roc_triage.png", "ROC curves for urgent referral")
    teacher = results["models"].get("teacher (all modalities)")
    students = {k: v for k, v in results["models"].items() if v["kind"] == "student"}
    t_auc = teacher["triage"]["auroc"]["value"] if teacher else None
    if t_auc is not None and students:
        lines = [f"{name}: AUROC {auc:.3f} ({auc - t_auc:+.3f} vs the teacher)" for name, m in students.items()
                 if (auc := m["triage"]["auroc"]["value"]) is not None]
        report.paragraph("What distillation costs: " + "; ".join(lines) + ".")

    report.section("Cohort", "Who the figures describe.")
    report.table([{"split": k, "studies": v} for k, v in splits.items()],
                  caption="Studies per split (labelled = training studies whose labels the teacher saw)")
    report.table([{"output": k.replace("_", " "), "prevalence on test": f"{100 * v:.1f} %"}
                  for k, v in c["prevalence_test"].items()], caption="How common each output is on test")
    report.paragraph(f"Test studies: median age {c['age_test']['median']:.0f} (IQR {c['age_test']['iqr'][0]:.0f}-"
                     f"{c['age_test']['iqr'][1]:.0f}); sex {', '.join(f'{k} {v}' for k, v in c['sex_test'].items())}. "
                     "Modalities present: " + ", ".join(f"{m} {100 * v:.0f} %" for m, v in c["modalities_present"].items())
                     + ".")
    if c.get("skipped"):
        report.note(f"{len(c['skipped'])} unreadable files were skipped (the study kept its other modalities).",
                    "warning")

    report.section("Diagnoses", "AUROC per diagnosis on test, per model.")
    report.table(_diagnosis_rows(results))

    report.section("Calibration", "Does a predicted 30 % mean 30 %? Probabilities after temperature scaling "
                                  "(one temperature per model, fitted on validation).")
    report.table([{"model": k, "temperature": _num(m["temperature"], "{:.2f}"),
                   "ECE before": _num(m["calibration"]["before"]["ece"]),
                   "ECE after": _num(m["calibration"]["after"]["ece"]),
                   "Brier after": _num(m["calibration"]["after"]["brier"])} for k, m in results["models"].items()])
    _figure(report, figures, "reliability.png", "Reliability diagram for urgent referral, test studies")

    lvef_models = {k: m["lvef"] for k, m in results["models"].items() if "lvef" in m}
    if lvef_models:
        report.section("Ejection fraction", "LVEF estimated by each model against the recorded value, in % points.")
        report.table([{"model": k, "MAE": _cell(v["mae"], "{:.1f}"), "bias": _cell(v["bias"], "{:.1f}"),
                       "limits of agreement": f"{_num(v['loa_low']['value'], '{:.1f}')} to "
                                              f"{_num(v['loa_high']['value'], '{:.1f}')}",
                       "r": _cell(v["pearson_r"], "{:.2f}")} for k, v in lvef_models.items()])

    report.section("Subgroups", "Urgent referral by sex and age band; small groups are marked, not hidden.")
    for model, rows in results.get("subgroups", {}).items():
        report.table(_subgroup_rows(rows), caption=model)

    report.section("Stage 2: what alignment learned")
    phases = results.get("phases", {})
    if phases:
        report.table([{"event": k, "studies with truth": v["n_truth"], "found": f"{100 * v['found']:.0f} %",
                       "median error (ms)": "n/a" if v["median_ms"] is None else f"{v['median_ms']:.0f}",
                       "90th percentile (ms)": "n/a" if v["p90_ms"] is None else f"{v['p90_ms']:.0f}"}
                      for k, v in phases.items() if k != "note"],
                     caption="Cardiac phases found from the signals (used by the temporal objective) vs the "
                             "simulator's truth. " + phases.get("note", ""))
    stage2 = results.get("stage2", {})
    if "retrieval_ecg_to_echo" in stage2:
        r = stage2["retrieval_ecg_to_echo"]
        report.paragraph("Finding a patient's echo from their ECG among all test patients: " + ", ".join(
            f"recall@{k} {_num(r[f'recall@{k}'], '{:.2f}')} (chance {_num(r[f'chance@{k}'], '{:.2f}')})"
            for k in (1, 5, 10)) + ".")
    _figure(report, figures, "label_fraction.png",
            "Frozen-embedding probes vs the share of labelled training studies (macro AUROC, triage + diagnoses)")
    fusion = results.get("fusion_analysis", {})
    if fusion:
        report.paragraph("How much each modality drives the teacher's embedding (mean relative source variance): "
                         + ", ".join(f"{m} {_num(v, '{:.2f}')}" for m, v in fusion["rsv_mean"].items()) + ".")
    _figure(report, figures, "attention_rollout.png", "Attention rollout: share of attention from each modality "
                                                      "(rows) to each modality (columns) in the teacher's fusion")
    _figure(report, figures, "rsv.png", "Relative source variance of the teacher's embedding units")

    failures = results.get("failures", {})
    if failures.get("examples"):
        report.section("Failure examples", f"The most confident wrong urgent-referral calls of {failures['model']} "
                                           "on test, with what the teacher said.")
        report.table(failures["examples"])
        _figure(report, figures, "failures.png", "Their handheld lead-I recordings")

    report.section("Methods")
    report.paragraph("Stage 1 pretrains each modality's encoder without labels (ECG masked autoencoder, echo video "
                     "model). Stage 2 aligns the ECG, echo, labs and note encoders on unlabelled paired studies. "
                     "Stage 3 fine-tunes a multimodal teacher on the labelled studies and distils it into students "
                     "that read only the handheld ECG, trained on every training study with the teacher's soft "
                     "targets and embedding.")
    if config is not None:
        report.paragraph(f"Preset {config.preset}; alignment objectives {', '.join(config.align.objectives)}; "
                         f"teacher mode {config.finetune.mode}; students on {config.distill.leads} leads; "
                         f"{config.pipeline.bootstrap} bootstrap resamples; threshold rule {config.pipeline.threshold}.")
    return report.write(path)
