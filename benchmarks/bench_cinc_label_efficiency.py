"""Stage 1 on real unlabelled ECGs for the CinC 2017 student: the label-efficiency curve (issue 17, item 2).

One fold of the 5-fold cross-validation of ``bench_real_students.py`` (the same seeded folds). Its test recordings
are held out of everything, pretraining included: they go to an exclusion list the CinC source reads
(``pretrain.ecg.sources[].exclude``), so the encoder never sees them, not even unlabelled.

* **Stage 1**: the lead-agnostic ``ecg_cnn`` under CLOCS (the recipe of ``benchmarks/configs/ecg_ptbxl_cnn.yaml``)
  on every unlabelled ECG here but those: PTB-XL folds 1-8 (12 leads, which CLOCS splits into disjoint lead
  halves), CinC 2017's other recordings as lead I, and simulated 12-lead and handheld ECGs.
* **The students**: the same ``ecg_cnn`` network reading lead I, trained on 5, 10, 25 and 100 % of the fold's
  training recordings (stratified, seeded and nested: each share holds the smaller ones), from the stage-1 weights
  (``pretrained``, the backbone at ``finetune.encoder_lr_scale`` of the rate) and from a random start
  (``scratch``), each with its checkpoint chosen on the same share of the fold's validation recordings (at least
  one of each class: a team with 5 % of the labels has 5 % of the validation labels too). Every run lists each
  recording ``--passes / share`` times (rarer classes square-root more), so every run takes about the same number
  of steps, and the two starts of one share take exactly the same.
* **Scored** on the fold's test recordings: challenge score (mean F1 of normal, AF, other), AF F1 and macro
  AUROC, bootstrap 95 % CIs; ``pretrained - scratch`` as paired bootstraps over the same recordings.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_cinc_label_efficiency.py --out runs/cinc-label-efficiency
    # the pretrained backbone at the full rate (what the validation loss prefers from 10 % of labels up):
    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_cinc_label_efficiency.py --out runs/cinc-label-efficiency \
        --set finetune.encoder_lr_scale=1.0 --result benchmarks/results/cinc2017_label_efficiency_lr1.json

Every trained model is kept under ``--out``, so an interrupted run continues. Results:
``benchmarks/results/cinc2017_label_efficiency.json`` and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from bench_real_students import (
    CINC_OUTPUTS,
    CINC_SETS,
    DATA,
    WINDOW,
    _clean,
    _config,
    _fmt,
    _log,
    cinc_arrays,
    cinc_folds,
    cinc_student,
    evaluate_cinc,
    paired_challenge,
    paired_macro_delta,
)

from cardiodistill.config import EcgSourceConfig, FinetuneConfig, load_config
from cardiodistill.io.atomic import write_json_atomic, write_text_atomic
from cardiodistill.stages.stage1 import pretrain_ecg
from cardiodistill.stages.stage3 import student_start
from cardiodistill.train.checkpoints import load_model, read_model_file
from cardiodistill.train.engine import set_threads
from cardiodistill.train.supervised import predict_arrays

RECIPE = Path(__file__).with_name("configs") / "ecg_ptbxl_cnn.yaml"  # the CPU-scale stage-1 recipe
SHARES = (0.05, 0.1, 0.25, 1.0)
PASSES = 6  # listings of each normal recording at 100 % of labels
LR_SCALE = FinetuneConfig.model_fields["encoder_lr_scale"].default  # a pretrained backbone's rate factor by default


def nested_shares(rows: np.ndarray, target: np.ndarray, shares, seed: int) -> dict[float, np.ndarray]:
    """For each share, a stratified subset of ``rows`` (sorted), each holding the smaller ones: one seeded random
    order per class, of which a share takes the first ``ceil(share * n)`` (at least one)."""
    rng = np.random.default_rng(seed)
    order = {c: rng.permutation(rows[target[rows] == c]) for c in np.unique(target[rows])}
    return {f: np.sort(np.concatenate([r[:max(1, int(np.ceil(f * len(r))))] for r in order.values()]))
            for f in shares}


def run_name(fold: int, share: float, start: str, lr_scale: float, passes: int = PASSES) -> str:
    """A student's folder: ``fold0-0.1-pretrained``; a pretrained start at another ``finetune.encoder_lr_scale``
    than the default (:data:`LR_SCALE`) says so (``-lrscale1``; the scratch twin trains at the full rate either
    way), and so does a run of other ``--passes`` (``-passes24``)."""
    scaled = start == "pretrained" and lr_scale != LR_SCALE
    return (f"fold{fold}-{share:g}-{start}" + (f"-lrscale{lr_scale:g}" if scaled else "")
            + ("" if passes == PASSES else f"-passes{passes}"))


def stage1(out: Path, records: np.ndarray, steps: int, threads: int) -> Path:
    """The ``ecg_cnn`` CLOCS encoder on every unlabelled ECG but ``records`` (CinC names); returns ``encoder.pt``."""
    folder = out / "stage1"
    path = folder / "encoder.pt"
    if path.is_file():
        return path
    held_out = out / "held_out_records.txt"
    write_text_atomic(held_out, "# CinC 2017 test recordings of this fold: never read by stage 1\n"
                      + "\n".join(records) + "\n")
    cfg = load_config(str(RECIPE), [f"trainer.threads={threads}", f"pretrain.ecg.optim.max_steps={steps}"])
    cfg.pretrain.ecg.sources = [
        EcgSourceConfig(kind="ptbxl", path=str(DATA / "ptbxl" / "subset100"), folds=[1, 2, 3, 4, 5, 6, 7, 8],
                        max_windows=1),
        EcgSourceConfig(kind="cinc2017", path=str(DATA / "cinc2017"), max_windows=2, exclude=str(held_out)),
        EcgSourceConfig(kind="synth", patients=1000, seed=1),
    ]
    cfg.pretrain.ecg.cache_dir = str(out / "windows")
    _log(f"stage 1: ecg_cnn under CLOCS, {steps} steps, {len(records)} CinC recordings held out")
    summary = pretrain_ecg(cfg, folder, show_bar=False)
    _log(f"stage 1 done: {summary['steps']} steps")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/cinc-label-efficiency"))
    ap.add_argument("--fold", type=int, default=0, help="which fold of the 5-fold cross-validation")
    ap.add_argument("--shares", type=float, nargs="+", default=list(SHARES))
    ap.add_argument("--passes", type=int, default=PASSES,
                    help="listings of each normal recording at 100 %% of labels (a share s lists passes / s)")
    ap.add_argument("--pretrain-steps", type=int, default=1200)
    ap.add_argument("--pretrain-threads", type=int, default=2)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config override key=value")
    ap.add_argument("--result", type=Path, default=Path("benchmarks/results/cinc2017_label_efficiency.json"))
    args = ap.parse_args()
    started = time.time()
    cfg = _config(CINC_SETS, args.overrides)
    seed = cfg.trainer.seed
    arrays = cinc_arrays(DATA / "cinc2017", args.out / "arrays.npz", None)
    x, lengths, target = arrays["x"], arrays["lengths"], arrays["target"]
    fold = cinc_folds(target, 5, seed)[args.fold]
    test = fold["test"]

    encoder_path = stage1(args.out, arrays["record"][test], args.pretrain_steps, args.pretrain_threads)
    pretrained = student_start({"name": "pretrained", "path": str(encoder_path)}, None)
    starts = {"pretrained": pretrained, "scratch": (pretrained[0], None)}
    train_shares = nested_shares(fold["train"], target, args.shares, seed)
    val_shares = nested_shares(fold["val"], target, args.shares, seed)

    y, onehot = target[test], np.eye(len(CINC_OUTPUTS), dtype=np.float32)[target[test]]
    rows = []
    for share in args.shares:
        split = {"train": train_shares[share], "val": val_shares[share], "test": test}
        passes = max(1, round(args.passes / share))
        probs = {}
        folders = {name: args.out / run_name(args.fold, share, name, cfg.finetune.encoder_lr_scale, args.passes)
                   for name in starts}
        for name, start in starts.items():
            path = cinc_student(arrays, split, folders[name], cfg, passes, WINDOW, start=start)
            set_threads(cfg.trainer.threads)
            probs[name] = predict_arrays(load_model(path), x[test], lengths=lengths[test], window=WINDOW)["probs"]
        row = {"share": share, "train": len(split["train"]), "val": len(split["val"]), "passes": passes}
        for name, p in probs.items():
            r = evaluate_cinc(p, y, args.bootstrap, seed)
            info = read_model_file(folders[name] / "student.pt")
            row[name] = {"challenge": r["challenge"], "f1_af": r["f1_af"], "macro_auroc": r["macro_auroc"],
                         "train_seconds": info.get("train_seconds")}
        pred = {k: p.argmax(1) for k, p in probs.items()}
        row["pretrained_minus_scratch"] = {
            "challenge": paired_challenge(y, pred["pretrained"], pred["scratch"], args.bootstrap, seed),
            "macro_auroc": paired_macro_delta(onehot, probs["pretrained"], probs["scratch"], args.bootstrap, seed)}
        rows.append(row)
        _log(f"{share:.0%} of labels: challenge pretrained {row['pretrained']['challenge']['value']:.3f}, "
             f"scratch {row['scratch']['challenge']['value']:.3f}")

    results = {"fold": args.fold, "folds": 5, "test_recordings": len(test), "passes": args.passes,
               "encoder_lr_scale": cfg.finetune.encoder_lr_scale,
               "pretrain_steps": args.pretrain_steps, "encoder": str(encoder_path),
               "encoder_config": pretrained[0], "overrides": args.overrides, "rows": rows,
               "seconds": round(time.time() - started, 1)}
    write_json_atomic(args.result, _clean(results))
    print("| labels (train / val recordings) | start | challenge score | AF F1 | macro AUROC | "
          "pretrained - scratch: challenge | pretrained - scratch: macro AUROC |\n|---|---|---|---|---|---|---|")
    for row in rows:
        d = row["pretrained_minus_scratch"]
        for name in starts:
            diff = (f" {_fmt(d['challenge'], True)} | {_fmt(d['macro_auroc'], True)} |" if name == "pretrained"
                    else " | |")
            print(f"| {row['share']:.0%} ({row['train']} / {row['val']}) | {name} | {_fmt(row[name]['challenge'])} | "
                  f"{_fmt(row[name]['f1_af'])} | {_fmt(row[name]['macro_auroc'])} |" + diff)
    _log(f"done in {results['seconds']:.0f} s")


if __name__ == "__main__":
    main()
