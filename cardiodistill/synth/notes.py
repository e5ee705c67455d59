"""Cardiologist-style free-text notes: one per patient, summarising the ECG, the echo and (when
given) the blood panel, ending with an impression and plan.

A note is written the way a clinician dictates one, from the latent state
(:class:`~cardiodistill.synth.population.Population`) seen through a reader:

* **findings** are *slots* (rhythm, AV conduction, QRS, QTc, axis, Q waves, ST segments, T waves,
  ECG voltage, LV size and function, regional wall motion, wall thickness, left atrium, valves,
  natriuretic peptide, troponin, potassium, haemoglobin, renal function, plus an introduction and
  past history). Each slot has a few phrasings per case (e.g. ``af``, ``sinus``), abbreviation
  variants (``AF`` / ``atrial fibrillation`` / ``AFib``, ``LV`` / ``left ventricle``, ``RWMA``),
  coronary-territory wording variety (``anteroseptal``, ``LAD territory``, ``V1-V4``) and explicit
  negations of normal findings (``not in AF``, ``no RWMA``, ``no significant valve disease``);
* **measurements are a reader's**: LVEF is visually estimated with an error of up to +-5 % and
  reported rounded to 5 % (or as a 5 %-wide range), then graded by the ASE 2015 sex-specific
  categories (normal >= 52 % men / 54 % women, mildly impaired down to 41 %, moderately 30-40 %,
  severely < 30 %). LV dilatation (end-diastolic volume) and LV hypertrophy (septal thickness)
  follow the ASE sex-specific cut-offs too; intervals are machine-measured with a few ms of error;
* **structure varies**: three layouts (headed lines, prose, telegraphic), ECG or echo first,
  findings shuffled a little within a section, varied section headers;
* **omissions**: each finding slot is left out with probability ``omission_rate`` (the impression
  never is); **typos**: a note gets a letter swapped, dropped or doubled in one word with
  probability ``typo_rate``, and a second typo with the same probability.

Two styles (``style``):

``"clinical"`` (the default): the note is what one clinician *saw*, not the label table. Each
finding is called with the sensitivity and false-positive rate of its reader (:data:`READER`):
ECG voltage criteria find about half of echo-defined LVH (sensitivity 20-60 %, specificity > 90 %:
Pewsner et al., BMJ 2007), old infarcts without Q waves are missed, a moderate valve lesion is
missed or graded a step off more often than a severe one, peaked T waves are seen more often the
higher the potassium, and a few findings are called that are not there. About one call in five
(and most of the wrong ones) is hedged ("possible", "?", "cannot exclude", "borderline"). The echo
is not yet done for ``NO_ECHO_RATE`` of the notes (its section is absent and the note says so),
the past history misses some of what the patient has, and the stated reason for referral is
the findings' own only most of the time. The impression follows the calls, so it inherits their
errors; the triage decision is made later, from all the evidence.

``"exact"``: every finding is stated as the simulator knows it (the behaviour before the clinical
style existed), useful to check that a text model can read a note at all.

Lab values in the note come from ``labs`` (as measured, canonical units) when given; without labs
the note only mentions what a clinician knows without bloods (a history of CKD, known anaemia, a
query hyperkalaemia from peaked T waves).

All randomness is drawn as fixed-shape arrays over the batch in a fixed order, so the notes are
deterministic given the generator; the per-patient work is string formatting only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial

import numpy as np
import pandas as pd

from .labs import LAB_SPECS
from .population import TERRITORY_PROBS, Population

#: Words and phrases that negate a following finding in these notes (for later text models).
NEGATION_CUES = ("no", "not", "not in", "without", "no evidence of", "no significant", "absent", "normal", "nil")

TYPO_RATE = 0.05

# --------------------------------------------------------------------------------------------
# wording

_TERRITORY_ADJ = {
    "anterior": ("anterior", "anteroseptal", "anteroapical"),
    "inferior": ("inferior", "inferoposterior", "inferoseptal"),
    "lateral": ("lateral", "posterolateral", "high lateral"),
}
_TERRITORY_ARTERY = {
    "anterior": ("LAD", "left anterior descending"),
    "inferior": ("RCA", "right coronary"),
    "lateral": ("LCx", "circumflex"),
}
_TERRITORY_LEADS = {
    "anterior": ("V1-V4", "V1-V3", "V2-V4"),
    "inferior": ("II, III and aVF", "II, III, aVF"),
    "lateral": ("I, aVL, V5-V6", "I and aVL"),
}
_TERRITORY_PLAIN = {name: (name,) for name in _TERRITORY_ADJ}
_TERRITORY_NAMES = ("none", "anterior", "inferior", "lateral")  # index = population territory code

_WORDS = {
    "af": ("AF", "AF", "atrial fibrillation", "AFib"),
    "LV": ("LV", "LV", "left ventricle"),
    "RWMA": ("RWMA", "regional wall-motion abnormality"),
    "lbbb": ("LBBB", "left bundle branch block"),
    "rbbb": ("RBBB", "right bundle branch block"),
}

_FUNCTION_WORDS = {
    "normal": ("normal", "preserved", "good"),
    "mild": ("mildly impaired", "mildly reduced"),
    "moderate": ("moderately impaired", "moderately reduced"),
    "severe": ("severely impaired", "severely reduced", "poor"),
}
_SIZE_WORDS = {
    "normal": ("normal in size", "not dilated", "of normal size"),
    "mild": ("mildly dilated",),
    "moderate": ("moderately dilated",),
    "severe": ("severely dilated", "markedly dilated"),
}
_SEVERITY_ORDER = ("normal", "mild", "moderate", "severe")

# --------------------------------------------------------------------------------------------
# slots: section, default position within the section, phrasings per case ("" says nothing)


@dataclass(frozen=True)
class _Slot:
    section: str
    position: float
    banks: Mapping[str, Sequence[str]]


_SLOTS: dict[str, _Slot] = {
    "intro": _Slot("intro", 0, {"any": ("{who}, {why}", "{who} - {why}", "{who}")}),
    "history": _Slot("intro", 10, {
        "none": ("no significant past medical history", "no known cardiac history", "no prior cardiac history"),
        "some": ("background of {history}", "PMH: {history}", "known {history}"),
    }),
    "rhythm": _Slot("ecg", 0, {
        "af": (
            "{af} with a ventricular rate of {hr} bpm",
            "{af}, ventricular rate {hr}/min",
            "{af} with {af_response} ventricular response ({hr} bpm)",
            "irregularly irregular rhythm in keeping with {af}, rate {hr} bpm",
            "rhythm is {af} at {hr} bpm",
        ),
        "sinus": (
            "{sinus} at {hr} bpm, not in {af}",
            "{sinus}, rate {hr}/min; no {af}",
            "regular {sinus} ({hr} bpm), no evidence of {af}",
            "{sinus} {hr} bpm, no atrial fibrillation",
            "{sinus} {hr} bpm",
        ),
    }),
    "av": _Slot("ecg", 1, {
        "af": ("",),
        "block": (
            "first-degree AV block (PR {pr} ms)",
            "1st degree AVB, PR {pr} ms",
            "prolonged PR interval ({pr} ms)",
        ),
        "normal": ("PR {pr} ms", "PR interval normal ({pr} ms)", "", "normal AV conduction"),
    }),
    "qrs": _Slot("ecg", 2, {
        "lbbb": ("{lbbb}, QRS {qrs} ms", "broad QRS ({qrs} ms), {lbbb} morphology", "complete {lbbb} (QRSd {qrs} ms)"),
        "rbbb": ("{rbbb}, QRS {qrs} ms", "broad QRS ({qrs} ms), {rbbb} morphology", "complete {rbbb} (QRSd {qrs} ms)"),
        "ivcd": (
            "non-specific intraventricular conduction delay, QRS {qrs} ms",
            "broad QRS {qrs} ms without typical bundle branch block pattern",
            "IVCD (QRS {qrs} ms)",
        ),
        "normal": (
            "QRS {qrs} ms, no bundle branch block",
            "normal QRS duration ({qrs} ms)",
            "narrow QRS complexes",
            "no BBB; QRSd {qrs} ms",
        ),
    }),
    "qt": _Slot("ecg", 3, {
        "long": ("QTc prolonged at {qtc} ms", "long QTc ({qtc} ms)"),
        "normal": ("QTc {qtc} ms", "normal QTc ({qtc} ms)", "", ""),
    }),
    "axis": _Slot("ecg", 4, {
        "left": ("left axis deviation", "left axis deviation ({axis} degrees)"),
        "right": ("right axis deviation", "right axis deviation ({axis} degrees)"),
        "normal": ("normal axis", "axis normal ({axis} degrees)", "", ""),
    }),
    "q_waves": _Slot("ecg", 5, {
        "none": ("no pathological Q waves", "no Q waves", "no pathological Q waves or poor R-wave progression"),
        "mi": (
            "Q waves in {mi_leads} ({mi_adj} infarct)",
            "pathological Q waves {mi_leads} consistent with old {mi_adj} MI",
            "QS complexes in {mi_leads}",
            "{mi_plain} Q waves",
        ),
    }),
    "st": _Slot("ecg", 6, {
        "none": (
            "no acute ST changes",
            "no ischaemic ST-T changes",
            "ST segments isoelectric",
            "no ST elevation or depression",
        ),
        "ischaemia": (
            "ST elevation in {isch_leads} ({isch_adj} STEMI)",
            "{isch_adj} ST elevation with reciprocal ST depression",
            "acute ST elevation {isch_leads}, {isch_artery} territory",
            "hyperacute T waves and ST elevation in the {isch_adj} leads",
            "ST elevation in {isch_leads} consistent with acute {isch_adj} ischaemia",
        ),
    }),
    "t_waves": _Slot("ecg", 7, {
        "peaked": ("peaked T waves{k_text}", "tall tented T waves{k_text}", "peaked T waves - ?hyperkalaemia{k_text}"),
        "normal": ("", "", "", "T waves unremarkable"),
    }),
    "voltage": _Slot("ecg", 8, {
        "lvh": (
            "LVH by voltage criteria",
            "voltage criteria for LVH with strain pattern",
            "Sokolow-Lyon voltage criteria for LVH met",
            "increased QRS voltages (LVH)",
        ),
        "normal": ("", "", "no voltage criteria for LVH"),
    }),
    "lv": _Slot("echo", 0, {
        "any": (
            "{LV} {size}{edv_text} with {func} systolic function, EF {ef}%",
            "{func} LV systolic function (LVEF ~{ef}%); {LV} {size}{edv_text}",
            "LVEF {ef_lo}-{ef_hi}%, {func} LV function; {LV} {size}",
            "{LV} {size}{edv_text}. Ejection fraction estimated at {ef}% ({func})",
            "EF {ef}% by visual estimate, {func} systolic function, {LV} {size}",
            "biplane EF {ef}%; {func} LV function",
        ),
    }),
    "wall_motion": _Slot("echo", 1, {
        "none": (
            "no regional wall-motion abnormality",
            "no {RWMA}",
            "no regional wall motion abnormalities",
            "normal regional wall motion",
        ),
        "global": (
            "global hypokinesis, no {RWMA}",
            "globally hypokinetic {LV} without regional variation",
            "diffuse hypokinesia, no regional wall-motion abnormality",
        ),
        "mi": (
            "{wall_motion} of the {mi_adj} wall ({mi_artery} territory)",
            "{RWMA} in the {mi_artery} territory",
            "{mi_adj} {wall_motion}",
            "{wall_motion} of the {mi_adj} segments",
        ),
    }),
    "walls": _Slot("echo", 2, {
        "normal": (
            "normal wall thickness (IVSd {ivs} mm)",
            "no LVH",
            "LV wall thickness normal, IVS {ivs} mm",
            "no left ventricular hypertrophy",
        ),
        "lvh": (
            "{lvh_grade} concentric LVH (IVSd {ivs} mm)",
            "{lvh_grade} left ventricular hypertrophy, septum {ivs} mm",
            "LVH ({lvh_grade}), IVS {ivs} mm",
            "IVSd {ivs} mm - {lvh_grade} LVH",
        ),
    }),
    "atrium": _Slot("echo", 3, {
        "dilated": ("{la_grade} dilated left atrium", "LA {la_grade} dilated", "dilated LA"),
        "normal": ("normal LA size", "", "LA not dilated"),
    }),
    "valves": _Slot("echo", 4, {
        "none": (
            "no significant valve disease",
            "valves structurally normal",
            "no significant valvular stenosis or regurgitation",
            "trivial MR only, no significant valve disease",
        ),
        "as": (
            "{valve_grade} aortic stenosis (Vmax {vmax} m/s, mean gradient {gradient} mmHg)",
            "{valve_grade} AS, MPG {gradient} mmHg, AVA {ava} cm2",
            "calcified aortic valve with {valve_grade} stenosis (AVA {ava} cm2)",
            "AV: {valve_grade} stenosis, Vmax {vmax} m/s",
        ),
        "mr": (
            "{valve_grade} mitral regurgitation",
            "{valve_grade} MR (EROA {eroa} cm2)",
            "MV: {valve_grade} regurgitation, {jet} jet",
            "{valve_grade} MR with a {jet} jet",
        ),
    }),
    "peptide": _Slot("labs", 0, {
        "nt": ("NT-proBNP {nt} pg/mL", "NTproBNP {nt}", "NT-proBNP {nt} ng/L"),
        "bnp": ("BNP {bnp} pg/mL", "BNP {bnp}"),
        "missing": ("",),
    }),
    "troponin": _Slot("labs", 1, {
        "raised": ("hs-TnT {trop} ng/L (raised)", "hsTnT {trop}", "troponin T {trop} ng/L (elevated)"),
        "normal": ("hs-TnT {trop} ng/L", "hsTnT {trop}", "troponin T {trop} ng/L (normal)"),
        "missing": ("",),
    }),
    "potassium": _Slot("labs", 2, {"any": ("K {k} mmol/L", "K+ {k}", "potassium {k}"), "missing": ("",)}),
    "haemoglobin": _Slot("labs", 3, {
        "anaemia": ("Hb {hb} g/dL (anaemia)", "anaemic (Hb {hb})", "Hb low at {hb} g/dL"),
        "normal": ("Hb {hb}", "no anaemia (Hb {hb} g/dL)", "Hb {hb} g/dL"),
        "missing": ("",),
    }),
    "renal": _Slot("labs", 4, {
        "ckd": (
            "eGFR {egfr} (CKD G{stage})",
            "creatinine {creat} umol/L, eGFR {egfr}",
            "impaired renal function (eGFR {egfr})",
        ),
        "normal": ("eGFR {egfr}", "normal renal function (eGFR {egfr})", "creat {creat}, eGFR {egfr}"),
        "missing": ("",),
    }),
}
_SLOT_NAMES = tuple(_SLOTS)

# section headers per layout: headed lines, prose, telegraphic
_HEADERS = {
    "ecg": (("ECG:", "12-lead ECG:", "ECG -"), ("The ECG shows", "12-lead ECG shows", "ECG shows"), ("ECG -", "ECG:")),
    "echo": (("Echo:", "TTE:", "Echocardiogram:"), ("Echo shows", "TTE demonstrates", "On echo,"), ("TTE -", "Echo:")),
    "labs": (("Labs:", "Bloods:", "Results:"), ("Bloods:", "Labs show"), ("Bloods -", "Labs:")),
}
_IMPRESSION_FORMS = (
    "Impression: {p}. Plan: {plan}.",
    "Summary: {p} - {plan}.",
    "Imp: {p}. Rx: {plan}.",
    "Assessment: {p}. Recommend {plan}.",
)

# impression problems in priority order: (name, phrasings, plans)
_PROBLEMS = (
    ("acs", ("acute coronary syndrome ({isch_adj})", "acute {isch_adj} STEMI", "STEMI, {isch_artery} territory"),
     ("urgent coronary angiography", "primary PCI pathway", "activate the cath lab")),
    ("hyperkalaemia", ("hyperkalaemia{k_paren}", "hyperkalaemia with ECG changes"),
     ("treat hyperkalaemia per protocol and repeat K", "stop ACEi/MRA, recheck U&E today")),
    ("hfref", ("HFrEF (EF {ef}%){hf_cause}", "{func} LV systolic function{hf_cause}", "HF with reduced EF{hf_cause}"),
     ("optimise GDMT", "start heart-failure therapy (ARNI, beta-blocker, MRA, SGLT2i)")),
    ("hfmref", ("HFmrEF (EF {ef}%)", "{func} LV function{hf_cause}"),
     ("start SGLT2i and review in clinic", "repeat echo in 6 months")),
    ("crt", ("{bbb_name} with EF {ef}%",), ("consider CRT",)),
    ("severe_as", ("severe AS", "severe aortic stenosis"), ("refer to the heart team for AVR/TAVI",)),
    ("severe_mr", ("severe MR", "severe mitral regurgitation"), ("refer for mitral valve intervention",)),
    ("af", ("{af}", "{af} ({af_response} rate)"),
     ("anticoagulation per CHA2DS2-VASc and rate control", "start DOAC; rate control")),
    ("moderate_valve", ("moderate {valve_name}",), ("repeat echo in 12 months",)),
    ("old_mi", ("old {mi_adj} MI", "ischaemic heart disease"), ("secondary prevention",)),
    ("lvh", ("LVH", "hypertensive heart disease"), ("optimise BP control",)),
    ("bbb", ("{bbb_name}", "isolated {bbb_name}"), ("no specific action for the {bbb_name}", "annual ECG")),
    ("anaemia", ("anaemia",), ("investigate anaemia",)),
    ("ckd", ("CKD", "impaired renal function"), ("monitor renal function",)),
    ("normal", ("structurally normal heart", "normal ECG and echo", "no significant cardiac abnormality"),
     ("no cardiac follow-up needed", "reassure and discharge", "discharge to GP")),
)
_MAX_PROBLEMS = 3


# --------------------------------------------------------------------------------------------
# helpers


def _choose(options: Sequence[str], u: np.ndarray) -> np.ndarray:
    """``options[floor(u * len(options))]`` per patient; ``u`` uniform in [0, 1)."""
    index = np.minimum((u * len(options)).astype(int), len(options) - 1)
    return np.asarray(options, dtype=object)[index]


def _choose_by_case(case: np.ndarray, banks: Mapping[str, Sequence[str]], u: np.ndarray) -> np.ndarray:
    out = np.full(len(case), "", dtype=object)
    for name, options in banks.items():
        mask = case == name
        out[mask] = _choose(options, u[mask])
    return out


def _by_territory(code: np.ndarray, table: Mapping[str, Sequence[str]], u: np.ndarray) -> np.ndarray:
    return _choose_by_case(np.asarray(_TERRITORY_NAMES)[code], table, u)


def _fmt(values: np.ndarray, decimals: int = 0) -> np.ndarray:
    """Numbers -> strings as a report prints them; NaN -> ''."""
    return np.array(["" if np.isnan(v) else f"{v:.{decimals}f}" for v in np.asarray(values, float)], dtype=object)


def _affix(prefix: str, values: np.ndarray, suffix: str = "", where: np.ndarray | bool = True) -> np.ndarray:
    """``prefix + value + suffix`` where ``value`` is non-empty and ``where`` holds, else ''."""
    where = np.broadcast_to(where, len(values))
    return np.array([f"{prefix}{v}{suffix}" if v and w else "" for v, w in zip(values, where)], dtype=object)


def _grade(value: np.ndarray, cuts_male: Sequence[float], cuts_female: Sequence[float], male: np.ndarray) -> np.ndarray:
    """Number of ascending sex-specific cut-offs that ``value`` exceeds."""
    cuts = np.where(male[:, None], np.asarray(cuts_male), np.asarray(cuts_female))
    return (value[:, None] > cuts).sum(axis=1)


# --------------------------------------------------------------------------------------------
# what the clinician reads


_NOTE_LABS = ("nt_probnp", "bnp", "troponin_t_hs", "potassium", "haemoglobin", "egfr", "creatinine")

NOTE_STYLES = ("clinical", "exact")
NO_ECHO_RATE = 0.1  # clinical style: notes written before the echo was done
#: clinical style, per finding: (sensitivity, false-positive rate) of the clinician's call
READER = {
    "af": (0.96, 0.01),
    "bbb": (0.95, 0.01),
    "mi": (0.80, 0.04),  # Q waves / RWMA / history together; small non-Q infarcts are missed
    "ischaemia": (0.85, 0.03),
    "lvh_voltage": (0.50, 0.06),  # ECG voltage criteria against echo LVH
    "valve_moderate": (0.85, 0.04),  # false positives are called moderate
    "valve_severe": (0.97, 0.0),
    "history_ckd": (0.80, 0.02),
    "history_anaemia": (0.70, 0.02),
}
VALVE_REGRADE = 0.15  # chance a detected lesion is graded one step off (moderate <-> severe)
HEDGE_TRUE, HEDGE_FALSE = 0.2, 0.6  # chance a correct / a wrong positive call is hedged
_HEDGES = ("possible {}", "?{}", "{} (borderline)", "cannot exclude {}", "probable {}", "query {}")
_ECHO_SLOTS = ("lv", "wall_motion", "walls", "atrium", "valves")
_NO_ECHO = ("echo awaited", "TTE requested", "echo not yet performed", "await echocardiogram")
# which slot's call each impression problem rests on (a hedged slot hedges the problem too)
_PROBLEM_SLOT = {"acs": "st", "hyperkalaemia": "t_waves", "af": "rhythm", "old_mi": "q_waves", "lvh": "voltage",
                 "bbb": "qrs", "severe_as": "valves", "severe_mr": "valves", "moderate_valve": "valves"}


@dataclass
class _Reading:
    """What the clinician has in front of them, per patient: measurements as reported, their ASE
    grades (index into ``_SEVERITY_ORDER``) and the measured labs (NaN: missing or not given)."""

    measured: dict[str, np.ndarray]
    ef_grade: np.ndarray
    size_grade: np.ndarray
    lvh_grade: np.ndarray
    labs: dict[str, np.ndarray]
    labs_given: bool

    @property
    def hb_low(self) -> np.ndarray:
        return self.labs["haemoglobin"] < np.where(self.male, 13.0, 12.0)  # WHO anaemia

    @property
    def male(self) -> np.ndarray:
        return self.measured["male"]


def _measure(pop: Population, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Intervals with machine error, a visual EF estimate (+-5 %), sizes, valve numbers."""
    n = len(pop)
    raw_ef = np.clip(pop.lvef + np.clip(rng.normal(0.0, 2.5, n), -5.0, 5.0), 10.0, 79.0)
    severe = pop.valve_severe
    vmax = np.where(severe, rng.uniform(4.0, 5.4, n), rng.uniform(3.0, 3.9, n))
    return {
        "male": np.asarray(pop.male, bool),
        "hr": np.round(pop.heart_rate + rng.normal(0.0, 2.0, n)),
        "pr": np.round(pop.pr_ms + rng.normal(0.0, 6.0, n)),
        "qrs": np.round(pop.qrs_ms + rng.normal(0.0, 4.0, n)),
        "qtc": np.round(pop.qtc_ms + rng.normal(0.0, 8.0, n)),
        "axis": np.round(pop.qrs_axis_deg + rng.normal(0.0, 5.0, n)),
        "ef": 5.0 * np.round(raw_ef / 5.0),
        "ef_lo": 5.0 * np.floor(raw_ef / 5.0),
        "edv": np.round(pop.lvedv * np.exp(rng.normal(0.0, 0.08, n))),
        "ivs": np.round(pop.wall_thickness + rng.normal(0.0, 0.6, n)),
        "vmax": vmax,
        "gradient": np.round(2.5 * vmax**2 * np.exp(rng.normal(0.0, 0.08, n))),  # mean gradient ~ 2.5 Vmax^2
        "ava": np.where(severe, rng.uniform(0.5, 0.95, n), rng.uniform(1.0, 1.5, n)),
        "eroa": np.where(severe, rng.uniform(0.40, 0.70, n), rng.uniform(0.20, 0.39, n)),
    }


