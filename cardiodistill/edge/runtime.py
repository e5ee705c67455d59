"""Run an exported student on one ECG record with numpy, scipy and onnxruntime only (no PyTorch).

:class:`EdgeModel` holds an onnxruntime session and the model's :class:`~.spec.EdgeSpec`, and turns an
:class:`~cardiodistill.records.EcgRecord` into a prediction in three steps:

1. :meth:`EdgeModel.prepare` - the package's one preparation, :func:`cardiodistill.signals.prepare`
   with the model's input spec (:meth:`~.spec.EdgeSpec.input_spec`): the function the training caches
   and the array trainer call, so a deployed model sees what it was trained on. In short: a single
   channel named only ``ECG``/``EKG`` is lead I; canonical lead names; a microvolt file is refused;
   the model's leads selected, a missing limb lead derived from two recorded ones (a lead that cannot
   be had is a :class:`~cardiodistill.errors.LeadError` naming the file); gaps up to 40 ms
   interpolated, longer ones zero the lead; resampled to ``spec.fs`` and band-passed to
   ``spec.band_hz`` (no mains notch: training used none); non-overlapping windows of ``spec.seconds``
   (a last, partial window kept when it holds half a window; a short recording padded); each lead of
   each window z-scored over its real samples. Besides, per-lead quality
   (:func:`~cardiodistill.signals.quality.lead_quality`) of the model's leads is measured at the
   recording's own rate, before any filtering.

   A model that reads the rhythm of the whole recording (``spec.rhythm``) also gets its rhythm features
   (:func:`cardiodistill.signals.rhythm.signal_rhythm` on the whole prepared signal, ``RecordInfo.rhythm``),
   as the array trainer computes them.

2. :meth:`EdgeModel.run` - onnxruntime on ``[W, len(leads), fs * seconds]`` float32 (and the recording's
   rhythm features beside each window), in batches of at most :data:`MAX_BATCH` windows.
3. :meth:`EdgeModel.interpret` - the **mean over windows** of each output's probability (and of
   LVEF), the prediction, and the abstention.

Abstention: a recording the model should not read is flagged ``abstain`` with the reasons, and its
probabilities are still reported (the prediction is None). The rules, in this order:

* a lead the model reads is unusable per :func:`~cardiodistill.signals.quality.lead_quality` (flat,
  clipped, lead off, noisy, or a gap too long to interpolate);
* the recording is shorter than ``min_seconds`` (default :data:`MIN_SECONDS`);
* the model itself says it cannot read it: for a ``multiclass`` model the most probable output is
  one of ``spec.abstain_outputs`` (CinC 2017's noisy class) or one of them reaches its abstention
  threshold in ``spec.thresholds``; for a ``multilabel`` model one of them reaches its threshold
  (reason :data:`MODEL_ABSTAINS`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DataError
from ..records import EcgRecord
from ..signals.prepare import prepare
from ..signals.quality import LeadQuality, lead_quality
from ..signals.rhythm import signal_rhythm
from .spec import EdgeSpec, open_session, spec_from_metadata

if TYPE_CHECKING:
    import onnxruntime

__all__ = [
    "DEFAULT_MODEL", "MAX_BATCH", "MIN_SECONDS", "MODEL_ABSTAINS", "EdgeModel",
    "Prediction", "RecordInfo",
]

#: The model shipped with the package (``cardiodistill/weights``): CinC 2017 classes from lead I.
DEFAULT_MODEL = "cinc2017_lead1.onnx"
#: Shortest recording (s) that is read without abstaining.
MIN_SECONDS = 5.0
#: Most windows given to onnxruntime in one call.
MAX_BATCH = 64
#: Abstain reason when the model's own output says the recording cannot be read.
MODEL_ABSTAINS = "model: too noisy to read"
DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class RecordInfo:
    """What :meth:`EdgeModel.prepare` found in a record (everything but the windows)."""

    source: str | None
    leads: tuple[str, ...]  #: the model's leads, in its input order
    derived: dict[str, str]  #: derived lead -> how ("from II, III")
    fs_in: float  #: the recording's sampling rate, Hz
    duration_s: float  #: the recording's length, s
    n_windows: int
    quality: dict[str, LeadQuality]  #: per model lead, measured at ``fs_in`` before filtering
    reasons: tuple[str, ...]  #: abstain reasons known before the model runs (quality, length)
    rhythm: np.ndarray | None = None  #: float32 ``[len(spec.rhythm)]`` for a model that reads them, else None


@dataclass(frozen=True)
class Prediction:
    """The model's reading of one recording (window outputs averaged)."""

    probabilities: dict[str, float]  #: per output, in ``spec.outputs`` order
    triage_probability: float | None  #: ``probabilities[spec.triage]``, None without a triage output
    prediction: str | list[str] | None  #: multiclass: the argmax; multilabel: outputs over threshold; None if abstained
    lvef: float | None  #: %, None for a model trained without LVEF
    abstain: bool
    reasons: tuple[str, ...]  #: why it abstained (empty when it did not)


