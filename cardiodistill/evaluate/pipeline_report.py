"""The clinician-readable HTML report of one pipeline run, from ``metrics.json`` and its figures.

Plain language first (what was predicted, for whom, how well, how sure), methods after. Every
number on test studies carries its 95 % bootstrap interval; a discrimination metric whose interval
includes chance says so ("not distinguishable from chance"), in the tables and in a note at the top;
"n/a" marks what could not be computed, with the reason where it is known (no positive test
studies, no threshold). Patients are named by pseudonym unless ``show_ids`` asks for the real ids.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..config import Config
from .report import CHANCE_NOTES, Report

__all__ = ["chance_findings", "headline_rows", "write_report"]

TEACHER = "teacher (all modalities)"


def _cell(metric: Mapping[str, Any] | None, fmt: str = "{:.3f}") -> str:
    return "n/a" if metric is None else Report.metric_cell(metric, fmt)


def _num(value: float | None, fmt: str = "{:.3f}") -> str:
    return "n/a" if value is None else fmt.format(value)


def _rank_cell(m: Mapping[str, Any], metric: str = "auroc") -> Any:
    """A per-label discrimination cell: the metric dict, or why there is none (no positive / negative test study)."""
    if m.get("n_pos") == 0:
        return f"no positive test studies (n=0 of {m.get('n', 0)})"
    if m.get("n") is not None and m.get("n_pos") == m.get("n"):
        return f"no negative test studies ({m['n']} of {m['n']} positive)"
    return m[metric]


def headline_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per model: triage AUROC / AUPRC / sensitivity / specificity, macro diagnosis AUROC,
    LVEF MAE and calibration error, each with its interval; a discrimination metric whose interval
    includes chance says so in its cell."""
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
            "ECE after scaling": _cell(m["calibration"]["after"]["ece"]),
        })
    return rows


def chance_findings(results: Mapping[str, Any]) -> list[str]:
    """One plain sentence per model with a discrimination metric whose 95 % interval includes (or lies below)
    chance: triage AUROC / AUPRC, macro diagnosis AUROC and the diagnoses concerned."""
    lines = []
    for name, m in results["models"].items():
        found = []
        for label, metric in (("urgent referral AUROC", m["triage"]["auroc"]),
                              ("urgent referral AUPRC", m["triage"]["auprc"]),
                              ("diagnoses macro AUROC", m.get("diagnoses", {}).get("macro", {}).get("auroc"))):
            if metric is not None and metric.get("vs_chance") in CHANCE_NOTES:
                found.append(f"{label} {Report.metric_cell(metric)}")
        dx = [k.replace("_", " ") for k, v in m.get("diagnoses", {}).items()
              if k != "macro" and v["auroc"].get("vs_chance") in CHANCE_NOTES]
        if dx:
            found.append(f"AUROC of {len(dx)} diagnos{'is' if len(dx) == 1 else 'es'} ({', '.join(dx)})"
                         " not distinguishable from chance")
        if found:
            lines.append(f"{name}: " + "; ".join(found) + ".")
    return lines


