"""Self-describing model files: save a model with its config, load it back with one call.

Two kinds of file load with :func:`load_model`:

* a **model file** (``save_model``): ``{"format": "cardiodistill-model", "version",
  "model_config", "state_dict", **info}`` - small, weights only, what a run exports
  (``encoder.pt``, ``mae.pt``) and what downstream stages read;
* a **training checkpoint** (Lightning ``.ckpt`` of a cardiodistill module): it carries the same
  ``model_config`` under ``checkpoint["cardiodistill"]``, next to the optimizer and loop state
  needed to resume.

``model_config`` holds what a model expects of its input (``fs``, ``seconds``, ``leads``,
``patch_size``, ``normalisation``; see :mod:`cardiodistill.models.registry`), so a loaded model
says how to prepare data for it.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import __version__
from ..errors import DataError
from ..io.atomic import atomic_path
from ..models import model_from_config

__all__ = ["MODEL_FORMAT", "build_model", "load_model", "read_model_file", "save_model"]

MODEL_FORMAT = "cardiodistill-model"


def save_model(model: nn.Module, path: str | PathLike[str], **info: Any) -> Path:
    """Write ``model`` (which must carry ``.model_config``) and JSON-ready ``info`` atomically."""
    config = getattr(model, "model_config", None)
    if config is None:
        raise ValueError("model has no model_config; build it with cardiodistill.models.create_model")
    path = Path(path)
    payload = {"format": MODEL_FORMAT, "version": __version__, "model_config": config,
               "state_dict": model.state_dict(), **info}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def read_model_file(path: str | PathLike[str]) -> dict[str, Any]:
    """``{"model_config", "state_dict", ...}`` of a model file or training checkpoint (module doc)."""
    path = Path(path)
    if not path.is_file():
        raise DataError("no such model file", path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad file to the user
        raise DataError(f"not a readable torch file ({type(err).__name__})", path) from None
    if not isinstance(data, dict):
        raise DataError("not a cardiodistill model file or checkpoint", path)
    if data.get("format") == MODEL_FORMAT:
        return data
    if "cardiodistill" in data and "state_dict" in data:  # a Lightning checkpoint of our modules
        meta = data["cardiodistill"]
        prefix = meta.get("state_prefix", "model.")
        state = {k[len(prefix):]: v for k, v in data["state_dict"].items() if k.startswith(prefix)}
        return {**meta, "state_dict": state}
    raise DataError("not a cardiodistill model file or checkpoint (no model_config inside)", path)


def load_model(path: str | PathLike[str], *, part: str | None = None) -> nn.Module:
    """Rebuild the model saved at ``path`` with its weights, in eval mode.

    ``part="encoder"`` returns the encoder of a wrapper (the ``.encoder`` of a masked autoencoder),
    so ``load_model("mae.pt", part="encoder")`` and ``load_model("encoder.pt")`` agree.
    """
    return build_model(read_model_file(path), part=part, source=path)


def build_model(data: dict[str, Any], *, part: str | None = None, source: str | PathLike[str] | None = None) -> nn.Module:
    """:func:`load_model` for a file already read with :func:`read_model_file` (``source`` names it in errors)."""
    model = model_from_config(data["model_config"])
    try:
        model.load_state_dict(data["state_dict"])
    except RuntimeError as err:
        raise DataError(f"weights do not fit the model config inside: {str(err).splitlines()[0]}", source) from None
    if part is not None:
        if not hasattr(model, part):
            raise DataError(f"model {data['model_config']['name']!r} has no part {part!r}", source)
        model = getattr(model, part)
    return model.eval()
