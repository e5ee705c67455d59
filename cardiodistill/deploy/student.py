"""The gated export of a trained student: one ONNX file, as small as its accuracy allows.

:func:`export_student_model` exports the student (``student.pt``) to float32 ONNX, checked against
PyTorch, then tries the requested smaller precision. Published int8 ECG models have lost most of
their discrimination to quantisation (0.89 to 0.51 macro AUROC), so a smaller graph is kept only
when it passes an **accuracy gate** on validation recordings, both graphs run by onnxruntime:

* its macro AUROC (mean over the outputs the gate can judge) is at most ``margin`` below the float32
  graph's, **and**
* no single judged output's AUROC drops by more than ``2 * margin``.

The gate judges an output only when its validation labels hold at least :data:`MIN_GATE_CLASS`
positives and as many negatives; the others are reported as "not judged (n positives)" and left out
of both rules, since a handful of recordings cannot tell quantisation from noise (see
:data:`MIN_GATE_CLASS`). With no output it can judge, the gate cannot vouch for a smaller graph and
keeps float32.

A failed gate falls back, int8 -> fp16 -> fp32, each smaller precision under the same gate (fp16
only where a float16 converter is installed, see :func:`~cardiodistill.deploy.quantize.convert_fp16`);
with ``fallback=False`` it refuses instead. The written file carries its
:class:`~cardiodistill.edge.spec.EdgeSpec` with the chosen precision and, under ``gate``, what was
measured for each precision tried, what was decided, and ``summary``: one line for a person
(``"int8 kept: macro AUROC -0.001 vs fp32 over 7 judged outputs; 3 outputs not judged (< 10
positives or negatives)"``, ``"int8 refused (...) -> fp16 kept: ..."``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..edge.spec import METADATA_KEY, PRECISIONS, EdgeSpec, open_session
from ..errors import ConfigError, DataError, one_line
from ..evaluate.metrics import auroc
from ..io.atomic import atomic_path
from ..models.trees import FeatureTrees
from ..signals.prepare import InputSpec
from .export import export_onnx
from .quantize import convert_fp16, quantize_int8, require_onnx

__all__ = ["MIN_GATE_CLASS", "export_student_model", "student_arrays_npz", "student_spec"]

N_CALIBRATION = 200  # validation windows used to calibrate int8 when no calibration set is given

#: The fewest validation positives, and negatives, an output needs for the gate to judge it.
#:
#: An output's AUROC is the share of (positive, negative) pairs ranked right, so one positive that falls
#: behind ``k`` more negatives costs ``k / (n_pos * n_neg)``. With 2 positives, the per-output tolerance
#: ``2 * margin`` (0.04) is exceeded when ONE recording slips past 8 % of the negatives: quantisation noise
#: of a few hundredths on a probability near a crowded region does that, so the "failure" would say nothing
#: about the graph (the demo's student fell back from int8 on exactly such an output). With 10 positives
#: (and 10 negatives, symmetrically) it takes one recording slipping past 40 % of the other class, or several
#: moving together: a real change of ranking, which the rule is there to catch. Below that, the gate reports
#: the output as not judged rather than failing it.
MIN_GATE_CLASS = 10
_FALLBACK = {"int8": ("int8", "fp16", "fp32"), "fp16": ("fp16", "fp32"), "fp32": ("fp32",)}
_BATCH = 256  # windows per onnxruntime call when scoring the validation set


def student_arrays_npz(path: str | os.PathLike[str], *, rhythm: bool = False):
    """``(x [N, L, T] float32, y [N, C] float32)`` from an ``.npz`` with keys ``x`` and ``y``.

    ``x``: prepared windows (per-lead z-scored, the model's leads in its order); ``y``: 0/1 labels
    per output, NaN where unknown. With ``rhythm=True`` a third item: the optional key ``rhythm``
    ``[N, n]`` (each window's recording's rhythm features, for a student that reads them), or None.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("no such file", path)
    try:
        with np.load(path, allow_pickle=False) as data:
            if not {"x", "y"} <= set(data.files):
                raise DataError(f"expected arrays 'x' and 'y', found {sorted(data.files)}", path)
            x, y = data["x"], data["y"]
            r = data["rhythm"] if "rhythm" in data.files else None
    except (OSError, ValueError) as err:
        raise DataError(f"not a readable .npz archive ({one_line(err)})", path) from err
    if x.ndim != 3 or y.ndim != 2 or len(x) != len(y) or len(x) == 0:
        raise DataError(f"expected x [N, leads, samples] and y [N, outputs] with the same N > 0, "
                        f"got {x.shape} and {y.shape}", path)
    if not (np.issubdtype(x.dtype, np.floating) and np.issubdtype(y.dtype, np.number)):
        raise DataError(f"x must be float and y numeric, got {x.dtype} and {y.dtype}", path)
    if r is not None and (r.ndim != 2 or len(r) != len(x)):
        raise DataError(f"expected rhythm [N, features] with the N = {len(x)} of x, got {r.shape}", path)
    x, y = x.astype(np.float32, copy=False), y.astype(np.float32, copy=False)
    if not rhythm:
        return x, y
    return x, y, None if r is None else r.astype(np.float32, copy=False)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _require_student(model: torch.nn.Module, path: Path, takes: str) -> None:
    """A :class:`DataError` naming ``path`` unless ``model`` is a student (or an ensemble of them)."""
    if not all(hasattr(model, a) for a in ("leads", "outputs", "backbone_config", "predict")):
        raise DataError(f"not a student model ({type(model).__name__}): {takes}", path)


#: What a student file says about its outputs and input that :func:`student_spec` reads: an ensemble's members
#: must agree on each.
ENSEMBLE_AGREE = ("task", "triage", "abstain_outputs", "lvef", "band_hz")


def ensemble_students(students: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str]) -> Path:
    """Write trained students (``student.pt`` files that read the same input and give the same outputs; a
    :class:`~cardiodistill.models.FeatureTrees` file may be one of them) as one
    ``student_ensemble`` model file at ``out`` (:class:`~cardiodistill.models.StudentEnsemble`: the mean of
    their predictions), which :func:`export_student_model` exports as one graph. What the export reads from a
    student file (:data:`ENSEMBLE_AGREE`) must agree; the file records each member's source, sha256, steps and
    training recordings. Returns ``out``."""
    from ..models import create_model
    from ..train.checkpoints import build_model, read_model_file, save_model

    paths = [Path(p) for p in students]
    if len(paths) < 2:
        raise ConfigError(f"an ensemble needs at least two students, got {len(paths)}")
    data = [read_model_file(p) for p in paths]
    models = [build_model(d, source=p) for d, p in zip(data, paths)]
    for path, d, model in zip(paths, data, models):
        if not isinstance(model, FeatureTrees):
            _require_student(model, path, "an ensemble takes student.pt files (students or feature trees)")
        for key in ENSEMBLE_AGREE:
            if d.get(key) != data[0].get(key):
                raise ConfigError(f"{path}: {key} is {d.get(key)!r} but {paths[0]} has {data[0].get(key)!r}; "
                                  f"an ensemble's students must agree")
    try:
        ensemble = create_model("student_ensemble", members=[m.model_config for m in models])
    except ConfigError as err:
        raise ConfigError(f"{', '.join(map(str, paths))}: {err}") from err
    for member, model in zip(ensemble.members, models):
        member.load_state_dict(model.state_dict())
    n_train = {d.get("n_train") for d in data}
    info = {**{k: data[0][k] for k in ENSEMBLE_AGREE if k in data[0]},
            **({"n_train": n_train.pop()} if len(n_train) == 1 else {}),
            "members": [{"source": str(p), "sha256": _sha256(p), **{k: d[k] for k in ("steps", "n_train") if k in d}}
                        for p, d in zip(paths, data)]}
    return save_model(ensemble, out, **info)