def _subgroup_rows(rows: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [{"subgroup": r["subgroup"], "group": r["group"], "patients": r["n"], "urgent": r["n_pos"],
             "AUROC": r.get("auroc"), "sensitivity": r.get("sensitivity"), "specificity": r.get("specificity"),
             "note": r.get("note", "")} for r in rows]


def _diagnosis_models(results: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    models = {k: v for k, v in results["models"].items() if "diagnoses" in v}
    names = [n for n in next(iter(models.values()))["diagnoses"] if n != "macro"] if models else []
    return models, names


def _diagnosis_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    models, names = _diagnosis_models(results)
    rows = []
    for dx in names:
        row: dict[str, Any] = {"diagnosis": dx.replace("_", " ")}
        for model, m in models.items():
            row[model] = _rank_cell(m["diagnoses"][dx])
        rows.append(row)
    return rows


def _operating_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each diagnosis's validation threshold and its test sensitivity / specificity, for the main teacher and the
    students."""
    models, names = _diagnosis_models(results)
    shown = {k: v for k, v in models.items() if k == TEACHER or v.get("kind") == "student"} or models
    rows = []
    for dx in names:
        for model, m in shown.items():
            d = m["diagnoses"][dx]
            row: dict[str, Any] = {"diagnosis": dx.replace("_", " "), "model": model,
                                   "threshold (validation)": "none: validation lacks a class"
                                   if d.get("threshold") is None else f"{d['threshold']:.3f}"}
            if d.get("n_pos") == 0:
                row["sensitivity"] = "no positive test studies (n=0)"
            else:
                row["sensitivity"] = d["sensitivity"]
            row["specificity"] = d["specificity"]
            rows.append(row)
    return rows


def _failure_rows(examples: Sequence[Mapping[str, Any]], show_ids: bool) -> list[dict[str, str]]:
    """The failure examples formatted per column: ages and LVEF as whole numbers, probabilities to 3 decimals."""
    rows = []
    for e in examples:
        row = {"patient (pseudonym)": str(e.get("patient", "n/a"))}
        if show_ids and "patient_id" in e:
            row["patient_id"] = str(e["patient_id"])
        row.update({
            "urgent (truth)": "yes" if e["label"] == 1 else "no",
            "student p": _num(e["student_p"]),
            "teacher p": _num(e.get("teacher_p")),
            "LVEF (%)": _num(e.get("lvef"), "{:.0f}"),
            "diagnoses": str(e.get("diagnoses", "")),
            "age (years)": _num(e.get("age"), "{:.0f}"),
            "sex": str(e.get("sex", "")),
        })
        rows.append(row)
    return rows


RSV_CAPTION = (
    "Relative source variance (RSV) of the teacher's embedding units. For each unit, one modality at a time is "
    "swapped between test studies while the others stay fixed; RSV is that modality's share of the unit's variance "
    "(shares sum to 1 per unit). Left: how each modality's RSV is spread over the units; right: every unit as a "
    "bar stacked to 1. A solid block of one colour (e.g. labs 1.00, ECG 0.00, echo 0.00) means the embedding moves "
    "only when that modality changes: the teacher's fused representation is driven by it alone and ignores the "
    "others, whatever the attention figure suggests. Fusion would show bars shared between modalities.")


def _figure(report: Report, figures: Path, name: str, caption: str) -> None:
    if (figures / name).is_file():
        report.figure(figures / name, caption)


def _distillation_line(results: Mapping[str, Any]) -> str | None:
    """"What distillation costs": each student's triage AUROC and its paired difference to the teacher, with CIs."""
    cost = results.get("distillation_cost")
    if not cost or not cost.get("students"):
        return None
    reference = cost["reference"]
    parts = []
    for name, diff in cost["students"].items():
        auc = results["models"][name]["triage"]["auroc"]
        verdict = ("" if diff.get("ci_low") is None or diff.get("ci_high") is None
                   else "; not distinguishable from the teacher" if diff["ci_low"] <= 0 <= diff["ci_high"]
                   else "")
        parts.append(f"{name}: AUROC {_cell(auc)}, {Report.metric_cell(diff, '{:+.3f}')} vs the {reference}"
                     f"{verdict}")
    return ("What distillation costs (urgent referral AUROC, student minus teacher, paired bootstrap on the same "
            "test studies): " + "; ".join(parts) + ".")


def _recall_text(r: Mapping[str, Any], k: int) -> str:
    value = r[f"recall@{k}"]
    cell = Report.metric_cell(value, "{:.2f}") if isinstance(value, Mapping) else _num(value, "{:.2f}")
    return f"recall@{k} {cell} (chance {_num(r[f'chance@{k}'], '{:.2f}')})"


def write_report(results: Mapping[str, Any], figures: str | Path, path: str | Path, *, config: Config | None = None,
                 title: str = "cardiodistill: mobile-ECG triage report", show_ids: bool = False) -> Path:
    """Assemble the report (module doc) and write it atomically to ``path``.

    ``show_ids``: show the manifest's real ``patient_id`` of the failure examples next to their pseudonym, when
    ``results`` holds it (``evaluate_pipeline(show_ids=True)``); off by default, so the report names no patient.
    """
    figures = Path(figures)
    c = results["cohort"]
    splits = c["splits"]
    report = Report(title, f"{c['studies']} studies; every figure below is on the {splits['test']} held-out test "
                           "studies unless it says otherwise")
    rule = f" (rule: {config.pipeline.threshold})" if config is not None else ""
    report.note("Urgent referral is the triage output: LVEF < 40 %, acute ischaemia, AF faster than 100 bpm, "
                "potassium >= 6.0 mmol/L or severe valve disease. Intervals are 95 % bootstrap intervals over "
                "patients. The decision threshold of every output (urgent referral and each diagnosis) and the "
                f"calibration were chosen on validation studies{rule}, never on test. A model whose interval "
                "includes chance (AUROC 0.5; AUPRC the prevalence) is marked \"not distinguishable from chance\".")

    report.section("Results at a glance")
    report.table(headline_rows(results), caption="Teacher (hospital data) and students (handheld ECG) on test")
    findings = chance_findings(results)
    if findings:
        report.note("Not distinguishable from chance on these test studies (the 95 % interval includes chance):\n"
                    + "\n".join(findings), "warning")
    _figure(report, figures, "roc_triage.png", "ROC curves for urgent referral (legend below the axes; curves "
                                               "that coincide are told apart by line style and markers)")
    line = _distillation_line(results)
    if line:
        report.paragraph(line)

    report.section("Cohort", "Who the figures describe.")
    report.table([{"split": k, "studies": v} for k, v in splits.items()],
                 caption="Studies per split (labelled = training studies whose labels the teacher saw)")
    positives = c.get("positives_test", {})
    report.table([{"output": k.replace("_", " "), "prevalence on test": "n/a" if v is None else f"{100 * v:.1f} %",
                   **({"positive test studies": positives[k]} if k in positives else {})}
                  for k, v in c["prevalence_test"].items()], caption="How common each output is on test")
    report.paragraph(f"Test studies: median age {c['age_test']['median']:.0f} (IQR {c['age_test']['iqr'][0]:.0f}-"
                     f"{c['age_test']['iqr'][1]:.0f}); sex {', '.join(f'{k} {v}' for k, v in c['sex_test'].items())}. "
                     "Modalities present: " + ", ".join(f"{m} {100 * v:.0f} %" for m, v in c["modalities_present"].items())
                     + ".")
    if c.get("skipped"):
        report.note(f"{len(c['skipped'])} unreadable files were skipped (the study kept its other modalities).",
                    "warning")

    report.section("Diagnoses", "AUROC per diagnosis on test, per model. A diagnosis without positive test studies "
                                "cannot be scored and says so.")
    report.table(_diagnosis_rows(results))
    operating = _operating_rows(results)
    if operating:
        report.table(operating, caption="Operating points: each diagnosis's threshold, chosen on validation by the "
                                        "same rule as urgent referral, applied to test")

    report.section("Calibration", "Does a predicted 30 % mean 30 %? Probabilities after temperature scaling "
                                  "(one temperature per model, fitted on validation).")
    report.table([{"model": k, "temperature": _num(m["temperature"], "{:.2f}"),
                   "ECE before": m["calibration"]["before"]["ece"],
                   "ECE after": m["calibration"]["after"]["ece"],
                   "Brier after": m["calibration"]["after"]["brier"]} for k, m in results["models"].items()],
                 caption="Expected calibration error (10 equal-width bins) and Brier score of urgent referral, "
                         "with 95 % bootstrap intervals")
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
        report.paragraph("Finding a patient's echo from their ECG among all test patients (95 % intervals over "
                         "patients): " + ", ".join(_recall_text(r, k) for k in (1, 5, 10)) + ".")
    _figure(report, figures, "label_fraction.png",
            "Frozen-embedding probes vs the share of labelled training studies (macro AUROC, triage + diagnoses)")
    fusion = results.get("fusion_analysis", {})
    if fusion:
        rsv = fusion["rsv_mean"]
        dominant = max(rsv, key=lambda m: -1.0 if rsv[m] is None else rsv[m])
        text = ("How much each modality drives the teacher's embedding (mean relative source variance over its "
                "units; 1 = the unit moves with that modality only): "
                + ", ".join(f"{m} {_num(v, '{:.2f}')}" for m, v in rsv.items()) + ".")
        if rsv[dominant] is not None and rsv[dominant] >= 0.9:
            text += (f" Nearly all of it comes from {dominant}: the fused embedding ignores the other modalities, "
                     "so whatever the teacher knows from them does not reach the students through the embedding.")
        report.paragraph(text)
    _figure(report, figures, "attention_rollout.png", "Attention rollout: share of attention from each modality "
                                                      "(rows) to each modality (columns) in the teacher's fusion")
    _figure(report, figures, "rsv.png", RSV_CAPTION)

    failures = results.get("failures", {})
    if failures.get("examples"):
        report.section("Failure examples", f"The most confident wrong urgent-referral calls of {failures['model']} "
                                           "on test, with what the teacher said. Patients are named by a keyed "
                                           "pseudonym, not by their record's identifier.")
        report.table(_failure_rows(failures["examples"], show_ids))
        if show_ids or not any("patient_id" in e for e in failures["examples"]):  # its titles name the patients
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