def _read(pop: Population, labs: pd.DataFrame | None, rng: np.random.Generator) -> _Reading:
    m = _measure(pop, rng)
    male = m["male"]
    aligned = pd.DataFrame(index=pop.patient_id) if labs is None else labs.reindex(pd.Index(np.asarray(pop.patient_id)))
    lab = {name: aligned[name].to_numpy(float) if name in aligned else np.full(len(pop), np.nan) for name in _NOTE_LABS}
    return _Reading(
        measured=m,
        ef_grade=3 - _grade(m["ef"], (29.9, 40.9, 51.9), (29.9, 40.9, 53.9), male),  # EF in steps of 5 %
        size_grade=_grade(m["edv"], (150, 174, 200), (106, 120, 130), male),  # LVEDV, mL
        lvh_grade=_grade(m["ivs"], (10, 13, 16), (9, 12, 15), male),  # septum, mm
        labs=lab,
        labs_given=labs is not None,
    )


@dataclass
class _Calls:
    """What the note states: the population as the clinician called it (same fields, findings
    replaced by the calls), which slots are hedged ``[n, slots]``, and whether the echo was done."""

    seen: Population
    peaked: np.ndarray  # T waves called peaked (``seen.hyperkalaemia`` follows a measured K where there is one)
    hedged: np.ndarray
    echo_done: np.ndarray


