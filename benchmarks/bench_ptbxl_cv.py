"""PTB-XL superdiagnostic, cross-validated: the 12-lead teacher beside the field's baselines, and lead-I students.

The single split of ``bench_real_students.py`` (train folds 1-8, score fold 9) over-promised on unseen records
(teacher 0.913 on fold 9, 0.886 on a hidden fold; issue 17). Here every recipe is judged the way it will be used:

* **Cross-validation over strat folds 1-8** in ``K`` = 4 folds of two strat folds each ({1, 2}, {3, 4}, {5, 6},
  {7, 8}; PTB-XL's strat folds keep each patient's records together, so the folds are patient-level). In each,
  a model trains on the other six strat folds but a seeded 10 % (its checkpoint choice, by validation loss) and
  scores the two it never saw. The pooled out-of-fold predictions over the 1,442 records give every figure (macro
  AUROC with a bootstrap 95 % CI), the ``K`` folds their spread, and paired bootstraps over the records every
  difference. Every choice of recipe is made on these.
* **Fold 9 chooses nothing**: each recipe is scored there once, as the mean of its ``K`` fold models' probabilities
  (none of which saw fold 9): what a new site would get from the recipe as shipped. ``--report-fold 10`` scores
  the same saved fold models on fold 10 of a PTB-XL copy that has it, without training anything.

Recipes (:data:`RECIPES`), each trained with the project's stage-3 engine (:mod:`cardiodistill.train.supervised`)
on the same records with the same seed and budget: on 12 leads the toolkit's teacher ``xresnet1d_small`` and the
PTB-XL benchmark's baselines rebuilt (Strodthoff et al. 2021: ``resnet1d_wang``, ``inception1d``;
``xresnet1d101``, 33 M parameters and about 7 s a step on 2 cores, is left to GPU runs), all ``finetune.epochs``
passes; their ensemble (the mean of the three's probabilities, nothing trained); on lead I the 145 k-parameter
``student_cnn`` on labels alone, distilled from ``xresnet1d_small``, and distilled from the 12-lead ensemble (its
soft targets: the logit of the members' mean probability, from models of the same fold, which trained on the
same records), the baselines on lead I, and the ensemble of the student on labels and ``resnet1d_wang`` on lead I.
Subgroups (sex, age bands) of the pooled out-of-fold predictions.

**The plan's regime, few labels and many unlabelled records** (issue 16, item 4): at 5, 10 and 25 % of each fold's
labels (a seeded share of its training and validation records, nested across shares) the 12-lead teacher
(``resnet1d_wang``) learns from the labelled records, the lead-I student on labels alone sees the labelled records
only, the distilled student learns from the teacher's soft targets and embedding on every training record
(the labels where there are some), and ``resnet1d_wang`` on lead I learns the teacher's probabilities where no
label is. Every run takes the steps of a full-label run (labelled-only sets are listed ``1 / share`` times). At
10 % also: distillation on the labelled records only (what the unlabelled records add), the weaker teacher
``xresnet1d_small``, and ``resnet1d_wang`` on lead I on its labels alone. With a few dozen labelled records each
fold's model ends on its own scale, and pooled out-of-fold predictions rank one fold model's scores against
another's: the pooled AUROC then falls 0.02-0.04 below what each model scores alone. These recipes are therefore
compared within folds: the mean of the four folds' macro AUROCs, and paired differences averaged over the folds
with records resampled within each (``paired_macro_auroc_ci(..., groups=fold)``); the pooled figure is kept
beside them.

**Stage 1 for the student** (issue 17, item 2): in each fold, the CPU-scale stage-1 recipe (the lead-agnostic
``ecg_cnn`` under CLOCS, ``benchmarks/configs/ecg_ptbxl_cnn.yaml``) on every unlabelled ECG that fold may see (its
six training strat folds, CinC 2017 as lead I, simulated ECGs; :func:`stage1`); then the same ``ecg_cnn`` on lead I
at 5, 10, 25 and 100 % of the labels from a random start and from that encoder (its backbone at the full rate and
at 0.3 x, and the rate each fold's validation loss picks), on the labels and with the teacher's outputs on every
record: the label-efficiency curve, compared within folds. At every share the backbone's rate is swept down to
0.03 x (each fold takes the rate its validation loss picks), and the student at 0.1 x learns the teacher's outputs
too. ``--stage1-steps`` sets stage 1's length (1,200 by default, half the recipe's; each length in its own
``--out``), and ``--versus OTHER_OUT`` pairs each recipe with its twin in a run of another setting (e.g.
``--set distill.optim.ema_decay=0.98``).

Every fold model is saved under ``--out`` and reused, so an interrupted run continues; ``--folds`` trains only
some folds (two processes share the 2 cores), and the scores come once every fold's model of a recipe is there::

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_ptbxl_cv.py --out runs/ptbxl-cv --folds 0 1 &
    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_ptbxl_cv.py --out runs/ptbxl-cv --folds 2 3
    python benchmarks/bench_ptbxl_cv.py --out runs/ptbxl-cv          # scores and tables (trains what is missing)

Results: ``benchmarks/results/ptbxl_cv.json`` and markdown tables on stdout. ``--lead-i-validation K`` writes fold
``K``'s validation records as lead-I windows, the ``--data`` with which ``cardiodistill export`` gates that fold's
lead-I models.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_real_students import DATA, FS, PTBXL_SETS, _clean, _config, _fmt, _log, paired_macro_delta  # noqa: E402

from cardiodistill.config import Config, EcgSourceConfig, FinetuneConfig, load_config  # noqa: E402
from cardiodistill.data.datasets import PTBXL  # noqa: E402
from cardiodistill.evaluate.clinical import multilabel_metrics  # noqa: E402
from cardiodistill.evaluate.metrics import macro_auroc_ci  # noqa: E402
from cardiodistill.io.atomic import save_npz_atomic, write_json_atomic  # noqa: E402
from cardiodistill.signals.leads import LEADS_12  # noqa: E402
from cardiodistill.stages.stage1 import pretrain_ecg  # noqa: E402
from cardiodistill.stages.stage3 import student_start  # noqa: E402
from cardiodistill.train.checkpoints import load_model, read_model_file, save_model  # noqa: E402
from cardiodistill.train.engine import set_threads  # noqa: E402
from cardiodistill.train.supervised import (  # noqa: E402
    ArrayDataset,
    fit_array_student,
    fit_array_teacher,
    predict_arrays,
    probability_logits,
    teacher_targets,
)

CV_FOLDS = [(1, 2), (3, 4), (5, 6), (7, 8)]  # PTB-XL strat folds of each cross-validation fold
ENSEMBLE = "12 leads: ensemble of the three"
TEACHER = "12 leads: xresnet1d_small"
# The fixed-lead models' passes: the single split's teacher trained 20; inception1d costs 1.1 s a step of 16 on
# one thread (xresnet1d_small 0.1 s), so every fixed-lead model gets 12 here, the same for all.
CV_SETS = [*PTBXL_SETS, "finetune.epochs=12"]


@dataclass(frozen=True)
class Recipe:
    """One model per fold: ``kind`` ``fixed`` (a fixed-lead classifier ``backbone`` on ``leads``), ``student``
    (``config.distill.backbone`` on ``leads``; distilled from ``teacher``'s soft targets and embedding, or from
    the ensemble's soft targets, when ``teacher`` is set), ``ensemble`` (the mean of ``members``) or ``choice``
    (in each fold, the model of the member whose validation loss is lowest; nothing trained).

    ``share`` < 1 is the low-label regime: the labels of a seeded ``share`` of the fold's training and validation
    records only (:meth:`Data.split`). Such a recipe trains on its labelled records, listed ``1 / share`` times
    so that it takes the steps of a full-label run, unless ``every_record``: then it trains on every training
    record once a pass (the same steps), the unlabelled ones carrying only ``teacher``'s targets (a student's
    soft targets and embedding; for a ``fixed`` model the teacher's probabilities in place of the labels).

    ``start`` makes a ``student`` of the stage-1 network, the lead-agnostic ``ecg_cnn``, instead of
    ``config.distill.backbone``: from a random start (``"scratch"``) or from fold ``k``'s stage-1 encoder
    (``"stage 1"``, :func:`stage1`; its backbone at ``lr_scale`` times the rate)."""

    name: str
    kind: str
    leads: int = 12
    backbone: str = ""
    teacher: str = ""
    members: tuple[str, ...] = ()
    share: float = 1.0
    every_record: bool = False
    start: str = ""
    lr_scale: float = 1.0  # the full rate: on CinC 2017 the validation loss chose it over 0.3 from 10 % of labels up
    probe: bool = False  # a stage-1 start's head fitted on the frozen embedding first (distill.head_init=probe)
    layer_decay: float = 1.0  # a stage-1 start's backbone: lr_scale at its top layer, this factor a layer down

    @property
    def folder(self) -> str:
        return (self.name.replace(": ", "-").replace(", ", "-").replace(" %", "pct").replace(" ", "-")
                .replace("(", "").replace(")", "").replace("'s", "").replace(".", "p").lower())


RECIPES = [
    Recipe(TEACHER, "fixed", 12, "xresnet1d_small"),
    Recipe("12 leads: resnet1d_wang", "fixed", 12, "resnet1d_wang"),
    Recipe("12 leads: inception1d", "fixed", 12, "inception1d"),
    Recipe(ENSEMBLE, "ensemble", 12,
           members=(TEACHER, "12 leads: resnet1d_wang", "12 leads: inception1d")),
    Recipe("lead I: student_cnn, labels only", "student", 1),
    Recipe("lead I: student_cnn, distilled from xresnet1d_small", "student", 1, teacher=TEACHER),
    Recipe("lead I: student_cnn, distilled from the 12-lead ensemble", "student", 1, teacher=ENSEMBLE),
    Recipe("lead I: student_cnn, distilled from resnet1d_wang", "student", 1, teacher="12 leads: resnet1d_wang"),
    Recipe("lead I: resnet1d_wang", "fixed", 1, "resnet1d_wang"),
    Recipe("lead I: inception1d", "fixed", 1, "inception1d"),
    Recipe("lead I: ensemble of student_cnn and resnet1d_wang", "ensemble", 1,
           members=("lead I: student_cnn, labels only", "lead I: resnet1d_wang")),
]
# The plan's regime (issue 16, item 4): a few labelled records and many unlabelled ones. The 12-lead teacher
# learns from the labelled share; the lead-I student learns from the teacher's outputs on every record.
LOW_SHARES = (0.05, 0.1, 0.25)


def low(share: float, what: str) -> str:
    """The name of a low-label recipe: ``"10 % labels, " + what``."""
    return f"{share:.0%} labels, {what}".replace("%", " %")


LOW_TEACHER, LOW_STUDENT, LOW_WANG = ("12 leads: resnet1d_wang", "lead I: student_cnn, labels only",
                                      "lead I: resnet1d_wang, labels only")
LOW_DISTILLED = "lead I: student_cnn, distilled from resnet1d_wang on every record"


def _at(share: float, what: str, full_label: str = "") -> str:
    """The recipe ``what`` at ``share`` of the labels (:func:`low`); with every label, its full-label name:
    ``full_label`` where one is given, else ``what`` itself."""
    return low(share, what) if share < 1 else full_label or what


def _distilled_student(share: float) -> str:
    """The lead-I ``student_cnn`` distilled from ``resnet1d_wang`` at ``share`` of the labels."""
    return _at(share, LOW_DISTILLED, "lead I: student_cnn, distilled from resnet1d_wang")


for _s in LOW_SHARES:  # the teacher; the student on its labels and distilled; resnet1d_wang on lead I distilled
    RECIPES += [
        Recipe(low(_s, LOW_TEACHER), "fixed", 12, "resnet1d_wang", share=_s),
        Recipe(low(_s, LOW_STUDENT), "student", 1, share=_s),
        Recipe(low(_s, LOW_DISTILLED), "student", 1,
               teacher=low(_s, LOW_TEACHER), share=_s, every_record=True),
        Recipe(low(_s, "lead I: resnet1d_wang, resnet1d_wang's probabilities on every record"), "fixed", 1,
               "resnet1d_wang", teacher=low(_s, LOW_TEACHER), share=_s, every_record=True),
    ]
RECIPES += [  # at 10 %: which part of distillation pays, another teacher, the baseline as the student
    Recipe(low(0.1, "12 leads: xresnet1d_small"), "fixed", 12, "xresnet1d_small", share=0.1),
    Recipe(low(0.1, LOW_WANG), "fixed", 1, "resnet1d_wang", share=0.1),
    Recipe(low(0.1, "lead I: student_cnn, distilled from resnet1d_wang on the labelled records"), "student", 1,
           teacher=low(0.1, LOW_TEACHER), share=0.1),
    Recipe(low(0.1, "lead I: student_cnn, distilled from xresnet1d_small on every record"), "student", 1,
           teacher=low(0.1, "12 leads: xresnet1d_small"), share=0.1, every_record=True),
]
# Stage 1 for the student (issue 17, item 2): the same network, ecg_cnn on lead I, from a random start and from
# each fold's stage-1 encoder, at every share of labels; and from stage 1 with the teacher's outputs.
STAGE1_SHARES = (*LOW_SHARES, 1.0)


def stage1_at(rate: float, distilled: bool = False, probe: bool = False, layer_decay: float = 1.0) -> str:
    """The stage-1 ``ecg_cnn`` on labels (or ``distilled`` from ``resnet1d_wang`` on every record), its backbone at
    ``rate`` times the rate (at its top layer, ``layer_decay`` times less each layer down; and its head started from
    a linear ``probe``)."""
    what = ("its head from a linear probe, " if probe else "") + (
        "distilled from resnet1d_wang on every record" if distilled else "labels only")
    decay = "" if layer_decay == 1 else f" at the top, {layer_decay:g} x a layer down"
    return (f"lead I: ecg_cnn from stage 1, {what}" if rate == 1 and not decay
            else f"lead I: ecg_cnn from stage 1, its backbone at {rate:g} x the rate{decay}, {what}")


SCRATCH, STAGE1, STAGE1_DISTILLED = "lead I: ecg_cnn from scratch, labels only", stage1_at(1), stage1_at(1, True)
for _s in STAGE1_SHARES:
    RECIPES += [
        Recipe(low(_s, SCRATCH), "student", 1, share=_s, start="scratch"),
        Recipe(low(_s, STAGE1), "student", 1, share=_s, start="stage 1"),
        Recipe(low(_s, STAGE1_DISTILLED), "student", 1, teacher=_at(_s, LOW_TEACHER), share=_s, every_record=True,
               start="stage 1"),
    ]
# The backbone at stage 2-3's default rate factor (0.3) instead of the full rate, on labels and distilled.
SLOW = FinetuneConfig.model_fields["encoder_lr_scale"].default
STAGE1_SLOW, STAGE1_SLOW_DISTILLED = stage1_at(SLOW), stage1_at(SLOW, distilled=True)
# And the rate a user would pick: in each fold, the one with the lower validation loss.
STAGE1_CHOSEN, STAGE1_CHOSEN_DISTILLED = (f"lead I: ecg_cnn from stage 1, {what}, the rate chosen on validation loss"
                                          for what in ("labels only", "distilled from resnet1d_wang on every record"))
for _s in STAGE1_SHARES:
    RECIPES += [
        Recipe(low(_s, STAGE1_SLOW), "student", 1, share=_s, start="stage 1", lr_scale=SLOW),
        Recipe(low(_s, STAGE1_SLOW_DISTILLED), "student", 1, teacher=_at(_s, LOW_TEACHER), share=_s,
               every_record=True, start="stage 1", lr_scale=SLOW),
        Recipe(low(_s, STAGE1_CHOSEN), "choice", 1, members=(low(_s, STAGE1), low(_s, STAGE1_SLOW)), share=_s,
               start="stage 1"),
        Recipe(low(_s, STAGE1_CHOSEN_DISTILLED), "choice", 1,
               members=(low(_s, STAGE1_DISTILLED), low(_s, STAGE1_SLOW_DISTILLED)), share=_s, start="stage 1"),
    ]
# Slower still (0.3 beat the full rate at 5 and 10 %), and the rate the validation loss picks among all of them
# (:data:`SWEEP`), at every share of labels; and the stage-1 student distilled with its backbone at 0.1 x.
SLOWER = (0.1, 0.03)
SWEEP_SHARES = STAGE1_SHARES
STAGE1_SLOWER, STAGE1_SLOWER_DISTILLED = stage1_at(SLOWER[0]), stage1_at(SLOWER[0], distilled=True)
SWEEP = (1.0, SLOW, *SLOWER)
STAGE1_SWEPT = (f"lead I: ecg_cnn from stage 1, labels only, the rate chosen on validation loss among "
                f"{', '.join(f'{r:g}' for r in SWEEP)}")
for _s in SWEEP_SHARES:
    RECIPES += [Recipe(low(_s, stage1_at(r)), "student", 1, share=_s, start="stage 1", lr_scale=r) for r in SLOWER]
    RECIPES.append(Recipe(low(_s, STAGE1_SWEPT), "choice", 1, members=tuple(low(_s, stage1_at(r)) for r in SWEEP),
                          share=_s, start="stage 1"))
    RECIPES.append(Recipe(low(_s, STAGE1_SLOWER_DISTILLED), "student", 1, teacher=_at(_s, LOW_TEACHER), share=_s,
                          every_record=True, start="stage 1", lr_scale=SLOWER[0]))
# LP-FT: the stage-1 student's head fitted on the frozen embedding of its labelled records before fine-tuning, at
# the rates that paid at few labels; and at 0.1 x with the teacher's targets.
PROBE_SHARES, PROBE_RATES = (0.05, 0.1), (SLOW, SLOWER[0])
for _s in PROBE_SHARES:
    RECIPES += [Recipe(low(_s, stage1_at(r, probe=True)), "student", 1, share=_s, start="stage 1", lr_scale=r,
                       probe=True) for r in PROBE_RATES]
    RECIPES.append(Recipe(low(_s, stage1_at(SLOWER[0], distilled=True, probe=True)), "student", 1,
                          teacher=_at(_s, LOW_TEACHER), share=_s, every_record=True, start="stage 1",
                          lr_scale=SLOWER[0], probe=True))
# Layer-wise decay of the backbone's rate (BEiT / MAE fine-tuning): 0.3 x at its top layer down to 0.03 x at its
# stem (0.63 a layer over its six: stem, four stages, embedding), the rates that paid (0.1 x) as their geometric
# mean, the early layers moving least; on labels and distilled where stage 1 pays, on labels where it does not.
LAYER_DECAY, DECAY_SHARES = 0.63, (0.05, 0.1, 0.25, 1.0)
for _s in DECAY_SHARES:
    RECIPES += [Recipe(low(_s, stage1_at(SLOW, distilled, layer_decay=LAYER_DECAY)), "student", 1,
                       teacher=_at(_s, LOW_TEACHER) if distilled else "", share=_s, every_record=distilled,
                       start="stage 1", lr_scale=SLOW, layer_decay=LAYER_DECAY)
                for distilled in ((False, True) if _s in PROBE_SHARES else (False,))]
BY_NAME = {r.name: r for r in RECIPES}
STAGE1_RECIPE = Path(__file__).with_name("configs") / "ecg_ptbxl_cnn.yaml"  # the CPU-scale stage-1 recipe
STAGE1_STEPS = 1200  # half the recipe's 2,400: four folds' stage 1 in about 25 min on 2 cores (--stage1-steps)


class Data:
    """Folds 1-8 (cross-validation) and the reported fold as arrays."""

    def __init__(self, report_fold: int, seed: int):
        ptbxl = PTBXL(DATA / "ptbxl" / "subset100", task="superdiagnostic")
        frame = ptbxl.frame.reset_index(drop=True)
        self.labels = list(ptbxl.labels)
        cv = frame["strat_fold"].between(1, 8).to_numpy()
        report = (frame["strat_fold"] == report_fold).to_numpy()
        if not report.any():
            raise SystemExit(f"{ptbxl.root}: no records of strat fold {report_fold}")
        signals = np.asarray(ptbxl.signals[frame["row"].to_numpy()], dtype=np.float32)
        self.x, self.y, self.fold = signals[cv], ptbxl.targets[cv], frame["strat_fold"].to_numpy()[cv]
        self.x_report, self.y_report = signals[report], ptbxl.targets[report]
        self.meta = frame.loc[cv, ["patient_id", "age", "sex"]].reset_index(drop=True)
        self.cv_fold = np.select([np.isin(self.fold, f) for f in CV_FOLDS], range(len(CV_FOLDS)))  # k of each record
        self.report_fold = report_fold
        self.seed = seed

    def split(self, k: int, share: float = 1.0) -> dict[str, np.ndarray]:
        """Rows of fold ``k``: ``test`` (its two strat folds), ``val`` (a seeded 10 % of the rest), ``fit``, and
        the labelled ``share`` of each, ``fit_labelled`` and ``val_labelled`` (seeded; nested across shares)."""
        test = np.flatnonzero(np.isin(self.fold, CV_FOLDS[k]))
        rest = np.flatnonzero(~np.isin(self.fold, CV_FOLDS[k]))
        order = np.random.default_rng(self.seed + k).permutation(rest)
        n_val = round(0.1 * len(rest))
        labelled = np.random.default_rng([self.seed, k, 1]).permutation(len(rest))  # ranks of ``order``
        split = {"fit": order[n_val:], "val": order[:n_val]}
        ranks = {"fit": labelled[n_val:], "val": labelled[:n_val]}
        for part in ("fit", "val"):
            first = np.argsort(ranks[part], kind="stable")[: max(1, round(share * len(split[part])))]
            split[f"{part}_labelled"] = np.sort(split[part][first])
        return {**{p: np.sort(split[p]) for p in split}, "test": test}


def stage1_sources(k: int) -> list[EcgSourceConfig]:
    """The unlabelled ECGs fold ``k``'s stage 1 reads: PTB-XL's strat folds of its training side (12 leads, one
    window a record), every CinC 2017 recording (lead I, two windows) and 1,000 simulated patients."""
    folds = [f for f in range(1, 9) if f not in CV_FOLDS[k]]
    return [EcgSourceConfig(kind="ptbxl", path=str(DATA / "ptbxl" / "subset100"), folds=folds, max_windows=1),
            EcgSourceConfig(kind="cinc2017", path=str(DATA / "cinc2017"), max_windows=2),
            EcgSourceConfig(kind="synth", patients=1000, seed=1)]


def stage1(data: Data, k: int, out: Path, cfg: Config, steps: int = STAGE1_STEPS) -> Path:
    """Fold ``k``'s stage-1 encoder (trained unless its file is there): the ``ecg_cnn`` under CLOCS
    (``benchmarks/configs/ecg_ptbxl_cnn.yaml``, ``steps`` steps) on every unlabelled ECG the fold may see: the
    records of its six training strat folds (12 leads), every CinC 2017 recording as lead I and 1,000 simulated
    patients' 12-lead and handheld ECGs. No record of the fold's test strat folds, nor of folds 9-10. An encoder
    already there that took another number of steps is an error: the recipes that start from it would mix two."""
    folder = out / "stage1" / f"fold{k}"
    path = folder / "encoder.pt"
    if path.is_file():
        done = read_model_file(path).get("steps")
        if done is not None and done != steps:
            raise SystemExit(f"{path}: a stage-1 encoder of {done} steps, where this run asks for {steps}; "
                             "give another --out")
        return path
    s1 = load_config(str(STAGE1_RECIPE), [f"trainer.threads={cfg.trainer.threads}",
                                          f"pretrain.ecg.optim.max_steps={steps}"])
    s1.pretrain.ecg.sources = stage1_sources(k)
    s1.pretrain.ecg.cache_dir = str(folder / "windows")
    _log(f"PTB-XL fold {k}: stage 1, ecg_cnn under CLOCS, {steps} steps, "
         f"PTB-XL strat folds {s1.pretrain.ecg.sources[0].folds}")
    summary = pretrain_ecg(s1, folder, show_bar=False)
    _log(f"PTB-XL fold {k}: stage 1 done, {summary['steps']} steps")
    set_threads(cfg.trainer.threads)
    return path


def _start(recipe: Recipe, data: Data, k: int, out: Path, cfg: Config, stage1_steps: int) -> dict[str, Any]:
    """``fit_array_student``'s ``encoder`` and ``backbone_state`` for a recipe with a ``start`` (else none). A
    scratch start takes the stage-1 encoder's config too (not its weights), so both starts build the same network."""
    if not recipe.start:
        return {}
    encoder, state = student_start({"name": "pretrained", "path": str(stage1(data, k, out, cfg, stage1_steps))},
                                   None)
    return {"encoder": encoder, "backbone_state": state if recipe.start == "stage 1" else None}


def _train(recipe: Recipe, data: Data, k: int, out: Path, cfg: Config, stage1_steps: int = STAGE1_STEPS) -> Path:
    """Fold ``k``'s model of ``recipe`` (trained unless its file is there); the path of its model file. A recipe
    that starts from stage 1 starts from an encoder of ``stage1_steps`` steps (:func:`stage1`)."""
    path = out / recipe.folder / f"fold{k}" / "model.pt"
    if path.is_file():
        return path
    s = data.split(k, recipe.share)
    x = data.x
    y = np.full_like(data.y, np.nan)  # the labels this recipe may see
    y[s["fit_labelled"]], y[s["val_labelled"]] = data.y[s["fit_labelled"]], data.y[s["val_labelled"]]
    extra: dict[str, np.ndarray] = {}
    if recipe.teacher:
        teacher = BY_NAME[recipe.teacher]
        if teacher.kind == "ensemble":  # soft targets only: the members' feature spaces differ
            probs = np.mean([predict_arrays(load_model(_train(BY_NAME[m], data, k, out, cfg, stage1_steps)),
                                            x)["probs"] for m in teacher.members], axis=0)
            extra = {"t_logits": probability_logits(probs)}
        else:
            extra = teacher_targets(load_model(_train(teacher, data, k, out, cfg, stage1_steps)), x, s["fit"])
        if recipe.kind == "fixed":  # a fixed-lead model learns the teacher's probabilities where no label is
            y = np.where(np.isnan(y), expit(extra.pop("t_logits")), y).astype(np.float32)
            extra = {}
    fit_rows = s["fit"] if recipe.every_record else s["fit_labelled"]
    _log(f"PTB-XL fold {k}: {recipe.name} on {len(fit_rows)} records ({len(s['fit_labelled'])} labelled)")
    train = ArrayDataset(x[fit_rows], y[fit_rows], {n: v[fit_rows] for n, v in extra.items()}, seed=cfg.trainer.seed,
                         repeats=round(len(s["fit"]) / len(fit_rows)))
    val_rows = s["val_labelled"]
    val = ArrayDataset(x[val_rows], y[val_rows], {n: v[val_rows] for n, v in extra.items()}, random_crop=False)
    start_from = _start(recipe, data, k, out, cfg, stage1_steps)  # (a fold's first one from stage 1 trains it: untimed)
    start = time.time()
    if recipe.kind == "fixed":
        model = fit_array_teacher(train, val, path.parent, n_outputs=len(data.labels), leads=LEADS_12[: recipe.leads],
                                  backbone=recipe.backbone, config=cfg, fs=FS)
        save_model(model, path, outputs=data.labels, leads=list(LEADS_12[: recipe.leads]),
                   train_seconds=round(time.time() - start, 1), n_train=len(fit_rows))
    else:
        if recipe.start == "stage 1":
            cfg = cfg.model_copy(update={
                "finetune": cfg.finetune.model_copy(update={"encoder_lr_scale": recipe.lr_scale}),
                "distill": cfg.distill.model_copy(update={"head_init": "probe" if recipe.probe else "random",
                                                          "layer_decay": recipe.layer_decay})})
        model = fit_array_student(train, val, path.parent, outputs=data.labels, n_leads=recipe.leads, config=cfg,
                                  fs=FS, **start_from)
        save_model(model, path, task="multilabel", triage=None, leads=list(model.leads), outputs=data.labels,
                   distilled=bool(extra), lvef=False, train_seconds=round(time.time() - start, 1),
                   n_train=len(fit_rows))
    set_threads(cfg.trainer.threads)
    return path


def _val_loss(recipe: Recipe, k: int, out: Path) -> float:
    """The lowest validation loss of fold ``k``'s run of ``recipe`` (the labels' loss, which chose its checkpoint);
    infinite when the run is not there."""
    log = out / recipe.folder / f"fold{k}" / "logs" / "metrics.csv"
    return float(pd.read_csv(log)["val/label"].min()) if log.is_file() else float("inf")


def _chosen(recipe: Recipe, k: int, out: Path) -> Recipe:
    """The recipe whose fold-``k`` model ``recipe`` uses: itself, or of a ``choice`` the member with the lowest
    validation loss in that fold."""
    if recipe.kind != "choice":
        return recipe
    return min((BY_NAME[m] for m in recipe.members), key=lambda r: _val_loss(r, k, out))


def _fold_model(recipe: Recipe, k: int, out: Path) -> Path:
    """Fold ``k``'s model file of a trained (or chosen) recipe."""
    return out / _chosen(recipe, k, out).folder / f"fold{k}" / "model.pt"


def _predictions(recipe: Recipe, data: Data, out: Path) -> dict[str, np.ndarray] | None:
    """``{"oof": [N, C], "report": [M, C], "fold_auroc": [K]}`` of a recipe whose fold models are all there
    (cached in ``out/<recipe>/predictions.npz``), else None."""
    cache = out / recipe.folder / f"predictions-fold{data.report_fold}.npz"
    if cache.is_file():
        return dict(np.load(cache))
    tests = [data.split(k)["test"] for k in range(len(CV_FOLDS))]
    if recipe.kind == "ensemble":
        parts = [_predictions(BY_NAME[m], data, out) for m in recipe.members]
        if any(p is None for p in parts):
            return None
        oof = np.mean([p["oof"] for p in parts], axis=0)
        report = np.mean([p["report"] for p in parts], axis=0)
    else:
        if recipe.kind == "choice" and not all((out / BY_NAME[m].folder / f"fold{k}" / "model.pt").is_file()
                                               for m in recipe.members for k in range(len(CV_FOLDS))):
            return None
        paths = [_fold_model(recipe, k, out) for k in range(len(CV_FOLDS))]
        if not all(p.is_file() for p in paths):
            return None
        oof = np.zeros_like(data.y)
        report = []
        for path, test in zip(paths, tests):
            model = load_model(path)
            oof[test] = predict_arrays(model, data.x[test])["probs"]
            report.append(predict_arrays(model, data.x_report)["probs"])
        report = np.mean(report, axis=0)
    fold_auroc = np.array([macro_auroc_ci(data.y[t], oof[t], n_boot=0)[0] for t in tests])
    result = {"oof": oof.astype(np.float32), "report": report.astype(np.float32), "fold_auroc": fold_auroc}
    save_npz_atomic(cache, **result)
    return result


def _subgroups(data: Data, p: np.ndarray, n_boot: int, seed: int) -> dict[str, Any]:
    """Macro AUROC of the out-of-fold predictions ``p`` by sex and age band (PTB-XL: sex 0 male, 1 female)."""
    age, sex = data.meta["age"].to_numpy(float), data.meta["sex"].to_numpy()
    groups = {"male": sex == 0, "female": sex == 1, "age < 50": age < 50, "age 50-69": (age >= 50) & (age < 70),
              "age >= 70": age >= 70}
    return {name: {"n": int(m.sum()),
                   **multilabel_metrics(data.y[m], p[m], data.labels, n_boot=n_boot, seed=seed)["macro"]["auroc"]}
            for name, m in groups.items()}


def _refs(recipe: Recipe) -> list[str]:
    """The recipes ``recipe`` is compared with, paired over the same records."""
    share = recipe.share
    if recipe.leads == 12:
        return [TEACHER] if share == 1 else [TEACHER, low(share, LOW_STUDENT)]
    if recipe.start:  # the same network from the other start, the student_cnn twins and the teacher
        return [_at(share, LOW_TEACHER), low(share, SCRATCH), low(share, STAGE1), low(share, STAGE1_DISTILLED),
                low(share, STAGE1_SLOW), low(share, STAGE1_SLOW_DISTILLED), low(share, STAGE1_SLOWER),
                _at(share, LOW_STUDENT), _distilled_student(share),
                *([low(share, STAGE1_SLOWER_DISTILLED)] if recipe.probe or recipe.layer_decay != 1 else [])]
    if share == 1:
        return [TEACHER, ENSEMBLE, "lead I: student_cnn, labels only"]
    return [low(share, r) for r in (LOW_TEACHER, LOW_STUDENT, LOW_WANG)]


def _paired(data: Data, p: dict[str, np.ndarray], q: dict[str, np.ndarray], n_boot: int, seed: int
            ) -> dict[str, dict[str, float]]:
    """``p`` minus ``q`` (two recipes' :func:`_predictions`): pooled out of fold (``cv``), within folds (``folds``)
    and on the reported fold (``report``), each a paired bootstrap 95 % CI."""
    return {"cv": paired_macro_delta(data.y, p["oof"], q["oof"], n_boot, seed),
            "folds": paired_macro_delta(data.y, p["oof"], q["oof"], n_boot, seed, groups=data.cv_fold),
            "report": paired_macro_delta(data.y_report, p["report"], q["report"], n_boot, seed)}


def score(data: Data, out: Path, n_boot: int, seed: int) -> dict[str, Any]:
    preds = {r.name: _predictions(r, data, out) for r in RECIPES}
    preds = {n: p for n, p in preds.items() if p is not None}
    result: dict[str, Any] = {}
    for name, p in preds.items():
        cv = multilabel_metrics(data.y, p["oof"], data.labels, n_boot=n_boot, seed=seed)
        rep = multilabel_metrics(data.y_report, p["report"], data.labels, n_boot=n_boot, seed=seed)
        entry = {"cv_macro_auroc": cv["macro"]["auroc"], "cv_auroc": {c: cv[c]["auroc"] for c in data.labels},
                 "fold_macro_auroc": p["fold_auroc"].tolist(), "fold_mean": float(p["fold_auroc"].mean()),
                 "fold_sd": float(p["fold_auroc"].std(ddof=1)), "report_macro_auroc": rep["macro"]["auroc"]}
        recipe = BY_NAME[name]
        for ref in _refs(recipe):
            if ref in preds and ref != name:
                entry.update({f"{part}_minus: {ref}": diff
                              for part, diff in _paired(data, p, preds[ref], n_boot, seed).items()})
        if name in (TEACHER, ENSEMBLE) or (recipe.leads == 1 and recipe.share == 1):
            entry["subgroups"] = _subgroups(data, p["oof"], n_boot, seed)
        if recipe.kind != "ensemble":
            entry["train_seconds"] = [read_model_file(_fold_model(recipe, k, out)).get("train_seconds")
                                      for k in range(len(CV_FOLDS))]
        if recipe.kind == "choice":
            entry["chosen"] = [_chosen(recipe, k, out).name for k in range(len(CV_FOLDS))]
        result[name] = entry
    return result


def versus(data: Data, out: Path, other: Path, n_boot: int, seed: int) -> dict[str, Any]:
    """Each recipe of this run minus the same recipe of ``other`` (another ``--out``: the same folds and records,
    another setting, e.g. ``--set distill.optim.ema_decay=...``), where both have every fold model: paired within
    folds, pooled out of fold, and on the reported fold."""
    diffs = {}
    for recipe in RECIPES:
        mine, theirs = _predictions(recipe, data, out), _predictions(recipe, data, other)
        if mine is None or theirs is None:
            continue
        diffs[recipe.name] = {
            "fold_mean": float(mine["fold_auroc"].mean()), "other_fold_mean": float(theirs["fold_auroc"].mean()),
            **{f"{part}_minus_other": diff for part, diff in _paired(data, mine, theirs, n_boot, seed).items()}}
    return {"run": str(other), "recipes": diffs}


def versus_table(diff: dict[str, Any], report_fold: int) -> str:
    rows = [f"| recipe | this run: folds' mean | {diff['run']}: folds' mean | - it, within folds | - it, out of fold "
            f"| - it, fold {report_fold} |", "|---|---|---|---|---|---|"]
    for name, m in diff["recipes"].items():
        rows.append(f"| {name} | {m['fold_mean']:.3f} | {m['other_fold_mean']:.3f} | "
                    f"{_fmt(m['folds_minus_other'], True)} | {_fmt(m['cv_minus_other'], True)} | "
                    f"{_fmt(m['report_minus_other'], True)} |")
    return "\n".join(rows)


def tables(result: dict[str, Any]) -> str:
    rf = result["report_fold"]
    rows = [f"| recipe | out of fold, folds 1-8 (95 % CI) | folds: mean (SD) | - xresnet1d_small, out of fold | "
            f"fold {rf}: the {len(CV_FOLDS)} fold models' mean | - xresnet1d_small, fold {rf} |",
            "|---|---|---|---|---|---|"]
    full = {n: m for n, m in result["recipes"].items() if BY_NAME[n].share == 1}
    for name, m in full.items():
        rows.append(f"| {name} | {_fmt(m['cv_macro_auroc'])} | {m['fold_mean']:.3f} ({m['fold_sd']:.3f}) | "
                    f"{_fmt(m.get(f'cv_minus: {TEACHER}'), True)} | {_fmt(m['report_macro_auroc'])} | "
                    f"{_fmt(m.get(f'report_minus: {TEACHER}'), True)} |")
    rows += ["", "| lead-I recipe | - the 12-lead ensemble, out of fold | - labels only, out of fold | "
             f"- the 12-lead ensemble, fold {rf} | - labels only, fold {rf} |", "|---|---|---|---|---|"]
    for name, m in full.items():
        if name.startswith("lead I"):
            rows.append(f"| {name} | {_fmt(m.get(f'cv_minus: {ENSEMBLE}'), True)} | "
                        f"{_fmt(m.get('cv_minus: lead I: student_cnn, labels only'), True)} | "
                        f"{_fmt(m.get(f'report_minus: {ENSEMBLE}'), True)} | "
                        f"{_fmt(m.get('report_minus: lead I: student_cnn, labels only'), True)} |")
    lows = sorted({BY_NAME[n].share for n in result["recipes"]} - {1.0})
    if lows:
        rows += ["", "| labels: recipe | folds: mean (SD) | - student_cnn on its labels, within folds | "
                 "- resnet1d_wang on lead I, its labels, within folds | out of fold, pooled (95 % CI) | "
                 f"fold {rf} | - student_cnn on its labels, fold {rf} |", "|---|---|---|---|---|---|---|"]
    for share in lows:
        ref = low(share, LOW_STUDENT)
        for name, m in result["recipes"].items():
            if BY_NAME[name].share == share:
                rows.append(f"| {name.replace(' labels, ', ': ', 1)} | {m['fold_mean']:.3f} ({m['fold_sd']:.3f}) | "
                            f"{_fmt(m.get(f'folds_minus: {ref}'), True)} | "
                            f"{_fmt(m.get(f'folds_minus: {low(share, LOW_WANG)}'), True)} | "
                            f"{_fmt(m['cv_macro_auroc'])} | {_fmt(m['report_macro_auroc'])} | "
                            f"{_fmt(m.get(f'report_minus: {ref}'), True)} |")
    rows += _stage1_table(result["recipes"])
    rows += _sweep_table(result["recipes"])
    rows += _probe_table(result["recipes"])
    rows += _decay_table(result["recipes"])
    with_groups = {n: m["subgroups"] for n, m in result["recipes"].items() if "subgroups" in m}
    if with_groups:
        names = list(next(iter(with_groups.values())))
        rows += ["", "| out of fold, by subgroup | " + " | ".join(
            f"{g} (n = {next(iter(with_groups.values()))[g]['n']})" for g in names) + " |",
            "|---|" + "---|" * len(names)]
        for n, g in with_groups.items():
            rows.append(f"| {n} | " + " | ".join(_fmt(g[s]) for s in names) + " |")
    return "\n".join(rows)


def _mean(entry: dict[str, Any]) -> str:
    """A recipe's mean of its folds' macro AUROCs (blank when it was not run)."""
    return f"{entry['fold_mean']:.3f}" if entry else ""


def _within(entry: dict[str, Any], ref: str) -> str:
    """A recipe minus ``ref``, paired within folds (n/a when either was not run)."""
    return _fmt(entry.get(f"folds_minus: {ref}"), True)


def _stage1_table(recipes: dict[str, Any]) -> list[str]:
    """The label-efficiency curve of stage 1 for the lead-I ``ecg_cnn``: fold means and differences within folds;
    then the stage-1 backbone at :data:`SLOW` times the rate, on labels and distilled."""
    shares = [f for f in STAGE1_SHARES if low(f, STAGE1) in recipes and low(f, SCRATCH) in recipes]
    if not shares:
        return []
    rows = ["", "| labels | lead I, `ecg_cnn` from scratch | from stage 1 | stage 1 - scratch | from stage 1, "
            "distilled | - scratch | - stage 1 on labels | `student_cnn` distilled | - it | 12-lead teacher |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for f in shares:
        scratch, s1, s1d = (recipes.get(low(f, w), {}) for w in (SCRATCH, STAGE1, STAGE1_DISTILLED))
        student = _distilled_student(f)
        teacher = recipes.get(_at(f, LOW_TEACHER), {})
        cells = [f"{f:.0%}".replace("%", " %"), _mean(scratch), _mean(s1), _within(s1, low(f, SCRATCH)), _mean(s1d),
                 _within(s1d, low(f, SCRATCH)), _within(s1d, low(f, STAGE1)), _mean(recipes.get(student, {})),
                 _within(s1d, student), _mean(teacher)]
        rows.append("| " + " | ".join(cells) + " |")
    slow = [f for f in shares if low(f, STAGE1_SLOW) in recipes or low(f, STAGE1_SLOW_DISTILLED) in recipes]
    if slow:
        rows += ["", f"| labels | backbone at {SLOW} x the rate, on labels | - the full rate | the rate the validation "
                 f"loss chose (folds at {SLOW} x) | - scratch | at {SLOW} x, distilled | - the full rate, distilled | "
                 "chosen, distilled | - scratch | - `student_cnn` distilled |", "|---" * 10 + "|"]
    for f in slow:
        s1, s1d, c, cd = (recipes.get(low(f, w), {}) for w in (STAGE1_SLOW, STAGE1_SLOW_DISTILLED, STAGE1_CHOSEN,
                                                               STAGE1_CHOSEN_DISTILLED))
        cells = [f"{f:.0%}".replace("%", " %"), _mean(s1), _within(s1, low(f, STAGE1)), _chosen_cell(c),
                 _within(c, low(f, SCRATCH)), _mean(s1d), _within(s1d, low(f, STAGE1_DISTILLED)), _chosen_cell(cd),
                 _within(cd, low(f, SCRATCH)), _within(cd, _distilled_student(f))]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _sweep_table(recipes: dict[str, Any]) -> list[str]:
    """The stage-1 backbone's rate (:data:`SWEEP`) at each share of labels where a slower rate ran: each rate's fold
    mean and its gain over scratch within folds, then the rate each fold's validation loss picks; then the student
    at 0.1 x distilled, against scratch, its twin on labels, the 0.3 x distilled one and the 12-lead teacher."""
    shares = [f for f in SWEEP_SHARES if any(low(f, stage1_at(r)) in recipes for r in SLOWER)]
    if not shares:
        return []
    head = " | ".join(f"backbone at {r:g} x | - scratch" for r in SWEEP)
    rows = ["", f"| labels | scratch | {head} | chosen on validation loss (rates of the folds) | - scratch |",
            "|---" * (2 * len(SWEEP) + 4) + "|"]
    for f in shares:
        cells = [f"{f:.0%}".replace("%", " %"), _mean(recipes.get(low(f, SCRATCH), {}))]
        for r in SWEEP:
            entry = recipes.get(low(f, stage1_at(r)), {})
            cells += [_mean(entry), _within(entry, low(f, SCRATCH))]
        chosen = recipes.get(low(f, STAGE1_SWEPT), {})
        rates = ", ".join(f"{BY_NAME[n].lr_scale:g}" for n in chosen.get("chosen", ()))
        cells += [f"{_mean(chosen)} ({rates})" if chosen else "", _within(chosen, low(f, SCRATCH))]
        rows.append("| " + " | ".join(cells) + " |")
    distilled = [f for f in shares if low(f, STAGE1_SLOWER_DISTILLED) in recipes]
    if distilled:
        r = f"{SLOWER[0]:g} x"
        rows += ["", f"| labels | stage 1, backbone at {r}, distilled | - scratch | - at {r} on labels | "
                 f"- at {SLOW} x, distilled | 12-lead teacher | - it |", "|---" * 7 + "|"]
    for f in distilled:
        entry = recipes[low(f, STAGE1_SLOWER_DISTILLED)]
        rows.append("| " + " | ".join([
            f"{f:.0%}".replace("%", " %"), _mean(entry), _within(entry, low(f, SCRATCH)),
            _within(entry, low(f, STAGE1_SLOWER)), _within(entry, low(f, STAGE1_SLOW_DISTILLED)),
            _mean(recipes.get(_at(f, LOW_TEACHER), {})), _within(entry, _at(f, LOW_TEACHER))]) + " |")
    return rows


def _probe_table(recipes: dict[str, Any]) -> list[str]:
    """The stage-1 student with its head started from a linear probe (LP-FT) at each share where it ran: at each
    of :data:`PROBE_RATES` on labels, against scratch and its twin with a random head; distilled at 0.1 x, against
    scratch, its random-head twin and the 12-lead teacher."""
    shares = [f for f in PROBE_SHARES if any(low(f, stage1_at(r, probe=True)) in recipes for r in PROBE_RATES)]
    if not shares:
        return []
    head = " | ".join(f"probe start, {r:g} x | - scratch | - random head" for r in PROBE_RATES)
    rows = ["", f"| labels | scratch | {head} | probe start, {SLOWER[0]:g} x, distilled | - scratch | - random head "
            "| - 12-lead teacher |", "|---" * (3 * len(PROBE_RATES) + 6) + "|"]
    for f in shares:
        cells = [f"{f:.0%}".replace("%", " %"), _mean(recipes.get(low(f, SCRATCH), {}))]
        for r in PROBE_RATES:
            entry = recipes.get(low(f, stage1_at(r, probe=True)), {})
            cells += [_mean(entry), _within(entry, low(f, SCRATCH)), _within(entry, low(f, stage1_at(r)))]
        entry = recipes.get(low(f, stage1_at(SLOWER[0], distilled=True, probe=True)), {})
        cells += [_mean(entry), _within(entry, low(f, SCRATCH)), _within(entry, low(f, STAGE1_SLOWER_DISTILLED)),
                  _within(entry, _at(f, LOW_TEACHER))]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _decay_table(recipes: dict[str, Any]) -> list[str]:
    """The stage-1 student with the layer-wise decay of its backbone's rate at each share where it ran, against
    scratch and the one rate at 0.1 and 0.3 x; distilled, against scratch, the 0.1 x one distilled and the teacher."""
    on_labels = {f: recipes.get(low(f, stage1_at(SLOW, layer_decay=LAYER_DECAY)), {}) for f in DECAY_SHARES}
    shares = [f for f in DECAY_SHARES if on_labels[f]]
    if not shares:
        return []
    rows = ["", f"| labels | scratch | at {SLOW:g} x | at {SLOWER[0]:g} x | {SLOW:g} x at the top, {LAYER_DECAY:g} x a "
            f"layer down | - scratch | - {SLOWER[0]:g} x | - {SLOW:g} x | the same, distilled | - scratch | "
            f"- {SLOWER[0]:g} x distilled | - 12-lead teacher |", "|---" * 12 + "|"]
    for f in shares:
        entry = on_labels[f]
        distilled = recipes.get(low(f, stage1_at(SLOW, distilled=True, layer_decay=LAYER_DECAY)), {})
        rows.append("| " + " | ".join([
            f"{f:.0%}".replace("%", " %"), _mean(recipes.get(low(f, SCRATCH), {})),
            _mean(recipes.get(low(f, STAGE1_SLOW), {})), _mean(recipes.get(low(f, STAGE1_SLOWER), {})), _mean(entry),
            _within(entry, low(f, SCRATCH)), _within(entry, low(f, STAGE1_SLOWER)), _within(entry, low(f, STAGE1_SLOW)),
            _mean(distilled), *(_within(distilled, r) if distilled else "" for r in (
                low(f, SCRATCH), low(f, STAGE1_SLOWER_DISTILLED), _at(f, LOW_TEACHER)))]) + " |")
    return rows


def _chosen_cell(entry: dict[str, Any]) -> str:
    """A ``choice`` recipe's fold mean and how many folds chose the slower rate."""
    if not entry:
        return ""
    slow = sum(BY_NAME[n].lr_scale == SLOW for n in entry["chosen"])
    return f"{_mean(entry)} ({slow} / {len(entry['chosen'])})"


def lead_i_validation(data: Data, k: int, path: Path) -> None:
    """Fold ``k``'s validation records as the lead-I windows its students read (the whole 10 s, z-scored) with
    every label: ``cardiodistill export --data`` for that fold's lead-I models, whose int8 gate it is."""
    rows = data.split(k)["val"]
    windows = ArrayDataset(data.x[rows, :1], data.y[rows], random_crop=False)
    save_npz_atomic(path, x=np.stack([windows[i]["mobile"] for i in range(len(windows))]), y=data.y[rows])
    _log(f"PTB-XL fold {k}: {len(rows)} validation records as lead I -> {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/ptbxl-cv"))
    ap.add_argument("--folds", type=int, nargs="+", default=None, help="train only these folds' models (0-3)")
    ap.add_argument("--recipes", nargs="+", default=None, help="train only these recipes (names as in RECIPES)")
    ap.add_argument("--report-fold", type=int, default=9, help="the strat fold scored once, choosing nothing")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config override key=value")
    ap.add_argument("--versus", type=Path, default=None, metavar="OTHER_OUT",
                    help="also score each recipe against the same recipe in another --out (paired)")
    ap.add_argument("--stage1-steps", type=int, default=STAGE1_STEPS,
                    help="steps of each fold's stage 1 (the recipe's own: 2400); a new --out for another number")
    ap.add_argument("--result", type=Path, default=Path("benchmarks/results/ptbxl_cv.json"))
    ap.add_argument("--lead-i-validation", type=int, default=None, metavar="K",
                    help="write fold K's validation records as lead-I windows (<out>/lead-i-validation-foldK.npz, "
                         "the --data of cardiodistill export) and stop")
    args = ap.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"{DATA}: the shared data folder is not here")
    unknown = set(args.recipes or ()) - set(BY_NAME)
    if unknown:
        raise SystemExit(f"unknown recipes {sorted(unknown)}; known: {list(BY_NAME)}")
    start = time.time()
    cfg = _config(CV_SETS, args.overrides)
    set_threads(cfg.trainer.threads)
    data = Data(args.report_fold, cfg.trainer.seed)
    if args.lead_i_validation is not None:
        return lead_i_validation(data, args.lead_i_validation,
                                 args.out / f"lead-i-validation-fold{args.lead_i_validation}.npz")
    todo = [BY_NAME[n] for n in args.recipes] if args.recipes else RECIPES
    for k in range(len(CV_FOLDS)) if args.folds is None else args.folds:
        for recipe in todo:
            if recipe.kind not in ("ensemble", "choice"):
                _train(recipe, data, k, args.out, cfg, args.stage1_steps)
    if args.folds is not None:
        _log(f"trained folds {args.folds}; run without --folds to score")
        return
    result = {"report_fold": args.report_fold, "cv_folds": CV_FOLDS, "n_cv": len(data.y),
              "n_report": len(data.y_report), "report_positives": dict(zip(data.labels, data.y_report.sum(0).tolist())),
              "overrides": [*CV_SETS, *args.overrides], "stage1_steps": args.stage1_steps,
              "recipes": score(data, args.out, args.bootstrap, cfg.trainer.seed)}
    if args.versus is not None:
        result["versus"] = versus(data, args.out, args.versus, args.bootstrap, cfg.trainer.seed)
    result = _clean(json.loads(json.dumps(result, default=float)))
    if args.report_fold == 9:
        write_json_atomic(args.result, result)
    write_json_atomic(args.out / f"results-fold{args.report_fold}.json", result)
    print(tables(result))
    if "versus" in result:
        print("\n" + versus_table(result["versus"], args.report_fold))
    _log(f"done in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
