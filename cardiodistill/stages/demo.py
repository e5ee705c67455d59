"""The demo: stages 1-3, the evaluation, the report and the exported student, chained in one folder.

:func:`run_pipeline` only chains the stage jobs (:mod:`.stage1`, :mod:`.stage2`, :mod:`.stage3`), the
held-out evaluation (:func:`~cardiodistill.evaluate.triage.evaluate_pipeline`), the report and the
gated ONNX export of the first student (:func:`~cardiodistill.deploy.cohort_export.export_student`).
Each finished stage is kept, so an interrupted demo continues from the last one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import Config
from ..data.cohort import open_cohort, paired_spec
from ..deploy.cohort_export import export_student
from ..errors import ConfigError
from ..evaluate.pipeline_report import write_report
from ..evaluate.triage import evaluate_pipeline
from ..io.atomic import write_json_atomic
from .common import Progress
from .stage1 import pretrain_ecg, pretrain_video
from .stage2 import encoder_config, run_align
from .stage3 import run_distill, run_finetune

__all__ = ["run_pipeline", "stage1_sources_differ"]


def stage1_sources_differ(cfg: Config) -> None:
    """Stage 1 must not see the cohort's test studies: its simulated sources need another seed."""
    for kind, sources in (("ecg", cfg.pretrain.ecg.sources), ("video", cfg.pretrain.video.sources)):
        for source in sources:
            if source.kind == "synth" and source.seed == cfg.synth.seed:
                raise ConfigError(f"pretrain.{kind}: a simulated source with the cohort's seed ({cfg.synth.seed}) "
                                  "would pretrain on the test patients; give it another seed")


def run_pipeline(cfg: Config, out: str | Path, *, progress: Progress | None = None, show_bar: bool = True,
                 steps: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Stages 1-3, evaluation and report in one folder (the demo); each finished stage is kept.

    ``out/cohort`` must hold a cohort (the demo simulates it first). Writes ``out/stage1-ecg``,
    ``out/stage1-video``, ``out/align``, ``out/teacher``, ``out/student-<n>-lead``,
    ``out/evaluation`` (metrics.json, figures), ``out/report.html`` and ``out/student.onnx`` (the
    first student, when the ``edge`` extra is installed). ``steps(name)`` is told each stage.
    """
    out = Path(out)
    say = steps or (lambda _name: None)
    stage1_sources_differ(cfg)
    summary: dict[str, Any] = {}
    encoders = {}
    for kind, job in (("ecg", pretrain_ecg), ("video", pretrain_video)):
        folder = out / f"stage1-{kind}"
        if not (folder / "encoder.pt").is_file():
            say(f"stage 1: pretraining the {kind} encoder")
            folder.mkdir(parents=True, exist_ok=True)
            summary[f"stage1_{kind}"] = {k: v for k, v in job(cfg, folder, progress=None, show_bar=show_bar).items()
                                         if k in ("steps", "metrics")}
        encoders[kind] = encoder_config(folder / "encoder.pt", {}, f"stage-1 {kind} encoder")
    spec = paired_spec(encoders["ecg"][0], encoders["video"][0])
    say("reading the cohort into the paired cache")
    cohort = open_cohort(cfg, out / "cohort", spec, progress)
    if not (out / "align" / "aligned.pt").is_file():
        say("stage 2: cross-modal alignment")
        summary["align"] = run_align(cfg, cohort, out / "align", ecg=encoders["ecg"], video=encoders["video"],
                                     show_bar=show_bar)
    if not (out / "teacher" / "teacher_outputs.npz").is_file():
        say("stage 3: fine-tuning the multimodal teacher")
        summary["teacher"] = run_finetune(cfg, cohort, out / "teacher", aligned=out / "align" / "aligned.pt",
                                          show_bar=show_bar)
    students = {}
    for n in cfg.distill.leads:
        folder = out / f"student-{n}-lead"
        if not (folder / "student.pt").is_file():
            say(f"stage 3: distilling the {n}-lead student")
            summary[f"student_{n}"] = run_distill(cfg, cohort, out / "teacher", folder, n_leads=n, show_bar=show_bar)
        students[f"student, {n} lead{'s' if n > 1 else ''}"] = folder / "student.pt"
    say("evaluating on the held-out test studies")
    p = cfg.pipeline
    results = evaluate_pipeline(cohort, out / "evaluation", teacher=out / "teacher" / "teacher.pt", students=students,
                                aligned=out / "align" / "aligned.pt", label_fractions=cfg.finetune.label_fractions,
                                n_boot=p.bootstrap, rule=p.threshold, failures=p.failures, seed=p.seed)
    name, first = next(iter(students.items()))
    threshold = results["models"][name]["triage"]["threshold"]  # chosen on validation, as in the report
    summary["onnx"] = export_student(first, out / "student.onnx", cohort, thresholds={cohort.outputs[0]: threshold})
    say("writing the report")
    write_report(results, out / "evaluation" / "figures", out / "report.html", config=cfg)
    write_json_atomic(out / "summary.json", summary)
    return {"results": results, "summary": summary}

