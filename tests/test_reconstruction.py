"""MAE reconstruction metrics and figure: determinism, oracle and baseline truths, norm_pix, the PNG."""

from __future__ import annotations

import json

import matplotlib.image
import numpy as np
import pytest
import torch

from cardiodistill.errors import ConfigError, DataError
from cardiodistill.evaluate.reconstruction import (
    interpolation_baseline,
    plot_reconstruction,
    reconstruction_figure,
    reconstruction_metrics,
)
from cardiodistill.models import create_model
from cardiodistill.objectives import normalise_patches
from cardiodistill.signals.leads import LEADS_12
from cardiodistill.viz import _plt

plt = _plt()

FS = 100.0
SAMPLES = 400  # 8 patches of 50 per lead
TINY = {"fs": FS, "seconds": 4.0, "patch_size": 50, "dim": 32, "depth": 1, "heads": 2}
TINY |= {"decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 2}


def tiny_mae(**overrides):
    torch.manual_seed(0)
    return create_model("ecg_mae_tiny", **{**TINY, **overrides})


def oracle(mae):
    """Make the decoder return the truth (standardised per patch under norm_pix)."""

    def decode(latent, cls, ids_keep, keep_valid, layout):
        return normalise_patches(layout.patches) if mae.norm_pix else layout.patches

    mae._decode = decode
    return mae


def ecg_batch(n: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Z-scored QRS-like spikes with per-lead gains; aVR (index 3) absent in every record."""
    rng = np.random.default_rng(seed)
    t = np.arange(SAMPLES) / FS
    phase = np.remainder(t / rng.uniform(0.6, 1.0, (n, 1, 1)), 1.0)
    x = rng.normal(size=(n, 12, 1)) * np.exp(-((phase - 0.3) ** 2) / 0.001) + 0.05 * rng.normal(size=(n, 12, SAMPLES))
    x = ((x - x.mean(-1, keepdims=True)) / x.std(-1, keepdims=True)).astype(np.float32)
    present = np.ones((n, 12), dtype=bool)
    present[:, 3] = False
    x[:, 3] = 0.0
    return x, present


def test_metrics_are_deterministic_json_ready_and_add_up():
    mae = tiny_mae()
    x, present = ecg_batch()
    first = reconstruction_metrics(mae, x, present, batch_size=4, seed=3)
    assert first == reconstruction_metrics(mae, torch.from_numpy(x), torch.from_numpy(present), batch_size=4, seed=3)
    assert first != reconstruction_metrics(mae, x, present, batch_size=4, seed=4)
    json.dumps(first)
    assert "aVR" not in first["per_lead"] and set(first["per_lead"]) <= set(LEADS_12)
    assert sum(row["n_patches"] for row in first["per_lead"].values()) == first["n_patches"]
    # lead dropping off: 75 % of the 11 x 8 present patches hidden in each of 6 records
    assert first["n_patches"] == 6 * round(11 * 8 * 0.75)
    assert first["mask_ratio"] == 0.75 and first["lead_mask_prob"] == 0.0 and mae.lead_mask_prob == 0.25
    assert first["mse_norm"] is None and -1.0 <= first["ncc"] <= 1.0
    assert mae.training  # training mode restored


def test_mse_matches_training_loss_on_the_same_masks():
    mae = tiny_mae(lead_mask_prob=0.0)
    x, present = ecg_batch()
    metrics = reconstruction_metrics(mae, x, present, batch_size=64, seed=7)
    mae.eval()
    with torch.no_grad():
        out = mae(torch.from_numpy(x), LEADS_12, torch.from_numpy(present), generator=torch.Generator().manual_seed(7))
    assert metrics["mse"] == pytest.approx(float(out["loss"]), rel=1e-5)


def test_oracle_decoder_scores_perfectly_and_beats_the_baseline():
    metrics = reconstruction_metrics(oracle(tiny_mae()), *ecg_batch())
    assert metrics["mse"] == pytest.approx(0.0, abs=1e-10)
    assert metrics["ncc"] == pytest.approx(1.0, abs=1e-6)
    assert metrics["baseline_interp_mse"] > 0.1 and metrics["baseline_interp_ncc"] < 0.9
    for row in metrics["per_lead"].values():
        assert row["mse"] == pytest.approx(0.0, abs=1e-10) and row["ncc"] == pytest.approx(1.0, abs=1e-6)


def test_norm_pix_oracle_is_de_normalised_and_mse_norm_is_the_loss():
    metrics = reconstruction_metrics(oracle(tiny_mae(norm_pix=True)), *ecg_batch())
    assert metrics["norm_pix"] and metrics["mse_norm"] == pytest.approx(0.0, abs=1e-10)
    assert metrics["mse"] == pytest.approx(0.0, abs=1e-8) and metrics["ncc"] == pytest.approx(1.0, abs=1e-6)

    mae = tiny_mae(norm_pix=True, lead_mask_prob=0.0)
    x, present = ecg_batch()
    metrics = reconstruction_metrics(mae, x, present, seed=1)
    mae.eval()
    with torch.no_grad():
        out = mae(torch.from_numpy(x), LEADS_12, torch.from_numpy(present), generator=torch.Generator().manual_seed(1))
    assert metrics["mse_norm"] == pytest.approx(float(out["loss"]), rel=1e-5)
    assert metrics["mse"] != pytest.approx(metrics["mse_norm"], rel=1e-2)


def test_interpolation_baseline_is_exact_on_a_line_and_holds_at_edges():
    ramp = torch.arange(2 * 6 * 5, dtype=torch.float32).reshape(1, 12, 5) * 0.1 - 1.0  # 2 leads x 6 patches of 5
    mask = torch.zeros(1, 12, dtype=torch.bool)
    mask[0, [1, 2, 4]] = True  # lead 0: interior patches
    mask[0, [6, 11]] = True  # lead 1: first and last patch
    filled = interpolation_baseline(ramp, mask, n_leads=2)
    assert torch.allclose(filled[0, :6], ramp[0, :6], atol=1e-6)
    assert torch.allclose(filled[0, 6], ramp[0, 7, 0].expand(5))  # held at the first visible sample
    assert torch.allclose(filled[0, 11], ramp[0, 10, -1].expand(5))  # held at the last one
    assert torch.equal(filled[0, 7:11], ramp[0, 7:11])
    mask[0, 6:] = True  # nothing visible: zero
    assert torch.equal(interpolation_baseline(ramp, mask, n_leads=2)[0, 6:], torch.zeros(6, 5))


def test_bad_inputs_raise_one_line_errors():
    mae = tiny_mae()
    x, present = ecg_batch(2)
    with pytest.raises(DataError, match="multiple of 50"):
        reconstruction_metrics(mae, x[..., :390], present)
    with pytest.raises(DataError, match="present must be"):
        reconstruction_metrics(mae, x, present[:, :6])
    with pytest.raises(DataError, match="at least one present lead"):
        reconstruction_metrics(mae, x, np.zeros_like(present))
    with pytest.raises(ConfigError, match="masked no patch"):
        reconstruction_metrics(tiny_mae(mask_ratio=0.0), x, present)


def test_figure_has_a_row_per_present_lead_and_is_written_as_png(tmp_path):
    mae = tiny_mae(norm_pix=True)
    x, present = ecg_batch(1)
    fig = reconstruction_figure(mae, x[0], present[0], fs=FS, seed=2)
    assert len(fig.axes) == 11
    assert [ax.get_ylabel().split("\n")[0] for ax in fig.axes] == [name for name in LEADS_12 if name != "aVR"]
    assert all(ax.get_ylabel().split("\n")[1].startswith("NCC ") for ax in fig.axes)
    assert "de-normalised" in fig.get_suptitle()
    plt.close(fig)

    path = plot_reconstruction(mae, x[0, :2], present[0, :2], tmp_path / "recon.png", leads=("I", "II"), fs=FS)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.image.imread(path).shape[0] > 100
    assert [p.name for p in tmp_path.iterdir()] == ["recon.png"]
