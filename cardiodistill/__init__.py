"""cardiodistill: distil 12-lead ECG, echo, labs and notes into a small mobile-ECG triage model."""

__version__ = "0.1.0"

from .errors import CardiodistillError, ConfigError, DataError  # noqa: E402
from .records import EcgRecord, VideoClip  # noqa: E402

__all__ = ["__version__", "CardiodistillError", "ConfigError", "DataError", "EcgRecord", "VideoClip"]
