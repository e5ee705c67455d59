"""What each stage adds: the ablation table of stages 1-3 on one simulated cohort.

The cohort has the first user's shape: a quarter of the training split labelled (5k of 20k),
validation and test labelled, test held out from every stage. Every variant is trained with the
same preset and seed and scored on the same test studies (triage AUROC and the diagnoses' macro
AUROC, bootstrap 95 % CIs; thresholds and temperatures from validation):

* ``full``: stage 1 encoders -> stage 2 (the preset's objectives) -> teacher -> distilled students
* ``no stage 1``: stage 2 from untrained encoders;  ``no stage 2``: the teacher straight on stage 1
* each stage-2 objective alone: ``clip``, ``clip_loo``, ``temporal``, ``multimae``, and
  ``multimae without modality dropout``
* ``student without distillation``: the same student on the labelled studies alone
* the students (distilled and labels only) started from **the student's stage 1**: the CPU-scale
  ``ecg_cnn`` encoder pretrained under CLOCS (``--student-stage1-steps``, on
  ``--student-stage1-patients`` simulated patients of the stage-1 population, never the cohort), which
  on PTB-XL is the stage-1 recipe that beats training from scratch (docs/benchmarks.md); its backbone trains at
  ``finetune.encoder_lr_scale`` of the rate, and the distilled one also at the full rate (which the CinC 2017
  students needed for stage 1 to pay)
* the distilled student started from **the teacher's ECG encoder** (aligned in stage 2, fine-tuned in stage 3;
  ``distill.backbone={name: ecg_encoder}``): the plan's route from alignment to the handheld model
* the distilled lead-I student with one distillation loss left out: ``no soft targets``, ``no embedding matching``
* the ``12-lead ECG only`` and ``echo only`` teachers (from the full stage 2)

Then each student and the full teacher against the simulator's oracle ceiling for its input, and the ECG-only
embedding before and after alignment (``bench_stage2_probes.py`` on this run's stage-1 encoder and full alignment:
urgent referral and the echo-defined labels at 1, 10 and 100 % of labels).

    python benchmarks/bench_ablation.py --preset value --out runs/value   # the stage-value preset: < 2 h, 2 cores
    python benchmarks/bench_ablation.py --out runs/ablation --patients 600 --preset quick

Each finished run is kept, so an interrupted benchmark continues; the run's config is written to
``<out>/config.yaml``; ``--teachers-only`` trains and scores the teachers alone. Results go to
``benchmarks/results/ablation.json`` and markdown tables on stdout: the models, the paired differences
(:data:`PAIRS`: what each stage, objective and distillation adds) in urgent-referral AUROC on the same test
studies with paired bootstrap 95 % CIs
(:func:`~cardiodistill.evaluate.clinical.paired_difference`), the ceilings and the probes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from cardiodistill.config import config_to_yaml, load_config
from cardiodistill.data.cohort import open_cohort, paired_spec
from cardiodistill.evaluate.clinical import paired_difference
from cardiodistill.evaluate.pipeline_report import headline_rows
from cardiodistill.evaluate.triage import _predict, _student_forward, _TeacherView, model_metrics
from cardiodistill.io.atomic import write_json_atomic, write_text_atomic
from cardiodistill.stages.stage1 import pretrain_ecg, pretrain_video
from cardiodistill.stages.stage2 import encoder_config, run_align, unaligned_fusion
from cardiodistill.stages.stage3 import run_distill, run_finetune
from cardiodistill.synth.cohort import write_cohort
from cardiodistill.train.checkpoints import load_model

ALIGN_VARIANTS = {
    "full": {},
    "no stage 1": {"fresh": True},
    "clip only": {"objectives": ["clip"]},
    "clip_loo only": {"objectives": ["clip_loo"]},
    "temporal only": {"objectives": ["temporal"]},
    "multimae only": {"objectives": ["multimae"]},
    "multimae, no modality dropout": {"objectives": ["multimae"], "modality_dropout": 0.0},
}


#: (model a, model b, what a - b measures): the paired comparisons the benchmark prints
PAIRS = (
    ("teacher: full", "teacher: no stage 1", "stage 1 (teacher with vs without it)"),
    ("teacher: full", "teacher: no stage 2", "stage 2 (teacher with vs without it)"),
    *((f"teacher: {name}", "teacher: no stage 2", f"stage 2 = {name.removesuffix(' only')} alone, vs no stage 2")
      for name in ("clip only", "clip_loo only", "temporal only", "multimae only")),
    ("teacher: multimae only", "teacher: multimae, no modality dropout", "modality dropout (MultiMAE)"),
    ("student 1 lead, distilled", "student 1 lead, labels only", "distillation (lead-I student)"),
    ("student 1 lead, distilled", "student 1 lead, distilled, no soft targets", "soft targets (lead-I student)"),
    ("student 1 lead, distilled", "student 1 lead, distilled, no embedding matching",
     "embedding matching (lead-I student)"),
    ("student 1 lead, distilled", "student 1 lead, distilled from the no-stage-2 teacher",
     "stage 2 through the teacher (lead-I student)"),
    ("student 1 lead, distilled", "teacher: full", "lead-I student minus the teacher"),
    ("student 1 lead, distilled, stage-1 CNN start", "student 1 lead, distilled",
     "student's stage 1 (CLOCS CNN start vs fresh), distilled"),
    ("student 1 lead, labels only, stage-1 CNN start", "student 1 lead, labels only",
     "student's stage 1 (CLOCS CNN start vs fresh), labels only"),
    ("student 1 lead, distilled, stage-1 CNN start", "student 1 lead, labels only",
     "stage 1 and distillation together vs neither (lead-I student)"),
    ("student 1 lead, distilled, full rate, stage-1 CNN start", "student 1 lead, distilled",
     "student's stage 1, backbone at the full rate (vs fresh), distilled"),
    ("student 1 lead, distilled, full rate, stage-1 CNN start", "student 1 lead, distilled, stage-1 CNN start",
     "student's stage 1: backbone at the full rate vs 0.3x, distilled"),
    ("student 1 lead, distilled, teacher's ECG encoder start", "student 1 lead, distilled",
     "student started from the teacher's aligned, fine-tuned ECG encoder vs fresh, distilled"),
)

#: the distillation losses, each left out of the lead-I student in turn (``distill.*`` weights)
DISTIL_LOSSES = {"no soft targets": {"soft": 0.0}, "no embedding matching": {"embedding": 0.0}}

#: the simulator's oracle ceilings (docs/simulator.md, "Ceilings"): urgent-referral AUROC from noise-free content
CEILINGS = Path(__file__).resolve().parents[1] / "docs" / "ceilings_results.json"

#: the student's stage 1 (overrides of the preset): the lead-agnostic CNN under CLOCS
STUDENT_STAGE1 = ("pretrain.ecg.model={name: ecg_cnn, fs: 100.0}", "pretrain.ecg.objective=clocs",
                  "pretrain.ecg.optim.batch_size=128", "pretrain.ecg.optim.lr=1e-3",
                  "pretrain.ecg.optim.warmup_steps=50")


def paired_rows(labels: np.ndarray, scores: dict[str, tuple[np.ndarray, np.ndarray]], n_boot: int,
                extra: list[tuple[str, str, str]] = ()) -> list[dict]:
    """Urgent-referral AUROC differences of :data:`PAIRS` plus ``extra`` (those whose two models ran) on the same
    test studies; ``scores``: model -> (cache rows, probability), ``labels``: the label of every cache row."""
    rows = []
    for a, b, what in (*PAIRS, *extra):
        if a in scores and b in scores:
            (rows_a, p_a), (rows_b, p_b) = scores[a], scores[b]
            if not np.array_equal(rows_a, rows_b):
                raise RuntimeError(f"{a!r} and {b!r} were scored on different test studies")
            d = paired_difference(labels[rows_a], p_a, p_b, n_boot=n_boot)
            rows.append({"comparison": what, "a": a, "b": b,
                         **{k: float(d[k]) for k in ("value", "ci_low", "ci_high")}})
    return rows


def score_teacher(folder: Path, cohort, cfg) -> tuple[np.ndarray, np.ndarray, dict, tuple[str, ...]]:
    """``(test rows, calibrated urgent-referral probability, metrics, modalities used)`` of the teacher in
    ``folder``: temperature and threshold from validation, scored on the test studies."""
    teacher = load_model(folder / "teacher.pt")
    view = _TeacherView(teacher, teacher.fusion.modalities)
    pred = _predict(view, cohort, cohort.splits["test"])
    m = model_metrics(_predict(view, cohort, cohort.splits["val"]), pred, cohort, n_boot=cfg.pipeline.bootstrap,
                      rule=cfg.pipeline.threshold)
    return pred["index"], m["_p_test"][:, 0], {k: v for k, v in m.items() if not k.startswith("_")}, \
        tuple(teacher.fusion.modalities)


def ceiling_rows(results: dict, path: Path = CEILINGS) -> list[dict]:
    """Each student and the full teacher against the simulator's oracle ceiling for its input (lead I, leads I + II,
    the six limb leads, all modalities; measured on another cohort of the same kind, docs/simulator.md), with the
    share of it reached and the student's distance to the full teacher. Empty without the ceilings file."""
    if not path.is_file():
        return []
    ceilings = json.loads(path.read_text())["labels"]["triage"]["auroc"]
    rows = []
    for name, m in results["models"].items():
        run = name[name.rindex(" ["):] if name.endswith("]") else ""  # a --compare run's model: its own teacher
        if m["kind"] == "student":
            teacher = results["models"].get(f"teacher: full{run}", {}).get("triage", {}).get("auroc", {})
            key, minus = f"mobile{len(m['leads'])}", teacher.get("value")
        elif name == f"teacher: full{run}":
            key, minus = "all", None
        else:
            continue
        auroc, ceiling = m["triage"]["auroc"]["value"], ceilings[key]["auc"]
        rows.append({"model": name, "auroc": auroc, "ceiling": ceiling, "ceiling_input": key,
                     "share_of_ceiling": auroc / ceiling,
                     "minus_teacher": None if minus is None else auroc - minus})
    return rows


