"""Package the CinC 2017 lead-I student as the model bundled with cardiodistill, and prove it end to end.

After ``bench_real_students.py --only cinc2017 --cv 5`` has cross-validated one or more recipes
(``benchmarks/results/cinc2017_cv.json``):

1. The recipe named by ``--recipe`` (default: the bundled model's own, from ``cinc2017_shipped.json``; the best pooled
   out-of-fold challenge score when nothing is bundled yet) is trained once more
   on A00001-A06000 but a stratified, seeded tenth (the validation recordings: checkpoint choice, int8
   calibration and the export gate), in ``runs/real/cinc2017/final-passes<P>[-<overrides>]``.
2. ``cardiodistill export``'s gate (:func:`cardiodistill.deploy.export_student_model`): int8 kept only if its
   macro AUROC on the validation recordings (one centred 10-s window each) is within 0.02 of float32, else
   fp16, else fp32; written to ``cardiodistill/weights/cinc2017_lead1.onnx``.
   Its abstention threshold on the noisy score is chosen there too (:func:`abstention_threshold`: the most
   noisy recordings caught with at most 4 % of the normal ones abstained on) and travels in the file's spec.
3. The shipped file is run by the **edge runtime** (:func:`cardiodistill.edge.predict.predict_paths`, numpy +
   onnxruntime) on the validation recordings' original files (300 Hz WFDB) and compared with the PyTorch
   model's scores on them: what ``cardiodistill predict`` adds or loses (quality abstentions, int8).
4. The model card ``cardiodistill/weights/cinc2017_lead1.md`` quotes the **cross-validated** figures: each
   recording scored by a model of the same recipe that never saw it, the estimate of what a new site sees.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/ship_cinc2017_student.py

Results: ``benchmarks/results/cinc2017_shipped.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_real_students import (  # noqa: E402
    CINC_OUTPUTS,
    CINC_SETS,
    DATA,
    MAX_NORMAL_ABSTAINED,
    TREES_TAG,
    WINDOW,
    _config,
    abstention_threshold,
    challenge_scores,
    cinc_rhythm,
    cinc_student,
    cinc_trees,
    ensemble_name,
    evaluate_cinc,
    features_cache,
    features_of,
    recipe_features,
    recipe_tag,
)
from sklearn.model_selection import train_test_split  # noqa: E402

from cardiodistill import __version__  # noqa: E402
from cardiodistill.deploy import ensemble_students, export_student_model  # noqa: E402
from cardiodistill.edge import EdgeModel  # noqa: E402
from cardiodistill.edge.predict import predict_paths  # noqa: E402
from cardiodistill.evaluate.calibration import expected_calibration_error  # noqa: E402
from cardiodistill.evaluate.clinical import multilabel_metrics  # noqa: E402
from cardiodistill.io.atomic import write_json_atomic, write_text_atomic  # noqa: E402
from cardiodistill.models import FeatureTrees  # noqa: E402
from cardiodistill.signals.beats import BEAT_FEATURES  # noqa: E402
from cardiodistill.train.checkpoints import load_model  # noqa: E402
from cardiodistill.train.engine import set_threads  # noqa: E402
from cardiodistill.train.supervised import ArrayDataset, predict_arrays  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "cardiodistill" / "weights"
MODEL_ID = "cinc2017-lead1"
RESULTS = ROOT / "benchmarks" / "results"


def _ci(cell: dict) -> str:
    return f"{cell['value']:.3f} ({cell['ci_low']:.3f}-{cell['ci_high']:.3f})"


def edge_scores(model: EdgeModel, files: list[Path], target: np.ndarray, n_boot: int) -> dict:
    """The edge runtime on the test files: per-class F1, challenge score, AUROCs, abstention, speed."""
    start = time.perf_counter()
    rows = list(predict_paths(files, model))
    seconds = time.perf_counter() - start
    errors = [r for r in rows if r["error"] is not None]
    if errors:
        raise RuntimeError(f"{len(errors)} test files failed, first: {errors[0]['error']}")
    probs = np.array([[r["scores"][c] for c in CINC_OUTPUTS] for r in rows])  # one-vs-rest sigmoids
    pred = probs.argmax(1)
    out = challenge_scores(target, pred, n_boot, seed=0)
    onehot = np.eye(len(CINC_OUTPUTS), dtype=np.float32)[target]
    aurocs = multilabel_metrics(onehot, probs, CINC_OUTPUTS, n_boot=n_boot, seed=0)
    out["auroc"] = {c: aurocs[c]["auroc"] for c in CINC_OUTPUTS}
    out["macro_auroc"] = aurocs["macro"]["auroc"]
    abstain = np.array([r["abstain"] for r in rows])
    quality = np.array([any("unusable" in part for part in (r["abstain_reason"] or "").split("; ")) for r in rows])
    kept = ~abstain
    out["abstention"] = {
        "any_reason": float(abstain.mean()),
        "noisy_abstained": float(abstain[target == 3].mean()),
        "normal_abstained": float(abstain[target == 0].mean()),
        "by_signal_quality": float(quality.mean()),
        "challenge_kept": challenge_scores(target[kept], pred[kept], n_boot, seed=0)["challenge"],
    }
    out["n_test"] = len(rows)
    out["ms_per_recording"] = round(1e3 * seconds / len(rows), 2)
    return out


def _rhythm_sentence(spec, ensemble: bool) -> str:
    """The card's sentence on the rhythm features, for a model that reads them."""
    if not spec.rhythm:
        return ""
    who = "the members that read them" if ensemble else "the model"
    beats = [n for n in spec.rhythm if n in BEAT_FEATURES]
    what = (f"{len(spec.rhythm) - len(beats)} rhythm features of the whole recording (`cardiodistill.signals.rhythm`: "
            f"RR-interval statistics from the R-peaks the runtime detects in lead I, e.g. RR coefficient of "
            f"variation, pNN50, lag-1 RR correlation)")
    if beats:
        what += (f" and {len(beats)} beat features measured on the same beats (`cardiodistill.signals.beats`: "
                 f"P-wave coherence, beat-to-template correlation, premature beats of another shape, QRS width, "
                 f"activity between beats, noise bursts)")
    how = ("a student joins them to its CNN's embedding before its classifier, the trees read them alone" if ensemble
           else "joined to its CNN's embedding before the classifier")
    return f" Beside each window {who} read{'' if ensemble else 's'} {what}: {how}."


