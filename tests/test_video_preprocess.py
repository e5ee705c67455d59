"""Echo / cine-MR preprocessing: field of view, overlays, cycle timing, prepared clips, normalisation.

Simulated clips come with ground truth (sector geometry, heart rate, LV volume per frame); real
DICOM samples are used when ``/work/shared/data`` is present and skipped otherwise.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from cardiodistill.config import SynthConfig
from cardiodistill.errors import ConfigError, DataError
from cardiodistill.records import VideoClip
from cardiodistill.synth.cohort import generate_chunk
from cardiodistill.synth.echo import DEPTH_CM, SECTOR_HALF_ANGLE_DEG
from cardiodistill.video import (
    ClipSpec,
    cycle_window,
    estimate_cycle_period,
    find_field_of_view,
    normalise_frames,
    overlay_mask,
    prepare_clip,
    prepare_windows,
    save_preprocessing_figure,
)

REAL_DICOM = Path(__file__).resolve().parents[2] / "shared" / "data" / "dicom"


@pytest.fixture(scope="module")
def sim():
    """Eight simulated patients (one chunk): echo clips plus ground truth."""
    cfg = SynthConfig(patients=8, chunk_size=8, seed=0, mobile={"enabled": False})
    return generate_chunk(cfg, 0)


def _clip(sim, i: int, **meta) -> VideoClip:
    return VideoClip(sim.echo.frames[i], sim.echo.fps, meta=meta)


def _renderer_sector(size: int) -> np.ndarray:
    """The renderer's sector footprint (every pixel it can paint): depth <= DEPTH_CM and beam
    angle <= SECTOR_HALF_ANGLE_DEG, with the half-pixel soft edge of ``synth.echo``."""
    px_per_cm = (size - 1) / DEPTH_CM
    rows, cols = np.mgrid[0:size, 0:size].astype(float)
    z, x = rows / px_per_cm, (cols - (size - 1) / 2) / px_per_cm
    depth, angle = np.hypot(z, x), np.arctan2(x, z)
    edge = np.minimum(DEPTH_CM - depth, (np.deg2rad(SECTOR_HALF_ANGLE_DEG) - np.abs(angle)) * depth) * px_per_cm
    return edge > -0.5


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


# ------------------------------------------------------------------------------------------------
# simulator: sector, period, prepared clips
# ------------------------------------------------------------------------------------------------


def test_field_of_view_matches_the_rendered_sector(sim):
    ref = _renderer_sector(sim.echo.frames.shape[-1])
    ious = [_iou(find_field_of_view(_clip(sim, i)), ref) for i in range(len(sim))]
    assert min(ious) > 0.95, ious


def test_single_frame_clip_falls_back_to_non_black_pixels(sim):
    still = VideoClip(sim.echo.frames[0, :1], sim.echo.fps, meta={"heart_rate": 80.0})
    ref = _renderer_sector(still.frames.shape[-1])
    assert _iou(find_field_of_view(still), ref) > 0.9
    assert not overlay_mask(still, ref).any()  # one frame cannot tell static graphics from tissue
    prepared = prepare_clip(still, ClipSpec(size=32, frames=4))
    assert prepared.period_source == "tag" and prepared.period_s == pytest.approx(0.75)
    assert (prepared.frames == prepared.frames[0]).all()  # one frame, repeated


def test_cycle_period_matches_the_true_heart_rate(sim):
    fps = sim.echo.fps
    truth = 60.0 / sim.pop.heart_rate
    est = np.array([estimate_cycle_period(sim.echo.frames[i], fps, find_field_of_view(_clip(sim, i)))
                    for i in range(len(sim))])
    rel = np.abs(est / truth - 1.0)
    sinus = ~sim.pop.af
    assert np.isfinite(est[sinus]).all()
    assert np.nanmedian(rel) < 0.05, rel
    assert rel[sinus].max() < 0.08, rel  # AF is irregular: its error is reported, not bounded
    # too short for 1.2 cycles at 30 bpm, or nothing periodic: NaN (the caller falls back)
    assert math.isnan(estimate_cycle_period(sim.echo.frames[0, :100], fps))
    noise = np.random.default_rng(0).integers(0, 255, (140, 32, 32), dtype=np.uint8)
    assert math.isnan(estimate_cycle_period(noise, fps))
    with pytest.raises(ConfigError, match="hr_range"):
        estimate_cycle_period(sim.echo.frames[0], fps, hr_range=(120, 60))


def test_one_cycle_window_spans_end_diastole_to_end_diastole(sim):
    spec = ClipSpec(size=64, frames=16, cycles=1.0)
    fps = sim.echo.fps
    for i in np.flatnonzero(~sim.pop.af):
        ed = sim.echo.ed_frames[i]  # R-peak (end-diastole) frames in the clip
        prepared = prepare_clip(_clip(sim, i), spec, start_s=ed[0] / fps)
        assert prepared.frames.shape == (16, 64, 64) and prepared.frames.dtype == np.uint8
        assert prepared.mask.shape == (64, 64) and prepared.mask.dtype == bool
        assert not prepared.frames[:, ~prepared.mask].any()
        assert 0.4 < prepared.mask.mean() < 0.8
        assert prepared.period_source == "pixels"
        t0, t1 = prepared.window_s
        assert t0 == pytest.approx(ed[0] / fps) and t1 - t0 == pytest.approx(prepared.period_s)
        np.testing.assert_allclose(prepared.times_s, np.linspace(t0, t1, 16))
        # the last frame lands on the next end-diastole (beat-to-beat variability allowed for) ...
        assert abs(t1 * fps - ed[1]) < 0.06 * (ed[1] - ed[0]), (i, t1 * fps, ed)
        volume = sim.echo.lv_volume_ml[i]
        v0, v1 = np.interp(np.array([t0, t1]) * fps, np.arange(volume.size), volume)
        assert abs(v1 - v0) < 0.1 * (sim.pop.lvedv[i] - sim.pop.lvesv[i])
        # ... and looks like the first, while mid-cycle differs
        first, mid, last = (prepared.frames[k].astype(float) for k in (0, 7, 15))
        assert np.abs(last - first).mean() < 0.6 * np.abs(mid - first).mean()


def test_fixed_frame_rate_path_and_start(sim):
    clip = _clip(sim, 1)
    spec = ClipSpec(size=48, frames=20, cycles=None, fps=25.0)
    prepared = prepare_clip(clip, spec)
    np.testing.assert_allclose(np.diff(prepared.times_s), 1 / 25.0)
    assert prepared.window_s == pytest.approx((0.0, 19 / 25.0))
    later = prepare_clip(clip, spec, start_s=1.0)
    assert later.window_s[0] == pytest.approx(1.0)
    # a start past the end moves the window back to end at the last frame
    last = (clip.n_frames - 1) / clip.fps
    assert prepare_clip(clip, spec, start_s=99.0).window_s == pytest.approx((last - 19 / 25.0, last))
    # a clip shorter than the window holds its last frame
    short = prepare_clip(VideoClip(clip.frames[:10], clip.fps), spec)
    assert short.times_s[-1] == pytest.approx(9 / clip.fps) and short.window_s[0] == 0.0
    np.testing.assert_array_equal(short.frames[-1], short.frames[-2])
    with pytest.raises(ConfigError, match="start_s"):
        prepare_clip(clip, spec, start_s=float("nan"))


def test_windows_spread_over_the_clip_and_the_first_is_prepare_clip(sim):
    clip = _clip(sim, 2)
    spec = ClipSpec(size=32, frames=8, cycles=1.0)
    windows = prepare_windows(clip, spec, 3)
    first = prepare_clip(clip, spec)
    np.testing.assert_array_equal(windows[0].frames, first.frames)
    starts = [w.window_s[0] for w in windows]
    last = (clip.n_frames - 1) / clip.fps
    assert starts[0] == 0.0 and starts[1] == pytest.approx(starts[2] / 2)
    assert windows[2].window_s[1] == pytest.approx(last)  # the last window ends at the last frame
    for w in windows[1:]:
        np.testing.assert_array_equal(w.frames, prepare_clip(clip, spec, start_s=w.window_s[0]).frames)
    with pytest.raises(ConfigError, match="at least 1"):
        prepare_windows(clip, spec, 0)


def test_cycle_window_clamps_to_the_clip():
    assert cycle_window(100, 50.0, 0.8, 1.0) == pytest.approx((0.0, 0.8))
    assert cycle_window(100, 50.0, 0.8, 2.0, start=10) == pytest.approx((0.2, 1.8))
    assert cycle_window(100, 50.0, 0.8, 1.0, start=90) == pytest.approx((99 / 50 - 0.8, 99 / 50))
    assert cycle_window(20, 50.0, 0.8, 1.0) == pytest.approx((0.0, 19 / 50))  # shorter: the whole clip
    with pytest.raises(ConfigError, match="period_s"):
        cycle_window(100, 50.0, float("nan"), 1.0)


def test_pixel_spacing_keeps_the_aspect_ratio():
    rng = np.random.default_rng(1)
    frames = rng.integers(60, 200, (12, 40, 80), dtype=np.uint8)
    square = prepare_clip(VideoClip(frames, 25.0, modality="cmr"), ClipSpec(size=32, frames=4))
    assert square.mask.sum(axis=1).max() == 32 and square.mask.sum(axis=0).max() == 16  # 80 x 40 px -> 32 x 16
    tall = VideoClip(frames, 25.0, modality="cmr", meta={"pixel_spacing_mm": (2.0, 1.0)})  # 80 x 80 mm
    assert prepare_clip(tall, ClipSpec(size=32, frames=4)).mask.all()


# ------------------------------------------------------------------------------------------------
# burned-in overlays and an ECG sweep on a simulated screen grab
# ------------------------------------------------------------------------------------------------

_TOP, _LEFT, _SCREEN = 4, 34, (150, 180)


def _ecg_sweep(n_frames: int, fps: float, cols: range, baseline: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pixels of a 1-px ECG trace on a sweeping monitor (100 px/s, 4 px erase bar), per frame."""
    def ecg(t: np.ndarray) -> np.ndarray:  # px above the baseline: QRS spike and T wave, 72 bpm
        phase = np.mod(t, 60 / 72)
        return 14 * np.exp(-0.5 * ((phase - 0.3) / 0.012) ** 2) + 3 * np.exp(-0.5 * ((phase - 0.55) / 0.04) ** 2)

    x = np.asarray(cols)
    width, speed = len(x), 100.0
    out = []
    for k in range(n_frames):
        t = k / fps
        behind = np.mod(t * speed - (x - x[0]), width)  # px since the cursor last passed each column
        y = np.rint(baseline - ecg(t - behind / speed)).astype(int)
        drawn = behind >= 4
        rows, columns = [], []
        for j in np.flatnonzero(drawn[1:]) + 1:
            lo, hi = sorted((y[j - 1], y[j]))
            rows.extend(range(lo, hi + 1))
            columns.extend([x[j]] * (hi - lo + 1))
        out.append((np.asarray(rows), np.asarray(columns)))
    return out


