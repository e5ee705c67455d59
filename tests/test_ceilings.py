"""The noise-free oracle of evaluate/ceilings.py: same patients as the cohort, deterministic, and
its ceilings where the simulator's design puts them."""

from __future__ import annotations

import numpy as np
import pytest

from cardiodistill.config import SynthConfig, load_config
from cardiodistill.evaluate.ceilings import (
    ceiling_table_markdown,
    measure_ceilings,
    oracle_ceilings,
    oracle_features,
    oracle_synth_config,
    true_labs,
)
from cardiodistill.lab_units import LAB_UNITS
from cardiodistill.synth.cohort import generate_chunk
from cardiodistill.synth.labs import LAB_SPECS

# 300 patients, more bundle branch blocks than the default 7 % so that LBBB and RBBB have enough positives
COHORT = ["synth.patients=300", "synth.seed=11", "synth.chunk_size=100", "synth.prevalence.bbb=0.2"]
FAST = {"folds": 4, "bootstrap": 50, "seed": 0}


@pytest.fixture(scope="module")
def features():
    return oracle_features(load_config("quick", COHORT).synth)


@pytest.fixture(scope="module")
def ceilings(features):
    def measure(labels: list[str], modalities: list[str]) -> dict:
        results = measure_ceilings(features, labels=labels, modalities=modalities, **FAST)
        return {(label, m): a["auc"] for label, e in results["labels"].items() for m, a in e["auroc"].items()}

    return measure


def test_same_patients_and_true_values_behind_the_measured_ones():
    cfg = SynthConfig(patients=64, seed=5)
    noisy = generate_chunk(cfg.model_copy(update={"echo": cfg.echo.model_copy(update={"enabled": False})}), 1)
    clean = generate_chunk(oracle_synth_config(cfg), 1)
    assert clean.labels.equals(noisy.labels) and np.array_equal(clean.pop.lvef, noisy.pop.lvef)
    # the clean 12-lead is the noisy one without its noise: same beats, far less power in the difference
    diff = noisy.ecg - clean.ecg
    assert np.mean(clean.ecg**2) > 4 * np.mean((diff - diff.mean(-1, keepdims=True)) ** 2)
    # the true analytes are the ones the lab simulator measured (assay CV only, where reported in range)
    truth = dict(zip(sorted(LAB_UNITS), true_labs(clean.pop, cfg, 1).T))
    for name in ("nt_probnp", "troponin_t_hs", "sodium", "glucose", "crp", "haemoglobin"):
        value = noisy.labs[name].to_numpy(float)
        true = np.exp(truth[name]) if name in ("nt_probnp", "troponin_t_hs", "glucose", "crp") else truth[name]
        spec = LAB_SPECS[name]
        ok = np.isfinite(value) & (value > spec.low) & (value < spec.high)
        tolerance = 4 * spec.cv + 0.51 * 10.0**-spec.decimals / true[ok]  # assay error, then rounding
        assert ok.sum() >= 8 and np.mean(np.abs(np.log(value[ok] / true[ok])) < tolerance) > 0.9, name


def test_deterministic(features):
    a = measure_ceilings(features, labels=["dx_af"], modalities=["mobile1", "labs"], **FAST)
    b = measure_ceilings(features, labels=["dx_af"], modalities=["mobile1", "labs"], **FAST)
    assert a == b and a["labels"]["dx_af"]["auroc"]["mobile1"]["ci_low"] <= a["labels"]["dx_af"]["auroc"]["mobile1"]["auc"]


def test_conduction_and_rhythm_near_one_on_the_12_lead(ceilings):
    auc = ceilings(["dx_lbbb", "dx_rbbb", "dx_af"], ["ecg12"])
    assert min(auc.values()) >= 0.97, auc