def _passes(passes: int | list[int]) -> str:
    if not isinstance(passes, int):
        passes = [p for p in passes if p]  # a trees member's entry has 0 passes: it trains on no crops
    if isinstance(passes, int) or len(set(passes)) == 1:
        return f"{passes if isinstance(passes, int) else passes[0]} times per run"
    return " and ".join(map(str, passes)) + " times per run (the members in order)"


def _architecture(student) -> str:
    """The card's sentence on the architecture of a student or an ensemble of them."""

    def one(model) -> str:
        if isinstance(model, FeatureTrees):
            return (f"gradient-boosted trees on the {model.n_features} rhythm and beat features (scikit-learn's "
                    f"`GradientBoostingClassifier`, {model.trees} trees of depth {model.depth} per class, a softmax "
                    f"over the classes; stored as tensors, `feature_trees`)")
        gru = getattr(model.backbone, "gru", None)
        extra = "" if gru is None else (f" with a bidirectional GRU ({gru.hidden_size} units each way) reading its "
                                        f"last feature map in time order")
        rhythm = ""
        if model.rhythm_names:
            beats = any(n in BEAT_FEATURES for n in model.rhythm_names)
            rhythm = ", reading the rhythm and beat features" if beats else ", reading the rhythm features"
        return (f"`student_cnn` (depthwise-separable 1-D CNN{extra}{rhythm}, "
                f"{sum(p.numel() for p in model.parameters()):,} parameters)")

    members = getattr(student, "members", None)
    if members is None:
        return (f"{one(student)} with one sigmoid per class; the prediction is the most probable class, averaged "
                f"over the recording's 10-s windows.")
    listed = "; ".join(f"({i}) {one(m)}" for i, m in enumerate(members, start=1))
    return (f"an ensemble of {len(members)} members in one graph (`student_ensemble`), each student with one "
            f"sigmoid per class: {listed}. The prediction is the most probable class of the members' mean "
            f"probabilities, averaged over the recording's 10-s windows.")