def _call(rng: np.random.Generator, truth: np.ndarray, sensitivity: np.ndarray | float, false_rate: float):
    """(called, wrong) with the given sensitivity and false-positive rate; one uniform per patient."""
    u = rng.random(len(truth))
    called = np.where(truth, u < sensitivity, u < false_rate)
    return called, called & ~truth


def _perceive(pop: Population, rd: _Reading, rng: np.random.Generator, style: str) -> _Calls:
    """The clinician's calls (see the module docstring); ``"exact"`` calls the truth and draws nothing."""
    n = len(pop)
    if style == "exact":
        return _Calls(pop, pop.hyperkalaemia, np.zeros((n, len(_SLOT_NAMES)), bool), np.ones(n, bool))
    if style not in NOTE_STYLES:
        raise ValueError(f"unknown note style {style!r}; choose one of {', '.join(NOTE_STYLES)}")
    wrong: dict[str, np.ndarray] = {}
    af, wrong["rhythm"] = _call(rng, pop.af, *READER["af"])
    has_bbb, wrong["qrs"] = _call(rng, pop.bbb > 0, *READER["bbb"])
    bbb = np.where(has_bbb, np.where(pop.bbb > 0, pop.bbb, 1 + (rng.random(n) < 0.5)), 0).astype(np.int8)
    mi, wrong["q_waves"] = _call(rng, pop.mi, *READER["mi"])
    some_territory = (1 + rng.choice(3, size=n, p=TERRITORY_PROBS)).astype(np.int8)
    mi_territory = np.where(mi, np.where(pop.mi, pop.mi_territory, some_territory), 0).astype(np.int8)
    isch, wrong["st"] = _call(rng, pop.ischaemia, *READER["ischaemia"])
    isch_territory = np.where(isch, np.where(pop.ischaemia, pop.ischaemia_territory, some_territory), 0).astype(np.int8)
    # peaked T waves: the higher the potassium, the likelier they are seen; with a measured K the
    # clinician goes by the number
    k_seen = np.clip(0.35 + 0.5 * (pop.potassium - 5.5), 0.35, 0.95)
    peaked, wrong["t_waves"] = _call(rng, pop.hyperkalaemia, k_seen, 0.03)
    k = rd.labs["potassium"]
    hyperk = np.where(np.isfinite(k), k >= 5.5, peaked)
    lvh, wrong["voltage"] = _call(rng, pop.lvh, *READER["lvh_voltage"])
    # valves: detection depends on the grade; a detected lesion may be graded a step off
    severe_truth = (pop.valve > 0) & pop.valve_severe
    sens = np.where(severe_truth, READER["valve_severe"][0], READER["valve_moderate"][0])
    has_valve, wrong["valves"] = _call(rng, pop.valve > 0, sens, READER["valve_moderate"][1])
    regrade = rng.random(n) < VALVE_REGRADE
    ckd = np.where(rd.labs_given, pop.ckd, _call(rng, pop.ckd, *READER["history_ckd"])[0])
    anaemia = np.where(rd.labs_given, pop.anaemia, _call(rng, pop.anaemia, *READER["history_anaemia"])[0])
    echo_done = rng.random(n) >= NO_ECHO_RATE
    has_valve &= echo_done
    valve = np.where(has_valve, np.where(pop.valve > 0, pop.valve, 1 + (rng.random(n) < 0.5)), 0).astype(np.int8)
    valve_severe = has_valve & np.where(pop.valve > 0, severe_truth ^ regrade, False)
    wrong["valves"] |= has_valve & (pop.valve > 0) & regrade
    hedge_u = rng.random((n, len(_SLOT_NAMES)))

    seen = replace(pop, af=af, bbb=bbb, mi=mi, mi_territory=mi_territory, ischaemia=isch,
                   ischaemia_territory=isch_territory, hyperkalaemia=hyperk, lvh=lvh, valve=valve,
                   valve_severe=valve_severe, ckd=ckd, anaemia=anaemia,
                   cardiomyopathy=pop.cardiomyopathy & echo_done)
    positive = {"rhythm": af, "qrs": has_bbb, "q_waves": mi, "st": isch, "t_waves": peaked, "voltage": lvh,
                "valves": has_valve}
    hedged = np.zeros((n, len(_SLOT_NAMES)), bool)
    for slot, called in positive.items():
        j = _SLOT_NAMES.index(slot)
        hedged[:, j] = called & (hedge_u[:, j] < np.where(wrong[slot], HEDGE_FALSE, HEDGE_TRUE))
    return _Calls(seen, peaked, hedged, echo_done)


