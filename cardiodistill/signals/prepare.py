"""THE one ECG preparation: what a model was trained on is what it sees in deployment.

A model's input contract is an :class:`InputSpec` - sampling rate, window length, leads, band-pass,
normalisation and window policy - stored in the model's ``model_config`` (the registry records
``fs``, ``seconds``, ``leads``, ``band``, ``normalisation``; :meth:`InputSpec.from_model_config`
reads them back) and, for an exported student, inside the ONNX file's
:class:`~cardiodistill.edge.spec.EdgeSpec` (derived from it: :meth:`InputSpec.from_edge`). Every
path from a record to a model input goes through :func:`prepare` (or its first half,
:func:`prepare_signal`): the stage-1 window cache and the paired cache
(:func:`cardiodistill.data.ecg_windows.record_windows`), the array trainer for public data sets
(:func:`cardiodistill.train.supervised.records_to_arrays`), the evaluations, and the torch-free edge
runtime (:meth:`cardiodistill.edge.runtime.EdgeModel.prepare`). A training/serving mismatch, the
classic silent failure of a clinical model, then needs two different specs, and a spec is written
into every model file.

The steps, in order:

1. a single channel with a generic name (``ECG``, ``EKG 1``: CinC 2017, most handheld exports) is
   the recording between the two hands, i.e. lead I;
2. canonical lead names, non-ECG channels dropped; amplitudes that look like microvolts refused;
3. exactly ``spec.leads`` in that order: recorded ones as they are; a missing limb lead derived
   from two recorded ones when ``spec.derive`` (Einthoven / Goldberger); any other missing lead a
   :class:`~cardiodistill.errors.LeadError` (``spec.missing == "error"``: a fixed-lead student) or
   a row of zeros that the z-score marks absent (``"zero"``: the lead-agnostic layout of the
   encoders, 12 slots in :data:`~.leads.LEADS_12` order with a ``present`` mask);
4. non-finite runs up to 40 ms interpolated, a longer one zeroes its lead (it is then absent);
5. resampled to ``spec.fs`` (exact rational ratio) and zero-phase band-passed to ``spec.band``;
6. cut into non-overlapping windows of ``spec.seconds`` (:func:`~.windows.window_starts`: a last,
   partial window is kept, zero-padded, when it holds at least ``spec.min_fraction`` of a window);
7. each lead of each window z-scored over its real samples (:func:`~.windows.zscore_windows`);
   padding and flat leads stay 0 and are marked absent.

Per-lead quality is measured on ``Prepared.selected`` - the model's leads at the recording's own
rate, before any filtering - by callers that need it (the edge runtime abstains on it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..records import EcgRecord
from . import filters
from .filters import DEFAULT_BAND, bandpass
from .leads import LEADS_12, normalize_lead_name
from .preprocess import canonicalize, check_millivolts, fill_gaps, select_leads
from .resample import _anti_alias, resample
from .windows import MIN_FRACTION, window_starts, zscore_windows

__all__ = ["InputSpec", "NORMALISATION", "Prepared", "as_lead_i", "cut_windows", "forget_filter_designs", "prepare",
           "prepare_signal"]

#: The one normalisation models of this package are trained with.
NORMALISATION = "per-lead z-score"
_MISSING = ("zero", "error")
_GENERIC_ECG = re.compile(r"^\s*(ecg|ekg)[\s_\-]*\d*\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class InputSpec:
    """What an ECG model reads (module doc). The first three fields keep the order of the former
    ``WindowSpec(fs, seconds, band)``, so that call reads the same.

    * ``leads``: the model's input leads, in order;
    * ``missing``: ``"zero"`` (an absent lead is a zero row, marked absent) or ``"error"``;
    * ``derive``: derive missing limb leads from two recorded ones;
    * ``min_fraction``: smallest part of a window the last, partial window must hold to be kept.
    """

    fs: float
    seconds: float
    band: tuple[float, float] | None = DEFAULT_BAND
    leads: tuple[str, ...] = LEADS_12
    missing: str = "zero"
    derive: bool = False
    normalisation: str = NORMALISATION
    min_fraction: float = MIN_FRACTION

    def __post_init__(self) -> None:
        problems = []
        if not (np.isfinite(self.fs) and self.fs > 0 and np.isfinite(self.seconds) and self.seconds > 0):
            problems.append(f"fs and seconds must be positive numbers, got {self.fs!r}, {self.seconds!r}")
        if self.band is not None and not 0 <= self.band[0] < self.band[1] <= self.fs / 2:
            problems.append(f"band must satisfy 0 <= low < high <= fs / 2 = {self.fs / 2:g}, got {tuple(self.band)}")
        if self.missing not in _MISSING:
            problems.append(f"missing must be one of {_MISSING}, got {self.missing!r}")
        if self.normalisation != NORMALISATION:
            problems.append(f"normalisation {self.normalisation!r} is not supported (only {NORMALISATION!r})")
        if not 0 < self.min_fraction <= 1:
            problems.append(f"min_fraction must be in (0, 1], got {self.min_fraction!r}")
        if problems:
            raise ConfigError("input spec: " + "; ".join(problems))
        leads = tuple(normalize_lead_name(lead) for lead in self.leads)
        if not leads or len(set(leads)) != len(leads):
            raise ConfigError(f"input spec: leads must be distinct and not empty, got {list(self.leads)}")
        object.__setattr__(self, "fs", float(self.fs))
        object.__setattr__(self, "seconds", float(self.seconds))
        object.__setattr__(self, "band", None if self.band is None else (float(self.band[0]), float(self.band[1])))
        object.__setattr__(self, "leads", leads)

    @property
    def n_samples(self) -> int:
        """Samples per lead of one window."""
        return int(round(self.fs * self.seconds))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (what a cache fingerprint or a model file stores)."""
        return {"fs": self.fs, "seconds": self.seconds, "band": None if self.band is None else list(self.band),
                "leads": list(self.leads), "missing": self.missing, "derive": self.derive,
                "normalisation": self.normalisation, "min_fraction": self.min_fraction}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InputSpec:
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"input spec has no field(s) {', '.join(unknown)}")
        return cls(**data)

    @classmethod
    def from_model_config(cls, config: Mapping[str, Any], **overrides: Any) -> InputSpec:
        """The spec a model was built for, from its ``model_config``: ``fs``, ``seconds``, ``band`` (default
        :data:`~.filters.DEFAULT_BAND` for models saved before the band was recorded), ``leads`` and
        ``normalisation``. A lead-agnostic encoder (its ``leads`` are all 12, the lead vocabulary) reads
        the 12-slot layout; a fixed-lead model (a student, an xresnet1d) selects and derives its leads."""
        if "fs" not in config or "seconds" not in config:
            raise ConfigError(f"model {config.get('name', '?')!r} does not record its input rate and length")
        leads = tuple(config.get("leads") or LEADS_12)
        fixed = tuple(leads) != LEADS_12
        band = config.get("band", DEFAULT_BAND)
        values = dict(fs=config["fs"], seconds=config["seconds"], band=None if band is None else tuple(band),
                      leads=leads, missing="error" if fixed else "zero", derive=fixed,
                      normalisation=config.get("normalisation", NORMALISATION))
        return cls(**{**values, **overrides})

    def with_leads(self, leads) -> InputSpec:
        """The same spec for a fixed set of ``leads`` (selected, derived where possible, else an error)."""
        return replace(self, leads=tuple(leads), missing="error", derive=True)