def test_valve_disease_is_an_echo_finding(ceilings):
    auc = ceilings(["dx_valve_disease"], ["ecg12", "mobile1", "echo"])
    # the ECG sees valve disease only through what the lesion does to the heart (aortic stenosis
    # thickens the wall, mitral regurgitation dilates the LA) and through shared risk factors; the
    # echo renders the valve itself
    assert auc[("dx_valve_disease", "echo")] >= 0.97
    assert max(auc[("dx_valve_disease", "ecg12")], auc[("dx_valve_disease", "mobile1")]) <= 0.82
    assert auc[("dx_valve_disease", "echo")] - auc[("dx_valve_disease", "ecg12")] >= 0.15, auc


def test_labs_carry_anaemia_and_ckd(ceilings):
    auc = ceilings(["dx_anaemia", "dx_ckd"], ["labs", "mobile1"])
    assert auc[("dx_anaemia", "labs")] >= 0.97 and auc[("dx_ckd", "labs")] >= 0.97
    assert auc[("dx_ckd", "mobile1")] < auc[("dx_ckd", "labs")] - 0.1, auc


def test_table_shows_the_probe_beside_the_oracle():
    results = oracle_ceilings(load_config("quick", ["synth.patients=120", "synth.seed=2", "synth.chunk_size=60"]),
                              labels=["dx_lvh", "dx_lbbb"], modalities=["echo", "mobile6"], folds=3, bootstrap=20)
    probes = {"labels": {"dx_lvh": {"auroc": {"echo": {"auc": 0.5}}}}}
    table = ceiling_table_markdown(results, probes)
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if line.startswith("| dx_")}
    assert "| label | positives | 6-lead handheld | echo |" in table
    assert "(probe 0.50)" in rows["dx_lvh"] and "probe" not in rows["dx_lbbb"]
    assert results["labels"]["dx_lbbb"].get("note") or "n/a" not in rows["dx_lbbb"]


# ---------------------------------------------------------------------------------------------
# calibration: on the docs' cohort (quick preset, seed 7, 1,500 patients), each oracle ceiling that
# has a published counterpart lands inside its published range (docs/simulator.md, "Calibration")


@pytest.fixture(scope="module")
def docs_cohort_features():
    return oracle_features(load_config("quick", ["synth.patients=1500", "synth.seed=7"]).synth)


def test_ecg_ceilings_land_in_the_published_ranges(docs_cohort_features):
    from cardiodistill.evaluate.ceilings import PUBLISHED

    labels = sorted({label for label, _ in PUBLISHED})
    modalities = sorted({m for _, m in PUBLISHED})
    results = measure_ceilings(docs_cohort_features, labels=labels, modalities=modalities, folds=5, bootstrap=20, seed=0)
    measured = {key: results["labels"][key[0]]["auroc"][key[1]]["auc"] for key in PUBLISHED}
    print({f"{label}/{m}": auc for (label, m), auc in measured.items()})
    outside = {key: (auc, (PUBLISHED[key].low, PUBLISHED[key].high)) for key, auc in measured.items()
               if not PUBLISHED[key].low <= auc <= PUBLISHED[key].high}
    assert not outside, outside
    # the handheld lead carries less than the 12-lead, but most of it
    assert 0.0 < measured[("dx_reduced_ef", "ecg12")] - measured[("dx_reduced_ef", "mobile1")] < 0.1


def test_notes_carry_the_diagnoses_well_but_not_exactly(docs_cohort_features):
    labels = ["dx_mi", "dx_valve_disease", "dx_ischaemia", "dx_af"]
    results = measure_ceilings(docs_cohort_features, labels=labels, modalities=["notes"], folds=5, bootstrap=20, seed=0)
    auc = {label: results["labels"][label]["auroc"]["notes"]["auc"] for label in labels}
    # the calls of a good reader (AF and acute ischaemia, with the troponin quoted, are hard to miss),
    # but never the label table: the note states what was seen, with misses, false calls and hedges
    assert all(0.85 < a < 0.999 for a in auc.values()), auc
    assert auc["dx_mi"] < 0.98 and auc["dx_valve_disease"] < 0.98, auc
