"""The latent patient state: a population model with configurable prevalences and realistic
correlations between conditions.

Conditions are drawn with a Gaussian latent-factor model (a liability-threshold model). Each
condition ``c`` has a standard-normal liability

    z_c = sum_f loading[c, f] * F_f + sqrt(1 - sum_f loading[c, f]^2) * eps_c

over three shared factors: *vascular* (age, atherosclerosis: MI, ischaemia, AF, LVH, valve
disease), *renal* (CKD, hyperkalaemia, anaemia) and *myocardial* (heart failure substrate:
cardiomyopathy, AF, bundle branch block). A condition is present when ``z_c`` exceeds
``Phi^-1(1 - prevalence)``, so every marginal prevalence equals the config in expectation while
conditions that share a factor co-occur (CKD with hyperkalaemia, MI with older age, ...). Age is
the vascular factor's own liability, so the risk of MI rises with age.

Continuous physiology (LVEF, volumes, wall thickness, heart rate, intervals, potassium, eGFR,
haemoglobin) is then drawn conditional on the conditions, with published normal ranges.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import pandas as pd
from scipy.special import ndtri

from ..config import PrevalenceConfig

TERRITORIES = ("none", "anterior", "inferior", "lateral")
TERRITORY_PROBS = np.array([0.45, 0.35, 0.20])  # anterior (LAD), inferior (RCA), lateral (LCx)
BBB_TYPES = ("none", "lbbb", "rbbb")
VALVE_TYPES = ("none", "aortic_stenosis", "mitral_regurgitation")

# Factor loadings: vascular, renal, myocardial. Rows must have squared norm < 1.
_FACTORS = ("vascular", "renal", "myocardial")
_LOADINGS = {
    "age": (0.60, 0.15, 0.00),
    "male": (0.20, 0.00, 0.10),
    "mi": (0.55, 0.10, 0.15),
    "cardiomyopathy": (0.05, 0.05, 0.60),
    "lvh": (0.40, 0.25, 0.10),
    "af": (0.40, 0.05, 0.35),
    "bbb": (0.30, 0.00, 0.35),
    "ischaemia": (0.45, 0.10, 0.00),
    "hyperkalaemia": (0.10, 0.70, 0.00),
    "ckd": (0.30, 0.75, 0.00),
    "anaemia": (0.10, 0.45, 0.10),
    "valve": (0.40, 0.10, 0.10),
}
_BINARY = ("mi", "cardiomyopathy", "lvh", "af", "bbb", "ischaemia", "hyperkalaemia", "ckd", "anaemia", "valve")


@dataclass
class Population:
    """Struct of arrays: one entry per patient. Units are in the field names' comments."""

    patient_id: np.ndarray  # str
    age: np.ndarray  # years
    male: np.ndarray  # bool
    mi: np.ndarray  # bool, prior myocardial infarction
    mi_territory: np.ndarray  # int8 index into TERRITORIES (0 = none)
    cardiomyopathy: np.ndarray  # bool, non-ischaemic dilated
    lvh: np.ndarray  # bool
    af: np.ndarray  # bool
    bbb: np.ndarray  # int8 index into BBB_TYPES
    ischaemia: np.ndarray  # bool, acute
    ischaemia_territory: np.ndarray  # int8 index into TERRITORIES
    hyperkalaemia: np.ndarray  # bool, K >= 5.5 mmol/L
    ckd: np.ndarray  # bool, eGFR < 60
    anaemia: np.ndarray  # bool
    valve: np.ndarray  # int8 index into VALVE_TYPES
    valve_severe: np.ndarray  # bool
    lvef: np.ndarray  # %, LV ejection fraction
    lvedv: np.ndarray  # mL, end-diastolic volume
    lvesv: np.ndarray  # mL, end-systolic volume
    wall_thickness: np.ndarray  # mm, septal / posterior wall at end-diastole
    la_scale: np.ndarray  # left atrial size relative to normal (1.0)
    pvc_per_min: np.ndarray  # mean rate of premature ventricular complexes (ectopy)
    heart_rate: np.ndarray  # bpm, mean ventricular rate
    pr_ms: np.ndarray  # ms (meaningless in AF)
    qrs_ms: np.ndarray  # ms
    qtc_ms: np.ndarray  # ms, Fridericia-corrected QT
    qrs_axis_deg: np.ndarray  # frontal-plane QRS axis, degrees
    voltage_scale: np.ndarray  # body habitus: scales every ECG amplitude
    potassium: np.ndarray  # mmol/L, true value
    egfr: np.ndarray  # mL/min/1.73 m2, true value
    haemoglobin: np.ndarray  # g/dL, true value

    def __len__(self) -> int:
        return len(self.age)

    def take(self, index: np.ndarray | slice) -> Population:
        return Population(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def to_frame(self) -> pd.DataFrame:
        frame = pd.DataFrame({f.name: getattr(self, f.name) for f in fields(self)})
        frame["mi_territory"] = np.asarray(TERRITORIES)[self.mi_territory]
        frame["ischaemia_territory"] = np.asarray(TERRITORIES)[self.ischaemia_territory]
        frame["bbb"] = np.asarray(BBB_TYPES)[self.bbb]
        frame["valve"] = np.asarray(VALVE_TYPES)[self.valve]
        return frame


def haemoglobin_deficit(male: np.ndarray, haemoglobin: np.ndarray) -> np.ndarray:
    """g/dL below the lower normal limit (13.5 men, 12.5 women); 0 when within it."""
    return np.clip(np.where(male, 13.5, 12.5) - haemoglobin, 0.0, None)


def _liabilities(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    factors = rng.standard_normal((len(_FACTORS), n))
    out = {}
    for name, loading in _LOADINGS.items():
        w = np.asarray(loading)
        own = np.sqrt(1.0 - np.sum(w**2))
        out[name] = w @ factors + own * rng.standard_normal(n)
    return out


def _threshold(z: np.ndarray, prevalence: float) -> np.ndarray:
    if prevalence <= 0:
        return np.zeros(z.shape, bool)
    if prevalence >= 1:
        return np.ones(z.shape, bool)
    return z > ndtri(1.0 - prevalence)


def sample_population(n: int, prevalence: PrevalenceConfig, rng: np.random.Generator, first_id: int = 0) -> Population:
    """Draw ``n`` patients. Deterministic given ``rng``'s state."""
    z = _liabilities(n, rng)
    has = {c: _threshold(z[c], getattr(prevalence, c)) for c in _BINARY}
    male = _threshold(z["male"], prevalence.male)
    age = np.clip(61.0 + 14.0 * z["age"], 18.0, 95.0)

    # MI and acute ischaemia territories; ischaemia recurs in the infarct territory half the time
    mi_territory = np.where(has["mi"], 1 + rng.choice(3, size=n, p=TERRITORY_PROBS), 0).astype(np.int8)
    isch_territory = 1 + rng.choice(3, size=n, p=TERRITORY_PROBS)
    same = has["mi"] & (rng.random(n) < 0.5)
    isch_territory = np.where(same, mi_territory, isch_territory)
    isch_territory = np.where(has["ischaemia"], isch_territory, 0).astype(np.int8)

    bbb = np.where(has["bbb"], np.where(rng.random(n) < prevalence.lbbb_fraction, 1, 2), 0).astype(np.int8)
    valve = np.where(has["valve"], 1 + (rng.random(n) < 0.5), 0).astype(np.int8)
    valve_severe = has["valve"] & (rng.random(n) < prevalence.valve_severe_fraction)
    valve_load = np.where(valve_severe, 1.0, 0.55) * (valve > 0)  # haemodynamic load: moderate 0.55, severe 1
    stenosis, regurgitation = valve_load * (valve == 1), valve_load * (valve == 2)

    # --- LV function: LVEF from normal, lowered by infarct size (territory), cardiomyopathy, LBBB
    lvef = rng.normal(61.0, 5.0, n).clip(52.0, 75.0)
    mi_loss = np.select(
        [mi_territory == 1, mi_territory == 2, mi_territory == 3],
        [rng.normal(19.0, 7.0, n), rng.normal(9.0, 5.0, n), rng.normal(11.0, 5.0, n)],
        0.0,
    ).clip(0.0, None)
    lvef = lvef - mi_loss
    lvef = np.where(has["cardiomyopathy"], rng.normal(29.0, 7.0, n), lvef)
    lvef = lvef - 6.0 * (bbb == 1) - 3.0 * has["af"] - 5.0 * has["ischaemia"] + 2.0 * (valve == 2)
    lvef = np.clip(lvef, 12.0, 78.0)

    bsa_volume = np.where(male, rng.normal(118.0, 18.0, n), rng.normal(90.0, 14.0, n)).clip(60.0, 180.0)
    lvedv = bsa_volume * (1.0 + 0.014 * np.clip(55.0 - lvef, 0.0, None)) * (1.0 + 0.15 * (valve == 2))
    lvesv = lvedv * (1.0 - lvef / 100.0)

    wall = 8.4 + 1.0 * male + 0.02 * (age - 50.0) + rng.normal(0.0, 0.7, n)
    wall = wall + has["lvh"] * rng.normal(4.8, 1.3, n).clip(2.5, None)
    wall = wall + stenosis * rng.normal(5.0, 1.3, n).clip(1.0, None)  # concentric remodelling of pressure load
    wall = wall + 1.0 * has["ckd"]  # uraemic and hypertensive remodelling
    wall = np.where(has["cardiomyopathy"], wall - 1.0, wall).clip(6.0, 22.0)
    # the LA dilates with AF, with mitral regurgitation, and with the filling pressure of a failing or
    # stiff (stenotic, hypertrophied) ventricle, in proportion to how much
    low_ef = np.clip(55.0 - lvef, 0.0, None)  # % below normal: grades every failing-heart sign below
    la_scale = (1.0 + 0.25 * has["af"] + 0.34 * regurgitation + 0.12 * stenosis + 0.006 * low_ef
                + 0.05 * has["lvh"] + rng.normal(0.0, 0.05, n))

    # --- kidneys and blood
    egfr = (100.0 - 0.6 * (age - 30.0) + rng.normal(0.0, 11.0, n)).clip(61.0, 130.0)
    egfr = np.where(has["ckd"], rng.uniform(12.0, 59.0, n), egfr)
    potassium = rng.normal(4.3, 0.33, n).clip(3.4, 5.3)
    potassium = np.where(has["hyperkalaemia"], (5.5 + rng.exponential(0.55, n)).clip(5.5, 8.0), potassium)
    hb = np.where(male, rng.normal(14.9, 1.0, n).clip(13.1, 18.0), rng.normal(13.5, 0.9, n).clip(12.1, 16.5))
    hb_low = np.where(male, rng.normal(10.9, 1.2, n).clip(6.5, 12.9), rng.normal(10.3, 1.1, n).clip(6.5, 11.9))
    hb = np.where(has["anaemia"], hb_low, hb)

    # --- rhythm and intervals
    hb_deficit = haemoglobin_deficit(male, hb)
    sinus_hr = (rng.normal(70.0, 10.0, n) + 3.0 * hb_deficit + 0.3 * low_ef - 4.0 * has["hyperkalaemia"]
                + 6.0 * has["ischaemia"])  # anaemia and ischaemia drive the rate up (output, sympathetic tone)
    af_hr = rng.normal(94.0, 19.0, n)
    heart_rate = np.where(has["af"], af_hr.clip(55.0, 150.0), sinus_hr.clip(48.0, 120.0))
    hyperk_excess = np.clip(potassium - 5.5, 0.0, None)
    pr = rng.normal(158.0, 18.0, n) + 0.3 * (age - 50.0) + 25.0 * hyperk_excess + 10.0 * stenosis
    qrs = rng.normal(92.0, 8.0, n).clip(72.0, 112.0)
    # complete bundle branch block is defined by QRS >= 120 ms
    lbbb_qrs, rbbb_qrs = rng.normal(148.0, 10.0, n).clip(122.0, None), rng.normal(138.0, 9.0, n).clip(120.0, None)
    qrs = np.select([bbb == 1, bbb == 2], [lbbb_qrs, rbbb_qrs], qrs)
    qrs = qrs + 18.0 * np.clip(potassium - 6.0, 0.0, None)
    # a failing, fibrotic ventricle conducts slowly: intraventricular conduction delay grows as the EF
    # falls, by a patient-specific amount (QRS >= 120 ms in about a quarter of LVEF < 35 %, BBB included)
    qrs = qrs + low_ef * rng.uniform(0.1, 0.8, n) + 6.0 * stenosis + 3.0 * has["lvh"]
    qtc = (rng.normal(412.0, 16.0, n) + 10.0 * ~male + 18.0 * has["ischaemia"] + 25.0 * (bbb == 1)
           - 12.0 * hyperk_excess + 0.7 * low_ef + 4.0 * has["lvh"] + 6.0 * has["ckd"] + 3.0 * hb_deficit)
    axis = (rng.normal(45.0, 22.0, n) - 15.0 * has["lvh"] - 20.0 * (bbb == 1) + 15.0 * (bbb == 2)
            - 25.0 * (mi_territory == 2) - 12.0 * stenosis - 0.4 * low_ef)
    axis = axis.clip(-60.0, 120.0)
    # body habitus sets most of the spread; thin blood conducts better, so anaemia raises QRS voltage (Brody effect)
    voltage = np.exp(rng.normal(0.0, 0.22, n)) * np.where(male, 1.0, 0.9) * (1.0 - 0.003 * (age - 50.0))
    voltage = voltage * (1.0 + 0.04 * hb_deficit)
    # ectopy: frequent premature ventricular complexes go with a failing or hypertrophied ventricle,
    # age and deranged potassium (lognormal between patients: most have none in 10 s)
    pvc = np.exp(rng.normal(np.log(0.15), 1.2, n)) * (1.0 + 0.15 * low_ef) * (1.0 + 1.0 * has["lvh"] + 1.5 * stenosis)
    pvc = pvc * (1.0 + 0.02 * np.clip(age - 50.0, 0.0, None)) * (1.0 + 1.0 * hyperk_excess) * (1.0 + 1.5 * has["ischaemia"])

    ids = np.array([f"P{first_id + i:06d}" for i in range(n)])
    return Population(
        patient_id=ids,
        age=age,
        male=male,
        mi=has["mi"],
        mi_territory=mi_territory,
        cardiomyopathy=has["cardiomyopathy"],
        lvh=has["lvh"],
        af=has["af"],
        bbb=bbb,
        ischaemia=has["ischaemia"],
        ischaemia_territory=isch_territory,
        hyperkalaemia=has["hyperkalaemia"],
        ckd=has["ckd"],
        anaemia=has["anaemia"],
        valve=valve,
        valve_severe=valve_severe,
        lvef=lvef,
        lvedv=lvedv,
        lvesv=lvesv,
        wall_thickness=wall,
        la_scale=la_scale,
        pvc_per_min=np.clip(pvc, 0.0, 12.0),
        heart_rate=heart_rate,
        pr_ms=pr,
        qrs_ms=qrs,
        qtc_ms=qtc,
        qrs_axis_deg=axis,
        voltage_scale=voltage,
        potassium=potassium,
        egfr=egfr,
        haemoglobin=hb,
    )
