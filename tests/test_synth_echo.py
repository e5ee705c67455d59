"""The A4C echo generator: LV mechanics, image-derived EF and timing, regional and structural
disease, determinism. Cavity areas are measured from the pixels (smoothing, thresholding,
connected components), never read back from the renderer's ground truth."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cardiodistill.config import PrevalenceConfig
from cardiodistill.errors import ConfigError
from cardiodistill.synth.echo import (
    ECHO_VIEWS,
    HALF_TISSUE,
    EchoBatch,
    lv_cavity_masks,
    lv_volume,
    measure_lv_area,
    render_echo,
    smooth_frames,
)
from cardiodistill.synth.population import Population, sample_population
from cardiodistill.synth.rhythm import sample_beats


def cavity_masks(batch: EchoBatch, i: int) -> np.ndarray:
    return lv_cavity_masks(batch.frames[i], batch.lv_center_px[i], batch.mitral_annulus_px[i])


def measured_areas(batch: EchoBatch) -> np.ndarray:
    return np.stack([measure_lv_area(batch.frames[i], batch.lv_center_px[i], batch.mitral_annulus_px[i])
                     for i in range(len(batch.frames))])


def ray_radius(mask: np.ndarray, centre: np.ndarray, direction: np.ndarray) -> float:
    """Distance from ``centre`` along ``direction`` to the first pixel outside ``mask``."""
    steps = np.arange(0.0, 80.0, 0.25)
    pts = np.rint(centre[None] + steps[:, None] * direction[None]).astype(int)
    pts = np.clip(pts, 0, np.array(mask.shape) - 1)
    return float(steps[np.argmin(mask[pts[:, 0], pts[:, 1]])])


def lv_axes(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(towards the apex, towards the lateral wall) unit vectors of a cavity mask, image (row, col)."""
    pts = np.argwhere(mask).astype(float)
    _, vecs = np.linalg.eigh(np.cov(pts.T))
    apex = vecs[:, -1] * (-1.0 if vecs[0, -1] > 0 else 1.0)  # long axis, pointing up the screen
    lateral = np.array([-apex[1], apex[0]])
    return apex, (lateral if lateral[1] > 0 else -lateral)


def direction(apex: np.ndarray, lateral: np.ndarray, phi_deg: float) -> np.ndarray:
    """LV angle convention: 0 = apex, +90 = lateral wall, -90 = septum."""
    phi = np.deg2rad(phi_deg)
    return np.cos(phi) * apex + np.sin(phi) * lateral


def first_cycle(batch: EchoBatch, i: int) -> tuple[int, int]:
    ed = batch.ed_frames[i][0]
    return int(ed), int(batch.es_frames[i][batch.es_frames[i] > ed][0])


# ------------------------------------------------------------------------------------------------
# cohorts
# ------------------------------------------------------------------------------------------------


def _cohort(n: int, seed: int, **prevalence) -> Population:
    return sample_population(n, PrevalenceConfig(**prevalence), np.random.default_rng(seed))


def _with(pop: Population, **changes) -> Population:
    changes = {k: np.broadcast_to(np.asarray(v), (len(pop),)).copy() for k, v in changes.items()}
    return dataclasses.replace(pop, **changes)


def _render(pop: Population, seed: int = 7, noise: float = 1.0, start: float = 2.0) -> EchoBatch:
    beats = sample_beats(pop, 10.0, np.random.default_rng(seed - 1))
    return render_echo(pop, beats, np.random.default_rng(seed), start_s=np.full(len(pop), start), noise=noise)


@pytest.fixture(scope="module")
def ef_study() -> tuple[Population, EchoBatch, np.ndarray]:
    """60 patients with every condition mixed in and LVEF spread evenly over 15-75 %."""
    pop = _cohort(60, 5, mi=0.3, af=0.25, valve=0.2, lvh=0.2)
    ef = np.random.default_rng(0).permutation(np.linspace(15.0, 75.0, 60))
    pop = _with(pop, lvef=ef, lvesv=pop.lvedv * (1.0 - ef / 100.0))
    batch = _render(pop)
    return pop, batch, measured_areas(batch)


# ------------------------------------------------------------------------------------------------
# mechanics
# ------------------------------------------------------------------------------------------------


def test_lv_volume_peaks_at_r_and_troughs_at_end_systole():
    pop = _cohort(40, 1, af=0.4, cardiomyopathy=0.2)
    beats = sample_beats(pop, 10.0, np.random.default_rng(2))
    t = np.arange(0.0, 10.0, 0.001)
    vol = lv_volume(pop, beats, t)
    es = beats.t_end
    assert vol.shape == (40, len(t))
    n_cycles = 0
    for i in range(len(pop)):
        r = beats.r[i][beats.valid[i]]
        for k in np.flatnonzero((r[:-1] >= 0.0) & (r[1:] < 10.0)):
            window = (t >= r[k]) & (t < r[k + 1])
            tt, vv = t[window], vol[i, window]
            # falls from R to end-systole, rises from there to the next R: extremes exactly there
            systole = tt < es[i, k]
            assert np.all(np.diff(vv[systole]) < 0) and np.all(np.diff(vv[~systole]) > 0)
            assert abs(tt[np.argmin(vv)] - es[i, k]) <= 0.001
            n_cycles += 1
    exact = lv_volume(pop, beats, np.concatenate([beats.r[:, 5:6], es[:, 5:6]], axis=1))
    np.testing.assert_allclose(exact[:, 0], pop.lvedv, rtol=0.01)
    np.testing.assert_allclose(exact[:, 1], pop.lvesv, rtol=0.01)
    assert n_cycles > 300
    # end-systole is the T-wave end unless an AF beat arrives before it could end
    assert np.mean((es == beats.t_end)[beats.valid]) > 0.95