# --------------------------------------------------------------------------------------------
# template fields, slot cases and impression problems


def _ecg_fields(pop: Population, rd: _Reading, u) -> dict[str, np.ndarray]:
    m = rd.measured
    sinus = np.select([m["hr"] < 60, m["hr"] > 100], ["sinus bradycardia", "sinus tachycardia"], "")
    normal_rate = _choose(("sinus rhythm", "sinus rhythm", "SR", "normal sinus rhythm"), u())
    return {
        "hr": _fmt(m["hr"]),
        "pr": _fmt(m["pr"]),
        "qrs": _fmt(m["qrs"]),
        "qtc": _fmt(m["qtc"]),
        "axis": _fmt(m["axis"]),
        "af_response": np.where(m["hr"] > 110, "rapid", "controlled"),
        "sinus": np.where(sinus == "", normal_rate, sinus),
        "bbb_name": np.where(pop.bbb == 1, "LBBB", "RBBB"),
        "isch_adj": _by_territory(pop.ischaemia_territory, _TERRITORY_PLAIN, u()),
        "isch_artery": _by_territory(pop.ischaemia_territory, _TERRITORY_ARTERY, u()),
        "isch_leads": _by_territory(pop.ischaemia_territory, _TERRITORY_LEADS, u()),
        "mi_plain": _by_territory(pop.mi_territory, _TERRITORY_PLAIN, u()),
        "mi_leads": _by_territory(pop.mi_territory, _TERRITORY_LEADS, u()),
    }