class EdgeModel:
    """An exported student and the steps that feed it (module doc). Build with :meth:`load`."""

    def __init__(
        self, session: onnxruntime.InferenceSession, spec: EdgeSpec, path: str | Path, *, min_seconds: float = MIN_SECONDS
    ):
        self.session = session
        self.spec = spec
        self.path = Path(path)
        self.min_seconds = float(min_seconds)
        graph_input = session.get_inputs()[0]
        shape = list(graph_input.shape)  # ints for fixed axes, names (or None) for dynamic ones
        want = (len(spec.leads), spec.samples)
        fixed_ok = all(not isinstance(got, int) or got == w for got, w in zip(shape[1:], want))
        if graph_input.name != spec.input_name or len(shape) != 3 or not fixed_ok:
            raise DataError(f"graph input {graph_input.name!r} {shape} does not match the spec's "
                            f"{spec.input_name!r} [batch, {len(spec.leads)}, {spec.samples}]", path)
        names = [i.name for i in session.get_inputs()]
        want_names = [spec.input_name, spec.rhythm_input] if spec.rhythm else [spec.input_name]
        if names != want_names:
            raise DataError(f"graph inputs {names} do not match the spec's {want_names}", path)
        self._dtype = np.float16 if graph_input.type == "tensor(float16)" else np.float32

    @classmethod
    def load(cls, path: str | Path | None = None, threads: int = 1, *, min_seconds: float = MIN_SECONDS) -> EdgeModel:
        """The model in the ONNX file at ``path`` (None: the bundled :data:`DEFAULT_MODEL`), run on
        ``threads`` CPU threads (0: all)."""
        if path is None:
            bundled = resources.files("cardiodistill") / "weights" / DEFAULT_MODEL
            if not bundled.is_file():
                raise DataError(f"no bundled model weights/{DEFAULT_MODEL} in this install: pass --model")
            with resources.as_file(bundled) as local:
                return cls._open(local, threads, min_seconds)
        return cls._open(Path(path), threads, min_seconds)

    @classmethod
    def _open(cls, path: Path, threads: int, min_seconds: float) -> EdgeModel:
        session = open_session(path, threads)
        spec = spec_from_metadata(session.get_modelmeta().custom_metadata_map, path)
        return cls(session, spec, path, min_seconds=min_seconds)

    def __repr__(self) -> str:
        s = self.spec
        return (f"EdgeModel({s.model_id} {s.version}, leads={','.join(s.leads)}, {s.fs:g} Hz x {s.seconds:g} s, "
                f"{s.task}, {s.precision}, path={str(self.path)!r})")

    def prepare(self, record: EcgRecord) -> tuple[np.ndarray, RecordInfo]:
        """Model input ``[W, len(spec.leads), spec.samples]`` float32 from ``record`` (mV, any rate and
        leads) by the package's one preparation (:func:`cardiodistill.signals.prepare` with the model's
        :meth:`~.spec.EdgeSpec.input_spec`), and what was found on the way (module doc, step 1)."""
        spec = self.spec
        prepared = prepare(record, spec.input_spec)
        selected = prepared.selected
        quality = lead_quality(selected)
        for lead in selected.meta.get("missing_leads", []):  # a gap too long to interpolate: zeroed
            q = quality[lead]
            quality[lead] = replace(q, nan=True, usable=False, reasons=list(dict.fromkeys(["nan", *q.reasons])))
        reasons = []
        for lead in spec.leads:
            if not quality[lead].usable:
                how = f" (derived {prepared.derived[lead]})" if lead in prepared.derived else ""
                reasons.append(f"lead {lead}{how} unusable: {', '.join(quality[lead].reasons)}")
        if selected.duration_s < self.min_seconds:
            reasons.append(f"recording is {selected.duration_s:.3g} s, shorter than the {self.min_seconds:g} s minimum")
        rhythm = None
        if spec.rhythm:
            filtered = prepared.filtered
            rhythm = signal_rhythm(filtered.signal, filtered.fs, names=spec.rhythm)
        info = RecordInfo(
            source=record.source, leads=tuple(spec.leads), derived=prepared.derived, fs_in=selected.fs,
            duration_s=selected.duration_s, n_windows=len(prepared.windows), quality=quality, reasons=tuple(reasons),
            rhythm=rhythm,
        )
        return prepared.windows, info

    def run(self, windows: np.ndarray, rhythm: np.ndarray | None = None) -> np.ndarray:
        """The graph's output ``[W, len(spec.outputs) + 1]`` float32 (probabilities, then standardised
        LVEF) for ``windows [W, len(spec.leads), spec.samples]``. A model that reads rhythm features needs
        ``rhythm``: the recording's ``[len(spec.rhythm)]`` (``RecordInfo.rhythm``), or one row per window."""
        spec = self.spec
        windows = np.asarray(windows)
        if windows.ndim != 3 or windows.shape[1:] != (len(spec.leads), spec.samples):
            raise ValueError(f"windows must be [W, {len(spec.leads)}, {spec.samples}], got {windows.shape}")
        feeds = [spec.input_name]
        arrays = [windows]
        if spec.rhythm:
            if rhythm is None:
                raise ValueError(f"this model reads the recording's rhythm features ({', '.join(spec.rhythm)}): "
                                 "pass the rhythm that prepare() found (RecordInfo.rhythm)")
            r = np.asarray(rhythm, np.float32)
            r = np.broadcast_to(r, (len(windows), len(r))) if r.ndim == 1 else r
            if r.shape != (len(windows), len(spec.rhythm)):
                raise ValueError(f"rhythm must be [{len(spec.rhythm)}] or [{len(windows)}, {len(spec.rhythm)}], "
                                 f"got {np.shape(rhythm)}")
            feeds.append(spec.rhythm_input)
            arrays.append(r)
        parts = [
            self.session.run(None, {name: a[i : i + MAX_BATCH].astype(self._dtype if k == 0 else np.float32)
                                    for k, (name, a) in enumerate(zip(feeds, arrays))})[0]
            for i in range(0, len(windows), MAX_BATCH)
        ]
        out = np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, len(spec.outputs) + 1), np.float32)
        if out.shape != (len(windows), len(spec.outputs) + 1):
            raise DataError(f"model returned {list(out.shape)} for {len(windows)} windows; its spec has "
                            f"{len(spec.outputs)} outputs + LVEF", self.path)
        return out

    def interpret(self, outputs: np.ndarray, info: RecordInfo) -> Prediction:
        """The prediction from one record's window outputs ``[W, len(spec.outputs) + 1]`` (module doc, step 3)."""
        spec = self.spec
        mean = np.asarray(outputs, dtype=np.float64).mean(axis=0)
        probabilities = dict(zip(spec.outputs, map(float, mean[: len(spec.outputs)])))
        lvef = None
        if spec.lvef_mean is not None and spec.lvef_std is not None:
            lvef = float(spec.lvef_mean + spec.lvef_std * mean[len(spec.outputs)])
        if spec.task == "multiclass":
            prediction: str | list[str] = max(probabilities, key=probabilities.get)
            unreadable = prediction in spec.abstain_outputs or any(
                probabilities[name] >= self.threshold(name) for name in spec.abstain_outputs if name in spec.thresholds)
        else:
            prediction = [name for name, p in probabilities.items() if p >= self.threshold(name)]
            unreadable = any(name in spec.abstain_outputs for name in prediction)
        reasons = (*info.reasons, MODEL_ABSTAINS) if unreadable else info.reasons
        return Prediction(
            probabilities=probabilities,
            triage_probability=None if spec.triage is None else probabilities[spec.triage],
            prediction=None if reasons else prediction,
            lvef=lvef,
            abstain=bool(reasons),
            reasons=tuple(reasons),
        )

    def threshold(self, output: str) -> float:
        """Decision threshold of ``output`` (``spec.thresholds``, else 0.5): a multilabel output's, or a
        multiclass abstain output's abstention threshold."""
        return float(self.spec.thresholds.get(output, DEFAULT_THRESHOLD))

    def predict(self, record: EcgRecord) -> tuple[Prediction, RecordInfo]:
        """:meth:`prepare`, :meth:`run` and :meth:`interpret` on one record."""
        windows, info = self.prepare(record)
        return self.interpret(self.run(windows, info.rhythm), info), info