def student_spec(
    model: torch.nn.Module,
    info: Mapping[str, Any],
    source: str | os.PathLike[str],
    *,
    model_id: str | None = None,
    thresholds: Mapping[str, float] | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> EdgeSpec:
    """The float32 :class:`EdgeSpec` of a loaded student and the ``info`` stored with it (``read_model_file``).

    ``task``, ``triage``, ``abstain_outputs`` and ``thresholds`` come from ``info`` when present (defaults:
    multilabel, the first output is the triage output); the input (leads, rate, window, band) is the model's
    own, and an ``info["band_hz"]`` that disagrees with it is refused; ``info["lvef"]``
    False marks a student whose LVEF head was never trained (no LVEF labels), so none is reported. ``model_id`` defaults to
    ``student-<n>lead-<first 12 hex of the file's sha256>``; ``provenance`` adds to the recorded
    source file, its hash and the training steps.
    """
    source = Path(source)
    _require_student(model, source, "export takes a student.pt")
    digest = _sha256(source)
    outputs = tuple(model.outputs)
    lvef = bool(info.get("lvef", True))
    record = {"source": str(source), "sha256": digest, "trained_with": info.get("version"),
              **{k: info[k] for k in ("steps", "n_train", "distilled", "members") if k in info}, **(provenance or {})}
    try:
        fields = EdgeSpec.input_fields(InputSpec.from_model_config(model.backbone_config).with_leads(model.leads))
        if "band_hz" in info and tuple(map(float, info["band_hz"])) != tuple(map(float, fields["band_hz"])):
            raise ValueError(f"it was saved as trained on a {list(info['band_hz'])} Hz band but its model reads "
                             f"{list(fields['band_hz'])} Hz")
        return EdgeSpec(
            model_id=model_id or f"student-{len(model.leads)}lead-{digest[:12]}",
            version=__version__,
            **fields,
            outputs=outputs,
            task=info.get("task", "multilabel"),
            triage=info.get("triage", outputs[0]),
            abstain_outputs=tuple(info.get("abstain_outputs", ())),
            thresholds={k: float(v) for k, v in (thresholds or info.get("thresholds") or {}).items()},
            lvef_mean=getattr(model, "lvef_mean", None) if lvef else None,
            lvef_std=getattr(model, "lvef_std", None) if lvef else None,
            rhythm=tuple(getattr(model, "rhythm_names", ())),
            provenance=record,
        )
    except ValueError as err:
        raise ConfigError(f"{source}: cannot describe the student for export: {one_line(err)}") from err


def _predict(path: Path, x: np.ndarray, rhythm: np.ndarray | None = None) -> np.ndarray:
    """onnxruntime output ``[N, n_outputs + 1]`` of the graph at ``path`` on ``x [N, L, T]`` (and the rhythm
    features ``[N, n]`` of a student that takes them)."""
    session = open_session(path, threads=0)
    names = [i.name for i in session.get_inputs()]
    arrays = (x,) if rhythm is None else (x, rhythm)
    return np.concatenate([session.run(None, {n: a[i:i + _BATCH] for n, a in zip(names, arrays)})[0]
                           for i in range(0, len(x), _BATCH)])


def _aurocs(y: np.ndarray, prob: np.ndarray, outputs: tuple[str, ...]) -> dict[str, float]:
    """AUROC per output with both classes among its known (non-NaN) labels."""
    scores = {}
    for j, name in enumerate(outputs):
        known = ~np.isnan(y[:, j])
        value = auroc(y[known, j], prob[known, j])
        if not np.isnan(value):
            scores[name] = round(value, 6)
    return scores


def _judgeable(y: np.ndarray, outputs: tuple[str, ...], min_class: int) -> tuple[list[str], dict[str, tuple[int, int]]]:
    """``(outputs the gate judges, {output not judged: (positives, negatives)})`` (see :data:`MIN_GATE_CLASS`)."""
    judged, not_judged = [], {}
    for j, name in enumerate(outputs):
        known = y[~np.isnan(y[:, j]), j]
        n_pos, n_neg = int((known == 1).sum()), int((known == 0).sum())
        if min(n_pos, n_neg) >= min_class:
            judged.append(name)
        else:
            not_judged[name] = (n_pos, n_neg)
    return judged, not_judged


def _macro(per_output: Mapping[str, float], judged: list[str]) -> float:
    """Mean AUROC over the judged outputs (over every scored one when none can be judged)."""
    names = [k for k in judged if k in per_output] or list(per_output)
    return round(float(np.mean([per_output[k] for k in names])), 6)


def _measure(path: Path, x: np.ndarray, y: np.ndarray, spec: EdgeSpec, judged: list[str],
             reference: np.ndarray | None, rhythm: np.ndarray | None = None) -> tuple[dict[str, Any], np.ndarray]:
    """The gate's record for one graph and its output ``[N, n_outputs + 1]``: AUROCs (the macro over the
    ``judged`` outputs), and against the float32 ``reference`` output the largest probability difference and
    the mean absolute LVEF difference (in % when the spec has ``lvef_std``)."""
    out = _predict(path, x, rhythm)
    n = len(spec.outputs)
    per_output = _aurocs(y, out[:, :n], spec.outputs)
    record: dict[str, Any] = {"macro_auroc": _macro(per_output, judged), "auroc": per_output,
                              "bytes": path.stat().st_size}
    if reference is not None:
        record["max_prob_diff"] = round(float(np.max(np.abs(out[:, :n] - reference[:, :n]))), 6)
        lvef_diff = float(np.mean(np.abs(out[:, n] - reference[:, n])))
        record["lvef_mean_abs_diff"] = round(lvef_diff * (spec.lvef_std or 1.0), 6)
    return record, out


def _judge(record: dict, base: dict, judged: list[str], margin: float, min_class: int) -> str:
    """Add ``macro_drop``, ``worst_output``, ``worst_drop`` and ``passed`` to a smaller precision's record, judged
    on the ``judged`` outputs only; returns why it failed ("" when it passed)."""
    if not judged:
        record.update({"macro_drop": None, "worst_output": None, "worst_drop": None, "passed": False})
        return f"cannot judge: no output has {min_class} validation positives and {min_class} negatives"
    drops = {k: base["auroc"][k] - record["auroc"][k] for k in judged}
    worst = max(drops, key=drops.get)
    record["macro_drop"] = round(base["macro_auroc"] - record["macro_auroc"], 6)
    record["worst_output"], record["worst_drop"] = worst, round(drops[worst], 6)
    record["passed"] = bool(record["macro_drop"] <= margin and drops[worst] <= 2 * margin)
    if record["macro_drop"] > margin:
        return f"macro AUROC {-record['macro_drop']:+.3f} vs fp32, beyond the margin {margin:g}"
    if not record["passed"]:
        return f"{worst} AUROC {-drops[worst]:+.3f} vs fp32, beyond {2 * margin:g} per output"
    return ""


def _summary(gate: Mapping[str, Any], refused: list[str], judged: list[str],
             not_judged: Mapping[str, tuple[int, int]], min_class: int) -> str:
    """The gate's one line for a person (module doc)."""
    chosen = gate["precision"]
    if not judged and refused:  # nothing could be judged: one reason, not one per precision tried
        tried = " or ".join(dict.fromkeys(r.split()[0] for r in refused))
        counts = ", ".join(f"{name} {n_pos}/{n_neg}" for name, (n_pos, n_neg) in not_judged.items())
        return (f"{chosen} kept: cannot judge {tried}, no output has {min_class} validation positives and "
                f"{min_class} negatives (positives/negatives: {counts})")
    head = "".join(f"{r} -> " for r in refused)
    if chosen == "fp32":
        kept = "fp32 kept" if refused else "fp32 written (requested; no smaller precision tried)"
    else:
        kept = (f"{chosen} kept: macro AUROC {-gate[chosen]['macro_drop']:+.3f} vs fp32 over {len(judged)} judged "
                f"output{'s' if len(judged) != 1 else ''}")
    tail = (f"; {len(not_judged)} output{'s' if len(not_judged) != 1 else ''} not judged (< {min_class} validation "
            f"positives or negatives: {', '.join(not_judged)})" if not_judged else "")
    return head + kept + tail


def _check_rhythm(rhythm: np.ndarray | None, n: int, spec: EdgeSpec, what: str) -> np.ndarray | None:
    """``rhythm`` as float32 ``[n, len(spec.rhythm)]`` for a student that takes rhythm features (None otherwise)."""
    if not spec.rhythm:
        if rhythm is not None:
            raise DataError(f"{what} rhythm features were given, but this student takes none")
        return None
    r = None if rhythm is None else np.asarray(rhythm, np.float32)
    if r is None or r.shape != (n, len(spec.rhythm)) or not np.all(np.isfinite(r)):
        got = None if r is None else r.shape
        raise DataError(f"this student takes rhythm features: {what} rhythm must be finite [{n}, {len(spec.rhythm)}] "
                        f"({', '.join(spec.rhythm)}), got {got}")
    return r


def _check_validation(x: np.ndarray, y: np.ndarray, spec: EdgeSpec) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
    want = (len(spec.leads), spec.samples)
    if x.ndim != 3 or x.shape[1:] != want or y.shape != (len(x), len(spec.outputs)) or len(x) == 0:
        raise DataError(f"validation arrays must be x [N, {want[0]}, {want[1]}] and y [N, {len(spec.outputs)}] "
                        f"for this student (leads {', '.join(spec.leads)}), got {x.shape} and {y.shape}")
    if not np.all(np.isfinite(x)):
        raise DataError("validation windows x contain NaN or infinite values")
    if not any(len(np.unique(column[~np.isnan(column)])) > 1 for column in y.T):
        raise DataError(f"no output has both classes among the {len(x)} validation labels; the gate cannot "
                        f"compare precisions")
    return x, y


def export_student_model(
    student_pt: str | os.PathLike[str],
    out_onnx: str | os.PathLike[str],
    *,
    val_x: np.ndarray,
    val_y: np.ndarray,
    calibration_x: np.ndarray | None = None,
    precision: str = "int8",
    margin: float = 0.02,
    fallback: bool = True,
    min_class: int = MIN_GATE_CLASS,
    model_id: str | None = None,
    thresholds: Mapping[str, float] | None = None,
    provenance: Mapping[str, Any] | None = None,
    val_rhythm: np.ndarray | None = None,
    calibration_rhythm: np.ndarray | None = None,
) -> dict[str, Any]:
    """Export the student at ``student_pt`` to ``out_onnx`` at ``precision``, behind the accuracy gate (module doc).

    ``val_x [N, L, T]`` float32: validation windows prepared as the model's inputs (per-lead
    z-scored, its leads in order, ``fs * seconds`` samples); ``val_y [N, n_outputs]``: 0/1 labels,
    NaN where unknown. ``calibration_x``: int8 calibration windows (default: the first
    :data:`N_CALIBRATION` of ``val_x``). ``margin``: the largest macro-AUROC loss accepted, in AUROC
    units (a negative margin fails every gate). Without ``fallback`` a failed gate raises
    :class:`ConfigError` and writes nothing. ``min_class``: the validation positives (and negatives)
    an output needs to be judged (:data:`MIN_GATE_CLASS`). A student that takes rhythm features
    (:mod:`cardiodistill.signals.rhythm`) needs them for every window: ``val_rhythm [N, n]`` and, with
    ``calibration_x``, ``calibration_rhythm``.

    Returns the gate record stored in the file's EdgeSpec (``requested``, ``precision`` chosen,
    ``margin``, ``min_class``, ``n_validation``, ``judged`` and ``not_judged`` outputs, one record per
    precision measured, ``decision``, and ``summary``: the one line to show a person) with ``path``
    and ``bytes`` of the written file.
    """
    from ..train.checkpoints import build_model, read_model_file

    onnx = require_onnx()
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if not np.isfinite(margin):
        raise ConfigError(f"margin must be a finite AUROC difference, got {margin}")
    if min_class < 1:
        raise ConfigError(f"min_class must be at least 1, got {min_class}")
    student_pt, out_onnx = Path(student_pt), Path(out_onnx)
    data = read_model_file(student_pt)
    model = build_model(data, source=student_pt)
    spec = student_spec(model, data, student_pt, model_id=model_id, thresholds=thresholds, provenance=provenance)
    x, y = _check_validation(val_x, val_y, spec)
    rhythm = _check_rhythm(val_rhythm, len(x), spec, "validation")
    if calibration_x is None:
        calibration, calibration_r = x[:N_CALIBRATION], None if rhythm is None else rhythm[:N_CALIBRATION]
    else:
        calibration = calibration_x
        calibration_r = _check_rhythm(calibration_rhythm, len(calibration_x), spec, "calibration")

    judged, not_judged = _judgeable(y, spec.outputs, min_class)
    gate: dict[str, Any] = {"requested": precision, "margin": float(margin), "min_class": int(min_class),
                            "n_validation": len(x), "judged": judged,
                            "not_judged": {k: f"not judged ({p} positives, {n} negatives)"
                                           for k, (p, n) in not_judged.items()},
                            "rule": "macro AUROC drop <= margin and every judged output's drop <= 2 * margin"}
    with tempfile.TemporaryDirectory(prefix="cardiodistill-export-") as tmp_dir:
        files = {p: Path(tmp_dir) / f"{p}.onnx" for p in PRECISIONS}
        export_onnx(model, torch.from_numpy(x[:1]), files["fp32"], input_name=spec.input_name,
                    metadata={METADATA_KEY: spec.to_json()},
                    rhythm=None if rhythm is None else torch.from_numpy(rhythm[:1]), rhythm_name=spec.rhythm_input)
        gate["fp32"], reference = _measure(files["fp32"], x, y, spec, judged, None, rhythm)
        notes, refused, chosen = [], [], "fp32"
        for candidate in _FALLBACK[precision][:-1]:
            try:
                if candidate == "int8":
                    quantize_int8(files["fp32"], files["int8"], calibration, rhythm=calibration_r)
                else:
                    convert_fp16(files["fp32"], files["fp16"])
            except ConfigError as err:  # no fp16 converter installed
                gate[candidate] = {"unavailable": str(err)}
                notes.append(f"{candidate} unavailable")
                refused.append(f"{candidate} unavailable")
                if not fallback:
                    raise ConfigError(f"{out_onnx}: {candidate} export unavailable: {err}") from err
                continue
            gate[candidate], _ = _measure(files[candidate], x, y, spec, judged, reference, rhythm)
            why = _judge(gate[candidate], gate["fp32"], judged, margin, min_class)
            record = gate[candidate]
            summary = (f"{candidate} macro AUROC drop {record['macro_drop']:.4f}, worst {record['worst_output']} "
                       f"{record['worst_drop']:.4f}" if judged else f"{candidate} {why}")
            if record["passed"]:
                chosen = candidate
                notes.append(f"{summary}: passed")
                break
            notes.append(f"{summary}: failed")
            refused.append(f"{candidate} refused ({why})")
            if not fallback:
                raise ConfigError(f"{out_onnx}: {summary} on {len(x)} validation recordings exceeds the margin "
                                  f"{margin:g} (per output {2 * margin:g}); not written (strict)" if judged else
                                  f"{out_onnx}: {candidate} {why} among {len(x)} recordings; not written (strict)")
        gate["precision"] = chosen
        gate["decision"] = "; ".join([*notes, f"wrote {chosen}"])
        gate["summary"] = _summary(gate, refused, judged, not_judged, min_class)
        final = dataclasses.replace(spec, precision=chosen, gate=gate)
        proto = onnx.load(str(files[chosen]))
        props = {p.key: p.value for p in proto.metadata_props}
        onnx.helper.set_model_props(proto, {**props, METADATA_KEY: final.to_json()})
        with atomic_path(out_onnx) as tmp:
            onnx.save(proto, str(tmp))
    return {**gate, "path": str(out_onnx), "bytes": out_onnx.stat().st_size}
