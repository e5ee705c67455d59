"""Labels derived from the latent state: the triage rule, diagnosis labels and LVEF.

The triage rule (``urgent referral``) is deliberately simple and written down so a clinician can
check it. A patient is urgent when any of these holds:

====================================  ===========================================================
finding                               why it is urgent
====================================  ===========================================================
LVEF < 40 %                           heart failure with reduced ejection fraction needs work-up
acute ischaemia                       possible acute coronary syndrome
AF with ventricular rate > 100 bpm    uncontrolled atrial fibrillation
potassium >= 6.0 mmol/L               arrhythmia risk from hyperkalaemia
severe valve disease                  severe aortic stenosis or mitral regurgitation
====================================  ===========================================================

The recorded label is the rule's answer flipped with probability ``label_noise``, the way a real
referral decision is noisy. ``triage_true`` keeps the rule's answer for analysis; models must only
ever be trained and evaluated on ``triage``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .population import Population

#: Binary diagnosis labels written to the manifest (``dx_`` prefix there).
DIAGNOSES = (
    "mi",
    "af",
    "lvh",
    "lbbb",
    "rbbb",
    "ischaemia",
    "hyperkalaemia",
    "reduced_ef",
    "valve_disease",
    "aortic_stenosis",
    "mitral_regurgitation",
    "anaemia",
    "ckd",
)

TRIAGE_CRITERIA = {
    "reduced_ef": "LVEF < 40 %",
    "ischaemia": "acute ischaemia",
    "fast_af": "AF with ventricular rate > 100 bpm",
    "hyperkalaemia": "potassium >= 6.0 mmol/L",
    "severe_valve": "severe aortic stenosis or mitral regurgitation",
}


def triage_criteria(pop: Population) -> pd.DataFrame:
    """One boolean column per criterion of the triage rule (see the module docstring)."""
    return pd.DataFrame(
        {
            "reduced_ef": pop.lvef < 40.0,
            "ischaemia": pop.ischaemia,
            "fast_af": pop.af & (pop.heart_rate > 100.0),
            "hyperkalaemia": pop.potassium >= 6.0,
            "severe_valve": (pop.valve > 0) & pop.valve_severe,
        },
        index=pop.patient_id,
    )


def diagnosis_labels(pop: Population) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "mi": pop.mi,
            "af": pop.af,
            "lvh": pop.lvh,
            "lbbb": pop.bbb == 1,
            "rbbb": pop.bbb == 2,
            "ischaemia": pop.ischaemia,
            "hyperkalaemia": pop.hyperkalaemia,
            "reduced_ef": pop.lvef < 40.0,
            "valve_disease": pop.valve > 0,
            "aortic_stenosis": pop.valve == 1,
            "mitral_regurgitation": pop.valve == 2,
            "anaemia": pop.anaemia,
            "ckd": pop.ckd,
        },
        index=pop.patient_id,
    )[list(DIAGNOSES)]


def make_labels(pop: Population, rng: np.random.Generator, label_noise: float) -> pd.DataFrame:
    """Triage (noisy and true), the criteria that fired, diagnoses (``dx_*``) and LVEF, per patient."""
    criteria = triage_criteria(pop)
    truth = criteria.any(axis=1).to_numpy()
    flip = rng.random(len(pop)) < label_noise
    out = pd.DataFrame(
        {"triage": (truth ^ flip).astype(np.int8), "triage_true": truth.astype(np.int8)},
        index=pop.patient_id,
    )
    out["triage_reasons"] = [";".join(c for c, v in row.items() if v) for row in criteria.to_dict("records")]
    dx = diagnosis_labels(pop).astype(np.int8).add_prefix("dx_")
    out = out.join(dx)
    out["lvef"] = np.round(pop.lvef, 1)
    return out