def ecg_only_probes(out: Path, repeats: int, n_boot: int) -> list[dict]:
    """The ECG-only embedding before and after alignment (``bench_stage2_probes.py`` on this run's stage-1 ECG
    encoder and full alignment, in its own process: it sets its own thread count); the cells for urgent referral
    and the echo-defined labels, AUROC. Its whole result is kept in ``<out>/stage2_probes.json``."""
    path = out / "stage2_probes.json"
    if not path.is_file():
        _log(f"ECG-only probes, {repeats} repeats")
        script = Path(__file__).with_name("bench_stage2_probes.py")
        aligned = out / "align-full" / "aligned.pt"
        subprocess.run([sys.executable, str(script), "--run", str(out), "--aligned", str(aligned),
                        "--out", str(path), "--repeats", str(repeats), "--bootstrap", str(n_boot),
                        "--cache-dir", str(out / "probes-cache"), "--no-reference"],
                       check=True, stdout=subprocess.DEVNULL)
    rows = []
    for cell in json.loads(path.read_text())["cells"]:
        if cell["metric"] != "auroc":
            continue
        d = cell["diffs"]
        rows.append({"label": cell["label"], "lead_set": cell["lead_set"], "fraction": cell["fraction"],
                     **{m: cell["models"][m]["value"] for m in ("random", "stage 1", "aligned")},
                     **{k: (d[k]["value"], d[k]["ci_low"], d[k]["ci_high"])
                        for k in ("aligned - stage 1", "stage 1 - random")}})
    return rows


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def stage2_variant(name: str, cfg, cohort, out: Path, encoders: dict, fresh: dict) -> Path:
    """Align with variant ``name`` and fine-tune its teacher; returns the teacher's folder."""
    v = ALIGN_VARIANTS[name]
    a_cfg = cfg.model_copy(deep=True)
    if "objectives" in v:
        a_cfg.align.objectives = v["objectives"]
    if "modality_dropout" in v:
        a_cfg.align.modality_dropout = v["modality_dropout"]
    folder = out / f"align-{name.replace(' ', '_').replace(',', '')}"
    if not (folder / "aligned.pt").is_file():
        _log(f"stage 2: {name}")
        src = fresh if v.get("fresh") else encoders
        run_align(a_cfg, cohort, folder, ecg=src["ecg"], video=src["video"], show_bar=False)
    t_folder = out / f"teacher-{folder.name.removeprefix('align-')}"
    if not (t_folder / "teacher_outputs.npz").is_file():
        _log(f"teacher after {name}")
        run_finetune(cfg, cohort, t_folder, aligned=folder / "aligned.pt", show_bar=False)
    return t_folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/ablation"))
    ap.add_argument("--patients", type=int, default=None, help="cohort size (default: the preset's synth.patients)")
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--variants", nargs="*", default=list(ALIGN_VARIANTS), help="stage-2 variants to run")
    ap.add_argument("--teachers-only", action="store_true", help="train and score the teachers, no student")
    ap.add_argument("--result", type=Path, default=Path("benchmarks/results/ablation.json"))
    ap.add_argument("--student-stage1-steps", type=int, default=600,
                    help="steps of the student's stage 1 (CLOCS ecg_cnn); 0: no stage-1 students")
    ap.add_argument("--student-stage1-patients", type=int, default=2000)
    ap.add_argument("--probe-repeats", type=int, default=3,
                    help="repeats of the ECG-only probes (bench_stage2_probes.py) on stage 1 vs the full alignment; "
                         "0: no probes")
    ap.add_argument("--compare", default=None, metavar="LABEL=DIR",
                    help="another finished ablation folder on the same cohort (e.g. other encoders): each of its "
                         "models that this run also has is scored as '<model> [LABEL]', with its paired difference")
    args = ap.parse_args()
    out: Path = args.out
    size = [f"synth.patients={args.patients}"] if args.patients else []
    cfg = load_config(args.preset, [*size, *args.overrides])
    args.patients = cfg.synth.patients
    started = time.time()
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "config.yaml", config_to_yaml(cfg))  # what every stage here ran with

    if not (out / "cohort" / "manifest.csv").is_file():
        _log(f"simulating {args.patients} patients")
        write_cohort(cfg, out / "cohort")
    encoders = {}
    for kind, job in (("ecg", pretrain_ecg), ("video", pretrain_video)):
        folder = out / f"stage1-{kind}"
        if not (folder / "encoder.pt").is_file():
            _log(f"stage 1 {kind}")
            job(cfg, folder, show_bar=False)
        encoders[kind] = encoder_config(folder / "encoder.pt", {}, kind)
    fresh = {"ecg": encoder_config(None, cfg.align.ecg_model, "ecg"),
             "video": encoder_config(None, cfg.align.video_model, "video")}
    cohort = open_cohort(cfg, out / "cohort", paired_spec(encoders["ecg"][0], encoders["video"][0]))
    _log(f"cohort: { {k: len(v) for k, v in cohort.splits.items()} }")

    teachers: dict[str, Path] = {}
    if "full" in args.variants:  # first: the extra teachers and the students start from it
        teachers["full"] = stage2_variant("full", cfg, cohort, out, encoders, fresh)

    extra = {"no stage 2": (None, None), "12-lead ECG only": (["ecg"], "full"), "echo only": (["echo"], "full")}
    for name, (modalities, source) in extra.items():
        t_folder = out / f"teacher-{name.replace(' ', '_')}"
        if not (t_folder / "teacher_outputs.npz").is_file():
            _log(f"teacher: {name}")
            t_cfg = cfg.model_copy(deep=True)
            if modalities is None:  # no stage 2: the stage-1 encoders under an untrained fusion
                base = unaligned_fusion(cfg, cohort, encoders["ecg"], encoders["video"])
                run_finetune(t_cfg, cohort, t_folder, base=base, show_bar=False)
            else:
                if source not in teachers:
                    continue
                t_cfg.finetune.modalities = modalities
                aligned = out / "align-full" / "aligned.pt"
                run_finetune(t_cfg, cohort, t_folder, aligned=aligned, show_bar=False)
        teachers[name] = t_folder

    students: dict[str, Path] = {}
    if "full" in teachers and not args.teachers_only:
        for n in cfg.distill.leads:
            folder = out / f"student-{n}-lead"
            if not (folder / "student.pt").is_file():
                _log(f"student {n} leads")
                run_distill(cfg, cohort, teachers["full"], folder, n_leads=n, show_bar=False)
            students[f"student {n} lead, distilled"] = folder / "student.pt"
        n = cfg.distill.leads[0]
        folder = out / f"student-{n}-lead-no-distillation"
        if not (folder / "student.pt").is_file():
            _log("student without distillation")
            run_distill(cfg, cohort, None, folder, n_leads=n, distil=False, show_bar=False)
        students[f"student {n} lead, labels only"] = folder / "student.pt"
        for label, weights in DISTIL_LOSSES.items():
            folder = out / f"student-{n}-lead-{label.replace(' ', '-')}"
            if not (folder / "student.pt").is_file():
                _log(f"student {n} lead, distilled, {label}")
                l_cfg = cfg.model_copy(deep=True)
                l_cfg.distill = l_cfg.distill.model_copy(update=weights)
                run_distill(l_cfg, cohort, teachers["full"], folder, n_leads=n, show_bar=False)
            students[f"student {n} lead, distilled, {label}"] = folder / "student.pt"
        folder = out / f"student-{n}-lead-teacher-encoder"  # the plan's student: the aligned ECG encoder's weights
        if not (folder / "student.pt").is_file():
            _log("student from the teacher's ECG encoder")
            e_cfg = cfg.model_copy(deep=True)
            e_cfg.distill.backbone = {"name": "ecg_encoder"}
            run_distill(e_cfg, cohort, teachers["full"], folder, n_leads=n, show_bar=False)
        students[f"student {n} lead, distilled, teacher's ECG encoder start"] = folder / "student.pt"
    if "full" in teachers and args.student_stage1_steps > 0 and not args.teachers_only:
        s_cfg = load_config(args.preset, [*args.overrides, *STUDENT_STAGE1,
                                          f"pretrain.ecg.optim.max_steps={args.student_stage1_steps}"])
        s_cfg.pretrain.ecg.sources = [src.model_copy(update={"patients": args.student_stage1_patients})
                                      for src in cfg.pretrain.ecg.sources]
        # where the preset's own stage 1 is this recipe to the step (the value preset), the student starts from it
        same = s_cfg.pretrain.ecg == cfg.pretrain.ecg
        folder = out / ("stage1-ecg" if same else "stage1-student-cnn")
        if not (folder / "encoder.pt").is_file():
            _log("stage 1 for the student: ecg_cnn under clocs")
            pretrain_ecg(s_cfg, folder, show_bar=False)
        d_cfg = cfg.model_copy(deep=True)
        d_cfg.distill.backbone = {"name": "pretrained", "path": str(folder / "encoder.pt")}
        n = cfg.distill.leads[0]
        full_rate = d_cfg.model_copy(deep=True)  # the backbone at the full rate: what the CinC students needed
        full_rate.finetune.encoder_lr_scale = 1.0
        for label, teacher, run_cfg in (("distilled", teachers["full"], d_cfg), ("labels only", None, d_cfg),
                                        ("distilled, full rate", teachers["full"], full_rate)):
            s_folder = out / f"student-{n}-lead-{label.replace(' ', '-').replace(',', '')}-stage1-cnn"
            if not (s_folder / "student.pt").is_file():
                _log(f"student {n} lead, {label}, from the stage-1 CNN")
                run_distill(run_cfg, cohort, teacher, s_folder, n_leads=n, distil=teacher is not None,
                            show_bar=False)
            students[f"student {n} lead, {label}, stage-1 CNN start"] = s_folder / "student.pt"
    if "no stage 2" in teachers and not args.teachers_only:
        n = cfg.distill.leads[0]
        folder = out / f"student-{n}-lead-no-stage2"
        if not (folder / "student.pt").is_file():
            _log("student from the no-stage-2 teacher")
            run_distill(cfg, cohort, teachers["no stage 2"], folder, n_leads=n, show_bar=False)
        students[f"student {n} lead, distilled from the no-stage-2 teacher"] = folder / "student.pt"

    for name in args.variants:  # then every other stage-2 variant
        if name != "full":
            teachers[name] = stage2_variant(name, cfg, cohort, out, encoders, fresh)

    compared: list[tuple[str, str, str]] = []  # (model here, the same model of the --compare run, what it measures)
    if args.compare:
        label, other = args.compare.split("=", 1)
        for models, pick, prefix in ((teachers, lambda f: f / "teacher.pt", "teacher: "), (students, lambda f: f, "")):
            for name, path in list(models.items()):
                twin = Path(other) / Path(path).relative_to(out)
                if pick(twin).is_file():
                    models[f"{name} [{label}]"] = twin
                    here = f"{prefix}{name}"
                    compared.append((here, f"{here} [{label}]", f"this run vs {label}: {here}"))

    val, test = cohort.splits["val"], cohort.splits["test"]
    results = {"models": {}, "cohort": {k: int(len(v)) for k, v in cohort.splits.items()},
               "preset": args.preset, "patients": args.patients, "overrides": args.overrides,
               "compare": args.compare}
    scores: dict[str, tuple] = {}  # (cache rows, calibrated urgent-referral probability) on the test studies
    for name, folder in teachers.items():
        rows, p, metrics, modalities = score_teacher(folder, cohort, cfg)
        scores[f"teacher: {name}"] = (rows, p)
        results["models"][f"teacher: {name}"] = {"kind": "teacher", "modalities_used": list(modalities), **metrics}
    for name, path in students.items():
        student = load_model(path)
        fwd = _student_forward(student)
        pred = _predict(fwd, cohort, test, ("mobile",))
        m = model_metrics(_predict(fwd, cohort, val, ("mobile",)), pred, cohort, n_boot=cfg.pipeline.bootstrap,
                          rule=cfg.pipeline.threshold)
        scores[name] = (pred["index"], m["_p_test"][:, 0])
        results["models"][name] = {"kind": "student", "leads": list(student.leads),
                                   **{k: v for k, v in m.items() if not k.startswith("_")}}
    results["paired_urgent_referral_auroc"] = paired_rows(cohort.labels[:, 0], scores, cfg.pipeline.bootstrap, compared)
    results["against_ceilings"] = ceiling_rows(results)
    if args.probe_repeats > 0 and (out / "align-full" / "aligned.pt").is_file():
        results["ecg_only_probes"] = ecg_only_probes(out, args.probe_repeats, cfg.pipeline.bootstrap)
    results["seconds"] = round(time.time() - started, 1)
    write_json_atomic(args.result, json.loads(json.dumps(results, default=float).replace("NaN", "null")))
    keys = ["model", "urgent referral AUROC", "diagnoses macro AUROC", "LVEF MAE (%)"]
    print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for row in headline_rows(results):
        print("| " + " | ".join(str(row[k]) for k in keys) + " |")
    print("\n| what it measures | a | b | a - b, urgent referral AUROC (paired 95 % CI) |\n|---|---|---|---|")
    for r in results["paired_urgent_referral_auroc"]:
        bold = "**" if r["ci_low"] > 0 or r["ci_high"] < 0 else ""
        print(f"| {r['comparison']} | {r['a']} | {r['b']} | {bold}{r['value']:+.3f}{bold} "
              f"({r['ci_low']:+.3f}, {r['ci_high']:+.3f}) |")
    print("\n| model (urgent referral) | AUROC | its oracle ceiling | share of the ceiling | minus the full teacher |\n"
          "|---|---|---|---|---|")
    for r in results["against_ceilings"]:
        gap = "" if r["minus_teacher"] is None else f"{r['minus_teacher']:+.3f}"
        print(f"| {r['model']} | {r['auroc']:.3f} | {r['ceiling']:.3f} ({r['ceiling_input']}) | "
              f"{r['share_of_ceiling']:.0%} | {gap} |")
    if "ecg_only_probes" in results:
        print("\nECG-only probes (out of fold over every study; paired bootstrap 95 % CI):\n\n"
              "| label | lead set | labels | stage 1 | aligned | aligned - stage 1 | stage 1 - random |\n"
              "|---|---|---|---|---|---|---|")
        for r in results["ecg_only_probes"]:
            print(f"| {r['label']} | {r['lead_set']} | {r['fraction']:.0%} | {r['stage 1']:.3f} | {r['aligned']:.3f} | "
                  + " | ".join(f"{r[k][0]:+.3f} ({r[k][1]:+.3f}, {r[k][2]:+.3f})"
                               for k in ("aligned - stage 1", "stage 1 - random")) + " |")
    _log(f"done in {results['seconds']:.0f} s; {len(results['models'])} models")


if __name__ == "__main__":
    main()