def _ema_sentence(decay: float, ensemble: bool) -> str:
    if not decay:
        return ""
    whose = "each network's" if ensemble else "the model's"
    return (f", with an exponential moving average of {whose} weights (decay {decay:g}, updated every step; the "
            f"checkpoint chosen and the weights in this file are the average's)")


def model_card(spec, gate: dict, edge: dict, offline: dict, cv: dict, cal: dict, recipe: str, split: dict,
               size: int, cv_file: str = "benchmarks/results/cinc2017_cv.json", ema_decay: float = 0.0) -> str:
    """The bundled model's card (markdown), from the measurements (``cal``: :func:`cv_calibration` of ``cv``;
    ``cv_file``: where the recipe's cross-validation is kept; ``ema_decay``: its networks' weight average)."""
    n = {k: len(v) for k, v in split.items()}
    ab, cab, tab = edge["abstention"], cv["abstention"], cv["abstention_thresholded"]
    f1 = " | ".join(_ci(cv[f"f1_{c}"]) for c in CINC_OUTPUTS)
    auc = " | ".join(_ci(cv["auroc"][c]) for c in CINC_OUTPUTS)
    folds = ", ".join(f"{v:.3f}" for v in cv["challenge_per_fold"])
    ensemble = "members" in cv
    scored_by = "fold's models, one per member, averaged as this file averages them," if ensemble else "one model"
    models = f"five sets of {len(cv['members'])} models" if ensemble else "five models"
    chosen = (" (the members were chosen among the cross-validated recipes on their out-of-fold predictions)"
              if ensemble else "")
    gate_rows = "\n".join(
        f"| {p} | {gate[p]['bytes'] / 1e3:.0f} kB | {gate[p]['macro_auroc']:.4f} | "
        f"{'reference' if p == 'fp32' else ('passed' if gate[p]['passed'] else 'failed')} |"
        for p in ("fp32", "int8", "fp16") if p in gate and "macro_auroc" in gate[p])
    return f"""# Model card: `{spec.model_id}` (bundled with cardiodistill {__version__})

A single-lead (lead I) handheld-ECG rhythm classifier: normal sinus rhythm, atrial fibrillation,
other rhythm, or too noisy to read. It is the model `cardiodistill predict` uses when no `--model`
is given. File: `cardiodistill/weights/cinc2017_lead1.onnx`, {size / 1e3:.0f} kB, {spec.precision},
{spec.fs:g} Hz x {spec.seconds:g} s windows, opset 17, onnxruntime on CPU.

## Intended use

Research and engineering: checking that the edge pipeline reads a user's single-lead files, and a
baseline for a team's own students. **It is not a medical device and is not validated for clinical
decisions.** A recording it calls "noisy", or whose lead fails the quality check, is abstained on:
the probabilities are reported but no rhythm is.

## Training data and recipe

PhysioNet/CinC Challenge 2017 training set, records A00001-A06000 (AliveCor single-lead recordings,
300 Hz, 9-61 s; labels by the challenge: N, A, O, ~). Licence of the data: Open Data Commons
Attribution (ODC-By 1.0); cite Clifford et al., "AF classification from a short single lead ECG
recording: the PhysioNet/Computing in Cardiology Challenge 2017", CinC 2017. The records
A06001-A08528 were not available to this project and were never used.

This file was trained on {n['train']} of the 6000 recordings; the other {n['val']} (a stratified, seeded tenth)
chose its checkpoint, calibrated int8 and ran the export gate. Each recording was resampled to 100 Hz
and band-passed 0.5-40 Hz; {'each network' if ensemble else 'the model'} trained on random 10-s crops, each z-scored,
with square-root-balanced oversampling of the rarer classes (each normal recording listed {_passes(cv['passes'])};
recipe `{recipe}` of `{cv_file}`){_ema_sentence(ema_decay, ensemble)}. Architecture: {offline['architecture']}{_rhythm_sentence(spec, ensemble)}
No pretraining, no distillation (no richer-data teacher with these classes exists here).

## Cross-validated performance (what a new site should expect)

{cv['folds']}-fold stratified cross-validation of the same recipe over the 6000 recordings
(`benchmarks/bench_real_students.py --cv {cv['folds']}`{', then --cv-ensemble' if ensemble else ''}): each
recording is scored by the {scored_by} that
never saw it (trained on four fifths but a checkpoint-choice eighth). 95 % bootstrap CIs over the 6000
recordings:

| | normal | AF | other | noisy |
|---|---|---|---|---|
| F1 | {f1} |
| AUROC (one vs rest) | {auc} |

- **Challenge score** (mean F1 of normal, AF, other): **{_ci(cv['challenge'])}**; per fold {folds}
  (mean {cv['challenge_fold_mean']:.3f}, SD {cv['challenge_fold_sd']:.3f}). The winning entries of the 2017
  challenge scored 0.83 on its hidden test set (a different set; not comparable one to one).
- **Noisy recordings**: the model abstains when the noisy class is the most probable or its score reaches a
  threshold chosen on the checkpoint-choice recordings (the most noisy ones caught with at most
  {100 * MAX_NORMAL_ABSTAINED:.0f} % of the normal ones abstained on). Cross-validated, it abstains on
  {100 * tab['noisy_abstained']:.1f} % of the truly noisy recordings and {100 * tab['normal_abstained']:.1f} % of the normal
  ones ({100 * cab['noisy_abstained']:.1f} % and {100 * cab['normal_abstained']:.1f} % by the most probable class alone); on the
  recordings it reads, the challenge score is {_ci(tab['challenge_kept'])}.
- **Calibration** (the class probabilities `cardiodistill predict` reports: the members' mean scores divided by
  their sum; the same out-of-fold predictions): the most probable class's probability differs from how often that
  class is right by {cal['ece_most_probable']:.3f} on average (expected calibration error, 10 bins); one vs rest
  {', '.join(f"{c} {v:.3f}" for c, v in cal['ece_one_vs_rest'].items())}; Brier score {cal['brier']:.3f} (0 is
  perfect, a uniform guess 0.75). These hold at the data set's class mix
  ({', '.join(f"{c} {100 * v:.0f} %" for c, v in cal['class_mix'].items())}).
- The figures are those of the recipe ({models}); this file, trained on more recordings, is one more draw
  of it. Choosing the recipe among those cross-validated used the same folds, a small optimistic bias{chosen}.

## The shipped file through `cardiodistill predict`

On the {edge['n_test']} validation recordings (never trained on; they chose the checkpoint, so slightly
optimistic), read from their original WFDB files by the edge runtime
(`benchmarks/ship_cinc2017_student.py`): challenge score {_ci(edge['challenge'])}, against
{_ci(offline['challenge'])} for the PyTorch model on the same recordings. Its abstention threshold on the
noisy score, chosen on these recordings, is {spec.thresholds['noisy']:.3f}; with it and the runtime's
signal-quality check it abstains on {100 * ab['any_reason']:.1f} % of these recordings in all ({100 * ab['noisy_abstained']:.0f} % of the
truly noisy ones, {100 * ab['normal_abstained']:.1f} % of the normal ones). Speed: {edge['ms_per_recording']} ms per
recording end to end (reading, preprocessing, model) on one CPU thread of the development machine.

Export gate (validation, {gate['n_validation']} recordings; int8 kept only within a {gate['margin']:g} macro-AUROC margin):

| precision | size | macro AUROC | gate |
|---|---|---|---|
{gate_rows}

## Limitations

- One device (AliveCor), one data set: performance on other handheld devices, lead placements,
  sampling rates or populations is unknown. The data set records neither age nor sex, so no subgroup
  figures can be given.
- "Other rhythm" is a heterogeneous class and the weakest (F1 above); AF F1 is below the
  challenge winners'.
- Trained on recordings of 9-61 s; recordings under 5 s are abstained on.
- Probabilities are not calibrated for a clinic's prevalence.

## Licence

Model weights: Apache-2.0, as the code. Training data: ODC-By 1.0 (attribution above).
"""


