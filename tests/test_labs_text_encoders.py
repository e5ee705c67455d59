"""Labs and notes encoders: absent labs leave no trace, the robust normaliser, the stable hashing
tokenizer, padding invariance, a tiny note encoder learning, the optional Hugging Face wrapper."""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest
import torch
from scipy import stats

from cardiodistill.errors import ConfigError, DataError
from cardiodistill.lab_units import LAB_UNITS
from cardiodistill.models import create_model, model_from_config
from cardiodistill.models.labs import LabNormaliser, LabsEncoder
from cardiodistill.models.text import CLS_ID, PAD_ID, HashingTokenizer, HuggingFaceNoteEncoder, NoteEncoder
from cardiodistill.synth import labs as synth_labs

NAN = math.nan


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def labs_model() -> LabsEncoder:
    torch.manual_seed(0)
    return LabsEncoder(5, dim=32, depth=2, heads=4).eval()


# ----------------------------------------------------------------------------- labs encoder


def test_a_missing_lab_gives_no_token_and_its_value_cannot_leak(labs_model):
    values = torch.tensor([[0.5, NAN, -1.0, 2.0, NAN], [1.0, 0.2, 0.3, -0.4, 0.5]])
    with torch.no_grad():
        tokens, present = labs_model.forward_tokens(values)
        features = labs_model.forward_features(values)
    assert tokens.shape == (2, 5, 32) and features.shape == (2, 32)
    assert present.tolist() == [[True, False, True, True, False], [True] * 5]
    assert (tokens[0, [1, 4]] == 0).all() and (tokens[0, [0, 2, 3]] != 0).any(dim=1).all()

    # The same labs hidden by key_mask_extra instead, whatever value they hold: identical output.
    hide = torch.tensor([[False, True, False, False, True], [False] * 5])
    for filler in (-5.0, 0.0, 3.0):
        filled = torch.where(torch.isnan(values), torch.tensor(filler), values)
        with torch.no_grad():
            tokens_hidden, present_hidden = labs_model.forward_tokens(filled, key_mask_extra=hide)
        torch.testing.assert_close(tokens_hidden, tokens, rtol=0, atol=1e-6)
        assert torch.equal(present_hidden, present)

    # Hiding a present lab does change the panel embedding (the mask is not a no-op).
    with torch.no_grad():
        masked = labs_model.forward_features(values, key_mask_extra=torch.tensor([[True] + [False] * 4] * 2))
    assert (masked - features).abs().amax(dim=1).min() > 1e-4


def test_a_row_with_no_lab_gives_zero_finite_features_and_leaves_the_other_rows_alone(labs_model):
    full = torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.5]])
    batch = torch.cat([full, torch.full((1, 5), NAN)])
    with torch.no_grad():
        alone = labs_model.forward_features(full)
        features = labs_model.forward_features(batch)
        hidden_all = labs_model.forward_features(full, key_mask_extra=torch.ones(1, 5, dtype=torch.bool))
    assert torch.isfinite(features).all()
    assert (features[1] == 0).all() and (hidden_all == 0).all()
    torch.testing.assert_close(features[:1], alone, rtol=0, atol=1e-6)


def test_gradient_reaches_every_part_but_not_the_embedding_of_an_absent_lab():
    torch.manual_seed(0)
    model = LabsEncoder(4, dim=16, depth=1, heads=2).train()
    values = torch.tensor([[0.3, -1.2, 2.0, NAN], [NAN, 0.7, NAN, NAN], [NAN] * 4])
    model.forward_features(values).pow(2).sum().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
    assert model.value_mlp[0].weight.grad.abs().sum() > 0 and model.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert model.lab_embed.grad[:3].abs().sum(dim=1).min() > 0
    assert (model.lab_embed.grad[3] == 0).all()  # lab 3 is missing in every row


def test_depth_zero_is_tokens_then_norm():
    torch.manual_seed(0)
    model = LabsEncoder(3, dim=8, depth=0, heads=2).eval()
    values = torch.tensor([[1.0, NAN, -0.5]])
    with torch.no_grad():
        tokens, _ = model.forward_tokens(values)
        expected = model.norm(model.value_mlp(torch.tensor([[1.0], [-0.5]])) + model.lab_embed[[0, 2]])
    torch.testing.assert_close(tokens[0, [0, 2]], expected)


def test_labs_encoder_registry_config_round_trips():
    model = create_model("labs_encoder", dim=32, heads=2)
    cfg = model.model_config
    assert cfg["n_labs"] == model.n_labs == len(LAB_UNITS) and cfg["depth"] == 1
    # the encoder's default panel is the canonical table, which the simulator samples in (and re-exports)
    assert synth_labs.LAB_UNITS is LAB_UNITS
    assert {name: spec.unit for name, spec in synth_labs.LAB_SPECS.items()} == LAB_UNITS
    again = model_from_config(json.loads(json.dumps({**cfg, "n_labs": 3})))
    assert isinstance(again, LabsEncoder) and again.dim == 32 and again.lab_embed.shape == (3, 32)
    with pytest.raises(ConfigError, match="at least one lab"):
        create_model("labs_encoder", n_labs=0)


