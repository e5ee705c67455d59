"""Every registered model, through one generic test (as timm tests its registry): it builds from
its defaults, runs a forward and a backward pass on its declared example input, its config
survives JSON and ``model_from_config``, and a saved file loads back to the same outputs.
Plus: nested encoder configs, configs written before they were nested, the ECG input contract."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from cardiodistill.errors import ConfigError
from cardiodistill.models import create_model, list_models, model_defaults, model_from_config, registry
from cardiodistill.models.registry import ECG_INPUT_KEYS, ecg_input_config, model_test, register_model
from cardiodistill.signals.filters import DEFAULT_BAND
from cardiodistill.train.checkpoints import load_model, save_model

ECG_MODELS = [n for n in list_models() if n.startswith(("ecg_", "student_", "xresnet1d"))]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_local_bert(folder: Path) -> str:
    """A one-layer BERT with an 11-word vocabulary saved under ``folder`` (needs ``transformers``)."""
    import transformers

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "ef", "35", "%", "lv", "normal", "size"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    transformers.BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder)
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=64)
    transformers.BertModel(config).save_pretrained(folder)
    return str(folder)


# Options no default can give (ModelTest.required), and how the test supplies each.
SUPPLIERS = {"path": tiny_local_bert}


def missing_packages(name: str) -> list[str]:
    return [p for p in model_test(name).requires if importlib.util.find_spec(p) is None]


def config_for(name: str, folder: Path) -> dict[str, Any]:
    """The name's test overrides plus the required options, supplied under ``folder``."""
    spec = model_test(name)
    missing = missing_packages(name)
    if missing:
        pytest.skip(f"{name} needs the optional package(s) {missing}, which are not installed")
    return {**spec.overrides, **{key: SUPPLIERS[key](folder) for key in spec.required}}


def tensors(out: Any) -> list[Tensor]:
    """The floating-point tensors of a model output (tensor, mapping, sequence or dataclass)."""
    if isinstance(out, Tensor):
        return [out] if out.is_floating_point() else []
    if dataclasses.is_dataclass(out):
        out = {f.name: getattr(out, f.name) for f in dataclasses.fields(out)}
    if isinstance(out, Mapping):
        return [t for v in out.values() for t in tensors(v)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in tensors(v)]
    return []


def run(model: nn.Module) -> list[Tensor]:
    args, kwargs = model_test(model.model_config["name"]).example(model)
    return tensors(model(*args, **kwargs))


# ----------------------------------------------------------------------------- coverage


def test_every_registered_name_is_covered():
    """A name registered without a test config (or needing an option the test cannot supply)
    fails here, not silently later."""
    uncovered = []
    for name in list_models():
        try:
            spec = model_test(name)
        except ConfigError:
            uncovered.append(name)
            continue
        assert set(spec.required) <= set(SUPPLIERS), f"{name}: no test supplier for {spec.required}"
        assert set(spec.overrides) <= set(model_defaults(name)) | {"name"}, f"{name}: unknown test overrides"
    assert not uncovered, f"registered models without a test config (register_test): {uncovered}"
    # the generic tests below are parametrised over the registry at collection time
    assert len(list_models()) >= 24