def test_atrial_kick_only_in_sinus_rhythm():
    pop = _cohort(60, 3, af=0.5)
    beats = sample_beats(pop, 10.0, np.random.default_rng(4))
    r = beats.r[:, 6]
    vol = lv_volume(pop, beats, np.stack([r - 0.1, r], axis=1))
    late_fill = (vol[:, 1] - vol[:, 0]) / (pop.lvedv - pop.lvesv)  # share of the stroke volume
    print("late-diastolic filling, sinus:", late_fill[~pop.af].round(2), "AF:", late_fill[pop.af].round(2))
    assert late_fill[~pop.af].min() > 0.15
    assert np.median(late_fill[pop.af]) < 0.08


def test_rendered_cavity_area_follows_volume():
    pop = _cohort(12, 11, mi=0.5)
    batch = _render(pop, noise=0.0)
    ratio = batch.lv_area_px / (batch.lv_volume_ml / pop.lvedv[:, None]) ** (2 / 3)  # = A_ED if A ~ V^(2/3)
    assert np.all(ratio.std(1) / ratio.mean(1) < 0.01)


# ------------------------------------------------------------------------------------------------
# image-derived measurements
# ------------------------------------------------------------------------------------------------


def test_ejection_fraction_measured_from_pixels_tracks_lvef(ef_study):
    pop, batch, area = ef_study
    ef_image = 100.0 * (1.0 - (area.min(1) / area.max(1)) ** 1.5)
    r = np.corrcoef(ef_image, pop.lvef)[0, 1]
    mae = np.abs(ef_image - pop.lvef).mean()
    print(f"EF from images vs LVEF over 15-75 %: Pearson r = {r:.4f}, MAE = {mae:.2f} EF points")
    assert r > 0.9
    assert mae < 5.0


def test_extreme_cavity_frames_are_the_labelled_ed_and_es(ef_study):
    pop, batch, area = ef_study
    es_hits, ed_hits, af_intervals, sinus_intervals = [], [], [], []
    for i in range(len(pop)):
        ed, es = batch.ed_frames[i], batch.es_frames[i]
        for a, b in zip(ed[:-1], ed[1:]):  # full cycles: smallest area is end-systole
            label = es[(es > a) & (es < b)]
            es_hits.append(abs(a + np.argmin(area[i, a:b + 1]) - label[0]) <= 1)
        found = []
        for a, b in zip(es[:-1], es[1:]):  # largest area between two end-systoles is end-diastole
            label = ed[(ed > a) & (ed < b)]
            found.append(a + np.argmax(area[i, a:b + 1]))
            ed_hits.append(abs(found[-1] - label[0]) <= 1)
        (af_intervals if pop.af[i] else sinus_intervals).append(np.diff(found))
    print(f"ES frame = smallest measured area (+-1 frame) in {np.mean(es_hits):.1%} of {len(es_hits)} cycles; "
          f"ED = largest in {np.mean(ed_hits):.1%} of {len(ed_hits)}")
    assert np.mean(es_hits) > 0.9 and np.mean(ed_hits) > 0.9

    # AF: the cycle lengths read off the images vary beat to beat; sinus rhythm's hardly do
    def spread(intervals):
        return np.mean([np.std(x) / np.mean(x) for x in intervals if len(x) >= 2])

    assert pop.af.sum() >= 8
    print(f"cycle-length spread: AF {spread(af_intervals):.3f}, sinus {spread(sinus_intervals):.3f}")
    assert spread(af_intervals) > max(0.08, 2 * spread(sinus_intervals)) and spread(sinus_intervals) < 0.05


def test_infarcted_segment_moves_less_than_the_opposite_wall():
    # territory: (LV angle of the infarct, angle of a healthy wall to compare with)
    rays = {1: (-25.0, 100.0), 2: (-130.0, 130.0), 3: (110.0, -110.0)}
    base = _with(_cohort(9, 21), af=False, lvef=60.0, valve=0, lvh=False, mi_territory=0)
    base = _with(base, lvesv=base.lvedv * 0.4)
    territory = np.repeat([1, 2, 3], 3)
    infarct = _with(base, mi=True, mi_territory=territory)
    healthy = _with(base, mi_territory=0)
    ratios = {}
    for name, pop in (("mi", infarct), ("healthy", healthy)):
        batch = _render(pop, seed=31)
        out = []
        for i in range(len(pop)):
            masks = cavity_masks(batch, i)
            ed, es = first_cycle(batch, i)
            apex, lateral = lv_axes(masks[ed])
            centre = batch.lv_center_px[i]
            shortening = []
            for phi in rays[territory[i]]:
                d = direction(apex, lateral, phi)
                r_ed, r_es = ray_radius(masks[ed], centre, d), ray_radius(masks[es], centre, d)
                shortening.append((r_ed - r_es) / r_ed)
            out.append(shortening[0] / shortening[1])
        ratios[name] = np.array(out)
    print("infarct / opposite wall shortening:", ratios["mi"].round(2), "healthy:", ratios["healthy"].round(2))
    assert np.all(ratios["mi"] < 0.5)
    assert np.all(ratios["healthy"] > 0.6)


