"""What an exported model needs to be run anywhere: :class:`EdgeSpec`, stored inside the ONNX file.

A deployed student is one ``.onnx`` file. Its ``metadata_props`` carry, under the key
``"cardiodistill"``, the JSON of an :class:`EdgeSpec`: which leads it reads and in what order, the
sampling rate and window length, the names of its outputs and how to read them, the numeric
precision, the decision thresholds chosen on validation data and the result of the export's
accuracy gate. A runtime with only numpy and onnxruntime can then prepare a recording and explain a
prediction without PyTorch or the training config (:mod:`cardiodistill.edge.runtime`).

The graph itself takes ``input_name`` ``[B, len(leads), fs * seconds]`` float32, each lead z-scored
over its window (and, for a student that reads the rhythm of the whole recording, ``rhythm_input``
``[B, len(rhythm)]``: the recording's rhythm features, :mod:`cardiodistill.signals.rhythm`), and returns ``[B, len(outputs) + 1]``: one sigmoid probability per output, then
LVEF in standardised units (``lvef_mean + lvef_std * value`` is %; meaningless when ``lvef_mean`` is
None, for models trained without LVEF).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import DataError, one_line
from ..signals.filters import DEFAULT_BAND
from ..signals.prepare import NORMALISATION, InputSpec
from ..signals.rhythm import RECORDING_FEATURES

__all__ = ["EdgeSpec", "METADATA_KEY", "open_session", "read_spec", "spec_from_metadata"]

METADATA_KEY = "cardiodistill"
FORMAT = "cardiodistill-edge/1"
TASKS = ("multilabel", "multiclass")
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class EdgeSpec:
    """The contract between an exported model and the code that runs it (module doc).

    * ``task``: ``"multilabel"`` (each output its own yes/no, e.g. triage + diagnoses) or
      ``"multiclass"`` (the outputs are mutually exclusive classes; the prediction is the argmax).
    * ``triage``: the output whose probability is reported as the triage probability (or None).
    * ``abstain_outputs``: outputs that mean "this recording cannot be read" (CinC 2017's noisy
      class); a multiclass prediction of one of them is an abstention, not a diagnosis.
    * ``thresholds``: decision thresholds chosen on validation data. Multilabel: per output. Multiclass: only
      for abstain outputs, each an abstention threshold: the model abstains when that output's probability
      reaches it, even when another class is more probable (more unreadable recordings caught, at a cost in
      readable ones abstained on).
    * ``band_hz``: the zero-phase band-pass (Hz) applied after resampling to ``fs``, as in training.
    * ``gate``: what the export's accuracy gate measured and decided (see ``cardiodistill export``).
    * ``rhythm``: the recording's rhythm and beat features (:data:`~cardiodistill.signals.rhythm.RECORDING_FEATURES`
      names, in input order) the graph takes as its second input, ``rhythm_input``, computed over the whole
      prepared recording and given to each of its windows; empty for a model that reads the ECG windows alone.
    """

    model_id: str
    version: str
    leads: tuple[str, ...]
    fs: float
    seconds: float
    outputs: tuple[str, ...]
    task: str = "multilabel"
    triage: str | None = None
    abstain_outputs: tuple[str, ...] = ()
    thresholds: dict[str, float] = field(default_factory=dict)
    lvef_mean: float | None = None
    lvef_std: float | None = None
    precision: str = "fp32"
    input_name: str = "ecg"
    band_hz: tuple[float, float] = DEFAULT_BAND
    normalisation: str = NORMALISATION
    gate: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    rhythm: tuple[str, ...] = ()
    rhythm_input: str = "rhythm"
    format: str = FORMAT

    def __post_init__(self) -> None:
        problems = []
        if self.task not in TASKS:
            problems.append(f"task must be one of {TASKS}, got {self.task!r}")
        if self.precision not in PRECISIONS:
            problems.append(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not self.leads or not self.outputs:
            problems.append("leads and outputs must not be empty")
        if self.fs <= 0 or self.seconds <= 0:
            problems.append(f"fs and seconds must be positive, got {self.fs}, {self.seconds}")
        unknown = [n for n in (self.triage, *self.abstain_outputs, *self.thresholds) if n and n not in self.outputs]
        if unknown:
            problems.append(f"names {unknown} are not among the outputs {list(self.outputs)}")
        if self.task == "multiclass" and set(self.thresholds) - set(self.abstain_outputs):
            problems.append(f"a multiclass model takes thresholds on its abstain outputs only, got "
                            f"{sorted(set(self.thresholds) - set(self.abstain_outputs))}")
        unknown_rhythm = [n for n in self.rhythm if n not in RECORDING_FEATURES]
        if unknown_rhythm:
            problems.append(f"unknown rhythm features {unknown_rhythm} "
                            f"(this version knows {', '.join(RECORDING_FEATURES)})")
        if any(not 0 <= float(t) <= 1 for t in self.thresholds.values()):
            problems.append(f"thresholds must be in [0, 1], got {dict(self.thresholds)}")
        if problems:
            raise ValueError("; ".join(problems))
        if not 0 <= self.band_hz[0] < self.band_hz[1] <= self.fs / 2:
            raise ValueError(f"band_hz must be 0 <= low < high <= fs / 2, got {self.band_hz}")
        for name in ("leads", "outputs", "abstain_outputs", "band_hz", "rhythm"):  # JSON gives lists; keep the dataclass hashable-ish
            object.__setattr__(self, name, tuple(getattr(self, name)))

    @property
    def samples(self) -> int:
        """Samples per lead of one model input window."""
        return int(round(self.fs * self.seconds))

    @property
    def input_spec(self) -> InputSpec:
        """The model's input contract as the package's one preparation reads it: its fixed leads selected
        (missing limb leads derived), ``fs``, ``seconds``, ``band_hz``, per-lead z-score."""
        return InputSpec(self.fs, self.seconds, tuple(self.band_hz), normalisation=self.normalisation).with_leads(
            self.leads)

    @classmethod
    def input_fields(cls, spec: InputSpec) -> dict[str, Any]:
        """The fields of an :class:`EdgeSpec` that an :class:`InputSpec` determines (export builds the spec
        from the model's own input spec with these)."""
        if spec.band is None:
            raise ValueError("an exported model needs a band-pass in its input spec")
        return {"leads": tuple(spec.leads), "fs": spec.fs, "seconds": spec.seconds, "band_hz": spec.band,
                "normalisation": spec.normalisation}

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EdgeSpec:
        """From the stored JSON object; keys this version does not know are ignored, a newer
        ``format`` is refused."""
        if data.get("format", FORMAT) != FORMAT:
            raise ValueError(f"model format {data.get('format')!r} is not {FORMAT!r}: upgrade cardiodistill")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def spec_from_metadata(metadata: Mapping[str, str], path: str | Path) -> EdgeSpec:
    """The :class:`EdgeSpec` in an ONNX model's ``metadata_props`` (``custom_metadata_map`` of an
    onnxruntime session); ``path`` names the file in errors."""
    text = metadata.get(METADATA_KEY)
    if text is None:
        raise DataError(f"ONNX file has no '{METADATA_KEY}' metadata: export it with cardiodistill export", path)
    try:
        return EdgeSpec.from_dict(json.loads(text))
    except (ValueError, TypeError) as err:
        raise DataError(f"bad '{METADATA_KEY}' metadata: {one_line(err)}", path) from err


def open_session(path: str | Path, threads: int = 1):
    """An onnxruntime CPU session on the model at ``path`` (``threads`` intra-op threads, 0 = all)."""
    path = Path(path)
    if not path.is_file():
        raise DataError("no such model file", path)
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise DataError("running a model needs onnxruntime: pip install 'cardiodistill[edge]'", path) from err
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime's own exception types for a file that is not a model
        raise DataError(f"not a readable ONNX model ({one_line(err)[:200]})", path) from err


def read_spec(path: str | Path) -> EdgeSpec:
    """The :class:`EdgeSpec` stored in the ONNX file at ``path``."""
    return spec_from_metadata(open_session(path).get_modelmeta().custom_metadata_map, path)