# ----------------------------------------------------------------------------- normaliser


def _panel(n: int = 400, seed: int = 0) -> np.ndarray:
    """Columns: log-normal (peptide-like), normal (sodium-like), never measured, normal with gaps."""
    rng = np.random.default_rng(seed)
    peptide = rng.lognormal(np.log(100.0), 1.2, n)
    sodium = rng.normal(139.0, 3.0, n)
    haemoglobin = np.where(rng.random(n) < 0.3, np.nan, rng.normal(13.5, 1.5, n))
    return np.stack([peptide, sodium, np.full(n, np.nan), haemoglobin], axis=1)


NAMES = ["nt_probnp", "sodium", "ldl", "haemoglobin"]


def test_normaliser_logs_the_skewed_lab_and_standardises_robustly():
    train = _panel()
    norm = LabNormaliser().fit(train, NAMES)
    assert norm.log.tolist() == [True, False, False, False]
    assert norm.median[2] == 0 and norm.scale[2] == 1  # never measured
    z = norm.transform(train)
    assert z.dtype == np.float32 and z.shape == train.shape
    assert np.array_equal(np.isnan(z), np.isnan(train))
    np.testing.assert_allclose(np.nanmedian(z[:, [0, 1, 3]], axis=0), 0.0, atol=1e-6)
    assert abs(stats.skew(z[:, 0])) < 0.5  # log1p removed the right tail
    iqr = stats.iqr(z[:, 1], scale="normal")
    assert iqr == pytest.approx(1.0, rel=1e-6)
    # an extreme value is clipped, a negative one on a log lab does not give NaN
    extreme = norm.transform(np.array([[1e9, 1e9, 5.0, -1e9], [-3.0, 139.0, NAN, 13.5]]))
    assert extreme[0].tolist() == pytest.approx([6.0, 6.0, 5.0, -6.0]) and np.isfinite(extreme[1, :2]).all()


def test_normaliser_round_trips_through_json_and_rejects_bad_shapes():
    train = _panel()
    norm = LabNormaliser().fit(train, NAMES)
    again = LabNormaliser.from_dict(json.loads(json.dumps(norm.to_dict())))
    assert again.names == NAMES
    np.testing.assert_array_equal(again.transform(train), norm.transform(train))
    with pytest.raises(DataError, match="expected \\[samples, 4 labs\\]"):
        norm.transform(train[:, :3])
    with pytest.raises(DataError, match="not unique"):
        LabNormaliser().fit(train, ["a", "a", "b", "c"])
    with pytest.raises(ConfigError, match="before fit"):
        LabNormaliser().transform(train)
    with pytest.raises(ConfigError, match="keys"):
        LabNormaliser.from_dict({"names": NAMES})


# ----------------------------------------------------------------------------- tokenizer


NOTE = "72M. LVEF 35%, left axis deviation (-45 degrees). hs-TnT <3 ng/L; K 4.1."


def test_tokenizer_ids_are_stable_across_processes():
    tok = HashingTokenizer(vocab_size=8192, max_tokens=12)
    assert tok.words(NOTE)[:8] == ["72m", "lvef", "35", "left", "axis", "deviation", "-45", "degrees"]
    ids, mask = tok.encode([NOTE])
    # computed once with blake2b; Python's salted hash() would change them in every process
    assert ids[0].tolist() == [1, 3802, 4289, 6086, 1568, 281, 4254, 7447, 4177, 1287, 2537, 5638]
    assert mask.all()


def test_tokenizer_pads_truncates_and_puts_words_before_bigrams():
    tok = HashingTokenizer(vocab_size=1000, max_tokens=16)
    short, long_text = "EF 55%", " ".join(f"w{i}" for i in range(40))
    ids, mask = tok.encode([short, long_text, ""])
    assert ids.shape == mask.shape == (3, 16) and ids.dtype == torch.long and mask.dtype == torch.bool
    assert (ids[:, 0] == CLS_ID).all() and torch.equal(mask, ids != PAD_ID)
    assert mask.sum(1).tolist() == [1 + 2 + 1, 16, 1]  # CLS + words + one bigram; truncated; CLS only
    assert ((ids[mask] >= 2) & (ids[mask] < 1000) | (ids[mask] == CLS_ID)).all()
    # the long text is cut within its words: the first 15 words, no bigram
    word_ids = tok.encode([" ".join(f"w{i}" for i in range(15))])[0][0, :16]
    assert torch.equal(ids[1], word_ids)
    assert ids[0, 3] not in ids[0, 1:3]  # the bigram "ef 55" is a term of its own


def test_notes_with_other_numbers_get_other_ids():
    tok = HashingTokenizer()
    ids, _ = tok.encode(["LV systolic function impaired, EF 35%.", "LV systolic function impaired, EF 55%.",
                         "LV systolic function impaired, EF 35%.", "Axis 45 degrees", "Axis -45 degrees"])
    assert not torch.equal(ids[0], ids[1]) and torch.equal(ids[0], ids[2])
    assert not torch.equal(ids[3], ids[4])