def _screen_grab(frames: np.ndarray, fps: float, graphics: bool) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Put a simulated sector into a larger screen, with static text, a caliper and an ECG sweep."""
    n, size = frames.shape[0], frames.shape[-1]
    screen = np.zeros((n, *_SCREEN), np.uint8)
    screen[:, _TOP:_TOP + size, _LEFT:_LEFT + size] = frames
    parts = {name: np.zeros(_SCREEN, bool) for name in ("sector", "text", "caliper", "ecg")}
    parts["sector"][_TOP:_TOP + size, _LEFT:_LEFT + size] = _renderer_sector(size)
    if graphics:
        for r0, c0 in [(6, 2), (6, 8), (6, 14), (14, 2), (14, 8), (6, 38), (6, 44), (6, 50), (6, 150), (6, 160)]:
            parts["text"][r0:r0 + 5, c0:c0 + 4] = True  # letters: outside the sector
        parts["caliper"][62:73, 90] = True  # a "+" inside the sector
        parts["caliper"][67, 85:96] = True
        screen[:, parts["text"]] = 230
        screen[:, parts["caliper"]] = 255
        for k, (rows, cols) in enumerate(_ecg_sweep(n, fps, range(10, 170), baseline=142)):
            screen[k, rows, cols] = 200
            parts["ecg"][rows, cols] = True
    return screen, parts


def test_text_and_ecg_sweep_are_outside_the_field_of_view_and_calipers_blanked(sim):
    fps = sim.echo.fps
    dirty_frames, parts = _screen_grab(sim.echo.frames[2], fps, graphics=True)
    clean_frames, _ = _screen_grab(sim.echo.frames[2], fps, graphics=False)
    dirty, clean = VideoClip(dirty_frames, fps), VideoClip(clean_frames, fps)

    fov = find_field_of_view(dirty)
    assert _iou(fov, parts["sector"]) > 0.95
    assert not (fov & parts["text"]).any() and not (fov & parts["ecg"]).any()
    overlay = overlay_mask(dirty, fov)
    assert overlay[parts["caliper"]].all() and overlay.sum() <= 3 * parts["caliper"].sum()
    assert not overlay_mask(clean, find_field_of_view(clean)).any()

    spec = ClipSpec(size=64, frames=8)
    a, b = prepare_clip(dirty, spec), prepare_clip(clean, spec)
    assert a.period_s == pytest.approx(b.period_s, rel=0.02) and a.period_source == "pixels"
    assert abs(a.crop_box[0] - b.crop_box[0]) <= 1 and abs(a.crop_box[1] - b.crop_box[1]) <= 1
    # the white caliper does not leak into the prepared frames: nowhere brighter than the clean clip
    assert (a.frames.astype(int) - b.frames.astype(int)).max() < 40
    assert a.frames.max(axis=0)[a.mask].mean() == pytest.approx(b.frames.max(axis=0)[b.mask].mean(), rel=0.05)


# ------------------------------------------------------------------------------------------------
# real DICOM files
# ------------------------------------------------------------------------------------------------


def _need_real(name: str) -> VideoClip:
    from cardiodistill.io.dicom import read_video_dicom

    path = REAL_DICOM / name
    if not path.is_file():
        pytest.skip(f"real DICOM sample {path} not available")
    return read_video_dicom(path)


def test_real_apical_four_chamber_echo():
    clip = _need_real("color3d_jpeg_baseline.dcm")
    fov = find_field_of_view(clip)
    assert 0.25 < fov.mean() < 0.75
    assert not fov[:40].any() and not fov[:60, :100].any()  # the UI text block at the top left
    prepared = prepare_clip(clip, ClipSpec(size=64, frames=8))
    assert prepared.frames.shape == (8, 64, 64) and prepared.period_source == "pixels"
    assert 0.6 < prepared.period_s < 1.5  # 40-100 bpm


def test_real_doppler_echo_excludes_its_ecg_trace():
    clip = _need_real("US-PAL-8-10x-echo.dcm")
    fov = find_field_of_view(clip)
    assert not fov[360:].any()  # the ECG trace runs along rows 365-400
    assert not fov[:, :100].any()  # the text column on the left
    assert overlay_mask(clip, fov).any()  # the colour-Doppler box outline
    prepared = prepare_clip(clip, ClipSpec(size=64, frames=8))
    assert prepared.period_source == "default"  # 10 frames (0.7 s) and no HeartRate tag
    assert prepared.window_s == pytest.approx((0.0, 9 / clip.fps))


def test_real_cine_mr_uses_the_frame_less_its_padding(tmp_path):
    clip = _need_real("MR-MONO2-8-16x-heart.dcm")
    fov = find_field_of_view(clip)
    assert fov[24:232].all() and not fov[:24].any() and not fov[232:].any()  # zero-padded rows
    prepared = prepare_clip(clip, ClipSpec(size=64, frames=8))
    assert prepared.crop_box == (24, 232, 0, 256)
    path = save_preprocessing_figure(clip, prepared, tmp_path / "cmr.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["cmr.png"]  # written atomically, no temporary left


# ------------------------------------------------------------------------------------------------
# normalisation and the spec
# ------------------------------------------------------------------------------------------------


def test_normalise_frames_numpy_and_torch_agree():
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 256, (3, 5, 16, 16), dtype=np.uint8)
    masks = rng.random((3, 16, 16)) > 0.3
    out = normalise_frames(frames, masks)
    assert out.dtype == np.float32 and out.shape == frames.shape
    assert not out[np.broadcast_to(~masks[:, None], out.shape)].any()
    for k in range(3):
        inside = out[k][:, masks[k]]
        assert inside.mean() == pytest.approx(0.0, abs=1e-5) and inside.std() == pytest.approx(1.0, rel=1e-4)
    tensor = normalise_frames(torch.from_numpy(frames), torch.from_numpy(masks))
    assert isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float32
    np.testing.assert_allclose(tensor.numpy(), out, atol=1e-5)
    shared = normalise_frames(frames, masks[0])  # one mask for the whole batch
    np.testing.assert_allclose(shared[0], out[0], atol=1e-6)
    flat = normalise_frames(np.full((4, 8, 8), 77, np.uint8), np.ones((8, 8), bool))
    assert np.isfinite(flat).all() and not flat.any()
    with pytest.raises(DataError, match="do not match"):
        normalise_frames(frames, masks[:, :8])


def test_clip_spec_round_trip_and_validation():
    spec = ClipSpec(size=112, frames=8, cycles=2, fps=20, default_hr=60)
    assert ClipSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert isinstance(spec.cycles, float)
    fixed = ClipSpec(cycles=None)
    assert ClipSpec.from_dict(json.loads(json.dumps(fixed.to_dict()))) == fixed
    assert ClipSpec.from_dict({}) == ClipSpec()
    bad_values = [("size", 0), ("size", 4), ("size", 64.5), ("size", True), ("frames", 0), ("cycles", 0),
                  ("cycles", -1.0), ("cycles", float("nan")), ("cycles", "1"), ("fps", 0), ("default_hr", 5)]
    for name, value in bad_values:
        with pytest.raises(ConfigError, match=f"ClipSpec.{name}"):
            ClipSpec.from_dict({name: value})
    with pytest.raises(ConfigError, match="no field"):
        ClipSpec.from_dict({"size": 64, "colour": True})