@dataclass(frozen=True)
class Prepared:
    """One record prepared for a model (module doc)."""

    windows: np.ndarray  #: float32 ``[W, len(spec.leads), spec.n_samples]``, each lead z-scored
    present: np.ndarray  #: bool ``[W, len(spec.leads)]``: the lead had signal in that window
    n_valid: np.ndarray  #: int64 ``[W]``: real (not padded) samples of each window
    starts_s: np.ndarray  #: float64 ``[W]``: each window's start in the record, s
    selected: EcgRecord  #: the spec's leads at the record's own rate, gaps filled, unfiltered
    derived: dict[str, str]  #: lead -> how it was obtained (derived, or a generic channel read as lead I)
    filtered: EcgRecord | None = None  #: the spec's leads at ``spec.fs``, band-passed, whole (the windows' source)


def forget_filter_designs() -> None:
    """Forget the filters the preparation keeps once designed (the band-pass, its filter's initial conditions, the
    resampler's anti-alias FIR): the next :func:`prepare` designs them again, as a freshly started process does
    (what a cold-start timing measures)."""
    filters._butter_sos.cache_clear()
    filters._sosfilt_zi.cache_clear()
    _anti_alias.cache_clear()


def as_lead_i(record: EcgRecord) -> tuple[EcgRecord, dict[str, str]]:
    """A record of one channel with a generic name (``ECG``, ``EKG 1``) read as lead I (module doc, step 1),
    with ``{"I": how}``; any other record as it is, with ``{}``."""
    if len(record.leads) != 1 or not _GENERIC_ECG.match(record.leads[0]):
        return record, {}
    return replace(record, leads=("I",)), {"I": f"channel {record.leads[0]!r} of a single-lead recording read as lead I"}


