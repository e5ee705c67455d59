"""Simulated handheld ECG windows, prepared as a student reads them: for int8 calibration and benchmarks.

The deployment code (:mod:`cardiodistill.deploy`) takes windows as arrays and never imports the
simulator; a command or a benchmark script that has no real recordings at hand draws them here and
passes them in.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..config import SynthConfig
from ..errors import ConfigError
from ..signals.leads import LIMB_LEADS
from .ecg import render_mobile, sample_ecg_params
from .population import sample_population
from .rhythm import sample_beats

__all__ = ["simulated_windows"]


def simulated_windows(n: int, leads: Sequence[str], fs: float, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` simulated handheld ECG windows ``[n, len(leads), round(fs * seconds)]`` float32, per-lead z-scored.

    Patients from the default population (every condition at its prevalence), recorded by the six-lead
    handheld device at ``fs`` Hz; ``leads`` are limb lead names in the order the model reads them.
    """
    unknown = [lead for lead in leads if lead not in LIMB_LEADS]
    if unknown or not leads:
        raise ConfigError(f"simulated windows have the limb leads {list(LIMB_LEADS)}, asked for {list(leads)}")
    cfg = SynthConfig()
    pop = sample_population(n, cfg.prevalence, rng)
    beats = sample_beats(pop, seconds, rng)
    params = sample_ecg_params(pop, rng)
    ecg = render_mobile(pop, beats, params, fs, rng, device="six_lead", noise=cfg.mobile.noise,
                        resolution_uv=cfg.mobile.resolution_uv)
    x = ecg[:, [LIMB_LEADS.index(lead) for lead in leads], : int(round(fs * seconds))]
    x = x - x.mean(axis=-1, keepdims=True)
    return (x / np.maximum(x.std(axis=-1, keepdims=True), 1e-6)).astype(np.float32)
