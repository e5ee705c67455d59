import pytest

from cardiodistill.config import Config, apply_override, load_config, preset_names
from cardiodistill.errors import ConfigError


def test_presets_ship_with_the_package():
    assert {"quick", "full"} <= set(preset_names())
    quick, full = load_config("quick"), load_config("full")
    assert quick.synth.patients < 1000 <= full.synth.patients
    assert full.synth.stream and not quick.synth.stream


def test_overrides_are_parsed_as_yaml_and_nested():
    cfg = load_config("quick", ["synth.prevalence.af=0.3", "synth.echo.views=[a4c]", "synth.mobile.enabled=false"])
    assert cfg.synth.prevalence.af == 0.3
    assert cfg.synth.echo.views == ["a4c"]
    assert cfg.synth.mobile.enabled is False


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("synth.patinets=5", "synth.patinets: unknown key"),
        ("synth.prevalence.af=1.5", "synth.prevalence.af"),
        ("synth.patients", "key.sub=value"),
        ("synth.splits.train=0.9", "add up to"),
    ],
)
def test_bad_overrides_are_one_line_config_errors(override, fragment):
    with pytest.raises(ConfigError) as info:
        load_config("quick", [override])
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_preset_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset"):
        load_config("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("synth: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(bad))
    good = tmp_path / "mine.yaml"
    good.write_text("synth:\n  patients: 7\n")
    assert load_config(str(good)).synth.patients == 7


def test_override_into_a_value_is_refused():
    data = {"synth": {"patients": 3}}
    with pytest.raises(ConfigError, match="is a value"):
        apply_override(data, "synth.patients.x=1")


def test_defaults_validate():
    Config()


def test_the_simulator_stream_needs_the_files():
    with pytest.raises(ConfigError, match="synth.stream=true needs synth.files=true"):
        load_config("quick", ["synth.stream=true", "synth.files=false"])


def test_a_preset_extends_another(tmp_path):
    quick, value = load_config("quick"), load_config("value")
    assert value.preset == "value" and value.synth.patients == 2000
    assert value.align.optim.max_steps == 150  # its own key
    assert value.align.optim.batch_size == quick.align.optim.batch_size  # the rest of the mapping from quick
    assert value.pretrain.video.model == quick.pretrain.video.model
    # a model spec naming another model replaces the old one's keys (ecg_cnn has no patch_size)
    assert value.pretrain.ecg.model == {"name": "ecg_cnn", "fs": 100.0}
    own = tmp_path / "mine.yaml"
    own.write_text("extends: value\nsynth: {patients: 50}\ndistill: {leads: [1]}\n")
    mine = load_config(str(own), ["distill.epochs=3"])
    assert (mine.preset, mine.synth.patients, mine.distill.leads, mine.distill.epochs) == ("mine", 50, [1], 3)
    assert mine.pretrain.ecg.objective == "clocs"
    loop = tmp_path / "loop.yaml"
    loop.write_text(f"extends: {loop}\n")
    with pytest.raises(ConfigError, match="extends itself"):
        load_config(str(loop))
    bad = tmp_path / "bad.yaml"
    bad.write_text("extends: [quick, full]\n")
    with pytest.raises(ConfigError, match="extends must name one preset"):
        load_config(str(bad))
