"""The data contract: what every reader returns and every model input is built from.

These types sit below every other package (``signals``, ``io``, ``data``, ``synth`` all use them)
and depend on nothing but NumPy, so readers and writers can share them without import cycles.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from .errors import DataError, LeadError, SamplingRateError

#: The band (Hz) every ECG model input is band-passed to unless its input spec says otherwise (the band of the
#: PTB-XL subset, and where a 100 Hz model has information): the one default of the package, part of the
#: data contract (:class:`cardiodistill.signals.InputSpec`), also importable from ``cardiodistill.signals.filters``.
DEFAULT_BAND: tuple[float, float] = (0.5, 40.0)


@dataclass(frozen=True)
class EcgRecord:
    """An ECG: ``signal`` float32 ``[n_leads, n_samples]`` in millivolts at ``fs`` Hz.

    ``leads`` names the rows with canonical names (I, II, III, aVR, aVL, aVF, V1-V6).
    ``source`` is the file it came from, if any, so later errors can name it.
    """

    signal: np.ndarray
    fs: float
    leads: tuple[str, ...]
    source: str | None = None
    meta: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        sig = np.asarray(self.signal)
        where = self.source
        if sig.ndim != 2:
            raise DataError(f"ECG signal must be [n_leads, n_samples], got shape {sig.shape}", where)
        if sig.shape[0] != len(self.leads):
            raise LeadError(f"{sig.shape[0]} signal rows but {len(self.leads)} lead names", where)
        if len(set(self.leads)) != len(self.leads):
            raise LeadError(f"duplicate lead names {self.leads}", where)
        if not np.isfinite(self.fs) or self.fs <= 0:
            raise SamplingRateError(f"sampling rate must be a positive number, got {self.fs!r}", where)
        object.__setattr__(self, "signal", sig.astype(np.float32, copy=False))
        object.__setattr__(self, "leads", tuple(self.leads))
        object.__setattr__(self, "fs", float(self.fs))

    @property
    def n_samples(self) -> int:
        return int(self.signal.shape[1])

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.fs

    def lead(self, name: str) -> np.ndarray:
        try:
            return self.signal[self.leads.index(name)]
        except ValueError:
            raise LeadError(f"record has no lead {name!r} (it has {', '.join(self.leads)})", self.source) from None


@dataclass(frozen=True)
class VideoClip:
    """A grayscale cine loop: ``frames`` uint8 ``[T, H, W]`` at ``fps`` frames per second."""

    frames: np.ndarray
    fps: float
    view: str = "a4c"
    modality: Literal["echo", "cmr"] = "echo"
    source: str | None = None
    meta: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        frames = np.asarray(self.frames)
        if frames.ndim != 3:
            raise DataError(f"video frames must be [T, H, W], got shape {frames.shape}", self.source)
        if frames.dtype != np.uint8:
            raise DataError(f"video frames must be uint8, got {frames.dtype}", self.source)
        if not np.isfinite(self.fps) or self.fps <= 0:
            raise SamplingRateError(f"frame rate must be a positive number, got {self.fps!r}", self.source)
        if self.modality not in ("echo", "cmr"):
            raise DataError(f"modality must be 'echo' or 'cmr', got {self.modality!r}", self.source)
        object.__setattr__(self, "frames", frames)
        object.__setattr__(self, "fps", float(self.fps))

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])