def cv_calibration(cv: dict) -> dict:
    """Calibration of a recipe's out-of-fold class probabilities as ``cardiodistill predict`` reports them (the
    scores divided by their sum): the expected calibration error (10 equal-width bins) of the most probable class's
    probability against how often that class is right, each class's one-vs-rest ECE, and the multi-class Brier
    score (0 is perfect; always 0.25 for each of the four classes scores 0.75), and the class mix they hold at."""
    folder = Path(cv["folder"])
    with np.load((folder if folder.is_absolute() else ROOT / folder) / "oof.npz") as saved:
        scores, y = saved["probs"].astype(np.float64), saved["target"]
    p = scores / scores.sum(1, keepdims=True)
    onehot = np.eye(p.shape[1])[y]
    return {"ece_most_probable": expected_calibration_error(p.argmax(1) == y, p.max(1)),
            "ece_one_vs_rest": {c: expected_calibration_error(onehot[:, i], p[:, i])
                                for i, c in enumerate(CINC_OUTPUTS)},
            "brier": float(np.mean(np.sum((p - onehot) ** 2, axis=1))),
            "class_mix": dict(zip(CINC_OUTPUTS, (np.bincount(y, minlength=len(CINC_OUTPUTS)) / len(y)).tolist()))}


def final_split(target: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """All recordings but a stratified, seeded tenth (``val``: checkpoint choice and the export gate)."""
    train, val = train_test_split(np.arange(len(target)), test_size=0.1, stratify=target, random_state=seed)
    return {"train": np.sort(train), "val": np.sort(val)}


def _relative(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=ROOT / "runs" / "real" / "cinc2017")
    ap.add_argument("--cv", type=Path, default=RESULTS / "cinc2017_cv.json", help="bench_real_students.py --cv results")
    ap.add_argument("--recipe", nargs="+", default=None,
                    help="a key of --cv, or several cross-validated recipes: their ensemble, once cross-validated "
                         "(bench_real_students.py --cv-ensemble; default: the bundled model's recipe, else the best "
                         "pooled challenge score)")
    ap.add_argument("--bootstrap", type=int, default=1000)
    args = ap.parse_args()
    recipes = json.loads(args.cv.read_text())
    shipped = RESULTS / "cinc2017_shipped.json"
    bundled = json.loads(shipped.read_text()).get("recipe") if shipped.is_file() else None
    # a recipe that scores higher is not shipped by default: it must also earn its place (paired CI, abstention)
    if args.recipe and len(args.recipe) > 1:
        name = ensemble_name(args.recipe)
        if name not in recipes:
            raise SystemExit(f"{name!r} is not cross-validated: bench_real_students.py --cv-ensemble first")
    else:
        name = args.recipe[0] if args.recipe else bundled or max(recipes, key=lambda k: recipes[k]["challenge"]["value"])
    cv = recipes[name]
    decays = {_config(CINC_SETS, recipes[m]["overrides"]).distill.optim.ema_decay
              for m in cv.get("members", [name]) if not recipes[m].get("trees")}
    if len(decays) > 1:
        raise SystemExit(f"{name!r}: its networks train with different weight averages {sorted(decays)}; the card "
                         f"describes one")
    with np.load(args.run / "arrays.npz") as saved:
        x, lengths, target, records = saved["x"], saved["lengths"], saved["target"], saved["record"]
    split = final_split(target)
    window = cv.get("window") or WINDOW  # entries before the window was a recipe's choice used WINDOW
    arrays = {"x": x, "lengths": lengths, "target": target, "record": records}
    rhythm = cinc_rhythm(arrays, features_cache(args.run)) if cv.get("rhythm") else None
    cfg = _config(CINC_SETS, [])
    paths = []
    for member in cv.get("members", [name]):  # an ensemble: each member recipe trained as it would ship alone
        entry = recipes[member]
        if entry.get("trees"):
            paths.append(cinc_trees(rhythm, target, split, args.run / f"final-{TREES_TAG}", cfg.trainer.seed))
            continue
        flags = bool(entry.get("rhythm")), bool(entry.get("beats"))
        folder = args.run / f"final-{recipe_tag(entry['passes'], entry['overrides'], window, *flags)}"
        paths.append(cinc_student(arrays, split, folder, _config(CINC_SETS, entry["overrides"]), entry["passes"],
                                  window, rhythm=rhythm, names=recipe_features(*flags)))
    path = paths[0]
    if len(paths) > 1:
        tags = "+".join(p.parent.name.removeprefix("final-") for p in paths)
        path = ensemble_students(paths, args.run / f"final-ensemble-{tags}" / "student.pt")
    set_threads(cfg.trainer.threads)
    student = load_model(path)
    val_rows = split["val"]
    val_rhythm = None if rhythm is None else features_of(rhythm[val_rows], student.rhythm_names)
    p_val = predict_arrays(student, x[val_rows], lengths=lengths[val_rows], window=window, rhythm=val_rhythm)["probs"]
    offline = evaluate_cinc(p_val, target[val_rows], args.bootstrap, 0)
    offline["params"] = sum(p.numel() for p in student.parameters())
    offline["architecture"] = _architecture(student)
    noisy_threshold = abstention_threshold(p_val, target[val_rows])

    val = ArrayDataset(x[val_rows], np.eye(4, dtype=np.float32)[target[val_rows]], lengths=lengths[val_rows],
                       crop=window, random_crop=False)
    val_x = np.stack([val[i]["mobile"].numpy() for i in range(len(val))])
    out = WEIGHTS / "cinc2017_lead1.onnx"
    gate = export_student_model(path, out, val_x=val_x, val_y=np.eye(4, dtype=np.float32)[target[val_rows]],
                                val_rhythm=val_rhythm, precision="int8", margin=0.02, model_id=MODEL_ID,
                                thresholds={"noisy": noisy_threshold},
                                provenance={"data": "PhysioNet/CinC 2017 A00001-A06000 but a stratified tenth",
                                            "recipe": name, "card": "cinc2017_lead1.md"})
    model = EdgeModel.load(out)
    calibration = cv_calibration(cv)
    files = [DATA / "cinc2017" / f"{r}.hea" for r in records[val_rows]]
    edge = edge_scores(model, files, target[val_rows], args.bootstrap)
    write_text_atomic(WEIGHTS / "cinc2017_lead1.md",
                      model_card(model.spec, gate, edge, offline, cv, calibration, name, split, out.stat().st_size,
                                 _relative(args.cv), decays.pop() if decays else 0.0))
    gate["path"] = str(out.relative_to(ROOT))
    result = {"model": gate["path"], "bytes": out.stat().st_size, "precision": model.spec.precision,
              "recipe": name, "cross_validated": {k: cv[k] for k in ("challenge", "challenge_fold_mean",
                                                                     "challenge_fold_sd", "macro_auroc", "abstention")}
              | {"calibration": calibration},
              "gate": gate, "edge_validation": edge, "offline_validation": offline,
              "validation_records": records[val_rows].tolist()}  # never trained on: tests check the shipped model
    write_json_atomic(RESULTS / "cinc2017_shipped.json", json.loads(json.dumps(result, default=float)))
    print(f"{out}: {model.spec.precision}, {out.stat().st_size / 1e3:.0f} kB; recipe {name}: cross-validated "
          f"challenge score {_ci(cv['challenge'])}; validation recordings through the edge runtime "
          f"{_ci(edge['challenge'])} (PyTorch {_ci(offline['challenge'])}), {edge['ms_per_recording']} ms per recording")


if __name__ == "__main__":
    main()
