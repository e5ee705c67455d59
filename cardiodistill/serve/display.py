"""The tracing the web page draws: every lead of the recording in mV, as an ECG printout would show it.

A recording is drawn as read, not as the model sees it (the model reads only its own leads, at its
own rate): all ECG leads with canonical names (a lone ``ECG`` channel is lead I, as for the model),
gaps up to 40 ms interpolated and longer ones flat (:func:`~cardiodistill.signals.preprocess.fill_gaps`),
at most :data:`MAX_DISPLAY_HZ` (:func:`~cardiodistill.signals.resample.resample`, anti-aliased: a
screen at 25 mm/s shows no more), and the baseline wander removed by a 0.5 Hz zero-phase high-pass
(:func:`~cardiodistill.signals.filters.remove_baseline`), the usual monitoring-mode filter of an
electrocardiograph. Values are rounded to 1 uV.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..records import EcgRecord
from ..signals.filters import remove_baseline
from ..signals.prepare import as_lead_i
from ..signals.preprocess import canonicalize, fill_gaps
from ..signals.resample import resample

__all__ = ["BASELINE_HZ", "MAX_DISPLAY_HZ", "display_tracing"]

#: Highest sampling rate sent to the page, Hz.
MAX_DISPLAY_HZ = 250.0
#: Cut-off of the display's baseline high-pass, Hz.
BASELINE_HZ = 0.5


def display_tracing(record: EcgRecord, max_hz: float = MAX_DISPLAY_HZ) -> dict[str, Any]:
    """``{"fs", "leads", "mv", "duration_s", "filter"}`` of ``record`` for drawing (module doc)."""
    record = fill_gaps(canonicalize(as_lead_i(record)[0]), missing="zero")
    if record.fs > max_hz:
        record = resample(record, max_hz)
    record = remove_baseline(record, BASELINE_HZ)
    return {
        "fs": record.fs, "leads": list(record.leads), "duration_s": round(record.duration_s, 4),
        "mv": np.round(record.signal.astype(np.float64), 3).tolist(),
        "filter": f"{BASELINE_HZ:g} Hz high-pass (baseline), {record.fs:g} Hz",
    }