def test_tokenizer_config_round_trips_and_rejects_bad_values():
    tok = HashingTokenizer(vocab_size=500, max_tokens=20, ngrams=3, lowercase=False)
    again = HashingTokenizer.from_dict(json.loads(json.dumps(tok.to_dict())))
    assert torch.equal(again.encode([NOTE])[0], tok.encode([NOTE])[0])
    assert not torch.equal(tok.encode(["EF"])[0], tok.encode(["ef"])[0])  # case kept
    for bad in ({"vocab_size": 2}, {"max_tokens": 1}, {"ngrams": 0}):
        with pytest.raises(ConfigError):
            HashingTokenizer(**bad)


# ----------------------------------------------------------------------------- note encoder


def test_note_encoder_features_ignore_padding():
    torch.manual_seed(0)
    model = NoteEncoder(vocab_size=512, max_tokens=48, dim=32, depth=2, heads=4).eval()
    ids, mask = model.encode_texts(["Severe AS, Vmax 4.6 m/s.", "Normal LV size and function, EF 60%."])
    n = int(mask.sum(1).max())
    garbage = torch.where(mask, ids, torch.randint(2, 512, ids.shape))  # any id under a False mask
    with torch.no_grad():
        trimmed = model.forward_features(ids[:, :n], mask[:, :n])
        padded = model.forward_features(ids, mask)
        tokens, out_mask = model.forward_tokens(garbage, mask)
        noisy = tokens[:, 0]
    assert trimmed.shape == (2, 32)
    torch.testing.assert_close(padded, trimmed, rtol=0, atol=1e-5)
    torch.testing.assert_close(noisy, trimmed, rtol=0, atol=1e-5)
    assert torch.equal(out_mask, mask) and (tokens[~mask] == 0).all()


def test_a_tiny_note_encoder_learns_to_tell_two_templates_apart():
    """Both templates share their words; only the function words and the EF range differ."""
    rng = np.random.default_rng(0)
    fillers = ["LA not dilated.", "No RWMA.", "Sinus rhythm.", "Trivial MR.", "K 4.2.", "Normal axis."]

    def note(label: int) -> str:
        words = ("good", int(rng.integers(11, 14)) * 5) if label else ("severely impaired", int(rng.integers(4, 7)) * 5)
        extra = " ".join(rng.permutation(fillers)[: rng.integers(1, 5)])
        return f"Echo: LV systolic function {words[0]}, EF {words[1]}%. {extra}"

    labels = torch.tensor(rng.integers(0, 2, 96))
    texts = [note(int(y)) for y in labels]
    torch.manual_seed(0)
    model = NoteEncoder(vocab_size=512, max_tokens=40, dim=32, depth=1, heads=2)
    head = torch.nn.Linear(32, 2)
    ids, mask = model.encode_texts(texts)
    train, test = slice(0, 64), slice(64, 96)
    opt = torch.optim.AdamW([*model.parameters(), *head.parameters()], lr=3e-3)
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(head(model(ids[train], mask[train])), labels[train])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        accuracy = (head(model(ids[test], mask[test])).argmax(1) == labels[test]).float().mean().item()
    assert losses[-1] < 0.1 * losses[0] and accuracy == 1.0


def test_note_encoder_from_the_registry_encodes_texts():
    torch.manual_seed(0)
    model = create_model("note_encoder").eval()
    assert model.model_config["depth"] == 2 and model.model_config["dim"] == 128
    ids, mask = model.encode_texts(["EF 35%", "AF with rapid ventricular response"])
    with torch.no_grad():
        assert model.forward_features(ids, mask).shape == (2, 128)
    with pytest.raises(ValueError, match="CLS"):
        model.forward_features(ids, torch.zeros_like(mask))


# ----------------------------------------------------------------------------- Hugging Face wrapper


def test_hf_note_encoder_names_the_folder_when_it_holds_no_model(tmp_path):
    missing = tmp_path / "no_such_model"
    with pytest.raises(ConfigError, match="no_such_model: not a Hugging Face model folder"):
        HuggingFaceNoteEncoder(missing)
    with pytest.raises(ConfigError, match="needs path"):
        create_model("hf_note_encoder")


def test_hf_note_encoder_without_transformers_says_so(tmp_path):
    if importlib.util.find_spec("transformers") is not None:
        pytest.skip("transformers is installed: the real-model test covers it")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match=f"{tmp_path}: .*optional package 'transformers'"):
        create_model("hf_note_encoder", path=str(tmp_path))


def test_hf_note_encoder_on_a_tiny_local_bert(tmp_path):
    transformers = pytest.importorskip("transformers")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "ef", "35", "%", "lv", "normal", "size"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    transformers.BertTokenizer(str(tmp_path / "vocab.txt")).save_pretrained(tmp_path)
    config = transformers.BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    transformers.BertModel(config).save_pretrained(tmp_path)
    model = create_model("hf_note_encoder", path=str(tmp_path), dim=16).train()
    assert not model.backbone.training and not any(p.requires_grad for p in model.backbone.parameters())
    ids, mask = model.encode_texts(["EF 35%", "LV normal size"])
    features = model.forward_features(ids, mask)
    assert features.shape == (2, 16)
    features.sum().backward()
    assert model.proj.weight.grad is not None
