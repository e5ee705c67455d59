"""A name -> factory registry for models, so a checkpoint can rebuild its model from a dict.

A factory is a function whose keyword arguments *all* have defaults; those defaults are the
model's config, and every registered name builds from them alone (``create_model(name)``).
Besides the architecture (width, depth, ...) a factory's config states what the model expects
of its input, so a checkpoint carries it and inference can prepare data to match. An ECG model
records:

* ``fs`` - sampling rate in Hz,
* ``seconds`` - window length the model was built for,
* ``leads`` - lead names (the lead vocabulary of a lead-agnostic model, or the fixed, ordered
  input leads of a fixed-lead CNN),
* ``normalisation`` - how each lead is scaled before it enters, e.g. ``"per-lead z-score"``,
* ``band`` - ``[low, high]`` Hz the input was band-passed to (None: not filtered); recorded
  only, the model does not filter,
* ``patch_size`` - samples per patch token (transformers).

A wrapper (a masked autoencoder, the student) keeps its encoder's or backbone's config nested
under ``encoder`` / ``backbone``; :func:`ecg_input_config` finds the ECG input keys in either.

::

    @register_model("my_net")                           # the factory's own defaults
    @register_model("my_net_large", dim=256)           # a preset: the same factory, other defaults
    def my_net(*, dim: int = 64, fs: float = 250.0, leads: tuple[str, ...] = LEADS_12) -> nn.Module: ...

    model = create_model("my_net", dim=128)
    model.model_config   # {"name": "my_net", "dim": 128, "fs": 250.0, "leads": ["I", ...]}
    same = model_from_config(model.model_config)

Nested model configs
    An option whose value is a model config (a dict with a registered ``"name"``), such as the
    encoder of a masked autoencoder, is resolved like a top-level one: its defaults are filled
    in, so ``model_config`` states every value. Overrides without a ``"name"`` (or with the same
    one) update the default nested config (``create_model("ecg_mae_base", encoder={"depth": 6})``
    keeps the base encoder's other values); a different ``"name"`` replaces it.

Old configs
    :func:`legacy_keys` gives a factory a function that rewrites keys it no longer takes (the
    flat encoder keys of configs written before the encoder was nested, an alias such as
    ``in_leads``) before the config is checked, so checkpoints and presets written before keep
    building.

``model_config`` holds only JSON types (tuples become lists), so it can be written next to the
weights as is. Factories must accept lists wherever they accept tuples.

Testing (:class:`ModelTest`, :func:`register_test`)
    Every registered name declares how the generic test (``tests/test_registry.py``) exercises
    it: an example input, optional smaller overrides so it runs in a fraction of a second on a
    CPU, the optional packages it needs and the options no default can give (a local folder).
    The test fails for a name registered without one.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..errors import ConfigError

__all__ = [
    "ECG_INPUT_KEYS",
    "ModelTest",
    "create_model",
    "ecg_input_config",
    "legacy_keys",
    "list_models",
    "model_defaults",
    "model_from_config",
    "model_test",
    "nest_flat_keys",
    "register_model",
    "register_test",
    "resolve_config",
]

ModelFactory = Callable[..., nn.Module]
#: ``upgrade(given, defaults) -> given``: rewrites the keys given to a factory (see :func:`legacy_keys`).
ConfigUpgrade = Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]
#: ``example(model) -> (args, kwargs)``: a small valid input, called as ``model(*args, **kwargs)``.
ExampleInput = Callable[[nn.Module], tuple[tuple[Any, ...], dict[str, Any]]]

#: The input contract every ECG-input model states in its config (module doc).
ECG_INPUT_KEYS = ("fs", "seconds", "leads", "normalisation", "band")

# name -> (factory, the defaults this name overrides)
_REGISTRY: dict[str, tuple[ModelFactory, dict[str, Any]]] = {}
_UPGRADES: dict[ModelFactory, ConfigUpgrade] = {}
_TESTS: dict[str, ModelTest] = {}


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


def legacy_keys(upgrade: ConfigUpgrade) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator (innermost, under the ``register_model`` lines): ``upgrade(given, defaults)``
    rewrites the keys given to the factory - old ones a stored config may still hold, aliases -
    into the options it takes, before they are checked. ``defaults`` is the name's default config."""

    def decorator(factory: ModelFactory) -> ModelFactory:
        _UPGRADES[factory] = upgrade
        return factory

    return decorator


