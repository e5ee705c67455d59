"""Which parts of a recording drove a prediction: occlusion on the prepared windows, with onnxruntime only.

For each lead the model reads and each segment of ``segment_s`` seconds (sliding by ``stride_s``) of
each prepared window, the segment is set to 0 - the lead's mean, since every lead of every window is
z-scored - and the model rerun (:meth:`~cardiodistill.edge.runtime.EdgeModel.run`, the same
onnxruntime session that made the prediction). The **drop** of the explained output's probability
in that window is the segment's importance: positive where hiding the segment lowers the
probability (the segment supported the result), negative where it raises it. Each ``stride_s`` bin
of each window gets the mean drop of the segments covering it, and the bins of consecutive windows
(non-overlapping, from the start of the recording) make one track per lead over the recording's time.

The explained output is the prediction (multiclass) - also when the model abstains, so that a
"too noisy" call shows where the noise is - or the triage output (multilabel; the most probable
output for a model without one). The work is ``windows x leads x segments`` model inputs; above
:data:`MAX_INPUTS` the segments and stride grow by a common factor (the returned ``segment_s`` and
``bin_s`` say what was used) so that a long or many-lead recording costs a bounded time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..edge.runtime import MAX_BATCH, EdgeModel, Prediction

__all__ = ["MAX_INPUTS", "Attribution", "explained_output", "occlusion"]

#: Most occluded windows given to the model for one recording.
MAX_INPUTS = 4096
SEGMENT_S = 0.5
STRIDE_S = 0.25


@dataclass(frozen=True)
class Attribution:
    """Occlusion importance over a recording (module doc)."""

    output: str  #: the explained output
    leads: tuple[str, ...]  #: the model's leads, one track each
    segment_s: float  #: length of the occluded segments, s
    bin_s: float  #: spacing of the values, s
    times_s: np.ndarray  #: float64 ``[B]``: start of each bin in the recording, s
    drop: np.ndarray  #: float32 ``[len(leads), B]``: mean fall of the output's probability (module doc)

    def to_dict(self) -> dict:
        """JSON-ready (values rounded to 4 decimals)."""
        return {"output": self.output, "leads": list(self.leads), "segment_s": self.segment_s, "bin_s": self.bin_s,
                "times_s": np.round(self.times_s, 4).tolist(), "drop": np.round(self.drop, 4).tolist(),
                "method": "occlusion"}


def explained_output(model: EdgeModel, prediction: Prediction) -> str:
    """The output :func:`occlusion` explains for ``prediction`` (module doc)."""
    spec = model.spec
    if spec.task == "multiclass" or spec.triage is None:
        return max(prediction.probabilities, key=prediction.probabilities.get)
    return spec.triage


def _segment_starts(n_samples: int, segment: int, stride: int) -> np.ndarray:
    starts = list(range(0, n_samples - segment + 1, stride))
    if starts[-1] != n_samples - segment:  # the last segment ends with the window
        starts.append(n_samples - segment)
    return np.asarray(starts)


def occlusion(
    model: EdgeModel,
    windows: np.ndarray,
    outputs: np.ndarray,
    output: str,
    duration_s: float,
    *,
    segment_s: float = SEGMENT_S,
    stride_s: float = STRIDE_S,
    max_inputs: int = MAX_INPUTS,
    rhythm: np.ndarray | None = None,
) -> Attribution:
    """Occlusion importance of ``output`` for one recording (module doc): ``windows`` and ``outputs``
    are what :meth:`EdgeModel.prepare` and :meth:`EdgeModel.run` gave for it, ``duration_s`` its length
    (bins after it, in a padded last window, are left out); ``rhythm``: the recording's rhythm features for a model
    that reads them (``RecordInfo.rhythm``; they stay as they are, so the map shows what the waveform adds to them)."""
    spec = model.spec
    n_windows, n_leads, n_samples = windows.shape
    column = spec.outputs.index(output)
    stride = max(1, round(stride_s * spec.fs))
    segment = min(n_samples, max(stride, round(segment_s * spec.fs)))
    starts = _segment_starts(n_samples, segment, stride)
    scale = math.ceil(n_windows * n_leads * len(starts) / max_inputs)
    if scale > 1:
        stride, segment = stride * scale, min(n_samples, segment * scale)
        starts = _segment_starts(n_samples, segment, stride)

    jobs = [(lead, int(start)) for lead in range(n_leads) for start in starts]
    drop_sum = np.zeros((n_windows, n_leads, n_samples), np.float64)
    covered = np.zeros(n_samples, np.float64)
    for start in starts:
        covered[start : start + segment] += 1
    per_batch = max(1, MAX_BATCH // max(1, n_windows))
    base = outputs[:, column].astype(np.float64)
    for first in range(0, len(jobs), per_batch):
        chunk = jobs[first : first + per_batch]
        batch = np.repeat(windows[None], len(chunk), axis=0)  # [jobs, W, L, S]
        for k, (lead, start) in enumerate(chunk):
            batch[k, :, lead, start : start + segment] = 0.0
        probs = model.run(batch.reshape(-1, n_leads, n_samples), rhythm)[:, column].reshape(len(chunk), n_windows)
        for k, (lead, start) in enumerate(chunk):
            drop_sum[:, lead, start : start + segment] += (base - probs[k])[:, None]
    per_sample = drop_sum / covered  # [W, L, S]: mean drop of the segments covering each sample

    n_bins = math.ceil(n_samples / stride)
    edges = np.minimum(np.arange(n_bins + 1) * stride, n_samples)
    binned = np.add.reduceat(per_sample, edges[:-1], axis=-1) / np.diff(edges)  # [W, L, n_bins]
    times = (np.arange(n_windows)[:, None] * spec.seconds + edges[None, :-1] / spec.fs).reshape(-1)
    track = binned.transpose(1, 0, 2).reshape(n_leads, -1)
    keep = times < duration_s
    return Attribution(output=output, leads=tuple(spec.leads), segment_s=segment / spec.fs, bin_s=stride / spec.fs,
                       times_s=times[keep], drop=track[:, keep].astype(np.float32))
