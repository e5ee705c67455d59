"""The mobile-ECG student (shapes, size, learning, ONNX export) and the fusion analyses (rollout, RSV)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cardiodistill.errors import ConfigError
from cardiodistill.evaluate.analysis import (
    attention_rollout,
    modality_attention_share,
    plot_modality_attention,
    plot_rsv,
    relative_source_variance,
)
from cardiodistill.models.registry import create_model, model_from_config
from cardiodistill.models.student import StudentModel

torch.set_num_threads(2)

FS = 100


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _student(in_leads: int, name: str = "student_cnn_tiny", n_outputs: int = 5, embed_dim: int | None = 32):
    return StudentModel(create_model(name, in_leads=in_leads), n_outputs, embed_dim)


def _assert_png(path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    assert not [p.name for p in path.parent.iterdir() if p.name.startswith(".tmp-")]


def _rhythms(n: int, seconds: float = 2.5, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Lead-I-like pulse trains, z-scored: label 0 sinus (55-85 bpm), label 1 fast (130-180 bpm)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    bpm = torch.where(y == 1, 130 + 50 * torch.rand(n, generator=g), 55 + 30 * torch.rand(n, generator=g))
    t = torch.arange(int(seconds * FS)) / FS
    phase = torch.remainder(t * bpm[:, None] / 60 + torch.rand(n, 1, generator=g), 1.0)
    x = torch.exp(-((phase - 0.5) ** 2) / 0.0015) + 0.1 * torch.randn(n, t.numel(), generator=g)
    x = (x - x.mean(-1, keepdim=True)) / x.std(-1, keepdim=True)
    return x[:, None, :], y.float()


# ------------------------------------------------------------------------------------------------------- student


@pytest.mark.parametrize("in_leads", [1, 2, 6])
@pytest.mark.parametrize("samples", [250, 1000])
def test_student_shapes(in_leads, samples):
    model = _student(in_leads).eval()
    x = torch.randn(3, in_leads, samples)
    out = model(x)
    assert out["logits"].shape == (3, 5) and out["lvef"].shape == (3,) and out["embedding"].shape == (3, 32)
    pred = model.predict(x)
    assert pred.shape == (3, 6)
    assert torch.all((pred[:, :5] >= 0) & (pred[:, :5] <= 1))
    assert torch.allclose(pred[:, 5], out["lvef"])
    assert model.backbone.forward_features(x).shape == (3, 64)
    with pytest.raises(ValueError, match="leads"):
        model(torch.randn(3, in_leads + 1, samples))


def test_student_without_projection_returns_backbone_embedding():
    model = _student(2, embed_dim=None).eval()
    x = torch.randn(2, 2, 300)
    assert torch.equal(model(x)["embedding"], model.backbone(x))


def test_student_registry_and_parameter_counts():
    for in_leads in (1, 2, 6):
        assert 100_000 <= n_params(create_model("student_cnn", in_leads=in_leads)) <= 200_000
        assert n_params(create_model("student_cnn_tiny", in_leads=in_leads)) < 60_000
    model = create_model("student_cnn", in_leads=2)
    assert model.dim == 128 and model.in_leads == 2 and model.leads == ("I", "II")
    assert model.model_config["fs"] == 100.0 and model.model_config["widths"] == [32, 64, 96, 128]
    rebuilt = model_from_config(model.model_config)
    assert n_params(rebuilt) == n_params(model) and rebuilt.in_leads == 2
    assert create_model("student_cnn").leads == ("I",)  # default: a single-lead handheld recorder
    assert model.model_config["leads"] == ["I", "II"] and "in_leads" not in model.model_config
    with pytest.raises(ConfigError, match="in_leads"):
        create_model("student_cnn_tiny", in_leads=7)
    with pytest.raises(ConfigError, match="activation"):
        create_model("student_cnn_tiny", in_leads=1, act="gelu")


def test_student_gradient_reaches_every_parameter():
    model = _student(6)
    x = torch.randn(4, 6, 400, requires_grad=True)
    out = model(x)
    (out["logits"].sum() + out["lvef"].sum() + out["embedding"].pow(2).sum()).backward()
    assert x.grad.abs().sum() > 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    zero_init_bn = model.backbone.stages[0][0].convs[4]  # starts at gamma 0 so the block begins as the identity
    assert zero_init_bn.weight.grad.abs().sum() > 0


def test_tiny_student_learns_sinus_vs_fast_rhythm():
    torch.manual_seed(0)
    model = _student(1, n_outputs=1, embed_dim=None)
    x, y = _rhythms(32, seed=0)  # 2.5 s windows, the shortest the student is meant for
    x_test, y_test = _rhythms(64, seed=1)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(20):
        loss = F.binary_cross_entropy_with_logits(model(x)["logits"][:, 0], y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    with torch.no_grad():
        prob = model.predict(x_test)[:, 0]
    assert ((prob > 0.5).float() == y_test).float().mean() >= 0.9


def test_onnx_export_parity_dynamic_axes_and_latency(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from cardiodistill.deploy import export_onnx, onnx_latency

    model = _student(2, name="student_cnn", n_outputs=4)
    model.train()
    example = torch.randn(1, 2, 1000)
    path = export_onnx(model, example, tmp_path / "student.onnx", metadata={"leads": "I,II", "fs": "100"})
    assert path == tmp_path / "student.onnx" and model.training  # the training flag is restored
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student.onnx"]
    assert {p.key: p.value for p in onnx.load(str(path)).metadata_props} == {"leads": "I,II", "fs": "100"}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["ecg"] and [o.name for o in session.get_outputs()] == ["outputs"]
    model.eval()
    for batch, samples in ((3, 1000), (2, 250)):
        x = torch.randn(batch, 2, samples)
        got = session.run(None, {"ecg": x.numpy()})[0]
        with torch.no_grad():
            np.testing.assert_allclose(got, model.predict(x).numpy(), atol=1e-4)
    latency = onnx_latency(path, example, n=20)
    assert 0 < latency["median_ms"] <= latency["p90_ms"] and latency["median_ms"] < 50


def test_gru_student_with_rhythm_exports_both_inputs(tmp_path):
    """A student with the GRU over its feature map and the rhythm input: one graph, two inputs, the same outputs
    as PyTorch at any batch and window length; the GRU reads time order (reversing the map changes it)."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from cardiodistill.deploy import export_onnx, onnx_latency

    torch.manual_seed(0)
    model = create_model("ecg_student", backbone={"name": "student_cnn", "temporal": "gru", "gru_hidden": 16},
                         outputs=["a", "b"], rhythm=["rr_cv", "pnn50", "few_beats"]).eval()
    assert model.backbone.gru is not None and model.backbone.head[1].in_features == 2 * 128 + 4 * 16
    fmap = torch.randn(2, 128, 10)
    assert not torch.allclose(model.backbone.pool(fmap), model.backbone.pool(fmap.flip(-1)))
    path = export_onnx(model, torch.randn(1, 1, 1000), tmp_path / "gru.onnx", rhythm=torch.rand(1, 3))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["ecg", "rhythm"]
    for batch, samples in ((3, 1000), (2, 500)):
        x, r = torch.randn(batch, 1, samples), torch.rand(batch, 3)
        got = session.run(None, {"ecg": x.numpy(), "rhythm": r.numpy()})[0]
        with torch.no_grad():
            np.testing.assert_allclose(got, model.predict(x, r).numpy(), atol=1e-4)
    assert onnx_latency(path, torch.randn(3, 1, 1000), n=5, rhythm=torch.rand(3, 3))["median_ms"] > 0

    # int8: the convolutions quantised; the GRU, which static quantisation leaves in float, stored in float16
    import onnx
    from onnx import numpy_helper

    from cardiodistill.deploy import quantize_int8

    windows = torch.randn(32, 1, 1000)
    q = quantize_int8(path, tmp_path / "gru_int8.onnx", windows.numpy(), rhythm=torch.rand(32, 3).numpy())
    halves = [t for t in onnx.load(str(q)).graph.initializer if numpy_helper.to_array(t).dtype == np.float16]
    assert len(halves) == 2  # the GRU's input and recurrent weights
    got = ort.InferenceSession(str(q), providers=["CPUExecutionProvider"]).run(
        None, {"ecg": windows[:4].numpy(), "rhythm": torch.full((4, 3), 0.5).numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, model.predict(windows[:4], torch.full((4, 3), 0.5)).numpy(), atol=0.15)
    with pytest.raises(ConfigError, match="temporal"):
        create_model("student_cnn", temporal="lstm")


def test_compact_names_shrink_the_graph_and_keep_its_outputs(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from cardiodistill.deploy import export_onnx
    from cardiodistill.deploy.quantize import compact_names

    torch.manual_seed(0)
    model = create_model("ecg_student", backbone={"name": "student_cnn_tiny"}, outputs=["a", "b"],
                         rhythm=["rr_cv", "pnn50"]).eval()
    example, rhythm = torch.randn(1, 1, 1000), torch.rand(1, 2)
    path = export_onnx(model, example, tmp_path / "tiny.onnx", rhythm=rhythm, compact=False)  # the exporter's names
    proto = onnx.load(str(path))
    before = proto.SerializeToString()
    assert compact_names(proto)
    onnx.checker.check_model(proto)
    after = proto.SerializeToString()
    assert len(after) < 0.95 * len(before)
    # the default export is the compact graph
    default = export_onnx(model, example, tmp_path / "default.onnx", rhythm=rhythm)
    assert {t.name for t in onnx.load(str(default)).graph.initializer} == {t.name for t in proto.graph.initializer}
    assert default.stat().st_size < 0.95 * path.stat().st_size
    graph = proto.graph
    assert [i.name for i in graph.input] == ["ecg", "rhythm"] and [o.name for o in graph.output] == ["outputs"]
    inner = {n for node in graph.node for n in [*node.input, *node.output]} - {"ecg", "rhythm", "outputs", ""}
    assert inner and all(len(n) <= 6 and n[0] == "t" for n in inner)
    assert {t.name for t in graph.initializer} <= inner
    assert [node.name for node in graph.node] == [f"n{i}" for i in range(len(graph.node))]
    x, r = np.random.default_rng(0).standard_normal((3, 1, 1000)).astype(np.float32), np.full((3, 2), 0.5, np.float32)
    runs = [ort.InferenceSession(b, providers=["CPUExecutionProvider"]).run(None, {"ecg": x, "rhythm": r})[0]
            for b in (before, after)]
    np.testing.assert_array_equal(runs[0], runs[1])
    # a graph with a subgraph keeps its names: a subgraph may read the outer graph's tensors by name
    branch = helper.make_graph([helper.make_node("Identity", ["x"], ["y_then"])], "then", [],
                               [helper.make_tensor_value_info("y_then", TensorProto.FLOAT, [1])])
    nested = helper.make_model(helper.make_graph(
        [helper.make_node("Identity", ["c"], ["c_copy"], name="copy"),
         helper.make_node("If", ["c_copy"], ["y"], then_branch=branch, else_branch=branch, name="choose")],
        "g", [helper.make_tensor_value_info(n, t, [1]) for n, t in (("c", TensorProto.BOOL), ("x", TensorProto.FLOAT))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])]))
    assert not compact_names(nested) and [n.name for n in nested.graph.node] == ["copy", "choose"]
    # an input already called like a short name keeps it, and no inner tensor takes it
    chain = helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["t1"], ["first"]), helper.make_node("Relu", ["first"], ["second"]),
         helper.make_node("Neg", ["second"], ["y"])],
        "chain", [helper.make_tensor_value_info("t1", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])]))
    assert compact_names(chain)
    onnx.checker.check_model(chain)
    assert [list(n.input) + list(n.output) for n in chain.graph.node] == [["t1", "t0"], ["t0", "t2"], ["t2", "y"]]