def nest_flat_keys(option: str) -> ConfigUpgrade:
    """An upgrade for :func:`legacy_keys`: keys the factory does not take but the model config
    under ``option`` does (the flat encoder keys of a masked autoencoder config written before
    the encoder was nested) move into ``option``'s overrides; they win over values given there."""

    def upgrade(given: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
        nested = given.get(option, defaults[option])
        if not isinstance(nested, Mapping):
            return given
        name = nested.get("name", defaults[option].get("name"))
        if name not in _REGISTRY:
            return given
        accepted = set(inspect.signature(_REGISTRY[name][0]).parameters)
        flat = {k: given.pop(k) for k in list(given) if k not in defaults and k in accepted}
        if flat:
            given[option] = {**nested, **flat}
        return given

    return upgrade


def list_models() -> list[str]:
    """Names of the registered models, sorted."""
    return sorted(_REGISTRY)


def model_defaults(name: str) -> dict[str, Any]:
    """The default config of model ``name`` (JSON types, nested model configs filled in)."""
    return resolve_config(name)


def resolve_config(name: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The full config (without ``name``) that ``create_model(name, **overrides)`` builds.

    Old keys are upgraded (:func:`legacy_keys`), unknown ones raise a one-line
    :class:`ConfigError` listing the valid options, and nested model configs are merged and
    resolved (module doc).
    """
    factory, preset = _entry(name)
    defaults = {k: _jsonable(p.default) for k, p in inspect.signature(factory).parameters.items()}
    defaults.update(_jsonable(preset))
    given = _jsonable(dict(overrides or {}))
    if factory in _UPGRADES:
        given = _UPGRADES[factory](given, defaults)
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ConfigError(
            f"model {name!r} has no option {', '.join(map(repr, unknown))}; valid options: {', '.join(defaults)}"
        )
    return {k: _resolve_nested(_merge(v, given[k]) if k in given else v) for k, v in defaults.items()}


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build model ``name`` with ``overrides`` on its default config.

    The module gets ``.model_config``: ``{"name": name, **full_resolved_config}``. Unknown names
    and unknown keys raise a one-line :class:`ConfigError` listing the valid choices.
    """
    config = resolve_config(name, overrides)
    model = _REGISTRY[name][0](**config)
    model.model_config = {"name": name, **config}
    return model


def model_from_config(config: Mapping[str, Any]) -> nn.Module:
    """Rebuild a model from a ``model_config`` dict (as stored in a checkpoint); weights are fresh."""
    if "name" not in config:
        raise ConfigError(f"model config has no 'name' key; registered models: {', '.join(list_models())}")
    rest = dict(config)
    return create_model(rest.pop("name"), **rest)


def ecg_input_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The ECG input keys (:data:`ECG_INPUT_KEYS`) of a model config: its own, or those of the
    model nested under ``backbone`` / ``encoder`` (a student, a masked autoencoder), or of the first of its
    ``members`` (an ensemble, whose members read the same input)."""
    if all(k in config for k in ECG_INPUT_KEYS):
        return {k: config[k] for k in ECG_INPUT_KEYS}
    for key in ("backbone", "encoder"):
        if isinstance(config.get(key), Mapping):
            return ecg_input_config(config[key])
    members = config.get("members")
    if isinstance(members, Sequence) and members and isinstance(members[0], Mapping):
        return ecg_input_config(_resolve_nested(members[0]))
    raise ConfigError(f"model {config.get('name')!r} is not an ECG model: its config states no {list(ECG_INPUT_KEYS)}")


# ----------------------------------------------------------------------------- test configs


@dataclass(frozen=True)
class ModelTest:
    """How the generic registry test exercises one registered name (module doc).

    ``example``: a small valid input for a model built with ``overrides``; ``requires``: optional
    packages it needs (the test skips, saying which, when one is missing); ``required``: options
    no default can give (``"path"``: a local model folder), which the test supplies.
    """

    example: ExampleInput
    overrides: dict[str, Any] = field(default_factory=dict)
    requires: tuple[str, ...] = ()
    required: tuple[str, ...] = ()


def register_test(*names: str, example: ExampleInput, requires: Sequence[str] = (), required: Sequence[str] = (),
                  **overrides: Any) -> None:
    """Declare the :class:`ModelTest` of registered ``names`` (``overrides`` on their defaults)."""
    for name in names:
        _entry(name)
        if name in _TESTS:
            raise ValueError(f"model {name!r} has two test configs")
        _TESTS[name] = ModelTest(example, _jsonable(overrides), tuple(requires), tuple(required))


def model_test(name: str) -> ModelTest:
    """The :class:`ModelTest` of ``name``; a :class:`ConfigError` if it has none."""
    _entry(name)
    if name not in _TESTS:
        raise ConfigError(f"model {name!r} has no test config: declare one with register_test")
    return _TESTS[name]


# ----------------------------------------------------------------------------- helpers


def _entry(name: str) -> tuple[ModelFactory, dict[str, Any]]:
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}")
    return _REGISTRY[name]


def _is_model_config(value: Any) -> bool:
    return isinstance(value, Mapping) and value.get("name") in _REGISTRY


def _merge(default: Any, given: Any) -> Any:
    """``given`` over ``default``: merged key by key where both are configs of the same model
    (``given`` without a name means the default's model), otherwise ``given`` replaces it."""
    if not (_is_model_config(default) and isinstance(given, Mapping)):
        return given
    if given.get("name", default["name"]) != default["name"]:
        return given
    return {**default, **{k: _merge(default[k], v) if k in default else v for k, v in given.items()}}


def _resolve_nested(value: Any) -> Any:
    """A nested model config with its defaults filled in; anything else as it is."""
    if not _is_model_config(value):
        return value
    rest = dict(value)
    name = rest.pop("name")
    return {"name": name, **resolve_config(name, rest)}


def _jsonable(value: Any) -> Any:
    """Tuples -> lists, recursively, so a config equals its own JSON round trip."""
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value
