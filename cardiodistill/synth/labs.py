"""Blood work: a units table for real lab files and a simulator of one panel per patient.

Units
-----
Every analyte has one canonical unit (:data:`LAB_UNITS`). :func:`to_canonical` converts a value
from any unit of the table :data:`UNITS` in three steps: the unit's factor to the base unit of its
dimension (g/L for mass, mol/L for amount, eq/L for charge), a bridge between dimensions through
the analyte's molar mass (mass <-> amount) or ionic valence (charge <-> amount), and the canonical
unit's factor back. So creatinine mg/dL -> umol/L is ``x 0.01 g/L / 113.12 g/mol = x 88.4``,
glucose mmol/L -> mg/dL is ``x 18.0``, potassium mEq/L == mmol/L, troponin ng/mL -> ng/L is
``x 1000`` and BNP pg/mL == ng/L, with no analyte-specific code.

Simulated panel
---------------
Each value is drawn from the latent state (:class:`~cardiodistill.synth.population.Population`)
with published-like distributions, then measured: a log-normal analytical plus within-subject
error of the analyte's CV, clamped to the assay's measuring range and rounded to the precision a
laboratory reports.

* **NT-proBNP** (pg/mL) is log-normal with a median of ~60 pg/mL in healthy 55-year-olds, rising
  ~3 %/year of age, higher in women, and strongly with falling LVEF (median > 1000 pg/mL below
  LVEF 40 %), with AF (x2.5), CKD (renal clearance), valve disease, LVH, ischaemia and anaemia.
  **BNP** comes from the same natriuretic activation, NT-proBNP / ~6.5 (5-8 for most patients),
  the ratio widening in CKD because NT-proBNP is cleared renally.
* **hs-TnT** (ng/L, high-sensitivity troponin T): median ~6 ng/L in health (99th percentile
  ~14 ng/L), raised mildly by age, male sex, CKD, LVH, prior MI, low EF, AF and severe aortic
  stenosis. Acute ischaemia adds myocardial injury, log-normal with a median of 350 ng/L (most
  50-3000 ng/L); 5 % of ischaemic patients present early, with only a small rise.
* **potassium** is the latent value plus assay noise (~0.1 mmol/L). 3 % of samples are
  haemolysed, which releases red-cell potassium: a false rise of 0.3 mmol/L or more.
* **creatinine** is the latent eGFR turned back into serum creatinine by inverting CKD-EPI 2021
  (:func:`creatinine_from_egfr`), then measured with noise; **egfr** is computed from the
  *measured* creatinine (:func:`ckd_epi_2021`), as laboratories do, so the two always agree.
* **haemoglobin** is the latent value plus noise; **sodium** is lower in heart failure;
  **glucose** is higher with age, in diabetes (more likely with vascular and renal disease) and
  with stress hyperglycaemia in acute ischaemia; **ldl** is lower on a statin (most patients after an MI, many others for primary prevention);
  **crp** rises with ischaemia, heart failure, AF and CKD.

Assay limits: a value outside the measuring range is reported *at the limit*, the way a lab's
``<3 ng/L`` is stored as 3 (so ``value == LAB_SPECS[name].low`` marks a left-censored result).

Missingness (NaN): every value is missing at random with probability ``missing_rate`` (sample
lost, test not run). On top, the cardiac biomarkers are often *not ordered* when there is no
clinical reason: troponin with probability ``3 * missing_rate`` when there is no acute ischaemia,
and the natriuretic peptides (both or neither) with probability ``3 * missing_rate`` when there
is no heart failure (LVEF >= 40 % and no cardiomyopathy). ``missing_rate=0`` gives a full panel.
``egfr`` is missing exactly when ``creatinine`` is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import DataError
from ..lab_units import LAB_UNITS  # canonical name -> unit; also the column order of sample_labs
from .population import Population


@dataclass(frozen=True)
class LabSpec:
    """What the simulator and the unit converter need to know about one analyte."""

    unit: str  # canonical unit
    decimals: int  # reporting precision in the canonical unit
    low: float | None  # measuring range of a typical assay, canonical unit (None: computed value)
    high: float | None
    cv: float  # analytical plus within-subject coefficient of variation
    molar_mass: float | None = None  # g/mol: bridges mass and amount concentrations
    valence: int | None = None  # charge per ion: bridges eq/L and mol/L


LAB_SPECS: dict[str, LabSpec] = {
    "nt_probnp": LabSpec("pg/mL", 0, 5.0, 35000.0, 0.05, molar_mass=8457.0),
    "bnp": LabSpec("pg/mL", 0, 2.0, 5000.0, 0.08, molar_mass=3464.0),
    "troponin_t_hs": LabSpec("ng/L", 0, 3.0, 10000.0, 0.07),
    "potassium": LabSpec("mmol/L", 1, 1.5, 10.0, 0.022, molar_mass=39.098, valence=1),
    "sodium": LabSpec("mmol/L", 0, 80.0, 180.0, 0.008, molar_mass=22.990, valence=1),
    "creatinine": LabSpec("umol/L", 0, 5.0, 2200.0, 0.05, molar_mass=113.12),
    "egfr": LabSpec("mL/min/1.73m2", 0, None, None, 0.0),
    "haemoglobin": LabSpec("g/dL", 1, 2.0, 25.0, 0.025, molar_mass=16114.5),  # per haem (mmol/L convention)
    "glucose": LabSpec("mmol/L", 1, 0.2, 40.0, 0.03, molar_mass=180.16),
    "ldl": LabSpec("mmol/L", 1, 0.1, 15.0, 0.05, molar_mass=386.65),  # cholesterol
    "crp": LabSpec("mg/L", 1, 0.6, 350.0, 0.08),
}


#: unit (normalised: lower case, no spaces, ``u`` for micro) -> (dimension, factor to the base unit)
UNITS: dict[str, tuple[str, float]] = {
    # mass concentration, base g/L
    "g/l": ("mass", 1.0),
    "g/dl": ("mass", 10.0),
    "mg/ml": ("mass", 1.0),
    "mg/dl": ("mass", 1e-2),
    "mg/l": ("mass", 1e-3),
    "ug/ml": ("mass", 1e-3),
    "ug/dl": ("mass", 1e-5),
    "ug/l": ("mass", 1e-6),
    "ng/ml": ("mass", 1e-6),
    "ng/dl": ("mass", 1e-8),
    "ng/l": ("mass", 1e-9),
    "pg/ml": ("mass", 1e-9),
    # amount concentration, base mol/L
    "mol/l": ("amount", 1.0),
    "mmol/l": ("amount", 1e-3),
    "umol/l": ("amount", 1e-6),
    "nmol/l": ("amount", 1e-9),
    "pmol/l": ("amount", 1e-12),
    # charge concentration, base eq/L
    "eq/l": ("charge", 1.0),
    "meq/l": ("charge", 1e-3),
    # filtration rate indexed to body surface area
    "ml/min/1.73m2": ("filtration", 1.0),
}

#: alternative analyte names found in lab exports -> canonical name
LAB_ALIASES: dict[str, str] = {
    "ntprobnp": "nt_probnp",
    "nt-probnp": "nt_probnp",
    "hs-tnt": "troponin_t_hs",
    "hstnt": "troponin_t_hs",
    "tnt": "troponin_t_hs",
    "k": "potassium",
    "na": "sodium",
    "creat": "creatinine",
    "hb": "haemoglobin",
    "hgb": "haemoglobin",
    "hemoglobin": "haemoglobin",
    "ldl-c": "ldl",
}

_UNIT_SPELLINGS = (("µ", "u"), ("μ", "u"), ("mcg", "ug"), ("²", "2"), ("litre", "l"), ("liter", "l"), (" ", ""))


def canonical_lab_name(name: str) -> str:
    """The canonical analyte name of ``name`` (case-insensitive; a few common aliases)."""
    key = str(name).strip().lower()
    key = LAB_ALIASES.get(key, key)
    if key not in LAB_SPECS:
        raise DataError(f"unknown lab {name!r}; known labs: {', '.join(LAB_SPECS)}")
    return key


def _unit(unit: str, lab: str) -> tuple[str, float]:
    key = str(unit).strip().lower()
    for old, new in _UNIT_SPELLINGS:
        key = key.replace(old, new)
    if key not in UNITS:
        raise DataError(f"unknown unit {unit!r} for lab {lab}; canonical unit is {LAB_UNITS[lab]}")
    return UNITS[key]


def _to_amount(value, dimension: str, spec: LabSpec):
    """Base-unit value of ``dimension`` -> mol/L, or None when the analyte has no bridge."""
    if dimension == "amount":
        return value
    if dimension == "mass" and spec.molar_mass:
        return value / spec.molar_mass
    if dimension == "charge" and spec.valence:
        return value / spec.valence
    return None


def _from_amount(value, dimension: str, spec: LabSpec):
    if dimension == "amount":
        return value
    if dimension == "mass" and spec.molar_mass:
        return value * spec.molar_mass
    if dimension == "charge" and spec.valence:
        return value * spec.valence
    return None


def convert(name: str, value, unit: str, to_unit: str | None = None):
    """Convert ``value`` (a number or array) of lab ``name`` from ``unit`` to ``to_unit``
    (default: the canonical unit). Raises :class:`DataError` for an unknown lab or unit, or units
    the analyte cannot be converted between (e.g. troponin in mmol/L)."""
    lab = canonical_lab_name(name)
    spec = LAB_SPECS[lab]
    target = spec.unit if to_unit is None else to_unit
    dim_from, factor_from = _unit(unit, lab)
    dim_to, factor_to = _unit(target, lab)
    base = np.asarray(value, dtype=float) * factor_from
    if dim_from != dim_to:
        amount = _to_amount(base, dim_from, spec)
        base = None if amount is None else _from_amount(amount, dim_to, spec)
        if base is None:
            raise DataError(f"cannot convert {lab} from {unit} to {target}")
    out = base / factor_to
    return float(out) if out.ndim == 0 else out


def to_canonical(name: str, value, unit: str):
    """``value`` of lab ``name`` in ``unit`` -> the canonical unit (:data:`LAB_UNITS`)."""
    return convert(name, value, unit)


# ---------------------------------------------------------------------------------------------
# CKD-EPI 2021 (race-free) creatinine equation


def _ckd_epi_constants(age, male):
    male = np.asarray(male, bool)
    kappa = np.where(male, 0.9, 0.7)  # mg/dL
    alpha = np.where(male, -0.302, -0.241)
    scale = 142.0 * 0.9938 ** np.asarray(age, float) * np.where(male, 1.0, 1.012)
    return kappa, alpha, scale


def ckd_epi_2021(creatinine_umol, age, male):
    """eGFR (mL/min/1.73 m2) from serum creatinine (umol/L), age (years) and sex: CKD-EPI 2021."""
    kappa, alpha, scale = _ckd_epi_constants(age, male)
    ratio = convert("creatinine", creatinine_umol, "umol/L", "mg/dL") / kappa
    return scale * np.minimum(ratio, 1.0) ** alpha * np.maximum(ratio, 1.0) ** -1.200


def creatinine_from_egfr(egfr, age, male):
    """Serum creatinine (umol/L) that gives ``egfr`` under CKD-EPI 2021: the exact inverse."""
    kappa, alpha, scale = _ckd_epi_constants(age, male)
    g = np.asarray(egfr, float) / scale
    ratio = np.where(g >= 1.0, g ** (1.0 / alpha), g ** (-1.0 / 1.200))  # creatinine below / above kappa
    return convert("creatinine", ratio * kappa, "mg/dL")


# ---------------------------------------------------------------------------------------------
# simulation

HAEMOLYSIS_RATE = 0.03
NOT_ORDERED_FACTOR = 3.0  # cardiac biomarkers without a clinical reason: not ordered at this x missing_rate
EARLY_PRESENTER_RATE = 0.05  # acute ischaemia sampled before troponin has risen


def _relu(x):
    return np.maximum(x, 0.0)


def _heart_failure(pop: Population) -> np.ndarray:
    return (pop.lvef < 40.0) | pop.cardiomyopathy


def _natriuretic_peptides(pop: Population, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """True NT-proBNP and BNP (pg/mL)."""
    n = len(pop)
    log_nt = (
        np.log(60.0)
        + 0.028 * (pop.age - 55.0)
        - 0.25 * pop.male
        + 0.065 * _relu(60.0 - pop.lvef)
        + 0.07 * _relu(45.0 - pop.lvef)
        + 0.9 * pop.af
        + 0.025 * _relu(60.0 - pop.egfr)
        + 0.5 * (pop.valve > 0)
        + 0.7 * pop.valve_severe
        + 0.35 * pop.lvh
        + 0.5 * pop.ischaemia
        + 0.2 * pop.anaemia
        + rng.normal(0.0, 0.5, n)
    )
    log_ratio = np.log(6.5) + 0.008 * _relu(60.0 - pop.egfr) + rng.normal(0.0, 0.12, n)
    return np.exp(log_nt), np.exp(log_nt - log_ratio)


def _troponin(pop: Population, rng: np.random.Generator) -> np.ndarray:
    """True hs-TnT (ng/L): chronic baseline plus acute injury in ischaemia."""
    n = len(pop)
    log_base = (
        np.log(5.0)
        + 0.025 * (pop.age - 55.0)
        + 0.35 * pop.male
        + 0.025 * _relu(60.0 - pop.egfr)
        + 0.35 * pop.lvh
        + 0.25 * pop.mi
        + 0.02 * _relu(50.0 - pop.lvef)
        + 0.2 * pop.af
        + 0.5 * ((pop.valve == 1) & pop.valve_severe)
        + rng.normal(0.0, 0.4, n)
    )
    early = rng.random(n) < EARLY_PRESENTER_RATE
    injury = np.exp(np.where(early, rng.normal(np.log(15.0), 0.5, n), rng.normal(np.log(350.0), 1.1, n)))
    return np.exp(log_base) + pop.ischaemia * injury


def _chemistry(pop: Population, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """True sodium, glucose, LDL and CRP."""
    n = len(pop)
    sodium = rng.normal(139.5, 2.2, n) - 0.08 * _relu(45.0 - pop.lvef) - 0.03 * _relu(pop.age - 70.0)
    diabetes_logit = -2.6 + 0.04 * (pop.age - 55.0) + 0.6 * pop.mi + 0.5 * pop.ckd + 0.4 * pop.lvh
    diabetes = rng.random(n) < 1.0 / (1.0 + np.exp(-diabetes_logit))
    glucose = np.exp(
        np.where(diabetes, rng.normal(np.log(8.5), 0.3, n), rng.normal(np.log(5.2), 0.12, n))
        + 0.004 * (pop.age - 55.0)
        + 0.2 * pop.ischaemia
    )
    # statins (LDL x ~0.6): most patients after an MI, and many others for primary prevention
    statin_p = np.where(pop.mi, 0.8, np.clip(0.1 + 0.008 * (pop.age - 45.0) + 0.15 * diabetes, 0.05, 0.6))
    statin = rng.random(n) < statin_p
    ldl = rng.normal(3.1, 0.85, n).clip(0.8, 7.5) * np.where(statin, rng.normal(0.6, 0.08, n), 1.0)
    log_crp = (
        np.log(1.8)
        + 0.01 * (pop.age - 55.0)
        + 1.6 * pop.ischaemia
        + 0.5 * _heart_failure(pop)
        + 0.3 * pop.af
        + 0.3 * pop.ckd
        + rng.normal(0.0, 1.0, n)
    )
    return {"sodium": sodium.clip(118.0, 152.0), "glucose": glucose, "ldl": ldl, "crp": np.exp(log_crp)}


def _measure(name: str, true: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """CV-based log-normal measurement error, assay range and reporting precision."""
    spec = LAB_SPECS[name]
    value = true * np.exp(spec.cv * rng.standard_normal(true.shape))
    return report(name, value)


def report(name: str, value: np.ndarray) -> np.ndarray:
    """Clamp ``value`` (canonical unit) to the assay range and round it as the lab reports it."""
    spec = LAB_SPECS[name]
    if spec.low is not None:
        value = np.clip(value, spec.low, spec.high)
    return np.round(value, spec.decimals)


def _missing_mask(pop: Population, rng: np.random.Generator, missing_rate: float) -> np.ndarray:
    """[n, n_labs] True where a value is missing (see the module docstring)."""
    n = len(pop)
    names = list(LAB_SPECS)
    missing = rng.random((n, len(names))) < missing_rate
    not_ordered = min(1.0, NOT_ORDERED_FACTOR * missing_rate)
    draws = rng.random((n, 2))
    no_troponin = ~pop.ischaemia & (draws[:, 0] < not_ordered)
    no_peptides = ~_heart_failure(pop) & (draws[:, 1] < not_ordered)
    missing[:, names.index("troponin_t_hs")] |= no_troponin
    missing[:, names.index("nt_probnp")] |= no_peptides
    missing[:, names.index("bnp")] |= no_peptides
    missing[:, names.index("egfr")] = missing[:, names.index("creatinine")]
    return missing


def true_labs(pop: Population, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Every analyte's true value in canonical units, biological variation included, before what
    measuring adds (assay error, haemolysis, reporting precision, assay limits, missing values).
    :func:`sample_labs` draws these first from its ``rng``, so the same generator state gives the
    true values behind a measured panel (what the oracle ceilings of :mod:`cardiodistill.evaluate.ceilings` read)."""
    nt_probnp, bnp = _natriuretic_peptides(pop, rng)
    troponin = _troponin(pop, rng)
    return {
        "nt_probnp": nt_probnp,
        "bnp": bnp,
        "troponin_t_hs": troponin,
        "potassium": pop.potassium,
        "creatinine": creatinine_from_egfr(pop.egfr, pop.age, pop.male),
        "egfr": pop.egfr,
        "haemoglobin": pop.haemoglobin,
        **_chemistry(pop, rng),
    }


def sample_labs(pop: Population, rng: np.random.Generator, *, missing_rate: float = 0.08) -> pd.DataFrame:
    """One blood panel per patient: float32 columns :data:`LAB_UNITS` (canonical units), NaN where
    missing, indexed by ``pop.patient_id``. Deterministic given ``rng``."""
    if not 0.0 <= missing_rate <= 1.0:
        raise ValueError(f"missing_rate must be in [0, 1], got {missing_rate}")
    n = len(pop)
    true = true_labs(pop, rng)
    haemolysed = rng.random(n) < HAEMOLYSIS_RATE
    true["potassium"] = true["potassium"] + haemolysed * (0.3 + rng.exponential(0.5, n))
    measured = {name: _measure(name, true[name], rng) for name in LAB_SPECS if name != "egfr"}
    measured["egfr"] = report("egfr", ckd_epi_2021(measured["creatinine"], pop.age, pop.male))
    values = np.stack([measured[name] for name in LAB_SPECS], axis=1)
    values[_missing_mask(pop, rng, missing_rate)] = np.nan
    index = pd.Index(np.asarray(pop.patient_id), name="patient_id")
    return pd.DataFrame(values.astype(np.float32), index=index, columns=list(LAB_SPECS))