def test_hypertrophy_thickens_the_septum_in_the_image():
    base = _with(_cohort(8, 41), lvh=False, mi_territory=0, valve=0)
    thickness = {}
    for wall_mm in (9.0, 16.0):
        batch = _render(_with(base, wall_thickness=wall_mm), seed=43)
        out = []
        for i in range(len(base)):
            ed, _ = first_cycle(batch, i)
            mask = cavity_masks(batch, i)[ed]
            apex, lateral = lv_axes(mask)
            septal = direction(apex, lateral, -90.0)
            centre = batch.lv_center_px[i]
            edge = ray_radius(mask, centre, septal)
            profile = smooth_frames(batch.frames[i, ed][None])[0]
            steps = edge + np.arange(0.0, 25.0, 0.25)
            pts = np.rint(centre[None] + steps[:, None] * septal[None]).astype(int)
            tissue = profile[pts[:, 0], pts[:, 1]] > HALF_TISSUE
            out.append(0.25 * np.argmin(tissue[np.argmax(tissue):]))  # bright run across the septum
        thickness[wall_mm] = np.array(out)
    gain = thickness[16.0] - thickness[9.0]
    print(f"septum 9 mm: {thickness[9.0].mean():.1f} px, 16 mm: {thickness[16.0].mean():.1f} px")
    assert np.all(gain > 2.0)
    assert 3.0 < gain.mean() < 7.0  # 7 mm at 16 cm / 111 px = 4.9 px


def test_valve_disease_brightens_the_mitral_region():
    base = _with(_cohort(8, 51), valve=0, valve_severe=False, mi_territory=0)
    brightness = {}
    for valve in (0, 2):
        batch = _render(_with(base, valve=valve, valve_severe=True), seed=53)
        h, w = batch.frames.shape[2:]
        rows, cols = np.mgrid[0:h, 0:w]
        out = []
        for i in range(len(base)):
            hinges = batch.mitral_annulus_px[i]  # [T, 2, 2]
            near = np.zeros(batch.frames.shape[1:], bool)
            for k in range(2):
                near |= np.hypot(rows - hinges[:, k, :1, None], cols - hinges[:, k, 1:, None]) < 4.0
            out.append(batch.frames[i][near].mean())
        brightness[valve] = np.array(out)
    print("mitral annulus grey level, normal:", brightness[0].round(), "regurgitant:", brightness[2].round())
    assert np.all(brightness[2] > brightness[0] + 25.0)


# ------------------------------------------------------------------------------------------------
# interface
# ------------------------------------------------------------------------------------------------


def test_batch_layout_and_determinism():
    pop = _cohort(5, 61, af=0.4)
    beats = sample_beats(pop, 10.0, np.random.default_rng(62))
    start = np.array([0.0, 1.0, 2.5, 5.0, 7.2])

    def render(seed):
        return render_echo(pop, beats, np.random.default_rng(seed), start_s=start, size=96, fps=40.0, duration_s=2.8)

    a, b, c = render(1), render(1), render(2)
    assert a.frames.shape == (5, 112, 96, 96) and a.frames.dtype == np.uint8
    assert a.lv_area_px.shape == a.lv_volume_ml.shape == (5, 112) and a.lv_area_px.dtype == np.float32
    assert a.lv_center_px.shape == (5, 2) and a.fps == 40.0
    np.testing.assert_array_equal(a.frames, b.frames)
    assert np.mean(a.frames != c.frames) > 0.2
    for i in range(5):
        assert np.all(np.diff(a.ed_frames[i]) > 0) and np.all((a.es_frames[i] >= 0) & (a.es_frames[i] < 112))
        assert len(a.ed_frames[i]) >= 1
        corners = a.frames[i, :, 0, [0, -1]]
        assert corners.max() == 0  # black outside the sector
    assert "a4c" in ECHO_VIEWS
    with pytest.raises(ConfigError, match="plax"):
        render_echo(pop, beats, np.random.default_rng(1), start_s=start, view="plax")
    with pytest.raises(ValueError):
        render_echo(pop, beats, np.random.default_rng(1), start_s=start + 5.0)


def test_noise_free_rendering_has_no_speckle():
    pop = _cohort(3, 71)
    batch = _render(pop, noise=0.0)
    for i in range(3):
        ed, _ = first_cycle(batch, i)
        r, c = np.rint(batch.lv_center_px[i]).astype(int)
        cavity = batch.frames[i, ed, r - 3:r + 4, c - 3:c + 4]
        assert cavity.max() == 0
