"""Stage 2's value for the teacher over training seeds, and the labs encoder the teacher starts from.

One fine-tuning run of the teacher is one draw: its modality dropout and batch order come from
``trainer.seed``, and on the 600-patient cohort two seeds of the same teacher differ by several hundredths of
AUROC, as much as the effects the ablation reports. So for a finished ablation run (``bench_ablation.py``:
``<run>/align-full/aligned.pt``, the stage-1 encoders, the cohort) this fine-tunes, under each of ``--seeds``:

* ``no stage 2``: the stage-1 encoders under an untrained fusion (fresh labs and note encoders drawn under the seed);
* ``aligned, labs from stage 2``: the aligned model as it is (``finetune.fresh_encoders=[]``);
* ``aligned, fresh labs``: the aligned model with a new labs encoder drawn under the seed (the default,
  ``finetune.fresh_encoders=[labs]``).

Each teacher is scored like the ablation's (urgent-referral AUROC on the test studies, temperature and threshold
from validation). Printed: each seed's AUROCs and, for each pair, the difference averaged over the seeds with a
95 % bootstrap interval over the test patients (every resample scores every seed's two teachers on the same
patients), and the per-seed differences.

    python benchmarks/bench_teacher_seeds.py --run runs/ablation-cnn --patients 600 --preset quick --seeds 0 1 2 3 \\
        --set align.optim.max_steps=80 --set finetune.epochs=6 --set distill.epochs=10 --set distill.min_steps=80 \\
        --set 'pretrain.ecg.model={name: ecg_cnn, fs: 100.0}' --set 'align.ecg_model={name: ecg_cnn, fs: 100.0}'

Teachers go to ``<run>/seeds/<variant>-s<seed>`` and are kept, so an interrupted run continues. Writes
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

from cardiodistill.config import load_config
from cardiodistill.data.cohort import open_cohort, paired_spec
from cardiodistill.evaluate.metrics import auroc, bootstrap_interval
from cardiodistill.io.atomic import write_json_atomic
from cardiodistill.stages.stage2 import encoder_config, unaligned_fusion
from cardiodistill.stages.stage3 import run_finetune

VARIANTS = {"no stage 2": "no_stage2", "aligned, labs from stage 2": "aligned_stage2_labs",
            "aligned, fresh labs": "aligned_fresh_labs"}
PAIRS = [("aligned, labs from stage 2", "no stage 2"), ("aligned, fresh labs", "no stage 2"),
         ("aligned, fresh labs", "aligned, labs from stage 2")]


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def seed_averaged_difference(y: np.ndarray, a: list[np.ndarray], b: list[np.ndarray], n_boot: int,
                             seed: int = 0) -> dict[str, float]:
    """Mean over seeds of ``AUROC(a[s]) - AUROC(b[s])`` on labels ``y``, with a percentile bootstrap 95 % interval
    over the patients (each resample is shared by every seed and both models)."""

    def diff(idx: np.ndarray) -> float:
        return float(np.mean([auroc(y[idx], pa[idx]) - auroc(y[idx], pb[idx]) for pa, pb in zip(a, b)]))

    return bootstrap_interval(diff, len(y), n_boot=n_boot, seed=seed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a finished bench_ablation.py folder")
    ap.add_argument("--patients", type=int, default=600)
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--result", type=Path, default=Path("benchmarks/results/teacher_seeds.json"))
    args = ap.parse_args()
    run, started = args.run, time.time()
    scores: dict[str, list[np.ndarray]] = {name: [] for name in VARIANTS}
    results = {"run": str(run), "overrides": args.overrides, "seeds": args.seeds, "auroc": {n: [] for n in VARIANTS}}
    labels = None
    for seed in args.seeds:
        cfg = load_config(args.preset, [f"synth.patients={args.patients}", *args.overrides, f"trainer.seed={seed}"])
        encoders = {k: encoder_config(run / f"stage1-{k}" / "encoder.pt", {}, k) for k in ("ecg", "video")}
        cohort = open_cohort(cfg, run / "cohort", paired_spec(encoders["ecg"][0], encoders["video"][0]))
        for name, tag in VARIANTS.items():
            folder = run / "seeds" / f"{tag}-s{seed}"
            if not (folder / "teacher_outputs.npz").is_file():
                _log(f"seed {seed}: teacher {name}")
                if name == "no stage 2":
                    torch.manual_seed(seed)  # the fresh labs and note encoders and the fusion: one draw per seed
                    run_finetune(cfg, cohort, folder, base=unaligned_fusion(cfg, cohort, encoders["ecg"],
                                                                            encoders["video"]), show_bar=False)
                else:
                    t_cfg = cfg.model_copy(deep=True)
                    t_cfg.finetune.fresh_encoders = [] if name == "aligned, labs from stage 2" else ["labs"]
                    run_finetune(t_cfg, cohort, folder, aligned=run / "align-full" / "aligned.pt", show_bar=False)
            rows, p, metrics, _ = score_teacher(folder, cohort, cfg)
            scores[name].append(p)
            results["auroc"][name].append(metrics["triage"]["auroc"])
            labels = cohort.labels[rows, 0]
    print("| teacher | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean |\n|---|"
          + "---|" * (len(args.seeds) + 1))
    for name in VARIANTS:
        values = [a["value"] for a in results["auroc"][name]]
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in values) + f" | {np.mean(values):.3f} |")
    print("\n| difference | mean over seeds (95 % CI over patients) | per seed |\n|---|---|---|")
    results["paired"] = []
    for a, b in PAIRS:
        d = seed_averaged_difference(labels, scores[a], scores[b], cfg.pipeline.bootstrap)
        per_seed = [auroc(labels, pa) - auroc(labels, pb) for pa, pb in zip(scores[a], scores[b])]
        results["paired"].append({"a": a, "b": b, **d, "per_seed": per_seed})
        print(f"| {a} - {b} | {d['value']:+.3f} ({d['ci_low']:+.3f}, {d['ci_high']:+.3f}) | "
              + ", ".join(f"{v:+.3f}" for v in per_seed) + " |")
    results["seconds"] = round(time.time() - started, 1)
    write_json_atomic(args.result, json.loads(json.dumps(results, default=float).replace("NaN", "null")))
    _log(f"done in {results['seconds']:.0f} s")


if __name__ == "__main__":
    main()