def _echo_fields(pop: Population, rd: _Reading, u) -> dict[str, np.ndarray]:
    m = rd.measured
    grades = np.asarray(_SEVERITY_ORDER)
    akinetic = _choose(("akinesis", "akinesia"), u())
    hypokinetic = _choose(("hypokinesis", "hypokinesia"), u())
    return {
        "ef": _fmt(m["ef"]),
        "ef_lo": _fmt(m["ef_lo"]),
        "ef_hi": _fmt(m["ef_lo"] + 5.0),
        "func": _choose_by_case(grades[rd.ef_grade], _FUNCTION_WORDS, u()),
        "size": _choose_by_case(grades[rd.size_grade], _SIZE_WORDS, u()),
        "edv_text": _affix(" (EDV ", _fmt(m["edv"]), " mL)", where=(rd.size_grade > 0) & (u() < 0.5)),
        "ivs": _fmt(m["ivs"]),
        "lvh_grade": grades[rd.lvh_grade],
        "la_grade": np.where(pop.la_scale > 1.3, "moderately", "mildly"),
        "wall_motion": np.where(pop.lvef < 40, akinetic, hypokinetic),
        "mi_artery": _by_territory(pop.mi_territory, _TERRITORY_ARTERY, u()),
        "valve_grade": np.where(pop.valve_severe, "severe", "moderate"),
        "valve_name": np.where(pop.valve == 1, "AS", "MR"),
        "vmax": _fmt(m["vmax"], 1),
        "gradient": _fmt(m["gradient"]),
        "ava": _fmt(m["ava"], 1),
        "eroa": _fmt(m["eroa"], 2),
        "jet": _choose(("central", "eccentric", "posteriorly directed"), u()),
        "hf_cause": np.select([pop.mi, pop.cardiomyopathy], [", ischaemic cardiomyopathy", ", dilated cardiomyopathy"], ""),
    }


