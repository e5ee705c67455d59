"""Lead names and the algebra between limb leads.

The canonical 12-lead order is I, II, III, aVR, aVL, aVF, V1-V6. The six limb leads are all
linear in the two independent potentials I and II (Einthoven and Goldberger):

    III = II - I,  aVR = -(I + II) / 2,  aVL = I - II / 2,  aVF = II - I / 2

so a two-electrode-pair handheld device (I and II) gives all six limb leads.
"""

from __future__ import annotations

import re

import numpy as np

from ..errors import LeadError

LEADS_12: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
LIMB_LEADS: tuple[str, ...] = LEADS_12[:6]
PRECORDIAL_LEADS: tuple[str, ...] = LEADS_12[6:]

# Spellings seen in WFDB headers, DICOM, MUSE, HL7 aECG and CSV exports, after lower-casing and
# removing spaces, "-", "_" and "." and a leading "lead"/"mdcecglead" (so "Lead II", "MDC_ECG_LEAD_II",
# "ii", "D2", "MLII" all meet here). Modified limb leads (MLII, MLIII: Mason-Likar placement) map
# to their standard lead, as every ECG toolkit treats them. Bare numbers ("ECG 1") are channel
# numbers, not leads, and stay unknown.
_ALIASES = {
    "i": "I", "d1": "I", "di": "I", "mli": "I",
    "ii": "II", "d2": "II", "dii": "II", "mlii": "II", "ml2": "II",
    "iii": "III", "d3": "III", "diii": "III", "mliii": "III", "ml3": "III",
    "avr": "aVR", "avl": "aVL", "avf": "aVF",
    **{f"v{i}": f"V{i}" for i in range(1, 7)},
    **{f"c{i}": f"V{i}" for i in range(1, 7)},  # European "C" chest-lead naming
}
_NOISE = re.compile(r"[\s\-_.]+")
_PREFIX = re.compile(r"^(mdcecglead|lead|ecg)")


def normalize_lead_name(name: str, *, strict: bool = True) -> str:
    """Canonical name of a lead spelled any common way: ``"avr"``, ``"Lead aVR"``,
    ``"MDC_ECG_LEAD_AVR"`` -> ``"aVR"``; ``"MLII"``, ``"D2"`` -> ``"II"``; ``"C1"`` -> ``"V1"``.

    An unrecognised name raises :class:`LeadError` when ``strict``, else comes back stripped
    (for non-ECG channels such as ``"PLETH"`` that a caller wants to keep or drop itself).
    """
    key = _PREFIX.sub("", _NOISE.sub("", str(name).strip().lower()))
    if key in _ALIASES:
        return _ALIASES[key]
    if strict:
        raise LeadError(f"unknown lead name {name!r} (expected one of {', '.join(LEADS_12)} or a common spelling)")
    return str(name).strip()


# Rows: limb lead; columns: coefficient on (I, II).
LIMB_FROM_I_II = np.array(
    [
        [1.0, 0.0],  # I
        [0.0, 1.0],  # II
        [-1.0, 1.0],  # III = II - I
        [-0.5, -0.5],  # aVR = -(I + II) / 2
        [1.0, -0.5],  # aVL = I - II / 2
        [-0.5, 1.0],  # aVF = II - I / 2
    ],
    dtype=np.float64,
)


def derive_limb_leads(lead_i: np.ndarray, lead_ii: np.ndarray) -> np.ndarray:
    """Return the six limb leads ``[..., 6, n_samples]`` from leads I and II ``[..., n_samples]``."""
    lead_i = np.asarray(lead_i)
    lead_ii = np.asarray(lead_ii)
    if lead_i.shape != lead_ii.shape:
        raise LeadError(f"leads I and II differ in shape: {lead_i.shape} vs {lead_ii.shape}")
    dtype = np.result_type(lead_i.dtype, np.float32)
    stacked = np.stack([lead_i, lead_ii], axis=-2).astype(dtype, copy=False)  # [..., 2, S]
    return np.einsum("lk,...ks->...ls", LIMB_FROM_I_II.astype(dtype), stacked)
