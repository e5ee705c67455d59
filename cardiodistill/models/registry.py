"""A name -> factory registry for models, so a checkpoint can rebuild its model from a dict.

A factory is a function whose keyword arguments *all* have defaults; those defaults are the
model's config. Besides the architecture (width, depth, ...) a factory's config states what the
model expects of its input, so a checkpoint carries it and inference can prepare data to match:

* ``fs`` - sampling rate in Hz,
* ``seconds`` - window length the model was built for,
* ``leads`` - lead names (the lead vocabulary of a lead-agnostic model, or the fixed, ordered
  input leads of a fixed-lead CNN),
* ``patch_size`` - samples per patch token (transformers),
* ``normalisation`` - how each lead is scaled before it enters, e.g. ``"per-lead z-score"`` or ``"mV"``.

::

    @register_model("my_net")                           # the factory's own defaults
    @register_model("my_net_large", dim=256)           # a preset: the same factory, other defaults
    def my_net(*, dim: int = 64, fs: float = 250.0, leads: tuple[str, ...] = LEADS_12) -> nn.Module: ...

    model = create_model("my_net", dim=128)
    model.model_config   # {"name": "my_net", "dim": 128, "fs": 250.0, "leads": ["I", ...]}
    same = model_from_config(model.model_config)

``model_config`` holds only JSON types (tuples become lists), so it can be written next to the
weights as is. Factories must accept lists wherever they accept tuples.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from ..errors import ConfigError

ModelFactory = Callable[..., nn.Module]

# name -> (factory, the defaults this name overrides)
_REGISTRY: dict[str, tuple[ModelFactory, dict[str, Any]]] = {}


def register_model(name: str, **preset: Any) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator: register ``factory`` under ``name``, with ``preset`` replacing some of its defaults.

    Every parameter of the factory must be keyword-only with a default. One factory can be
    registered under several names (sizes of one architecture) by stacking decorators.
    """

    def decorator(factory: ModelFactory) -> ModelFactory:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        params = inspect.signature(factory).parameters
        for param in params.values():
            if param.kind is not param.KEYWORD_ONLY or param.default is param.empty:
                raise TypeError(f"model factory {name!r}: parameter {param.name!r} must be keyword-only with a default")
        unknown = sorted(set(preset) - set(params))
        if unknown:
            raise TypeError(f"model preset {name!r} sets {unknown}, which {factory.__name__} does not take")
        _REGISTRY[name] = (factory, dict(preset))
        return factory

    return decorator


def list_models() -> list[str]:
    """Names of the registered models, sorted."""
    return sorted(_REGISTRY)


def model_defaults(name: str) -> dict[str, Any]:
    """The default config of model ``name`` (JSON types): the factory's defaults plus its preset."""
    factory, preset = _entry(name)
    defaults = {k: p.default for k, p in inspect.signature(factory).parameters.items()}
    return {k: _jsonable(v) for k, v in {**defaults, **preset}.items()}


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build model ``name`` with ``overrides`` on its default config.

    The module gets ``.model_config``: ``{"name": name, **full_resolved_config}``. Unknown names
    and unknown keys raise a one-line :class:`ConfigError` listing the valid choices.
    """
    config = model_defaults(name)
    unknown = sorted(set(overrides) - set(config))
    if unknown:
        raise ConfigError(
            f"model {name!r} has no option {', '.join(map(repr, unknown))}; valid options: {', '.join(config)}"
        )
    config.update({k: _jsonable(v) for k, v in overrides.items()})
    model = _REGISTRY[name][0](**config)
    model.model_config = {"name": name, **config}
    return model


def model_from_config(config: Mapping[str, Any]) -> nn.Module:
    """Rebuild a model from a ``model_config`` dict (as stored in a checkpoint); weights are fresh."""
    if "name" not in config:
        raise ConfigError(f"model config has no 'name' key; registered models: {', '.join(list_models())}")
    rest = dict(config)
    return create_model(rest.pop("name"), **rest)


def _entry(name: str) -> tuple[ModelFactory, dict[str, Any]]:
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}")
    return _REGISTRY[name]


def _jsonable(value: Any) -> Any:
    """Tuples -> lists, recursively, so a config equals its own JSON round trip."""
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value