class _Noisy(nn.Module):
    """A model whose exported graph cannot match PyTorch: it adds fresh noise on every call."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(8, 2)

    def predict(self, x: Tensor) -> Tensor:
        return self.linear(x.mean(dim=1)) + torch.rand(x.shape[0], 2)


def test_onnx_export_that_fails_verification_leaves_nothing(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from cardiodistill.deploy import export_onnx

    with pytest.raises(RuntimeError, match="differs from PyTorch"):
        export_onnx(_Noisy(), torch.randn(2, 3, 8), tmp_path / "noisy.onnx", dynamic_samples=False)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------------ rollout


def _random_attention(batch: int, heads: int, n: int, seed: int, key_mask: Tensor | None = None) -> Tensor:
    logits = torch.randn(batch, heads, n, n, generator=torch.Generator().manual_seed(seed))
    if key_mask is not None:
        logits = logits.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    return logits.softmax(dim=-1)


def test_rollout_of_identity_attention_is_identity():
    eye = torch.eye(5).expand(2, 3, 5, 5)
    assert torch.allclose(attention_rollout([eye, eye, eye]), torch.eye(5).expand(2, 5, 5))


def test_rollout_matches_manual_two_layer_computation():
    first, second = _random_attention(2, 3, 4, seed=1), _random_attention(2, 3, 4, seed=2)
    rollout = attention_rollout([first, second]).numpy()
    for b in range(2):
        a1 = 0.5 * first[b].mean(0).numpy() + 0.5 * np.eye(4)  # rows of W + I sum to 2
        a2 = 0.5 * second[b].mean(0).numpy() + 0.5 * np.eye(4)
        np.testing.assert_allclose(rollout[b], a2 @ a1, atol=1e-6)
    np.testing.assert_allclose(rollout.sum(-1), 1.0, atol=1e-6)


def test_rollout_gives_masked_keys_no_mass():
    key_mask = torch.tensor([[True, True, True, False, False], [True, True, True, True, True]])
    attentions = [_random_attention(2, 2, 5, seed=s, key_mask=key_mask) for s in range(3)]
    rollout = attention_rollout(attentions, key_mask)
    assert torch.all(rollout[0, :, 3:] == 0)
    assert torch.allclose(rollout.sum(-1), torch.ones(2, 5))


def test_modality_share_of_identity_rollout_and_cls_token():
    # tokens: CLS (no modality), two of modality 0, three of modality 1
    modality = torch.tensor([-1, 0, 0, 1, 1, 1])
    share = modality_attention_share(torch.eye(6).expand(2, 6, 6), modality, 2)
    assert torch.allclose(share, torch.eye(2, dtype=torch.float64))
    # every token attends uniformly: modality 1 has 3 of the 5 counted keys
    share = modality_attention_share(torch.full((1, 6, 6), 1 / 6), modality, 2)
    assert torch.allclose(share, torch.tensor([[0.4, 0.6], [0.4, 0.6]], dtype=torch.float64))


def test_modality_share_rows_sum_to_one_and_absent_modality_is_nan():
    key_mask = torch.tensor([[True] * 6, [True, True, True, True, False, False]])
    rollout = attention_rollout([_random_attention(2, 2, 6, seed=s, key_mask=key_mask) for s in range(2)], key_mask)
    modality = torch.tensor([[0, 0, 1, 1, 2, 2], [0, 0, 1, 1, 2, 2]])
    share = modality_attention_share(rollout, modality, 4, key_mask)
    assert torch.allclose(share[:3].sum(-1), torch.ones(3, dtype=torch.float64))
    assert torch.isnan(share[3]).all()
    with pytest.raises(ValueError, match="token_modality"):
        modality_attention_share(rollout, modality, 2)


# ---------------------------------------------------------------------------------------------------------- RSV


def _modal_batch(n: int = 40, seed: int = 0) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "a": torch.randn(n, 6, generator=g),
        "a_present": torch.ones(n, dtype=torch.bool),
        "b": torch.randn(n, 6, generator=g),
        "shared": torch.randn(n, 3, generator=g),  # in no group: always the anchor's
    }


GROUPS = {"a": ["a", "a_present"], "b": ["b"]}


def test_rsv_of_units_that_see_one_modality_is_one():
    weight = torch.randn(6, 8, generator=torch.Generator().manual_seed(3))

    def embed_a_only(batch: dict[str, Tensor]) -> Tensor:
        return torch.tanh(batch["a"] @ weight) * batch["a_present"][:, None] + batch["shared"].sum(1, keepdim=True)

    rsv, names = relative_source_variance(embed_a_only, _modal_batch(), GROUPS, n_anchor=4, n_vary=8)
    assert names == ["a", "b"] and rsv.shape == (8, 2)
    np.testing.assert_allclose(rsv[:, 0], 1.0)

    def embed_split(batch: dict[str, Tensor]) -> Tensor:
        return torch.cat([batch["a"][:, :2], torch.sin(batch["b"][:, :3]), batch["a"][:, :1] + batch["b"][:, :1]], 1)

    rsv, _ = relative_source_variance(embed_split, _modal_batch(), GROUPS, n_anchor=8, n_vary=16, seed=1)
    np.testing.assert_allclose(rsv[:2], [[1, 0], [1, 0]], atol=1e-12)
    np.testing.assert_allclose(rsv[2:5, 1], 1.0, atol=1e-12)
    assert 0.2 < rsv[5, 0] < 0.8 and np.allclose(rsv.sum(1), 1.0)
    again, _ = relative_source_variance(embed_split, _modal_batch(), GROUPS, n_anchor=8, n_vary=16, seed=1)
    assert np.array_equal(rsv, again)


def test_rsv_rejects_bad_groups_and_marks_units_nothing_moves():
    batch = _modal_batch(10)
    constant = relative_source_variance(lambda b: torch.zeros(len(b["a"]), 3), batch, GROUPS, n_anchor=2, n_vary=4)[0]
    assert np.isnan(constant).all()
    with pytest.raises(ConfigError, match="two modality groups"):
        relative_source_variance(lambda b: b["a"], batch, {"a": ["a"], "b": ["a"]})
    with pytest.raises(ConfigError, match="does not have"):
        relative_source_variance(lambda b: b["a"], batch, {"a": ["a"], "c": ["c"]})


def test_analysis_plots_write_pngs(tmp_path):
    share = torch.tensor([[0.7, 0.2, 0.1], [0.3, 0.5, 0.2], [float("nan")] * 3])
    _assert_png(plot_modality_attention(share, ["ecg", "echo", "labs"], tmp_path / "share.png", title="rollout"))
    rsv = np.random.default_rng(0).dirichlet([1, 1, 1], size=50)
    rsv[3] = np.nan
    _assert_png(plot_rsv(rsv, ["ecg", "echo", "labs"], tmp_path / "rsv.png", title="RSV"))
    with pytest.raises(ValueError, match="rsv"):
        plot_rsv(rsv, ["ecg", "echo"], tmp_path / "bad.png")
