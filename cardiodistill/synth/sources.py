"""The simulator as a source of unlabelled ECGs and labelled echo clips, generated in memory (no files).

These generators know nothing of caches: :mod:`cardiodistill.stages` registers them with the data
layer as the source kind ``"synth"`` (:func:`cardiodistill.data.ecg_windows.register_ecg_source`,
:func:`cardiodistill.data.video_clips.register_video_source`), so the data layer never imports the
simulator: it is one data source among others.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from ..config import SynthConfig
from ..records import EcgRecord, VideoClip
from ..signals.leads import LEADS_12
from .cohort import iter_chunks
from .ecg import MOBILE_LEADS

__all__ = ["ecg_records", "echo_clips"]


def ecg_records(patients: int, seed: int) -> Iterator[tuple[str, EcgRecord]]:
    """``(record id, record)``: the 12-lead ECG and the handheld ECG of each of ``patients`` simulated
    patients (``seed``), in patient order; ids ``synth<seed>/<patient>/12lead`` and ``.../mobile``."""
    cfg = SynthConfig(patients=patients, seed=seed)
    cfg.echo.enabled = False
    mobile_leads = MOBILE_LEADS[cfg.mobile.device]
    for chunk in iter_chunks(cfg):
        for i, pid in enumerate(chunk.pop.patient_id):
            yield f"synth{seed}/{pid}/12lead", EcgRecord(chunk.ecg[i], cfg.ecg.fs, LEADS_12, f"synth:{pid}")
            if chunk.mobile is not None:
                yield (f"synth{seed}/{pid}/mobile",
                       EcgRecord(chunk.mobile[i], cfg.mobile.fs, mobile_leads, f"synth:{pid}:mobile"))


def echo_clips(patients: int, seed: int, label_columns) -> Iterator[tuple[str, VideoClip, dict[str, Any]]]:
    """``(record id, clip, labels)``: the apical four-chamber clip of each of ``patients`` simulated patients
    (``seed``) with the labels named in ``label_columns`` (and every ``dx_*``), heart rate, age and sex."""
    cfg = SynthConfig(patients=patients, seed=seed)
    cfg.mobile.enabled = False
    for chunk in iter_chunks(cfg):
        labels = chunk.labels.assign(heart_rate=chunk.pop.heart_rate, age=chunk.pop.age,
                                     sex=np.where(chunk.pop.male, "M", "F"))
        for i, pid in enumerate(chunk.pop.patient_id):
            clip = VideoClip(chunk.echo.frames[i], chunk.echo.fps, view=cfg.echo.views[0], source=f"synth:{pid}",
                             meta={"heart_rate": float(chunk.pop.heart_rate[i])})
            row = labels.iloc[i]
            yield (f"synth{seed}/{pid}", clip,
                   {k: row[k] for k in row.index if k in label_columns or k.startswith("dx_")})
