"""What the stage jobs share: model configs from config sections, and the cohort spec a model file needs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..data.cohort import paired_spec
from ..data.paired import PairedSpec
from ..errors import ConfigError
from ..models import model_defaults
from ..train.checkpoints import read_model_file

__all__ = ["Progress", "fusion_of", "resolve_model_config", "spec_of"]

Progress = Callable[[str, int, int | None], None]  # (task, advance, total)


def resolve_model_config(model: dict[str, Any], section: str) -> dict[str, Any]:
    """``{"name": ..., **overrides}`` from a config -> the model's full config (defaults plus
    overrides), so a run records every value it used. ``section`` names the key in errors."""
    overrides = dict(model)
    name = overrides.pop("name", None)
    if name is None:
        raise ConfigError(f"{section} needs a 'name' (a registered model)")
    return {"name": name, **model_defaults(name), **overrides}


def fusion_of(path: str | Path) -> dict[str, Any]:
    """The ``cardio_fusion`` config inside an aligned model or a teacher file."""
    config = read_model_file(path)["model_config"]
    return config["fusion"] if config.get("name") == "cardio_teacher" else config


def spec_of(fusion: Mapping[str, Any]) -> PairedSpec:
    """The paired-cache spec a fusion model was built for (its ECG and video encoders' inputs)."""
    ecg = fusion.get("ecg") or {"fs": 100.0, "seconds": 10.0}
    echo = fusion.get("echo") or resolve_model_config({"name": "video_vit_tiny"}, "echo")
    return paired_spec(ecg, echo)
