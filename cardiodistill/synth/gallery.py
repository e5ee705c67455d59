"""A gallery of simulated patients, one per condition, for judging realism by eye.

Each figure shows the 12-lead ECG on paper and the echo at end-diastole and end-systole of the
same heartbeats. Patients are drawn from the population model and picked so that each shows one
condition on its own (a normal-looking background), so the figure shows what that condition does.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..config import SynthConfig
from ..records import EcgRecord
from ..signals.leads import LEADS_12
from .ecg import render_12lead, sample_ecg_params
from .echo import render_echo
from .population import Population, sample_population
from .rhythm import sample_beats

_FLAGS = ("mi", "cardiomyopathy", "lvh", "af", "ischaemia", "hyperkalaemia", "anaemia", "ckd")


def _no_flags(pop: Population, keep: str | None = None) -> np.ndarray:
    """Patients with condition ``keep`` (if given) and none of the other boolean conditions."""
    ok = np.ones(len(pop), bool) if keep is None else getattr(pop, keep).copy()
    for flag in _FLAGS:
        if flag != keep:
            ok &= ~getattr(pop, flag)
    return ok


def _only(pop: Population, keep: str | None = None) -> np.ndarray:
    """Patients with ``keep`` and no other condition (bundle branch block and valve disease count too)."""
    return _no_flags(pop, keep) & (pop.bbb == 0) & (pop.valve == 0)


CONDITIONS: dict[str, tuple[str, Callable[[Population], np.ndarray]]] = {
    "normal": ("Normal: sinus rhythm, LVEF normal", lambda p: _only(p) & (p.lvef > 58) & (p.heart_rate < 80)),
    "anterior_mi": ("Prior anterior MI: Q waves V1-V4, apical hypokinesis", lambda p: _only(p, "mi") & (p.mi_territory == 1)),
    "inferior_mi": ("Prior inferior MI: Q waves II, III, aVF", lambda p: _only(p, "mi") & (p.mi_territory == 2)),
    "lateral_mi": ("Prior lateral MI: Q waves I, aVL, V5-V6", lambda p: _only(p, "mi") & (p.mi_territory == 3)),
    "ischaemia": ("Acute anterior ischaemia: ST elevation", lambda p: _only(p, "ischaemia") & (p.ischaemia_territory == 1)),
    "lvh": ("LV hypertrophy: high voltage, strain, thick walls", lambda p: _only(p, "lvh") & (p.wall_thickness > 14)),
    "lbbb": ("Left bundle branch block", lambda p: (p.bbb == 1) & _no_flags(p)),
    "rbbb": ("Right bundle branch block", lambda p: (p.bbb == 2) & _no_flags(p)),
    "af": ("Atrial fibrillation: no P waves, irregular RR", lambda p: _only(p, "af")),
    "hyperkalaemia": ("Hyperkalaemia: peaked T waves", lambda p: _only(p, "hyperkalaemia") & (p.potassium > 6.5)),
    "cardiomyopathy": ("Dilated cardiomyopathy: LVEF < 35 %", lambda p: _only(p, "cardiomyopathy") & (p.lvef < 35)),
    "valve": ("Severe mitral regurgitation: a large LA (broad P) on the ECG, the valve on echo",
              lambda p: (p.valve == 2) & p.valve_severe & _no_flags(p)),
    "aortic_stenosis": ("Severe aortic stenosis: thick walls, so high voltage (strain in some)",
                        lambda p: (p.valve == 1) & p.valve_severe & _no_flags(p) & (p.wall_thickness > 14)),
}


def pick_examples(seed: int = 0, pool: int = 40000) -> tuple[Population, list[str]]:
    """One patient per entry of :data:`CONDITIONS` from a large drawn population."""
    cfg = SynthConfig()
    pop = sample_population(pool, cfg.prevalence, np.random.default_rng(seed))
    chosen, names = [], []
    for name, (_, select) in CONDITIONS.items():
        hits = np.flatnonzero(select(pop))
        if len(hits):
            chosen.append(hits[0])
            names.append(name)
    return pop.take(np.asarray(chosen)), names


def render_gallery(out_dir: str | Path, seed: int = 0, cfg: SynthConfig | None = None) -> list[Path]:
    """Write one PNG per condition into ``out_dir``; return their paths."""
    from ..viz import _plt, plot_ecg_paper, plot_echo_frames

    plt = _plt()
    cfg = cfg or SynthConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pop, names = pick_examples(seed)
    rng = np.random.default_rng(seed)
    beats = sample_beats(pop, cfg.ecg.duration_s, rng)
    params = sample_ecg_params(pop, rng)
    ecg = render_12lead(pop, beats, params, cfg.ecg.fs, rng, noise=0.5, resolution_uv=cfg.ecg.resolution_uv)
    start = np.full(len(pop), 1.0)
    echo = render_echo(pop, beats, rng, start_s=start, size=cfg.echo.size, fps=cfg.echo.fps, duration_s=cfg.echo.duration_s)
    paths = []
    for i, name in enumerate(names):
        fig = plt.figure(figsize=(15, 6.2))
        grid = fig.add_gridspec(2, 4, width_ratios=[1, 1, 1, 1.05], wspace=0.05, hspace=0.15)
        ax = fig.add_subplot(grid[:, :3])
        title = (f"{CONDITIONS[name][0]} | {pop.age[i]:.0f} y {'M' if pop.male[i] else 'F'}, HR {pop.heart_rate[i]:.0f}, "
                 f"QRS {pop.qrs_ms[i]:.0f} ms, LVEF {pop.lvef[i]:.0f} %, K {pop.potassium[i]:.1f}")
        plot_ecg_paper(EcgRecord(ecg[i], cfg.ecg.fs, LEADS_12), ax=ax, title=title)
        ed, es = echo.ed_frames[i], echo.es_frames[i]
        ed_i = int(ed[0]) if len(ed) else 0
        es_after = es[es > ed_i]
        es_i = int(es_after[0]) if len(es_after) else int(np.argmin(echo.lv_area_px[i]))
        plot_echo_frames(echo.frames[i], [ed_i, es_i], ["end-diastole", "end-systole"],
                         [fig.add_subplot(grid[0, 3]), fig.add_subplot(grid[1, 3])])
        path = out_dir / f"sim_{name}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    return paths