def _lab_fields(rd: _Reading) -> dict[str, np.ndarray]:
    lab = rd.labs
    floor = LAB_SPECS["troponin_t_hs"].low
    k = _fmt(lab["potassium"], 1)
    egfr = lab["egfr"]
    return {
        "nt": _fmt(lab["nt_probnp"]),
        "bnp": _fmt(lab["bnp"]),
        "trop": np.where(lab["troponin_t_hs"] <= floor, f"<{floor:.0f}", _fmt(lab["troponin_t_hs"])),
        "k": k,
        "k_text": _affix("; K ", k),
        "k_paren": _affix(" (K ", k, ")"),
        "hb": _fmt(lab["haemoglobin"], 1),
        "egfr": _fmt(egfr),
        "creat": _fmt(lab["creatinine"]),
        "stage": np.select([egfr >= 45, egfr >= 30, egfr >= 15], ["3a", "3b", "4"], "5"),
    }


def _story_fields(pop: Population, rd: _Reading, mi_adj: np.ndarray, mi_artery: np.ndarray, u) -> dict[str, np.ndarray]:
    """Who the patient is, why they came, and what is known from the history."""
    forms = _choose(("previous {} MI", "old {} STEMI ({})", "prior {} MI treated with PCI to the {}"), u())
    mi_hist = [form.format(adj, artery) for form, adj, artery in zip(forms, mi_adj, mi_artery)]
    ckd_hist = _choose(("CKD", "chronic kidney disease", "CKD stage 3-4"), u())
    anaemia_hist = "" if rd.labs_given else "anaemia"  # with labs, the Hb value says it
    history = [
        ", ".join(item for item, has in ((a, mi), (b, ckd), (anaemia_hist, an)) if has and item)
        for a, b, mi, ckd, an in zip(mi_hist, ckd_hist, pop.mi, pop.ckd, pop.anaemia)
    ]
    return {"who": _who(pop, u(), u()), "why": _indication(pop, u()), "history": np.asarray(history, dtype=object)}


