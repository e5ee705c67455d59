"""ECG signal primitives on :class:`~cardiodistill.records.EcgRecord`.

Lead names and limb-lead derivation, units, resampling, filters, fixed-length windows, per-lead
quality, a traceable preprocessing pipeline, R-peak detection and delineation. Every function
returns a new record (never mutates) and records what it did in ``meta["steps"]``.
"""

from .delineate import delineate
from .filters import bandpass, notch, remove_baseline
from .leads import LEADS_12, LIMB_LEADS, PRECORDIAL_LEADS, derive_limb_leads, normalize_lead_name
from .prepare import InputSpec, Prepared, prepare, prepare_signal
from .preprocess import PreprocessConfig, canonicalize, fill_gaps, preprocess, select_leads
from .quality import LeadQuality, lead_quality
from .resample import resample
from .rpeaks import detect_r_peaks, heart_rate, rr_intervals
from .units import guess_unit, to_millivolts
from .windows import Windows, crop_or_pad, fixed_windows, valid_mask, window_starts, zscore_windows

__all__ = [
    "LEADS_12", "LIMB_LEADS", "PRECORDIAL_LEADS", "InputSpec", "LeadQuality", "Prepared", "PreprocessConfig", "Windows",
    "bandpass", "canonicalize", "crop_or_pad", "delineate", "derive_limb_leads", "detect_r_peaks",
    "fill_gaps", "fixed_windows", "guess_unit", "heart_rate", "lead_quality", "normalize_lead_name",
    "notch", "prepare", "prepare_signal", "preprocess", "remove_baseline", "resample", "rr_intervals", "select_leads",
    "to_millivolts", "valid_mask", "window_starts", "zscore_windows",
]
