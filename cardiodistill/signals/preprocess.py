"""From any ECG record to a model input, one traceable step at a time.

:func:`preprocess` composes the steps a model input needs, in this order:

1. :func:`canonicalize` - lead names to canonical spellings (``"MDC_ECG_LEAD_II"``, ``"MLII"``,
   ``"D2"`` -> ``"II"``), non-ECG channels (PLETH, ABP, RESP, ...) dropped and listed in
   ``meta["dropped_channels"]``, rows in the canonical order I, II, III, aVR, aVL, aVF, V1-V6.
2. A unit sanity check: a record is in mV by contract, but a reader fed a microvolt file without
   units produces amplitudes 1000 times too large; those are refused (see :mod:`.units`).
3. :func:`select_leads` - exactly the leads the model wants. The six limb leads span a plane
   (Einthoven, Goldberger: each is a fixed combination of I and II), so any two *different* limb
   leads give all six: a missing limb lead is derived from the first present pair in canonical
   order (I+II, I+III, I+aVR, ...). The precordial leads V1-V6 are independent and cannot be
   derived. **Missing-lead policy**: ``missing="error"`` (default) raises :class:`LeadError`
   naming the file and the leads; ``missing="zero"`` puts a row of zeros in their place and lists
   them in ``meta["missing_leads"]``, so a model trained with lead dropout can mask them (zero mV
   is the isoelectric line, so an unmasked model at least sees "no activity", not garbage).
4. :func:`fill_gaps` - NaN runs up to ``max_gap_s`` (default :data:`MAX_GAP_S`, 40 ms: shorter than
   a QRS, so no beat is invented) are interpolated linearly; a longer run makes the lead missing,
   under the same policy as step 3.
5. :func:`~.resample.resample` to ``fs``, 6. :func:`~.filters.bandpass` and optionally
   :func:`~.filters.notch`, 7. :func:`~.windows.crop_or_pad` to ``seconds``.

Every step appends an entry to ``meta["steps"]`` (what it did, with its parameters), so any model
input can be traced back to its file and reproduced.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from itertools import combinations

import numpy as np

from ..errors import ConfigError, DataError, LeadError
from ..records import EcgRecord
from .filters import bandpass as _bandpass
from .filters import notch as _notch
from .leads import LEADS_12, LIMB_FROM_I_II, LIMB_LEADS, normalize_lead_name
from .resample import resample
from .units import append_step, guess_unit, robust_range
from .windows import crop_or_pad

#: Longest NaN run (s) that is interpolated rather than treated as a missing lead.
MAX_GAP_S = 0.04
_MISSING = ("error", "zero")


def _check_missing(missing: str) -> None:
    if missing not in _MISSING:
        raise ConfigError(f"unknown missing-lead policy {missing!r} (expected 'error' or 'zero')")


def canonicalize(record: EcgRecord) -> EcgRecord:
    """``record`` with canonical lead names in canonical order and non-ECG channels dropped."""
    kept: dict[str, int] = {}
    renamed, dropped = {}, []
    for row, name in enumerate(record.leads):
        try:
            canonical = normalize_lead_name(name)
        except LeadError:
            dropped.append(name)
            continue
        if canonical in kept:
            raise LeadError(f"channels {record.leads[kept[canonical]]!r} and {name!r} are both lead {canonical}",
                            record.source)
        kept[canonical] = row
        if canonical != name:
            renamed[name] = canonical
    if not kept:
        raise LeadError(f"no ECG lead among the channels {', '.join(record.leads)}", record.source)
    order = [lead for lead in LEADS_12 if lead in kept]
    step = {"op": "canonicalize", "renamed": renamed, "dropped": dropped}
    meta = append_step(record.meta, step)
    if dropped:
        meta["dropped_channels"] = [*record.meta.get("dropped_channels", []), *dropped]
    signal = record.signal[[kept[lead] for lead in order]]
    return replace(record, signal=signal, leads=tuple(order), meta=meta)


def _limb_basis(present: list[str]) -> tuple[str, str] | None:
    """The first pair of present limb leads in canonical order (any two different ones span the plane)."""
    limb = [lead for lead in LIMB_LEADS if lead in present]
    return next(iter(combinations(limb, 2)), None)


def select_leads(
    record: EcgRecord, leads=LEADS_12, *, derive: bool = True, missing: str = "error"
) -> EcgRecord:
    """Exactly ``leads``, in that order: recorded ones as they are, absent limb leads derived from
    two present ones (when ``derive``), the rest per the missing-lead policy (module doc)."""
    _check_missing(missing)
    if any(lead not in LEADS_12 for lead in record.leads):
        record = canonicalize(record)
    wanted = [normalize_lead_name(lead) for lead in leads]
    if len(set(wanted)) != len(wanted):
        raise ConfigError(f"requested leads repeat a lead: {', '.join(map(str, leads))}")
    present = list(record.leads)
    absent = [lead for lead in wanted if lead not in present]
    basis = _limb_basis(present) if derive else None
    derivable = [lead for lead in absent if lead in LIMB_LEADS and basis is not None]
    unavailable = [lead for lead in absent if lead not in derivable]
    if unavailable and missing == "error":
        how = " (limb leads need two recorded limb leads; precordial leads cannot be derived)" if derive else ""
        raise LeadError(f"record lacks lead(s) {', '.join(unavailable)} and has {', '.join(present)}{how}",
                        record.source)

    rows = {lead: record.signal[present.index(lead)] for lead in wanted if lead in present}
    if derivable:
        coef = LIMB_FROM_I_II[[LIMB_LEADS.index(lead) for lead in basis]]  # [2, 2]: basis in terms of (I, II)
        weights = LIMB_FROM_I_II[[LIMB_LEADS.index(lead) for lead in derivable]] @ np.linalg.inv(coef)
        base = np.stack([record.signal[present.index(lead)] for lead in basis]).astype(np.float64)
        rows.update(zip(derivable, (weights @ base).astype(np.float32)))
    zero = np.zeros(record.n_samples, dtype=np.float32)
    signal = np.stack([rows.get(lead, zero) for lead in wanted])

    derived = {lead: f"from {basis[0]}, {basis[1]}" for lead in derivable}
    step = {"op": "select_leads", "leads": wanted, "derived": derived, "zeroed": unavailable}
    meta = append_step(record.meta, step)
    if derived:
        meta["derived_leads"] = {**record.meta.get("derived_leads", {}), **derived}
    if unavailable:
        meta["missing_leads"] = list(dict.fromkeys([*record.meta.get("missing_leads", []), *unavailable]))
    return replace(record, signal=signal, leads=tuple(wanted), meta=meta)


def fill_gaps(record: EcgRecord, *, max_gap_s: float = MAX_GAP_S, missing: str = "error") -> EcgRecord:
    """Interpolate NaN/inf runs up to ``max_gap_s`` linearly; a lead with a longer run is missing:
    :class:`DataError` (``missing="error"``) or zeroed and listed in ``meta["missing_leads"]``."""
    _check_missing(missing)
    bad = ~np.isfinite(record.signal)
    if not bad.any():
        return record
    max_gap = round(max_gap_s * record.fs)
    signal = record.signal.copy()
    idx = np.arange(record.n_samples)
    interpolated, zeroed = {}, []
    for row in np.flatnonzero(bad.any(axis=-1)):  # a loop over the few leads with gaps
        edges = np.diff(np.concatenate([[0], bad[row].astype(np.int8), [0]]))
        longest = int((np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)).max())
        lead = record.leads[row]
        if longest > max_gap or bad[row].all():
            if missing == "error":
                raise DataError(f"lead {lead} has a gap of {longest} non-finite samples ({longest / record.fs:.3g} s), "
                                f"longer than the {max_gap_s:g} s that can be interpolated", record.source)
            signal[row] = 0.0
            zeroed.append(lead)
        else:
            good = ~bad[row]
            signal[row, ~good] = np.interp(idx[~good], idx[good], signal[row, good])
            interpolated[lead] = int((~good).sum())
    step = {"op": "fill_gaps", "max_gap_s": float(max_gap_s), "interpolated_samples": interpolated, "zeroed": zeroed}
    meta = append_step(record.meta, step)
    if zeroed:
        meta["missing_leads"] = list(dict.fromkeys([*record.meta.get("missing_leads", []), *zeroed]))
    return replace(record, signal=signal, meta=meta)


def check_millivolts(record: EcgRecord) -> None:
    """:class:`DataError` when the amplitudes look like microvolts rather than millivolts."""
    if guess_unit(record.signal) == "uV":
        typical = float(np.nanmedian(robust_range(record.signal)))
        raise DataError(f"amplitudes look like microvolts, not millivolts (median lead range {typical:.4g}); "
                        f"convert with to_millivolts(signal, 'uV') when reading", record.source)


def preprocess(
    record: EcgRecord,
    *,
    fs: float | None = 500.0,
    leads=LEADS_12,
    seconds: float | None = 10.0,
    bandpass: tuple[float | None, float | None] | None = (0.5, 40.0),
    notch: float | None = None,
    missing: str = "error",
    max_gap_s: float = MAX_GAP_S,
) -> EcgRecord:
    """A model input from ``record``: the steps of the module doc; ``None`` skips a step."""
    _check_missing(missing)
    record = canonicalize(record)
    check_millivolts(record)
    record = select_leads(record, leads, derive=True, missing=missing)
    record = fill_gaps(record, max_gap_s=max_gap_s, missing=missing)
    if fs is not None:
        record = resample(record, fs)
    if bandpass is not None:
        record = _bandpass(record, *bandpass)
    if notch is not None:
        record = _notch(record, notch)
    if seconds is not None:
        record = crop_or_pad(record, seconds)
    return record


@dataclass(frozen=True)
class PreprocessConfig:
    """The arguments of :func:`preprocess` as one value (to store with a model, compare, log)."""

    fs: float | None = 500.0
    leads: tuple[str, ...] = LEADS_12
    seconds: float | None = 10.0
    bandpass: tuple[float | None, float | None] | None = (0.5, 40.0)
    notch: float | None = None
    missing: str = "error"
    max_gap_s: float = MAX_GAP_S

    def __call__(self, record: EcgRecord) -> EcgRecord:
        return preprocess(record, **asdict(self))