def _fields(pop: Population, rd: _Reading, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Every value a template can name, per patient (str arrays)."""
    u = partial(rng.random, len(pop))  # one fresh uniform per patient, drawn in a fixed order
    words = {key: _choose(options, u()) for key, options in _WORDS.items()}
    mi_adj = _by_territory(pop.mi_territory, _TERRITORY_ADJ, u())
    ecg, echo = _ecg_fields(pop, rd, u), _echo_fields(pop, rd, u)
    story = _story_fields(pop, rd, mi_adj, echo["mi_artery"], u)
    return {**words, "mi_adj": mi_adj, **ecg, **echo, **_lab_fields(rd), **story}


def _cases(pop: Population, rd: _Reading, fields: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Which bank of phrasings each slot uses, per patient."""
    m, lab, n = rd.measured, rd.labs, len(pop)
    egfr = lab["egfr"]
    return {
        "intro": np.full(n, "any"),
        "history": np.where(fields["history"] != "", "some", "none"),
        "rhythm": np.where(pop.af, "af", "sinus"),
        "av": np.select([pop.af, m["pr"] > 200], ["af", "block"], "normal"),
        "qrs": np.select([pop.bbb == 1, pop.bbb == 2, m["qrs"] >= 120], ["lbbb", "rbbb", "ivcd"], "normal"),
        "qt": np.where(m["qtc"] > np.where(rd.male, 450, 470), "long", "normal"),
        "axis": np.select([m["axis"] < -30, m["axis"] > 90], ["left", "right"], "normal"),
        "q_waves": np.where(pop.mi, "mi", "none"),
        "st": np.where(pop.ischaemia, "ischaemia", "none"),
        "t_waves": np.where(pop.hyperkalaemia, "peaked", "normal"),
        "voltage": np.where(pop.lvh, "lvh", "normal"),
        "lv": np.full(n, "any"),
        "wall_motion": np.select([pop.mi, pop.cardiomyopathy], ["mi", "global"], "none"),
        "walls": np.where(rd.lvh_grade > 0, "lvh", "normal"),
        "atrium": np.where(pop.la_scale > 1.15, "dilated", "normal"),
        "valves": np.asarray(("none", "as", "mr"))[pop.valve],
        "peptide": np.select([lab["nt_probnp"] >= 0, lab["bnp"] >= 0], ["nt", "bnp"], "missing"),
        "troponin": np.select([lab["troponin_t_hs"] > 14, lab["troponin_t_hs"] >= 0], ["raised", "normal"], "missing"),
        "potassium": np.where(lab["potassium"] >= 0, "any", "missing"),
        "haemoglobin": np.select([rd.hb_low, lab["haemoglobin"] >= 0], ["anaemia", "normal"], "missing"),
        "renal": np.select([egfr < 60, egfr >= 60], ["ckd", "normal"], "missing"),
    }


def _problems(pop: Population, rd: _Reading, echo_done: np.ndarray) -> np.ndarray:
    """[n, len(_PROBLEMS)] bool: which impression problems apply, in priority order."""
    ef = np.where(echo_done, rd.measured["ef"], np.nan)  # no echo: the EF is not known
    found = {
        "acs": pop.ischaemia,
        "hyperkalaemia": pop.hyperkalaemia,
        "hfref": ef < 40,
        "hfmref": (ef >= 40) & (rd.ef_grade > 0),
        "crt": (pop.bbb == 1) & (ef <= 35),
        "severe_as": (pop.valve == 1) & pop.valve_severe,
        "severe_mr": (pop.valve == 2) & pop.valve_severe,
        "af": pop.af,
        "moderate_valve": (pop.valve > 0) & ~pop.valve_severe,
        "old_mi": pop.mi & ~(ef < 40),
        "lvh": echo_done & ((rd.lvh_grade >= 2) | ((rd.lvh_grade > 0) & pop.lvh)),
        "bbb": (pop.bbb > 0) & ~((pop.bbb == 1) & (ef <= 35)),
        "anaemia": rd.hb_low if rd.labs_given else pop.anaemia,
        "ckd": rd.labs["egfr"] < 60 if rd.labs_given else pop.ckd,
    }
    found["normal"] = ~np.any(np.stack(list(found.values())), axis=0)
    return np.stack([found[name] for name, _, _ in _PROBLEMS], axis=1)


def _who(pop: Population, u_form: np.ndarray, u_word: np.ndarray) -> np.ndarray:
    age = _fmt(pop.age)
    male = np.asarray(pop.male, bool)
    noun = np.where(male, _choose(("man", "gentleman", "male"), u_word), _choose(("woman", "lady", "female"), u_word))
    sex = np.where(male, "male", "female")
    forms = (
        [f"{a}-year-old {w}" for a, w in zip(age, noun)],
        [f"{a}{s[0].upper()}" for a, s in zip(age, sex)],
        [f"{a} y/o {s}" for a, s in zip(age, sex)],
    )
    return np.choose(np.minimum((u_form * 3).astype(int), 2), np.asarray(forms, dtype=object))


def _indication(pop: Population, u: np.ndarray) -> np.ndarray:
    case = np.select(
        [pop.ischaemia, (pop.lvef < 40) | pop.cardiomyopathy, pop.af, pop.valve > 0],
        ["chest pain", "breathless", "palpitations", "murmur"],
        "routine",
    )
    banks = {
        "chest pain": ("presenting with chest pain", "admitted with chest pain", "chest pain since this morning"),
        "breathless": ("referred with breathlessness", "SOB on exertion", "worsening exertional dyspnoea"),
        "palpitations": ("referred with palpitations", "palpitations"),
        "murmur": ("referred with a murmur", "murmur on auscultation"),
        "routine": ("routine review", "pre-operative assessment", "referred by GP", "cardiology clinic review"),
    }
    return _choose_by_case(case, banks, u)


# --------------------------------------------------------------------------------------------
# assembly


@dataclass
class _Layout:
    """Per-note randomness of the write-up, drawn for the whole batch at once."""

    pick: np.ndarray  # [n, slots] which phrasing
    omitted: np.ndarray  # [n, slots] bool
    order: np.ndarray  # [n, slots] sort key within a section
    style: np.ndarray  # [n] 0 headed lines, 1 prose, 2 telegraphic
    echo_first: np.ndarray  # [n] bool
    header: np.ndarray  # [n, 3] header choice for ecg, echo, labs
    impression: np.ndarray  # [n, 1 + 2 * problems]
    typo: np.ndarray  # [n, 2, 4] two candidate typos: word, kind, position, happens

    @classmethod
    def draw(cls, n: int, rng: np.random.Generator, omission_rate: float) -> _Layout:
        slots = len(_SLOT_NAMES)
        positions = np.array([_SLOTS[s].position for s in _SLOT_NAMES])
        return cls(
            pick=rng.random((n, slots)),
            omitted=rng.random((n, slots)) < omission_rate,
            order=positions + rng.normal(0.0, 0.7, (n, slots)),
            style=rng.integers(0, 3, n),
            echo_first=rng.random(n) < 0.4,
            header=rng.random((n, 3)),
            impression=rng.random((n, 1 + 2 * len(_PROBLEMS))),
            typo=rng.random((n, 2, 4)),
        )


_SECTIONS = ("intro", "ecg", "echo", "labs")


def _impression(fields: Mapping[str, str], present: np.ndarray, hedged: np.ndarray, u: np.ndarray,
                pending: str = "") -> str:
    """``present``, ``hedged``: bool per problem; ``u``: uniforms (form, then two per problem);
    ``pending``: a test still to do, added to the plan."""
    phrases, plans = [], []
    for j in np.flatnonzero(present)[:_MAX_PROBLEMS]:
        _, wordings, options = _PROBLEMS[j]
        phrase = wordings[int(u[1 + 2 * j] * len(wordings))].format_map(fields)
        phrases.append(f"possible {phrase}" if hedged[j] else phrase)
        plan = options[int(u[2 + 2 * j] * len(options))].format_map(fields)
        if plan not in plans:
            plans.append(plan)
    if pending:
        plans.append(pending)
    form = _IMPRESSION_FORMS[int(u[0] * len(_IMPRESSION_FORMS))]
    return form.format(p="; ".join(phrases), plan="; ".join(plans))


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def _section(clauses: list[str], section: str, style: int, header_u: float) -> str:
    if section == "intro":
        return ". ".join(_capitalise(c) for c in clauses) + "."
    headers = _HEADERS[section][style]
    header = headers[int(header_u * len(headers))]
    if section == "labs":
        return f"{header} {', '.join(clauses)}."
    if style == 0:
        return header + " " + ". ".join(_capitalise(c) for c in clauses) + "."
    if style == 1:  # prose: the header leads into the first clause
        return header + " " + clauses[0] + "." + "".join(" " + _capitalise(c) + "." for c in clauses[1:])
    return header + " " + "; ".join(clauses) + "."


_WORD = re.compile(r"[A-Za-z]{5,}")


def _typo(text: str, u: np.ndarray) -> str:
    """Swap two adjacent letters, drop one or double one, in one word of 5+ letters."""
    words = list(_WORD.finditer(text))
    if not words:
        return text
    word = words[int(u[0] * len(words))]
    i = word.start() + 1 + int(u[2] * (len(word.group()) - 2))  # never the first letter
    kind = int(u[1] * 3)
    if kind == 0:
        return text[:i] + text[i + 1] + text[i] + text[i + 2 :]
    if kind == 1:
        return text[:i] + text[i + 1 :]
    return text[:i] + text[i] + text[i:]


def _problem_hedges(calls: _Calls) -> np.ndarray:
    """[n, len(_PROBLEMS)] bool: the impression problems whose slot's call is hedged."""
    rests_on = [j for j, (name, _, _) in enumerate(_PROBLEMS) if name in _PROBLEM_SLOT]
    out = np.zeros((len(calls.hedged), len(_PROBLEMS)), bool)
    out[:, rests_on] = calls.hedged[:, [_SLOT_NAMES.index(_PROBLEM_SLOT[_PROBLEMS[j][0]]) for j in rests_on]]
    return out


def _write_one(record: Mapping[str, str], templates: np.ndarray, present: np.ndarray, problem_hedged: np.ndarray,
               calls: _Calls, lay: _Layout, i: int, typo_rate: float) -> str:
    grouped: dict[str, list[tuple[float, str]]] = {name: [] for name in _SECTIONS}
    hedge = lay.pick[i, ::-1]  # a second uniform per slot for the hedge's wording
    for j, slot in enumerate(_SLOT_NAMES):
        if templates[j] and not lay.omitted[i, j]:
            text = templates[j].format_map(record)
            if calls.hedged[i, j]:
                text = _HEDGES[int(hedge[j] * len(_HEDGES))].format(text)
            grouped[_SLOTS[slot].section].append((lay.order[i, j], text))
    order = ("intro", "echo", "ecg", "labs") if lay.echo_first[i] else _SECTIONS
    style = int(lay.style[i])
    parts = []
    for name in order:
        if grouped[name]:
            header_u = lay.header[i, max(_SECTIONS.index(name) - 1, 0)]
            parts.append(_section([text for _, text in sorted(grouped[name])], name, style, header_u))
    pending = "" if calls.echo_done[i] else _NO_ECHO[int(lay.header[i, 1] * len(_NO_ECHO))]
    parts.append(_impression(record, present, problem_hedged, lay.impression[i], pending))
    text = ("\n" if style == 0 else " ").join(parts)
    for t in range(lay.typo.shape[1]):
        if lay.typo[i, t, 3] < typo_rate:
            text = _typo(text, lay.typo[i, t])
    return text


def note_content(pop: Population, rng: np.random.Generator, *, labs: pd.DataFrame | None = None,
                 style: str = "clinical") -> pd.DataFrame:
    """What the notes :func:`write_notes` writes with the same ``rng`` state, before wording, omission
    and typos: the clinician's calls, the reported measurements (NaN when the echo is not done) and the
    quoted labs, one row per patient (numbers and 0/1). For the oracle of evaluate/ceilings.py."""
    reading = _read(pop, labs, rng)
    calls = _perceive(pop, reading, rng, style)
    seen, m = calls.seen, reading.measured
    echo = {key: np.where(calls.echo_done, m[key], np.nan) for key in ("ef", "edv", "ivs")}
    frame = {
        "af": seen.af, "lbbb": seen.bbb == 1, "rbbb": seen.bbb == 2, "mi": seen.mi,
        **{f"mi_{t}": seen.mi_territory == k for k, t in enumerate(_TERRITORY_NAMES) if k},
        "ischaemia": seen.ischaemia, "peaked_t": calls.peaked, "hyperkalaemia": seen.hyperkalaemia,
        "lvh_voltage": seen.lvh, "aortic_stenosis": seen.valve == 1, "mitral_regurgitation": seen.valve == 2,
        "valve_severe": seen.valve_severe, "cardiomyopathy": seen.cardiomyopathy, "ckd": seen.ckd,
        "anaemia": seen.anaemia, "echo_done": calls.echo_done, "hedged": calls.hedged.sum(axis=1),
        **{key: m[key] for key in ("hr", "pr", "qrs", "qtc", "axis")}, **echo,
        **{f"lab_{k}": v for k, v in reading.labs.items()},
    }
    return pd.DataFrame({k: np.asarray(v, float) for k, v in frame.items()}, index=np.asarray(pop.patient_id))


def write_notes(
    pop: Population,
    rng: np.random.Generator,
    *,
    omission_rate: float = 0.1,
    labs: pd.DataFrame | None = None,
    typo_rate: float = TYPO_RATE,
    style: str = "clinical",
) -> list[str]:
    """One cardiologist-style note per patient (see the module docstring). Deterministic given
    ``rng``; ``labs`` is a :func:`~cardiodistill.synth.labs.sample_labs` frame indexed by
    patient id; ``typo_rate`` is the chance of each of up to two typos per note; ``style`` is
    ``"clinical"`` (a reader's calls, with errors and hedging) or ``"exact"`` (the truth)."""
    if not 0.0 <= omission_rate <= 1.0:
        raise ValueError(f"omission_rate must be in [0, 1], got {omission_rate}")
    n = len(pop)
    if n == 0:
        return []
    reading = _read(pop, labs, rng)
    calls = _perceive(pop, reading, rng, style)
    fields = _fields(calls.seen, reading, rng)
    cases = _cases(calls.seen, reading, fields)
    cases["t_waves"] = np.where(calls.peaked, "peaked", "normal")
    present = _problems(calls.seen, reading, calls.echo_done)
    lay = _Layout.draw(n, rng, omission_rate)
    lay.omitted[:, [_SLOT_NAMES.index(s) for s in _ECHO_SLOTS]] |= ~calls.echo_done[:, None]
    templates = np.stack(
        [_choose_by_case(cases[s], _SLOTS[s].banks, lay.pick[:, j]) for j, s in enumerate(_SLOT_NAMES)], axis=1
    )
    keys = list(fields)
    records = (dict(zip(keys, values)) for values in zip(*(fields[k] for k in keys)))
    hedged = _problem_hedges(calls)
    return [_write_one(record, templates[i], present[i], hedged[i], calls, lay, i, typo_rate)
            for i, record in enumerate(records)]
