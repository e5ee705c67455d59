import numpy as np
import pytest

from cardiodistill.config import PrevalenceConfig
from cardiodistill.synth.labels import make_labels, triage_criteria
from cardiodistill.synth.population import sample_population
from cardiodistill.synth.rhythm import sample_beats

N = 20000


@pytest.fixture(scope="module")
def pop():
    return sample_population(N, PrevalenceConfig(), np.random.default_rng(0))


@pytest.mark.parametrize("name", ["male", "mi", "cardiomyopathy", "lvh", "af", "bbb", "ischaemia", "hyperkalaemia", "ckd", "anaemia", "valve"])
def test_prevalence_matches_config(pop, name):
    expected = getattr(PrevalenceConfig(), name)
    observed = {"bbb": pop.bbb > 0, "valve": pop.valve > 0}.get(name, getattr(pop, name))
    tolerance = 4 * np.sqrt(expected * (1 - expected) / N)  # 4 binomial standard errors
    assert abs(observed.mean() - expected) < tolerance


def test_configured_prevalences_are_honoured():
    prev = PrevalenceConfig(af=0.4, mi=0.02, hyperkalaemia=0.0)
    p = sample_population(N, prev, np.random.default_rng(1))
    assert abs(p.af.mean() - 0.4) < 0.015
    assert abs(p.mi.mean() - 0.02) < 0.005
    assert not p.hyperkalaemia.any()


def test_realistic_correlations(pop):
    def risk_ratio(condition, given):
        return condition[given].mean() / condition[~given].mean()

    assert risk_ratio(pop.hyperkalaemia, pop.ckd) > 3  # renal factor
    assert risk_ratio(pop.mi, pop.age > 70) > 2  # MI rises with age
    assert risk_ratio(pop.af, pop.age > 70) > 1.5
    assert np.all(pop.egfr[pop.ckd] < 60) and np.all(pop.egfr[~pop.ckd] >= 60)
    assert np.all(pop.potassium[pop.hyperkalaemia] >= 5.5) and np.all(pop.potassium[~pop.hyperkalaemia] < 5.5)


def test_lv_physiology(pop):
    assert np.allclose(pop.lvesv, pop.lvedv * (1 - pop.lvef / 100))
    # infarct size by territory: anterior infarcts lower LVEF most
    normal = pop.lvef[~pop.mi & ~pop.cardiomyopathy & (pop.bbb == 0) & ~pop.af & ~pop.ischaemia]
    anterior = pop.lvef[(pop.mi_territory == 1) & ~pop.cardiomyopathy]
    inferior = pop.lvef[(pop.mi_territory == 2) & ~pop.cardiomyopathy]
    assert 58 < normal.mean() < 64
    assert anterior.mean() < inferior.mean() < normal.mean()
    assert pop.lvef[pop.cardiomyopathy].mean() < 35
    assert pop.lvedv[pop.lvef < 35].mean() > 1.2 * pop.lvedv[pop.lvef > 55].mean()  # dilated when failing
    assert pop.wall_thickness[pop.lvh].mean() - pop.wall_thickness[~pop.lvh].mean() > 3.5
    assert pop.qrs_ms[pop.bbb > 0].min() >= 120 and np.median(pop.qrs_ms[pop.bbb == 0]) < 100


def test_same_seed_same_population():
    a = sample_population(500, PrevalenceConfig(), np.random.default_rng(3))
    b = sample_population(500, PrevalenceConfig(), np.random.default_rng(3))
    assert a.to_frame().equals(b.to_frame())


def test_triage_rule_and_label_noise(pop):
    labels = make_labels(pop, np.random.default_rng(0), label_noise=0.1)
    crit = triage_criteria(pop)
    assert (labels["triage_true"].to_numpy() == crit.any(axis=1).to_numpy()).all()
    assert ((pop.lvef < 40) <= labels["triage_true"].to_numpy().astype(bool)).all()
    flipped = (labels["triage"] != labels["triage_true"]).mean()
    assert abs(flipped - 0.1) < 0.01
    assert 0.15 < labels["triage_true"].mean() < 0.4  # a triage task with a workable prevalence
    clean = make_labels(pop, np.random.default_rng(0), label_noise=0.0)
    assert (clean["triage"] == clean["triage_true"]).all()


def test_beats_match_latent_rate_and_af_is_irregular(pop):
    sub = pop.take(slice(0, 2000))
    beats = sample_beats(sub, 10.0, np.random.default_rng(0))
    hr = beats.mean_heart_rate()
    assert np.median(np.abs(hr - sub.heart_rate)) < 2.0
    cv = np.nanstd(beats.rr, axis=1) / np.nanmean(beats.rr, axis=1)
    assert np.median(cv[sub.af]) > 3 * np.median(cv[~sub.af])
    # end-systole (T end) follows the R-peak by a physiological QT-derived delay
    delay = (beats.t_end - beats.r)[beats.valid]
    assert 0.2 < delay.min() and delay.max() < 0.6

