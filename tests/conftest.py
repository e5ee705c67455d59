"""Fixtures shared across the test suite (session-scoped: built once per run).

* ``simulated_ecg(seconds, fs, seed)`` - a simulated 12-lead ECG ``[12, seconds * fs]`` in mV
  (:data:`~cardiodistill.signals.LEADS_12` order), normal conduction, memoised per argument set;
* ``small_cohort`` - a 40-patient simulated cohort folder (quick preset, 48-pixel echo, splits
  0.5 / 0.25 / 0.25), written once; tests that alter files copy it first (``cohort_copy``);
* ``one_torch_thread`` - torch on one thread for a test module
  (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import cardiodistill.stages  # noqa: F401  (registers the simulator as the "synth" data source, as every job does)
from cardiodistill.config import SynthConfig, load_config
from cardiodistill.synth.cohort import write_cohort
from cardiodistill.synth.ecg import render_12lead, sample_ecg_params
from cardiodistill.synth.population import sample_population
from cardiodistill.synth.rhythm import sample_beats

SMALL_COHORT = ["synth.patients=40", "synth.chunk_size=40", "synth.echo.size=48",
                "synth.splits.train=0.5", "synth.splits.val=0.25", "synth.splits.test=0.25"]


@functools.lru_cache(maxsize=None)
def _simulated_ecg(seconds: float, fs: float, seed: int, noise: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pop = sample_population(1, SynthConfig().prevalence.model_copy(update={"bbb": 0.0}), rng)
    beats = sample_beats(pop, seconds, rng)
    signal = render_12lead(pop, beats, sample_ecg_params(pop, rng), fs, rng, noise=noise)[0]
    signal.flags.writeable = False  # shared between tests: copy before changing it
    return signal


@pytest.fixture(scope="session")
def simulated_ecg():
    """``simulated_ecg(seconds, fs, seed=0, noise=0.3)`` -> read-only float32 ``[12, seconds * fs]`` mV."""

    def make(seconds: float, fs: float, seed: int = 0, noise: float = 0.3) -> np.ndarray:
        return _simulated_ecg(float(seconds), float(fs), int(seed), float(noise))

    return make


@pytest.fixture(scope="session")
def small_cohort(tmp_path_factory) -> Path:
    """A 40-patient simulated cohort folder, written once per test run (read-only by convention)."""
    out = tmp_path_factory.mktemp("small-cohort")
    write_cohort(load_config("quick", SMALL_COHORT), out)
    return out


@pytest.fixture
def cohort_copy(small_cohort, tmp_path) -> Path:
    """A private copy of :func:`small_cohort` that a test may alter."""
    return Path(shutil.copytree(small_cohort, tmp_path / "cohort"))


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch on one thread while a module runs: tiny matmuls are fastest there, and on a busy 2-core
    runner OpenMP threads made them up to 60x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


_BLOCK_TRAINING_STACK = """
import importlib.abc, sys

class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("torch", "lightning", "sklearn"):
            raise ImportError("blocked " + name)

sys.meta_path.insert(0, _Block())
"""


@pytest.fixture
def run_without_torch():
    """``run(script, *args) -> CompletedProcess``: ``script`` in a child Python in which importing
    torch, lightning or scikit-learn fails, and which asserts at exit that none was loaded - the
    check that an edge path needs none of them. (A meta-path blocker, not ``sys.modules["torch"] =
    None``: SciPy's array-API helpers look torch up in sys.modules and fail on None.)"""

    def run(script: str, *args: str) -> subprocess.CompletedProcess:
        check = '\nassert not {"torch", "lightning", "sklearn"} & set(sys.modules), sorted(sys.modules)\n'
        return subprocess.run([sys.executable, "-c", _BLOCK_TRAINING_STACK + script + check, *args], check=False,
                              capture_output=True, text=True, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
                              timeout=300)

    return run