def _derived_leads(meta: Mapping[str, Any]) -> dict[str, str]:
    """``meta["derived_leads"]`` as ``{lead: how}``: readers may list leads the device itself derived."""
    found = meta.get("derived_leads") or {}
    if isinstance(found, Mapping):
        return {str(k): str(v) for k, v in found.items()}
    return {str(lead): "derived by the recording device" for lead in found}


def prepare_signal(record: EcgRecord, spec: InputSpec) -> tuple[EcgRecord, EcgRecord, dict[str, str]]:
    """Steps 1-5 of the module doc: ``(selected, filtered, derived)`` - the spec's leads at the record's
    rate with gaps filled (where quality is measured), the same at ``spec.fs`` band-passed to
    ``spec.band`` (continuous, not windowed), and how each derived lead was obtained."""
    record, assumed = as_lead_i(record)
    record = canonicalize(record)
    check_millivolts(record)
    record = replace(record, meta={**record.meta, "derived_leads": _derived_leads(record.meta)})
    selected = fill_gaps(select_leads(record, spec.leads, derive=spec.derive, missing=spec.missing), missing="zero")
    filtered = selected if selected.fs == spec.fs else resample(selected, spec.fs)
    if spec.band is not None:
        filtered = bandpass(filtered, *spec.band)
    derived = {lead: how for lead, how in {**assumed, **selected.meta.get("derived_leads", {})}.items()
               if lead in spec.leads}
    return selected, filtered, derived


def cut_windows(
    signal: np.ndarray, length: int, spec: InputSpec, *, max_windows: int | None = None, keep_short: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Steps 6-7 on a signal ``[L, T]`` at ``spec.fs`` whose first ``length`` samples are real:
    ``(windows float32 [W, L, S] z-scored, present bool [W, L], starts int64 [W], n_valid int64 [W])``. ``max_windows``
    keeps that many, evenly spread; ``keep_short``: a record shorter than ``spec.min_fraction`` of a
    window still gives its one padded window (the edge runtime abstains on length separately)."""
    win = spec.n_samples
    starts = window_starts(length, win, spec.min_fraction, keep_short=keep_short)
    if max_windows is not None and len(starts) > max_windows:
        starts = [starts[i] for i in np.linspace(0, len(starts) - 1, max_windows).round().astype(int)]
    windows = np.zeros((len(starts), signal.shape[0], win), dtype=np.float32)
    n_valid = np.zeros(len(starts), dtype=np.int64)
    for k, start in enumerate(starts):
        part = signal[:, start : min(start + win, length)]
        windows[k, :, : part.shape[1]] = part
        n_valid[k] = part.shape[1]
    present = zscore_windows(windows, n_valid)
    return windows, present, np.asarray(starts, dtype=np.int64), n_valid


def prepare(record: EcgRecord, spec: InputSpec, *, max_windows: int | None = None,
            keep_short: bool = True) -> Prepared:
    """``record`` (mV, any rate and leads) as the model input ``spec`` describes (module doc)."""
    selected, filtered, derived = prepare_signal(record, spec)
    windows, present, starts, n_valid = cut_windows(filtered.signal, filtered.n_samples, spec,
                                                    max_windows=max_windows, keep_short=keep_short)
    return Prepared(windows, present, n_valid, starts / spec.fs, selected, derived, filtered)