def test_a_name_registered_without_a_test_config_is_reported(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # the scratch name leaves with the test
    register_model("scratch_linear")(lambda *, dim=4: nn.Linear(dim, dim))
    assert "scratch_linear" in list_models() and create_model("scratch_linear").model_config == {
        "name": "scratch_linear", "dim": 4}
    with pytest.raises(ConfigError, match="'scratch_linear' has no test config"):
        model_test("scratch_linear")


@pytest.mark.parametrize("name", list_models())
def test_builds_from_its_defaults(name):
    """``create_model(name)`` alone, unless an option has no usable default (a local folder)."""
    spec = model_test(name)
    if spec.required:
        with pytest.raises(ConfigError, match=spec.required[0]):
            create_model(name)
        return
    with torch.device("meta"):  # the configs and shapes of the full-size models, without their memory
        model = create_model(name)
    assert model.model_config == {"name": name, **model_defaults(name)}
    assert sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize("name", list_models())
def test_forward_backward_config_round_trip_and_save_load(name, tmp_path):
    torch.manual_seed(0)
    model = create_model(name, **config_for(name, tmp_path)).train()

    outputs = run(model)
    assert outputs and all(torch.isfinite(t).all() for t in outputs)
    sum(t.float().mean() for t in outputs if t.requires_grad).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(bool(g.abs().sum() > 0) for g in grads)

    stored = json.loads(json.dumps(model.model_config))
    assert stored == model.model_config
    rebuilt = model_from_config(stored)
    assert rebuilt.model_config == model.model_config
    rebuilt.load_state_dict(model.state_dict(), strict=True)

    model.eval()
    path = save_model(model, tmp_path / "model.pt", steps=0)
    loaded = load_model(path)
    assert not loaded.training and loaded.model_config == model.model_config
    with torch.no_grad():
        for a, b in zip(run(model), run(loaded), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


# ----------------------------------------------------------------------------- nested configs


def test_mae_encoders_are_nested_configs_that_merge_with_the_preset():
    base = model_defaults("ecg_mae_base")
    assert base["encoder"] == model_defaults("ecg_vit_base") | {"name": "ecg_vit_base"}
    assert set(base) == {"encoder", "decoder_dim", "decoder_depth", "decoder_heads", "mask_ratio", "lead_mask_prob",
                         "norm_pix"}
    with torch.device("meta"):
        mae = create_model("ecg_mae_base", encoder={"depth": 2})  # overrides keep the base encoder's other values
    assert mae.model_config["encoder"]["dim"] == 768 and mae.model_config["encoder"]["depth"] == 2
    assert mae.encoder.model_config == mae.model_config["encoder"]
    other = create_model("video_mae_tiny", encoder={"name": "video_vit", "size": 32, "dim": 32, "heads": 2})
    assert other.model_config["encoder"]["name"] == "video_vit" and other.encoder.embed_dim == 32
    with pytest.raises(ConfigError, match="no option 'width'"):
        create_model("ecg_mae_tiny", encoder={"width": 3})


def test_configs_written_before_the_encoder_was_nested_still_build():
    """A stage-1 ``mae.pt`` of the flat era, and the flat keys of the presets and benchmarks."""
    old_ecg = {"name": "ecg_mae_tiny", "fs": 100.0, "seconds": 10.0, "leads": ["I", "II"], "patch_size": 50,
               "normalisation": "per-lead z-score", "dim": 32, "depth": 1, "heads": 2, "mlp_ratio": 4.0,
               "dropout": 0.0, "pool": "mean", "time_embedding": "sincos", "grad_checkpointing": False,
               "decoder_dim": 16, "decoder_depth": 1, "decoder_heads": 2, "mask_ratio": 0.75, "lead_mask_prob": 0.25,
               "norm_pix": False}
    mae = model_from_config(old_ecg)
    encoder = mae.model_config["encoder"]
    assert (encoder["fs"], encoder["dim"], encoder["leads"], encoder["band"]) == (100.0, 32, ["I", "II"],
                                                                                 list(DEFAULT_BAND))
    assert mae.model_config["decoder_dim"] == 16 and "fs" not in mae.model_config
    model_from_config(mae.model_config).load_state_dict(mae.state_dict(), strict=True)

    old_video = {"name": "video_mae_tiny", "size": 16, "frames": 4, "tubelet": [2, 8, 8], "cycles": 1.0, "fps": 16.0,
                 "dim": 32, "depth": 1, "heads": 2, "decoder_dim": 16, "mask_mode": "tube", "norm_pix": True}
    video = model_from_config(old_video)
    assert video.model_config["encoder"]["size"] == 16 and video.encoder.embed_dim == 32

    # quick.yaml's {name: ecg_mae_tiny, fs: 100.0, patch_size: 50}, also on top of the full defaults
    quick = {"name": "ecg_mae_tiny", "fs": 100.0, "patch_size": 50}
    for config in (quick, {**model_defaults("ecg_mae_tiny"), **quick}):
        with torch.device("meta"):
            assert model_from_config(config).model_config["encoder"]["fs"] == 100.0


def test_the_trainers_calls_keep_working():
    """The calls stage 2 and 3 make today, with full encoder configs and ``in_leads``."""
    small = {"seconds": 2.0, "dim": 32, "depth": 1, "heads": 2}
    ecg = {"name": "ecg_vit_tiny", **model_defaults("ecg_vit_tiny"), **small, "fs": 100.0}
    echo = {"name": "video_vit_tiny", **model_defaults("video_vit_tiny"), "size": 16, "frames": 4, "dim": 32,
            "depth": 1, "heads": 2}
    labs = {"name": "labs_encoder", **model_defaults("labs_encoder"), "n_labs": 3, "dim": 16, "heads": 2}
    note = {"name": "note_encoder", "vocab_size": 64, "max_tokens": 16, "dim": 16, "depth": 1, "heads": 2}
    stats = {"names": ["a", "b", "c"], "log": [False, True, False], "median": [0.0, 1.0, 2.0],
             "scale": [1.0, 1.0, 2.0], "skew_threshold": 2.0, "clip": 6.0}
    fusion = create_model("cardio_fusion", ecg=ecg, echo=echo, labs=labs, note=note, lab_stats=stats,
                          modalities=["ecg", "labs", "note"], dim=32, depth=1, heads=2)
    assert fusion.model_config["ecg"] == ecg and fusion.lab_names == ["a", "b", "c"]
    assert fusion.modalities == ("ecg", "labs", "note")
    teacher = create_model("cardio_teacher", fusion=fusion.model_config, outputs=["triage", "af"], lvef_mean=50.0,
                           lvef_std=12.0)
    assert teacher.model_config["fusion"] == fusion.model_config and teacher.outputs == ["triage", "af"]

    for backbone in ({"name": "student_cnn", **model_defaults("student_cnn"), "in_leads": 2, "fs": 100.0},
                     {"name": "ecg_encoder_backbone", "encoder": ecg, "in_leads": 2, "fs": 100.0, "seconds": 2.0}):
        student = create_model("ecg_student", backbone=backbone, outputs=["triage"], embed_dim=32, lvef_mean=50.0,
                               lvef_std=12.0)
        assert student.leads == ("I", "II") and student.backbone_config["leads"] == ["I", "II"]
        assert "in_leads" not in student.model_config["backbone"]
    with pytest.raises(ConfigError, match="its encoder was built for 2.0 s at 100.0 Hz"):
        create_model("ecg_encoder_backbone", encoder=ecg, fs=250.0, seconds=2.0)  # patches would span other times
    with pytest.raises(ConfigError, match="in_leads must be the number of limb leads"):
        create_model("student_cnn", in_leads=7)
    with pytest.raises(ConfigError, match="needs lab_stats for a panel of 3 labs"):
        create_model("cardio_fusion", labs={"n_labs": 3}, modalities=["labs"])


# ----------------------------------------------------------------------------- ECG input contract


@pytest.mark.parametrize("name", ECG_MODELS)
def test_ecg_models_record_their_input_contract(name):
    config = {"name": name, **model_defaults(name)}
    contract = ecg_input_config(config)
    assert set(contract) == set(ECG_INPUT_KEYS) and contract["band"] == list(DEFAULT_BAND)
    assert contract["normalisation"] == "per-lead z-score" and contract["leads"]


def test_band_is_checked_and_may_be_none():
    assert create_model("xresnet1d_small", band=None).model_config["band"] is None
    for bad in ([40.0, 0.5], [0.5], [-1.0, 40.0]):
        with pytest.raises(ConfigError, match="band must be"):
            create_model("student_cnn_tiny", band=bad)
    with pytest.raises(ConfigError, match="not an ECG model"):
        ecg_input_config({"name": "video_mae_tiny", **model_defaults("video_mae_tiny")})
