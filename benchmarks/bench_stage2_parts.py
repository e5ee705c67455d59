"""Which part of the aligned model costs the teacher? Stage 2 with each part reset in turn before fine-tuning.

For a finished ablation run (``bench_ablation.py``: ``<run>/align-full/aligned.pt`` and the stage-1 encoders), the
teacher is fine-tuned, with the run's preset and overrides, from the aligned model with ONE part replaced by what the
teacher starts from without stage 2 (:func:`~cardiodistill.stages.stage2.unaligned_fusion`: the stage-1 encoders,
fresh labs and note encoders, an untrained fusion transformer):

* ``ECG encoder``: ``encoders.ecg.*`` (weights and BatchNorm statistics);
* ``ECG BatchNorm statistics``: only the ECG encoder's running means and variances;
* ``echo encoder``: ``encoders.echo.*``;
* ``labs and note encoders``: ``encoders.labs.*``, ``encoders.note.*`` (and each of them alone);
* ``fusion``: everything else (the projections into the fusion width, modality embeddings, fusion blocks, norm and
  the alignment heads).

Each teacher is scored like the ablation's (urgent-referral AUROC on the test studies, temperature and threshold
from validation) and compared, paired on the same studies, with the run's ``teacher: full`` (the aligned model as it
is) and ``teacher: no stage 2``. A part whose reset recovers the no-stage-2 figure is where stage 2 does its harm.
It also probes the labs encoder alone (:func:`labs_probe`): whether the aligned one has lost the labs' information.

    python benchmarks/bench_stage2_parts.py --run runs/ablation-cnn --patients 600 --preset quick \\
        --set align.optim.max_steps=80 --set finetune.epochs=6 --set distill.epochs=10 --set distill.min_steps=80 \\
        --set 'pretrain.ecg.model={name: ecg_cnn, fs: 100.0}' --set 'align.ecg_model={name: ecg_cnn, fs: 100.0}'

Finished teachers are kept (``<run>/teacher-reset-*``), so an interrupted run continues. Prints a table and writes
``--result`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from bench_ablation import score_teacher  # the script beside this one
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch.utils.data import DataLoader

from cardiodistill.config import load_config
from cardiodistill.data.cohort import open_cohort, paired_spec
from cardiodistill.evaluate.clinical import paired_difference
from cardiodistill.io.atomic import write_json_atomic
from cardiodistill.models.registry import model_from_config
from cardiodistill.stages.stage2 import encoder_config, unaligned_fusion
from cardiodistill.stages.stage3 import run_finetune
from cardiodistill.train.checkpoints import load_model, read_model_file

#: part -> does a state-dict key belong to it
PARTS = {
    "ECG encoder": lambda k: k.startswith("encoders.ecg."),
    "ECG BatchNorm statistics": lambda k: k.startswith("encoders.ecg.") and "running_" in k,
    "echo encoder": lambda k: k.startswith("encoders.echo."),
    "labs and note encoders": lambda k: k.startswith(("encoders.labs.", "encoders.note.")),
    "labs encoder": lambda k: k.startswith("encoders.labs."),
    "note encoder": lambda k: k.startswith("encoders.note."),
    "fusion": lambda k: not k.startswith("encoders."),
}


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


@torch.no_grad()
def labs_probe(cohort, models: dict[str, torch.nn.Module], repeats: int = 5) -> dict[str, dict[str, float]]:
    """Does a labs encoder still hold the labs' information? Urgent-referral AUROC of a linear probe (5-fold,
    ``repeats`` shuffles, every study of the cohort) on the raw standardised lab values and on each model's
    mean-pooled labs tokens, with the tokens' mean norm."""
    rows = np.arange(len(cohort.cache))
    y = cohort.labels[:, 0].astype(int)
    feats = {"raw lab values": (np.nan_to_num(cohort.cache.load("labs").astype(float)), float("nan"))}
    for name, model in models.items():
        model.eval()
        pooled, norms = [], []
        for batch in DataLoader(cohort.dataset(rows, modalities=("labs",)), batch_size=100):
            values = model.normalise_labs(batch["labs"].float())
            values = torch.where(batch["has_labs"].bool()[:, None], values, torch.full_like(values, float("nan")))
            tokens, present = model.encoders["labs"].forward_tokens(values, None)
            keep = present[..., None].to(tokens.dtype)
            pooled.append(((tokens * keep).sum(1) / keep.sum(1).clamp_min(1.0)).numpy())
            norms.append(tokens.norm(dim=-1)[present].numpy())
        feats[name] = (np.concatenate(pooled), float(np.concatenate(norms).mean()))
    out = {}
    for name, (x, norm) in feats.items():
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000))
        aucs = [roc_auc_score(y, cross_val_predict(probe, x, y, cv=StratifiedKFold(5, shuffle=True, random_state=r),
                                                   method="predict_proba")[:, 1]) for r in range(repeats)]
        out[name] = {"auroc_mean": float(np.mean(aucs)), "auroc_sd": float(np.std(aucs)), "token_norm": norm}
        _log(f"labs probe, {name}: urgent referral AUROC {np.mean(aucs):.3f} (sd {np.std(aucs):.3f}), "
             f"token norm {norm:.2f}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a finished bench_ablation.py folder")
    ap.add_argument("--patients", type=int, default=600)
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--parts", nargs="*", default=list(PARTS), choices=list(PARTS))
    ap.add_argument("--result", type=Path, default=Path("benchmarks/results/stage2_parts.json"))
    args = ap.parse_args()
    cfg = load_config(args.preset, [f"synth.patients={args.patients}", *args.overrides])
    run, started = args.run, time.time()

    encoders = {kind: encoder_config(run / f"stage1-{kind}" / "encoder.pt", {}, kind) for kind in ("ecg", "video")}
    cohort = open_cohort(cfg, run / "cohort", paired_spec(encoders["ecg"][0], encoders["video"][0]))
    aligned = read_model_file(run / "align-full" / "aligned.pt")
    config, plain = unaligned_fusion(cfg, cohort, encoders["ecg"], encoders["video"])
    if dict(aligned["model_config"]) != dict(config) or set(aligned["state_dict"]) != set(plain):
        raise SystemExit(f"{run}/align-full/aligned.pt was not made with these encoders and settings")

    teachers = {"aligned as it is": run / "teacher-full", "no stage 2": run / "teacher-no_stage_2"}
    for part in args.parts:
        folder = run / f"teacher-reset-{part.lower().replace(' ', '_')}"
        if not (folder / "teacher_outputs.npz").is_file():
            state = {k: (plain[k] if PARTS[part](k) else v) for k, v in aligned["state_dict"].items()}
            _log(f"teacher from the aligned model, {part} reset")
            run_finetune(cfg, cohort, folder, base=(dict(config), state), show_bar=False)
        teachers[f"aligned, {part} reset"] = folder

    scores, results = {}, {"run": str(run), "overrides": args.overrides, "models": {}, "paired": []}
    for name, folder in teachers.items():
        rows, scores[name], results["models"][name], _ = score_teacher(folder, cohort, cfg)
    labels = cohort.labels[rows, 0]
    print("| teacher | urgent referral AUROC | - aligned as it is (paired 95 % CI) | - no stage 2 (paired 95 % CI) |\n"
          "|---|---|---|---|")
    for name in teachers:
        auc = results["models"][name]["triage"]["auroc"]
        cells = []
        for ref in ("aligned as it is", "no stage 2"):
            d = paired_difference(labels, scores[name], scores[ref], n_boot=cfg.pipeline.bootstrap)
            results["paired"].append({"a": name, "b": ref, **{k: float(d[k]) for k in ("value", "ci_low", "ci_high")}})
            cells.append("" if name == ref else f"{d['value']:+.3f} ({d['ci_low']:+.3f}, {d['ci_high']:+.3f})")
        print(f"| {name} | {auc['value']:.3f} ({auc['ci_low']:.3f}-{auc['ci_high']:.3f}) | {cells[0]} | {cells[1]} |")
    torch.manual_seed(0)  # the fresh labs encoder of the probe: one fixed draw, so the figure reproduces
    fresh = model_from_config(dict(config))
    results["labs_probe"] = labs_probe(cohort, {"fresh labs encoder": fresh,
                                                "aligned labs encoder": load_model(run / "align-full" / "aligned.pt")})
    results["seconds"] = round(time.time() - started, 1)
    write_json_atomic(args.result, json.loads(json.dumps(results, default=float).replace("NaN", "null")))
    _log(f"done in {results['seconds']:.0f} s")


if __name__ == "__main__":
    main()
