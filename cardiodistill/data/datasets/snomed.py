"""SNOMED-CT diagnosis codes (PhysioNet/CinC 2020-2021 ``# Dx:`` headers) -> PTB-XL SCP statements.

The CinC challenges label every record with SNOMED-CT concept ids; PTB-XL uses SCP-ECG statements.
This table lets CinC records (Georgia, Chapman-Shaoxing, Ningbo, CPSC, ...) be scored by a model
trained on PTB-XL classes. Only one-to-one correspondences are listed: the SNOMED concept names
the same ECG finding as the SCP statement (names from the challenge's ``dx_mapping_*.csv``
tables and ``scp_statements.csv``). Where several SNOMED codes name one finding, the challenge
itself scores them as one class (RBBB/CRBBB, LBBB/CLBBB, PAC/SVPB, PVC/VPB). Codes left out on
purpose, because no single SCP statement means the same:

* 164865005 myocardial infarction, 57054005 acute MI: no location (PTB-XL has IMI, AMI, LMI, ...).
* 428750005 nonspecific ST-T abnormality: PTB-XL splits it into NST_, NDT, ...
* 6374002 bundle branch block (side unknown); 233917008 AV block (degree unknown).
* 39732003 / 47665007 left / right axis deviation: PTB-XL records the axis in its ``heart_axis``
  column, not as an SCP statement.
* 713422000 atrial tachycardia, 426627000 bradycardia (not necessarily sinus), 365413008 poor
  R-wave progression, 164930006 ST interval abnormal, 251170000 blocked PAC, 67751000119106
  right atrial high voltage.

426783006 "sinus rhythm" maps to the rhythm statement SR only. It is *not* PTB-XL's NORM
("normal ECG"): SNOMED has no code for a normal ECG, and CinC gives 426783006 to records with
other findings too. :func:`derive_norm` is the explicit rule CinC 2021 uses for NORM instead.
Choices that merge a specific SNOMED finding into a broader SCP statement are marked below.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["SINUS_RHYTHM", "SNOMED_NAMES", "SNOMED_TO_SCP", "derive_norm", "map_snomed"]

SINUS_RHYTHM = "426783006"

# code: (SNOMED-CT name, SCP statement)
_TABLE: dict[str, tuple[str, str]] = {
    # rhythm
    "426783006": ("sinus rhythm", "SR"),
    "164889003": ("atrial fibrillation", "AFIB"),
    "164890007": ("atrial flutter", "AFLT"),
    "426177001": ("sinus bradycardia", "SBRAD"),
    "427084000": ("sinus tachycardia", "STACH"),
    "427393009": ("sinus arrhythmia", "SARRH"),
    "10370003": ("pacing rhythm", "PACE"),
    "426761007": ("supraventricular tachycardia", "SVTAC"),
    "67198005": ("paroxysmal supraventricular tachycardia", "PSVT"),
    "11157007": ("ventricular bigeminy", "BIGU"),  # BIGU: bigeminy of either origin (broader)
    "251173003": ("atrial bigeminy", "BIGU"),  # same
    "251180001": ("ventricular trigeminy", "TRIGU"),  # TRIGU: trigeminy of either origin (broader)
    # conduction
    "270492004": ("1st degree av block", "1AVB"),
    "195042002": ("2nd degree av block", "2AVB"),
    "54016002": ("mobitz type I (Wenckebach) av block", "2AVB"),
    "426183003": ("mobitz type II av block", "2AVB"),
    "27885002": ("complete heart block", "3AVB"),
    "164909002": ("left bundle branch block", "CLBBB"),  # challenge scores it as 733534002
    "733534002": ("complete left bundle branch block", "CLBBB"),
    "59118001": ("right bundle branch block", "CRBBB"),  # challenge scores it as 713427006
    "713427006": ("complete right bundle branch block", "CRBBB"),
    "713426002": ("incomplete right bundle branch block", "IRBBB"),
    "251120003": ("incomplete left bundle branch block", "ILBBB"),
    "445118002": ("left anterior fascicular block", "LAFB"),
    "445211001": ("left posterior fascicular block", "LPFB"),
    "698252002": ("nonspecific intraventricular conduction disorder", "IVCD"),
    "74390002": ("wolff parkinson white pattern", "WPW"),
    # hypertrophy / atrial enlargement
    "164873001": ("left ventricular hypertrophy", "LVH"),
    "89792004": ("right ventricular hypertrophy", "RVH"),
    "67741000119109": ("left atrial enlargement", "LAO/LAE"),
    "253352002": ("left atrial abnormality", "LAO/LAE"),
    "446813000": ("left atrial hypertrophy", "LAO/LAE"),
    "446358003": ("right atrial hypertrophy", "RAO/RAE"),
    "253339007": ("right atrial abnormality", "RAO/RAE"),
    "55827005": ("left ventricular high voltage", "VCLVH"),  # voltage criterion, not LVH itself
    # infarction / ischaemia / repolarisation
    "54329005": ("anterior myocardial infarction", "AMI"),
    "164861001": ("myocardial ischemia", "ISC_"),
    "426434006": ("anterior ischemia", "ISCAN"),
    "425419005": ("inferior ischaemia", "ISCIN"),
    "425623009": ("lateral ischaemia", "ISCLA"),
    "55930002": ("ST changes", "NST_"),
    "111975006": ("prolonged qt interval", "LNGQT"),
    # form
    "164934002": ("t wave abnormal", "TAB_"),  # PTB-XL's own CinC export also wrote NT_ as this code
    "59931005": ("t wave inversion", "INVT"),
    "429622005": ("st depression", "STD_"),
    "164931005": ("st elevation", "STE_"),
    "164951009": ("abnormal QRS", "ABQRS"),
    "164917005": ("q wave abnormal", "QWAVE"),
    "251146004": ("low qrs voltages", "LVOLT"),
    "164947007": ("prolonged pr interval", "LPR"),
    "284470004": ("premature atrial contraction", "PAC"),
    "63593006": ("supraventricular premature beats", "PAC"),  # challenge scores it as 284470004
    "427172004": ("premature ventricular contractions", "PVC"),
    "17338001": ("ventricular premature beats", "PVC"),  # challenge scores it as 427172004
    "164884008": ("ventricular ectopics", "PVC"),
}

SNOMED_TO_SCP: dict[str, str] = {code: scp for code, (_, scp) in _TABLE.items()}
SNOMED_NAMES: dict[str, str] = {code: name for code, (name, _) in _TABLE.items()}


def map_snomed(codes: Iterable[str | int]) -> tuple[list[str], list[str]]:
    """``(scp_statements, unmapped_codes)`` for a record's SNOMED codes, each in input order
    without repeats. Unmapped codes are returned, not dropped, so callers can keep them."""
    scp: list[str] = []
    unmapped: list[str] = []
    for code in (str(c).strip() for c in codes):
        if not code:
            continue
        target = SNOMED_TO_SCP.get(code)
        bucket, item = (scp, target) if target else (unmapped, code)
        if item not in bucket:
            bucket.append(item)
    return scp, unmapped


def derive_norm(codes: Iterable[str | int], diagnostic_statements: Iterable[str]) -> bool:
    """CinC rule for PTB-XL's NORM: sinus rhythm is coded, every code is in the table, and none
    of them is a diagnostic statement (``diagnostic_statements``: SCP codes with diagnostic == 1).
    A record with any code we cannot interpret is never called normal."""
    codes = [str(c).strip() for c in codes]
    scp, unmapped = map_snomed(codes)
    return SINUS_RHYTHM in codes and not unmapped and not set(diagnostic_statements).intersection(scp)
