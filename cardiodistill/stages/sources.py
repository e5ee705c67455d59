"""The simulator plugged into the data layer as the source kind ``"synth"``.

The data layer reads ECG and video sources through readers registered by kind
(:func:`~cardiodistill.data.ecg_windows.register_ecg_source`,
:func:`~cardiodistill.data.video_clips.register_video_source`) and never imports the simulator;
the stage jobs sit above both and wire :mod:`cardiodistill.synth.sources` in here. Importing
:mod:`cardiodistill.stages` runs this module.
"""

from __future__ import annotations

from collections.abc import Iterator

from ..data.ecg_windows import EcgSource, Loader, register_ecg_source
from ..data.video_clips import LABEL_COLUMNS, VideoItem, VideoSource, register_video_source
from ..synth.sources import ecg_records, echo_clips

__all__ = ["synth_ecg_source", "synth_video_source"]


def synth_ecg_source(source: EcgSource) -> Iterator[tuple[str, Loader]]:
    """The ECGs of ``source.patients`` simulated patients (``source.seed``), generated in memory."""
    for record_id, record in ecg_records(source.patients, source.seed):
        yield record_id, lambda r=record: r


def synth_video_source(source: VideoSource) -> Iterator[VideoItem]:
    """The echo clips of ``source.patients`` simulated patients (``source.seed``), with their labels."""
    for record_id, clip, labels in echo_clips(source.patients, source.seed, LABEL_COLUMNS):
        yield VideoItem(record_id, lambda c=clip: c, record_id, labels)


register_ecg_source("synth", synth_ecg_source)
register_video_source("synth", synth_video_source)
