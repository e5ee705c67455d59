"""Apical four-chamber (A4C) echocardiogram cines, driven by the same beat train as the ECG.

Mechanics
---------
The LV volume follows the electrical events of :class:`~cardiodistill.synth.rhythm.BeatTrain`:
end-diastole (EDV, the largest volume) is at every R-peak and end-systole (ESV, the smallest) at
the end of the T wave. Within a cycle the curve is built from monotone pieces, so the extremes fall
exactly on those events:

* systole ``[R, T_end]``: a short isovolumic contraction (a few per cent of the stroke volume
  within ~35 ms), then ejection with the shape of a regularised incomplete beta function (fast
  early ejection, slowing towards aortic valve closure);
* diastole ``[T_end, next R]``: isovolumic relaxation (a small rise over <= 40 ms), rapid early
  filling (E), slow filling in diastasis and the atrial kick (A) in the last ~120 ms before the R
  peak (from the P wave; none in atrial fibrillation, where E and diastasis take its share).

End-systole is ``beats.t_end``, the end of the ECG's T wave (the beat train already cuts it short
in the rare atrial-fibrillation cycle where the next beat would come first).

Geometry
--------
A 90-degree ultrasound sector, apex at the top centre, ``DEPTH_CM`` deep, black outside. The four
chambers are truncated "eggs" (two half-ellipses sharing their minor axis, cut by the valve
plane), laid out as on a standard screen: LV right with
its apex near the transducer, RV left, atria in the far field, tricuspid annulus a little more
apical than the mitral. Every chamber is stored as a polar boundary ``R(phi)`` around its own
contraction centre, so at frame time a pixel is inside iff ``rho < x(t) * R(phi)`` (RV and atria,
isotropic scale ``x``) or ``rho < R(phi) * (1 - amp(phi) * s(t))`` (LV, regional shortening
``s``). Both are linear in the frame's scalar, so each layer is one per-pixel ``a + b * x`` with a
soft (anti-aliased) edge: rendering a frame is a few array operations per layer.

LV size uses the single-plane area-length relation ``V = 8 A^2 / (3 pi L)``: the ED long axis
``L`` grows with EDV, the ED cavity area follows, and during the cycle the cavity area is
``A(t) = A_ED (V(t) / EDV)^(2/3)`` (shape similarity), so ``1 - (A_ES / A_ED)^(3/2)`` is the LVEF.
A prior infarct makes its segment (anterior: apex and apical septum; inferior: basal inferoseptum;
lateral: anterolateral wall) hypokinetic (20 % of normal motion), thinner and brighter; the other
walls then shorten more, because ``s(t)`` is solved in closed form (a quadratic) so that the area
still follows the volume. Myocardium is incompressible: the epicardium satisfies
``r_epi^3 - r_endo^3 = const`` per direction, so walls thicken in systole. Atria are reservoirs:
their roofs follow the valve planes (the base descends towards the apex in systole), so they are
largest at end-systole. Valve disease (echo-only label) shows as thick, bright, calcified mitral
leaflets and annulus, with a coaptation gap and (through ``Population.la_scale``) a dilated LA in
mitral regurgitation.

Ultrasound look
---------------
Intensities are composed in log-compressed units (nepers; myocardium 0, blood -3.6), then mapped
to grey levels with a per-patient gain and contrast. Speckle is fully developed (log-Rayleigh),
generated on the beam grid (range x angle) so grains are elongated laterally, and is tissue-bound:
it is sampled at the material position a pixel had at end-diastole under the LV's incompressible
motion field, at a dozen levels of contraction. Depth attenuation with a per-patient time-gain
compensation curve, lateral fall-off, static near-field reverberation clutter, probe position and
angle jitter, and a little frame-to-frame noise complete it. ``noise`` scales all of these;
``noise=0`` renders the noise-free anatomy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.ndimage import gaussian_filter
from scipy.special import betainc

from ..errors import ConfigError
from .population import Population
from .rhythm import BeatTrain, events_to_samples

ECHO_VIEWS = ("a4c",)

# --- cycle timing
IVC_S, IVC_DROP = 0.035, 0.03  # isovolumic contraction: duration (s), share of stroke volume
EJECTION_BETA = (1.4, 1.8)  # shape of the ejection curve (regularised incomplete beta)
EJECTION_LINEAR = 0.2  # linear share keeps ejection visible up to aortic valve closure
IVR_S = 0.04  # isovolumic relaxation (s)
E_FILL_S = 0.16  # duration of rapid early filling (s)
E_FILL_BETA = (1.3, 2.6)
FILL_SINUS = {"ivr": 0.05, "e": 0.60, "diastasis": 0.10, "a": 0.25}
FILL_AF = {"ivr": 0.05, "e": 0.75, "diastasis": 0.20, "a": 0.0}
ATRIAL_DELAY_S = 0.08  # P onset to atrial contraction

# --- geometry (cm unless stated)
DEPTH_CM = 16.0
SECTOR_HALF_ANGLE_DEG = 45.0
LV_APEX = (2.4, 0.0)  # (depth, lateral) of the LV apical endocardium
LV_TILT_DEG = 10.0  # LV long axis, from vertical towards the right
LV_EGG = (0.55, 0.60, 0.38)  # apical semi-axis, basal semi-axis, contraction centre (fractions of L)
RV_EGG = (0.45, 0.80, 0.30)
ATRIUM_EGG = (0.50, 1.10, 0.06)  # "apex" = atrial floor, truncated at the valve plane
LV_REF_EDV, LV_REF_LENGTH = 110.0, 7.8  # ED long axis (cm) of a 110 mL ventricle, scales ^0.3
RV_WALL, ATRIAL_WALL, PERICARDIUM = 0.42, 0.28, 0.40
TV_OFFSET = 0.6  # tricuspid annulus lies this much more apical than the mitral
TV_WIDTH = 3.3
LA_LENGTH, RA_LENGTH = 4.8, 4.3
ROOF_OVERLAP = 0.9  # atrial roofs reach this far into the ventricles (hidden by them)
ATRIAL_TRACKING = 0.6  # share of the annular excursion the atrial roofs follow
RV_FAC = 0.42  # normal RV fractional area change
MI_WINDOWS_DEG = {1: (-25.0, 60.0), 2: (-135.0, 45.0), 3: (115.0, 45.0)}  # centre, half-width
MI_MOTION = 0.2  # infarcted segment moves this fraction of normal
ANGLE_BINS = 720  # for the area integrals that set the LV shortening

# --- grey levels (log-compressed units, nepers; myocardium = 0)
LEVEL = {
    "blood": -3.6, "background": -2.1, "near_field": -0.7, "atrial_wall": -0.45, "rv_wall": 0.3,
    "pericardium": 1.6, "scar": 0.45, "leaflet": 0.5, "leaflet_diseased": 0.9, "calcium": 1.3,
}
DISPLAY_FLOOR, DISPLAY_GAIN = -2.9, 45.0  # grey = (level - floor) * gain before per-patient jitter
SPECKLE_LEVELS = 12  # contraction levels at which tissue-bound speckle is precomputed
FRAME_NOISE_GREY = 3.0
EDGE_PX = 1.4  # width of the soft edge of every boundary (a point-spread function, roughly)
BLOCK_ELEMENTS = 1 << 18  # pixels x frames rendered at once (cache-sized)


# ------------------------------------------------------------------------------------------------
# Cardiac cycle
# ------------------------------------------------------------------------------------------------


@dataclass
class _Cycle:
    volume: np.ndarray  # [n, T] mL
    fill: np.ndarray  # [n, T] 0 at end-systole, 1 at end-diastole
    mitral_open: np.ndarray  # [n, T] 0 closed .. 1 fully open


def _clip01(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0.0, 1.0)


def _cardiac_cycle(pop: Population, beats: BeatTrain, t: np.ndarray) -> _Cycle:
    n = len(pop)
    t = np.asarray(t, float)
    t = np.broadcast_to(t, (n, t.shape[-1])) if t.ndim == 1 else t
    r = np.where(beats.valid, beats.r, np.inf)
    k = np.clip((r[:, None, :] <= t[:, :, None]).sum(-1) - 1, 0, r.shape[1] - 2)

    def at(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
        return np.take_along_axis(a, idx, axis=1)

    r0, r1, es = at(r, k), at(r, k + 1), at(beats.t_end, k)
    r1 = np.where(np.isfinite(r1), r1, r0 + 60.0 / pop.heart_rate[:, None])
    af = pop.af[:, None]

    # systole: isovolumic contraction, then ejection
    sys_len = es - r0
    u = _clip01((t - r0) / sys_len)
    u_ivc = np.minimum(IVC_S, 0.2 * sys_len) / sys_len
    v = _clip01((u - u_ivc) / (1.0 - u_ivc))
    shape = (1.0 - EJECTION_LINEAR) * betainc(*EJECTION_BETA, v) + EJECTION_LINEAR * v
    ejected = np.where(u < u_ivc, IVC_DROP * u / u_ivc, IVC_DROP + (1.0 - IVC_DROP) * shape)

    # diastole: isovolumic relaxation, E, diastasis, A
    dia_len = r1 - es
    s = np.maximum(t - es, 0.0)
    ivr = np.minimum(IVR_S, 0.12 * dia_len)
    e_len = np.minimum(E_FILL_S, 0.45 * dia_len)
    pq = (pop.pr_ms + 0.45 * pop.qrs_ms)[:, None] / 1000.0 - ATRIAL_DELAY_S
    a_len = np.clip(pq, 0.05, 0.35 * dia_len)
    x_e = _clip01((s - ivr) / e_len)
    x_a = _clip01((s - (dia_len - a_len)) / a_len)
    w = {key: np.where(af, FILL_AF[key], FILL_SINUS[key]) for key in FILL_SINUS}
    filled = (
        w["ivr"] * _clip01(s / ivr)
        + w["e"] * betainc(*E_FILL_BETA, x_e)
        + w["diastasis"] * _clip01((s - ivr) / (dia_len - ivr))
        + w["a"] * (1.0 - np.cos(0.75 * np.pi * x_a)) / (1.0 - np.cos(0.75 * np.pi))
    )
    systole = t < es
    fill = np.where(systole, 1.0 - ejected, filled)

    # mitral leaflets: open with E, drift half-closed in diastasis, reopen with A, shut at R
    opening = _clip01((s - ivr) / 0.03) * (1.0 - 0.55 * _clip01((s - ivr - e_len) / 0.1))
    opening = np.maximum(opening, np.where(af, 0.0, 0.85 * np.sin(np.pi * x_a)))
    opening = np.where(systole, 0.0, opening * _clip01((dia_len - s) / 0.03))

    edv, esv = pop.lvedv[:, None], pop.lvesv[:, None]
    return _Cycle(volume=esv + (edv - esv) * fill, fill=fill, mitral_open=opening)


def lv_volume(pop: Population, beats: BeatTrain, t: np.ndarray) -> np.ndarray:
    """LV volume (mL) ``[n, len(t)]`` at times ``t`` (s, BeatTrain clock; ``[T]`` shared or
    ``[n, T]`` per patient): EDV at every R-peak, ESV at every end-systole."""
    return _cardiac_cycle(pop, beats, t).volume


# ------------------------------------------------------------------------------------------------
# Geometry: truncated eggs in a heart frame (depth z, lateral x; cm)
# ------------------------------------------------------------------------------------------------


def _unit(angle: np.ndarray) -> np.ndarray:
    """Direction ``angle`` radians from straight down (depth) towards the right, as (z, x)."""
    return np.stack([np.cos(angle), np.sin(angle)], axis=-1)


@dataclass
class _Egg:
    """A chamber: two half-ellipses of half-width ``b`` sharing their minor axis, truncated by the
    valve plane at distance ``length`` from ``apex`` along ``axis``. Polar coordinates are taken
    about the contraction centre ``f_c * length`` from the apex; ``phi = 0`` points to the apex."""

    apex: np.ndarray  # [n, 2]
    axis: np.ndarray  # [n, 2] unit, apex -> valve plane
    length: np.ndarray  # [n]
    b: np.ndarray  # [n]
    fractions: tuple[float, float, float]  # apical semi-axis, basal semi-axis, centre (of length)

    @staticmethod
    def area_factor(fractions: tuple[float, float, float]) -> float:
        """Cavity area / (length * b)."""
        f_ap, f_bs, _ = fractions
        x = (1.0 - f_ap) / f_bs
        return np.pi * f_ap / 2.0 + f_bs * (x * np.sqrt(1.0 - x * x) + np.arcsin(x))

    @staticmethod
    def half_width_factor(fractions: tuple[float, float, float]) -> float:
        """Valve-plane half-width / b."""
        f_ap, f_bs, _ = fractions
        return float(np.sqrt(1.0 - ((1.0 - f_ap) / f_bs) ** 2))

    @property
    def lateral(self) -> np.ndarray:
        return np.stack([-self.axis[:, 1], self.axis[:, 0]], axis=-1)

    @property
    def centre(self) -> np.ndarray:
        return self.apex + self.fractions[2] * self.length[:, None] * self.axis

    def to_world(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Egg-local (u from the apex along the axis, v lateral) -> heart frame, ``[..., 2]``."""
        return self.apex[:, None] + u[..., None] * self.axis[:, None] + v[..., None] * self.lateral[:, None]

    def polar(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Distance and angle of ``points [n, P, 2]`` about the contraction centre."""
        rel = points - self.centre[:, None]
        u = np.einsum("npk,nk->np", rel, self.axis)
        v = np.einsum("npk,nk->np", rel, self.lateral)
        return np.hypot(u, v), np.arctan2(v, -u)

    def radius(self, phi: np.ndarray) -> np.ndarray:
        """Boundary distance from the contraction centre along direction ``phi [n, m]``."""
        f_ap, f_bs, f_c = self.fractions
        length, b = self.length[:, None], self.b[:, None]
        du, dv = -np.cos(phi), np.sin(phi)
        u0 = (f_c - f_ap) * length  # contraction centre relative to the shared minor axis

        def hit(a: np.ndarray) -> np.ndarray:
            qa = (du / a) ** 2 + (dv / b) ** 2
            qb = u0 * du / a**2
            qc = (u0 / a) ** 2 - 1.0
            return (-qb + np.sqrt(qb * qb - qa * qc)) / qa

        t_ap, t_bs = hit(f_ap * length), hit(f_bs * length)
        t = np.where(u0 + t_ap * du <= 0.0, t_ap, t_bs)
        with np.errstate(divide="ignore"):
            t_plane = np.where(du > 1e-9, ((1.0 - f_ap) * length - u0) / np.maximum(du, 1e-9), np.inf)
        return np.minimum(t, t_plane)

    @property
    def hinge_phi(self) -> np.ndarray:
        """Angle of the valve hinges; the orifice is ``|phi| > hinge_phi``. ``[n]``"""
        f_c = self.fractions[2]
        half = self.half_width_factor(self.fractions) * self.b
        return np.pi - np.arctan2(half, (1.0 - f_c) * self.length)

    def hinges(self) -> np.ndarray:
        """Valve hinge points ``[n, 2 (septal/-v, lateral/+v), 2]``."""
        half = self.half_width_factor(self.fractions) * self.b
        u = np.stack([self.length, self.length], axis=1)
        return self.to_world(u, np.stack([-half, half], axis=1))


@dataclass
class _Heart:
    lv: _Egg
    rv: _Egg
    la: _Egg
    ra: _Egg
    lv_wall: np.ndarray  # [n] cm, ED septal/lateral wall


def _layout(pop: Population, jitter: np.ndarray) -> _Heart:
    """Place the chambers for each patient. ``jitter [n, 3]`` = probe (rotation deg, dz, dx cm)."""
    n = len(pop)
    tilt = np.deg2rad(LV_TILT_DEG + jitter[:, 0])
    lv_axis = _unit(tilt)
    lv_apex = np.asarray(LV_APEX)[None] + jitter[:, 1:]
    length = LV_REF_LENGTH * (pop.lvedv / LV_REF_EDV) ** 0.3
    area = np.sqrt(3.0 * np.pi * length * pop.lvedv / 8.0)  # area-length, cm^2
    lv = _Egg(lv_apex, lv_axis, length, area / (length * _Egg.area_factor(LV_EGG)), LV_EGG)
    wall = pop.wall_thickness / 10.0
    body = np.clip((pop.lvedv / LV_REF_EDV) ** (1 / 3), 0.85, 1.2)

    # RV from landmarks: apex beside the apical septum, tricuspid annulus from the crux leftwards
    mv_half = _Egg.half_width_factor(LV_EGG) * lv.b
    tv_sept = lv.to_world((length - TV_OFFSET)[:, None], -(mv_half + 0.9 * wall)[:, None])[:, 0]
    tv_lat = lv.to_world((length - TV_OFFSET + 0.25)[:, None], -(mv_half + 0.9 * wall + TV_WIDTH * body)[:, None])[:, 0]
    rv_apex = lv.to_world(0.28 * length[:, None], -(0.85 * lv.b + 0.8 * wall)[:, None])[:, 0]
    tv_mid = 0.5 * (tv_sept + tv_lat)
    rv_vec = tv_mid - rv_apex
    rv_len = np.linalg.norm(rv_vec, axis=1)
    tv_half = 0.5 * np.linalg.norm(tv_lat - tv_sept, axis=1)
    rv = _Egg(rv_apex, rv_vec / rv_len[:, None], rv_len, tv_half / _Egg.half_width_factor(RV_EGG), RV_EGG)

    # atria hang below their annuli, roofs reaching into the ventricles' bases
    def atrium(mid: np.ndarray, half: np.ndarray, direction: np.ndarray, size: np.ndarray, base_len: float) -> _Egg:
        length_a = base_len * size
        floor = mid + (length_a - ROOF_OVERLAP)[:, None] * direction
        return _Egg(floor, -direction, length_a, size * half / _Egg.half_width_factor(ATRIUM_EGG), ATRIUM_EGG)

    mv_mid = lv.to_world(length[:, None], np.zeros((n, 1)))[:, 0]
    la_dir = _unit(tilt - np.deg2rad(4.0))
    la = atrium(mv_mid, mv_half, la_dir, pop.la_scale, LA_LENGTH)
    ra_size = 1.0 + 0.2 * pop.af
    ra = atrium(tv_mid, tv_half, rv.axis, ra_size, RA_LENGTH)
    return _Heart(lv, rv, la, ra, wall)


def _wrap(angle: np.ndarray) -> np.ndarray:
    """Angle wrapped to [-pi, pi)."""
    return (angle + np.pi) % (2 * np.pi) - np.pi


def _territory_weight(phi: np.ndarray, territory: np.ndarray) -> np.ndarray:
    """Raised-cosine weight of the infarct segment at LV angles ``phi [n, m]`` (0 outside)."""
    out = np.zeros_like(phi)
    for code, (centre, half) in MI_WINDOWS_DEG.items():
        d = _wrap(phi - np.deg2rad(centre)) / np.deg2rad(half)
        out = np.where((territory == code)[:, None], np.cos(0.5 * np.pi * np.clip(d, -1, 1)) ** 2, out)
    return out


def _lv_motion(pop: Population, phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Regional motion amplitude and infarct weight at LV angles ``phi``."""
    scar = _territory_weight(phi, pop.mi_territory)
    septal = np.clip(-np.sin(phi), 0.0, None)
    return (1.0 - 0.1 * septal) * (1.0 - (1.0 - MI_MOTION) * scar), scar


def _shortening(pop: Population, lv: _Egg, volume: np.ndarray) -> np.ndarray:
    """Regional shortening ``s(t)`` with ``r = R_ED (1 - amp s)`` such that the cavity area is
    ``A_ED (V / EDV)^(2/3)``: a quadratic in ``s``, solved in closed form. ``[n, T]``"""
    phi = np.broadcast_to(np.linspace(-np.pi, np.pi, ANGLE_BINS, endpoint=False), (len(pop), ANGLE_BINS))
    r2 = lv.radius(phi) ** 2
    amp, _ = _lv_motion(pop, phi)
    s0, s1, s2 = r2.sum(1)[:, None], (r2 * amp).sum(1)[:, None], (r2 * amp**2).sum(1)[:, None]
    keep = (volume / pop.lvedv[:, None]) ** (2.0 / 3.0)
    disc = np.maximum(s1 * s1 - s2 * s0 * (1.0 - keep), 0.0)
    return (s1 - np.sqrt(disc)) / s2


# ------------------------------------------------------------------------------------------------
# The scan: sector pixels and per-patient static fields
# ------------------------------------------------------------------------------------------------


@dataclass
class _Sector:
    size: int
    px_per_cm: float
    index: np.ndarray  # [P] flat pixel index of the sector's pixels
    alpha: np.ndarray  # [P] soft sector edge
    points: np.ndarray  # [P, 2] heart-frame cm
    depth: np.ndarray  # [P] cm from the transducer
    angle: np.ndarray  # [P] beam angle, rad
    lookup: np.ndarray  # [H * W] sector position of each pixel, P (a dummy slot) outside

    def to_px(self, points: np.ndarray) -> np.ndarray:
        """Heart-frame cm -> (row, col) pixels."""
        return np.stack([points[..., 0] * self.px_per_cm, points[..., 1] * self.px_per_cm + (self.size - 1) / 2], -1)


def _sector(size: int) -> _Sector:
    px_per_cm = (size - 1) / DEPTH_CM
    rows, cols = np.mgrid[0:size, 0:size].astype(float)
    z, x = rows / px_per_cm, (cols - (size - 1) / 2) / px_per_cm
    depth, angle = np.hypot(z, x), np.arctan2(x, z)
    half = np.deg2rad(SECTOR_HALF_ANGLE_DEG)
    edge = np.minimum(DEPTH_CM - depth, (half - np.abs(angle)) * depth) * px_per_cm
    alpha = _clip01(edge + 0.5).ravel()
    index = np.flatnonzero(alpha > 0)
    lookup = np.full(size * size, len(index))
    lookup[index] = np.arange(len(index))
    pts = np.stack([z.ravel()[index], x.ravel()[index]], -1)
    return _Sector(size, px_per_cm, index, alpha[index].astype(np.float32), pts, depth.ravel()[index],
                   angle.ravel()[index], lookup)


@dataclass
class _Layer:
    """``alpha = clip(a + b * param(t), 0, 1)`` blends the image towards ``level`` at the sector
    pixels ``index`` (after :func:`_sparse`; before it, at every sector pixel)."""

    a: np.ndarray  # [n, K] float32
    b: np.ndarray  # [n, K] float32
    level: np.ndarray  # [n, K] or [n, 1] float32
    param: np.ndarray  # [n, T] float32
    index: np.ndarray | None = None  # [n, K] sector positions; the dummy slot P pads short rows


def _sparse(layer: _Layer, gain: np.ndarray, floor: np.ndarray) -> _Layer:
    """Keep the pixels a layer can touch during the clip, soften its edge to ``EDGE_PX`` and
    convert its level to grey values (blending commutes with the affine grey mapping)."""
    n, n_pixels = layer.a.shape
    a = 0.5 + (layer.a - 0.5) / EDGE_PX
    b = layer.b / EDGE_PX
    lo, hi = layer.param.min(1, keepdims=True), layer.param.max(1, keepdims=True)
    touched = np.maximum(a + b * lo, a + b * hi) > 0.0
    k = max(1, int(touched.sum(1).max()))
    order = np.argsort(~touched, axis=1, kind="stable")[:, :k]
    keep = np.take_along_axis(touched, order, axis=1)
    level = layer.level if layer.level.shape[1] == 1 else np.take_along_axis(layer.level, order, axis=1)
    return _Layer(*_f32(np.where(keep, np.take_along_axis(a, order, axis=1), -1.0),
                        np.where(keep, np.take_along_axis(b, order, axis=1), 0.0),
                        gain[:, None] * (level - floor[:, None]), layer.param),
                  index=np.where(keep, order, n_pixels))


def _f32(*arrays: np.ndarray) -> list[np.ndarray]:
    return [np.ascontiguousarray(a, dtype=np.float32) for a in arrays]


def _pad(a: np.ndarray, value: float = 0.0) -> np.ndarray:
    """Append the dummy sector slot."""
    return np.concatenate([a, np.full(a.shape[:-1] + (1,), value, a.dtype)], axis=-1)


def _orifice_cut(egg: _Egg, phi: np.ndarray, rho_px: np.ndarray) -> np.ndarray:
    """1 where a chamber has a wall, 0 across its valve orifice, with a one-pixel soft edge."""
    return _clip01((egg.hinge_phi[:, None] - np.abs(phi)) * rho_px + 0.5)


def _wall_layer(a: np.ndarray, b: np.ndarray, taper: np.ndarray, level: np.ndarray, param: np.ndarray) -> _Layer:
    """A wall layer, switched off across the orifice: there its soft edge would coincide with
    the cavity's and leave a faint membrane where the blood pools of ventricle and atrium meet."""
    off = taper < 0.5
    return _Layer(*_f32(np.where(off, -1.0, a), np.where(off, 0.0, b), level, param))


def _scaled_layers(egg: _Egg, pts: np.ndarray, ppc: float, wall_cm: float, scale: np.ndarray,
                   wall_level: float, n: int) -> list[_Layer]:
    """Wall and cavity layers of a chamber scaled isotropically about its centre."""
    rho, phi = egg.polar(pts)
    rho_px, r_px = rho * ppc, egg.radius(phi) * ppc
    taper = _orifice_cut(egg, phi, rho_px)
    a = 0.5 - rho_px
    wall = _wall_layer(a, r_px + wall_cm * ppc * taper, taper, np.full((n, 1), wall_level), scale)
    cavity = _Layer(*_f32(a, r_px, np.full((n, 1), LEVEL["blood"]), scale))
    return [wall, cavity]


def _lv_layers(pop: Population, heart: _Heart, pts: np.ndarray, ppc: float, s: np.ndarray) -> tuple[list[_Layer], dict]:
    """Pericardium, myocardium and cavity of the LV, all driven by the shortening ``s(t)``."""
    n = len(pop)
    lv = heart.lv
    rho, phi = lv.polar(pts)
    r_ed = lv.radius(phi) * ppc
    rho = rho * ppc
    amp, scar = _lv_motion(pop, phi)
    apex = np.clip(np.cos(phi), 0.0, None) ** 2
    taper = _orifice_cut(lv, phi, rho)
    wall = heart.lv_wall[:, None] * ppc * (1.0 - 0.3 * apex) * (1.0 - 0.4 * scar) * taper
    lateral = _clip01((phi + np.deg2rad(20.0)) / 0.3) * taper  # pericardium over apex and lateral wall

    def incompressible(extra: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Edge of a layer ``extra`` px outside the ED endocardium that keeps its volume
        ``r^3 - r_endo^3`` as the endocardium moves: linearised about the crossing time."""
        m = (r_ed + extra) ** 3 - r_ed**3
        inner = np.cbrt(np.maximum(rho**3 - m, 0.0))  # endocardial radius when the edge is at rho
        s_cross = (1.0 - inner / r_ed) / amp
        slope = inner**2 * r_ed * amp / np.maximum(rho, 1e-3) ** 2
        slope = np.where(inner < 0.5 * r_ed, np.maximum(slope, 5.0), slope)  # deep inside: always covered
        return 0.5 + slope * s_cross, -slope

    peri_level = np.full((n, 1), LEVEL["pericardium"])
    peri = _wall_layer(*incompressible(wall + PERICARDIUM * ppc * lateral), taper, peri_level, s)
    myo = _wall_layer(*incompressible(wall), taper, LEVEL["scar"] * scar, s)  # scar: brighter
    cavity = _Layer(*_f32(r_ed - rho + 0.5, -r_ed * amp, np.full((n, 1), LEVEL["blood"]), s))
    fields = {"rho": rho, "r_ed": r_ed, "amp": amp}
    return [peri, myo, cavity], fields


def _log_speckle(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Fully developed speckle on the beam grid ``[n, range, angle]`` (half-pixel range bins,
    ~0.8 degree beams): log of a Rayleigh amplitude (unit mean power), minus its mean. Grains are
    ~1.5 px long axially and ~2 beams wide, so they widen with depth like a real beam."""
    shape = (n, 2 * size + 8, size + 16)
    field = rng.standard_normal(shape + (2,), dtype=np.float32)
    field = gaussian_filter(field, (0, 1.6, 1.9, 0), truncate=3.0)
    power = (field**2).sum(-1)
    power /= power.mean(axis=(1, 2), keepdims=True)
    return (0.5 * np.log(power + 1e-6) + 0.2886).astype(np.float32)  # E[ln A] = -gamma/2


def _beam_coordinates(points: np.ndarray, texture_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Fractional (range, angle) texture coordinates of heart-frame ``points [..., 2]`` (cm)."""
    _, n_r, n_a = texture_shape
    half = np.deg2rad(SECTOR_HALF_ANGLE_DEG)
    depth = np.hypot(points[..., 0], points[..., 1])
    angle = np.arctan2(points[..., 1], points[..., 0])
    return depth / DEPTH_CM * (n_r - 9), (angle + half) / (2 * half) * (n_a - 1)


def _lookup(texture: np.ndarray, ri: np.ndarray, ai: np.ndarray) -> np.ndarray:
    """Nearest-neighbour lookup of ``texture [n, R, A]`` at coordinates ``[n, P]``."""
    n, n_r, n_a = texture.shape
    ri = np.clip(np.rint(ri), 0, n_r - 1).astype(np.int64)
    ai = np.clip(np.rint(ai), 0, n_a - 1).astype(np.int64)
    return np.take_along_axis(texture.reshape(n, -1), ri * n_a + ai, axis=1)


@dataclass
class _Valve:
    """Two leaflets hinged on a moving annulus, rendered inside a small window."""

    window: np.ndarray  # [n, Pw] sector positions
    rows: np.ndarray  # [n, Pw] float32
    cols: np.ndarray
    hinge: np.ndarray  # [n, T, 2 leaflets, 2] px
    direction: np.ndarray  # [n, T, 2 leaflets, 2] unit (row, col)
    length: np.ndarray  # [n, 2] px
    half_width: np.ndarray  # [n, 2] px at the hinge
    tip_extra: np.ndarray  # [n] px of extra thickness at the tips
    level: np.ndarray  # [n] grey
    calcium_px: np.ndarray  # [n] radius of annular calcification (0 = none)
    calcium_level: np.ndarray  # [n] grey


def _rotate_towards(closed: np.ndarray, opened: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Unit vectors turned from ``closed`` towards ``opened`` by fraction ``k`` of the angle."""
    a0 = np.arctan2(closed[..., 1], closed[..., 0])
    a1 = np.arctan2(opened[..., 1], opened[..., 0])
    da = _wrap(a1 - a0)
    a = a0 + k * da
    return np.stack([np.cos(a), np.sin(a)], -1)


def _valve(sector: _Sector, hinges: np.ndarray, apex_dir: np.ndarray, opening: np.ndarray, *,
           lengths: tuple[float, float], half_width: np.ndarray, tip_extra: np.ndarray, level: np.ndarray,
           calcium_px: np.ndarray, calcium_level: np.ndarray, gap: np.ndarray) -> _Valve:
    """``hinges [n, T, 2, 2]`` px (septal, lateral); ``apex_dir [n, 2]`` unit towards the apex."""
    n = hinges.shape[0]
    across = hinges[:, :, 1] - hinges[:, :, 0]
    width = np.linalg.norm(across, axis=-1, keepdims=True)
    across = across / width
    tent = np.deg2rad(20.0)  # closed leaflets bow slightly towards the apex
    apex = apex_dir[:, None]

    def closed(sign: float) -> np.ndarray:
        return np.cos(tent) * sign * across + np.sin(tent) * apex

    def opened(sign: float) -> np.ndarray:
        return np.cos(np.deg2rad(12.0)) * apex - np.sin(np.deg2rad(12.0)) * sign * across

    direction = np.stack([_rotate_towards(closed(1.0), opened(1.0), opening),
                          _rotate_towards(closed(-1.0), opened(-1.0), opening)], axis=2)
    width_ed = width[:, 0, 0]
    length = np.stack([lengths[0] * width_ed, lengths[1] * width_ed], -1) * (1.0 - gap)[:, None]

    # window: the box swept by the hinges and leaflet tips over the clip, same size for everyone
    tips = hinges + length[:, None, :, None] * direction
    swept = np.concatenate([hinges, tips], axis=2).reshape(n, -1, 2)
    margin = 2.0 + calcium_px.max()
    lo = np.floor(swept.min(1) - margin).astype(int)  # [n, 2]
    extent = (np.ceil(swept.max(1) + margin).astype(int) - lo).max(0) + 1
    dr, dc = np.mgrid[0:extent[0], 0:extent[1]].reshape(2, -1)
    rows = lo[:, :1] + dr[None]
    cols = lo[:, 1:] + dc[None]
    inside = (rows >= 0) & (rows < sector.size) & (cols >= 0) & (cols < sector.size)
    flat = np.where(inside, rows * sector.size + cols, 0)
    window = np.where(inside, sector.lookup[flat], len(sector.index))
    return _Valve(window, *_f32(rows, cols, hinges, direction, length, np.broadcast_to(half_width[:, None], (n, 2)),
                                tip_extra, level, calcium_px, calcium_level))


# ------------------------------------------------------------------------------------------------
# Rendering
# ------------------------------------------------------------------------------------------------


@dataclass
class EchoBatch:
    """Rendered cines and their ground truth, one entry per patient."""

    frames: np.ndarray  # uint8 [n, T, H, W]
    fps: float
    start_s: np.ndarray  # [n] time of frame 0 on the BeatTrain clock (s)
    lv_area_px: np.ndarray  # float32 [n, T] rendered LV cavity area (pixels)
    lv_volume_ml: np.ndarray  # float32 [n, T]
    lv_center_px: np.ndarray  # float32 [n, 2] (row, col) of the LV contraction centre
    ed_frames: list[np.ndarray]  # per patient, frames of R-peaks (end-diastole) inside the clip
    es_frames: list[np.ndarray]  # per patient, frames of end-systole inside the clip
    mitral_annulus_px: np.ndarray  # float32 [n, T, 2 (septal, lateral), 2 (row, col)] hinge points


@dataclass
class _Scene:
    layers: list[_Layer]
    lv_cavity: int  # index of the LV cavity layer (its alpha sums to the area)
    valves: list[_Valve]
    background: np.ndarray  # [n, P + 1] grey
    speckle: np.ndarray  # [n, Q, P + 1] grey: log speckle + time-gain curve, per contraction level
    speckle_level: np.ndarray  # [n, T] int, level used at each frame
    clutter: np.ndarray  # [n, P + 1] grey


def _static_fields(pop: Population, sector: _Sector, heart: _Heart, lv_fields: dict, s: np.ndarray,
                   rng: np.random.Generator, noise: float) -> dict:
    """Background, time-gain curve, tissue-bound speckle and near-field clutter."""
    n, size, _ppc = len(pop), sector.size, sector.px_per_cm
    depth = sector.depth[None]
    mottle = gaussian_filter(rng.standard_normal((n, size, size)).astype(np.float32), (0, 4, 4))
    mottle = mottle.reshape(n, -1)[:, sector.index] / mottle.std()
    near = _clip01((1.1 - depth) / 0.5)
    background = LEVEL["background"] + 0.4 * noise * mottle + (LEVEL["near_field"] - LEVEL["background"]) * near

    # attenuation left over after time-gain compensation: a smooth random curve over 8 knots
    knots = np.linspace(0.0, DEPTH_CM, 8)
    hat = _clip01(1.0 - np.abs(sector.depth[None] - knots[:, None]) / (knots[1] - knots[0]))  # [8, P]
    tgc = (rng.normal(0.0, 0.18, (n, 8)) * noise) @ hat - 0.02 * depth
    edge = np.deg2rad(SECTOR_HALF_ANGLE_DEG) - np.abs(sector.angle)
    tgc = tgc - 0.5 * noise * _clip01(1.0 - edge / np.deg2rad(8.0))[None]

    # tissue-bound speckle: sample one beam-grid texture at the end-diastolic material position
    # of each pixel under the incompressible LV motion, at SPECKLE_LEVELS levels of shortening
    texture = _log_speckle(n, size, rng)
    s_max = np.maximum(s.max(1), 1e-6)
    rho, r_ed, amp = (lv_fields[k].astype(np.float32) for k in ("rho", "r_ed", "amp"))
    r_es = r_ed * (1.0 - amp * s_max[:, None])
    rho0 = np.where(rho < r_es, rho * r_ed / r_es, np.cbrt(np.maximum(rho**3 - r_es**3 + r_ed**3, 0.0)))
    centre = heart.lv.centre[:, None]
    material = centre + (sector.points[None] - centre) * (rho0 / np.maximum(rho, 1e-3))[..., None]
    ri0, ai0 = _beam_coordinates(np.broadcast_to(sector.points, material.shape), texture.shape)
    ri1, ai1 = _beam_coordinates(material, texture.shape)
    speckle = np.zeros((n, SPECKLE_LEVELS, len(sector.index) + 1), np.float32)
    for q, w in enumerate(np.linspace(0.0, 1.0, SPECKLE_LEVELS)):  # material motion ~ linear in s
        speckle[:, q, :-1] = noise * _lookup(texture, ri0 + w * (ri1 - ri0), ai0 + w * (ai1 - ai0)) + tgc
    level = np.rint(s / s_max[:, None] * (SPECKLE_LEVELS - 1)).astype(np.int64)

    # reverberation clutter in the near field: static in the image, faint; texture from the
    # mirrored beam grid, so it does not repeat the tissue speckle underneath
    mirrored = np.stack([sector.points[:, 0] + 0.3, -sector.points[:, 1]], -1)
    clutter_tex = _lookup(texture, *_beam_coordinates(np.broadcast_to(mirrored, (n,) + mirrored.shape), texture.shape))
    clutter = -2.55 - 0.5 * np.maximum(depth - 1.5, 0.0) + 0.6 * clutter_tex
    clutter = np.where(noise > 0, clutter + np.log(max(noise, 1e-12)), -np.inf)

    gain = (DISPLAY_GAIN * np.exp(rng.normal(0.0, 0.08, n) * noise)).astype(np.float32)
    floor = (DISPLAY_FLOOR + rng.normal(0.0, 0.15, n) * noise).astype(np.float32)
    speckle *= gain[:, None, None]
    return {
        "background": _pad((gain[:, None] * (background - floor[:, None])).astype(np.float32)),
        "speckle": speckle,
        "speckle_level": level,
        "clutter": _pad((gain[:, None] * (clutter - floor[:, None])).astype(np.float32), -np.inf),
        "gain": gain,
        "floor": floor,
    }


@dataclass
class _Motion:
    """Per-frame scalars ``[n, T]`` that drive every layer."""

    lv_shortening: np.ndarray  # s: r = R_ED (1 - amp(phi) s)
    rv_scale: np.ndarray
    la_scale: np.ndarray
    ra_scale: np.ndarray


def _motion(pop: Population, heart: _Heart, cycle: _Cycle) -> _Motion:
    """LV shortening from the volume curve; RV area change in phase with the LV; atrial roofs
    riding (part of the way) on the valve planes as they descend towards the apex in systole."""
    n = len(pop)
    s = _shortening(pop, heart.lv, cycle.volume)
    base = np.full((n, 1), np.pi)
    mv_drop = s * _lv_motion(pop, base)[0] * heart.lv.radius(base)  # mitral annular excursion, cm
    rv_fac = np.clip(RV_FAC * (0.55 + 0.45 * pop.lvef / 60.0), 0.2, 0.5)
    rv_scale = np.sqrt(1.0 - rv_fac[:, None] * (1.0 - cycle.fill))
    tv_drop = (1.0 - rv_scale) * heart.rv.radius(base)
    roof = 1.0 - ATRIUM_EGG[2]  # atrial contraction centre to roof, fraction of its length
    return _Motion(
        lv_shortening=s,
        rv_scale=rv_scale,
        la_scale=1.0 + ATRIAL_TRACKING * mv_drop / (roof * heart.la.length[:, None]),
        ra_scale=1.0 + ATRIAL_TRACKING * tv_drop / (roof * heart.ra.length[:, None]),
    )


def _moving_hinges(egg: _Egg, keep: np.ndarray, sector: _Sector) -> np.ndarray:
    """Valve hinges ``[n, T, 2, 2]`` px of a chamber whose hinge radii are scaled by ``keep [n, T]``."""
    c = egg.centre[:, None, None]
    return sector.to_px(c + (egg.hinges()[:, None] - c) * keep[..., None, None])


def _valves(pop: Population, heart: _Heart, sector: _Sector, cycle: _Cycle, motion: _Motion,
            grey) -> tuple[list[_Valve], np.ndarray]:
    """Mitral (diseased or not) and tricuspid leaflets; also returns the mitral hinges."""
    n = len(pop)
    mv_keep = 1.0 - motion.lv_shortening * _lv_motion(pop, heart.lv.hinge_phi[:, None])[0]
    mv_hinges = _moving_hinges(heart.lv, mv_keep, sector)
    diseased = pop.valve > 0
    severe = diseased & pop.valve_severe

    def by_grade(normal: float, moderate: float, worst: float) -> np.ndarray:
        return np.where(diseased, np.where(severe, worst, moderate), normal)

    mitral = _valve(
        sector, mv_hinges, -heart.lv.axis, cycle.mitral_open * by_grade(1.0, 0.8, 0.6)[:, None],
        lengths=(0.62, 0.46), half_width=by_grade(0.8, 1.0, 1.3), tip_extra=by_grade(0.3, 1.0, 1.6),
        level=grey(np.where(diseased, LEVEL["leaflet_diseased"], LEVEL["leaflet"])),
        calcium_px=by_grade(0.0, 1.8, 2.6) * sector.size / 112, calcium_level=grey(LEVEL["calcium"]),
        gap=np.where(pop.valve == 2, by_grade(0.0, 0.12, 0.22), 0.0),  # regurgitant: no coaptation
    )
    tricuspid = _valve(
        sector, _moving_hinges(heart.rv, motion.rv_scale, sector), -heart.rv.axis, cycle.mitral_open,
        lengths=(0.55, 0.50), half_width=np.full(n, 0.5), tip_extra=np.full(n, 0.3),
        level=grey(LEVEL["leaflet"] - 0.2), calcium_px=np.zeros(n), calcium_level=grey(LEVEL["calcium"]),
        gap=np.zeros(n),
    )
    return [mitral, tricuspid], mv_hinges


def _build_scene(pop: Population, beats: BeatTrain, rng: np.random.Generator, t: np.ndarray, sector: _Sector,
                 noise: float) -> tuple[_Scene, _Cycle, np.ndarray, np.ndarray]:
    n, ppc = len(pop), sector.px_per_cm
    jitter = rng.normal(0.0, 1.0, (n, 3)) * np.array([4.0, 0.25, 0.35]) * noise
    heart = _layout(pop, jitter)
    cycle = _cardiac_cycle(pop, beats, t)
    motion = _motion(pop, heart, cycle)
    pts = np.broadcast_to(sector.points, (n,) + sector.points.shape)
    layers = (
        _scaled_layers(heart.ra, pts, ppc, ATRIAL_WALL, motion.ra_scale, LEVEL["atrial_wall"], n)
        + _scaled_layers(heart.la, pts, ppc, ATRIAL_WALL, motion.la_scale, LEVEL["atrial_wall"], n)
        + _scaled_layers(heart.rv, pts, ppc, RV_WALL, motion.rv_scale, LEVEL["rv_wall"], n)
    )
    lv_layers, lv_fields = _lv_layers(pop, heart, pts, ppc, motion.lv_shortening)
    fields = _static_fields(pop, sector, heart, lv_fields, motion.lv_shortening, rng, noise)
    gain, floor = fields.pop("gain"), fields.pop("floor")

    def grey(level):
        return (gain * (np.asarray(level) - floor)).astype(np.float32)

    layers = [_sparse(layer, gain, floor) for layer in layers + lv_layers]
    valves, mv_hinges = _valves(pop, heart, sector, cycle, motion, grey)
    scene = _Scene(layers, len(layers) - 1, valves, **fields)
    return scene, cycle, sector.to_px(heart.lv.centre), mv_hinges


def _flat_index(image: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Positions in ``image.ravel()`` of the sector pixels ``index [bn, K]`` in every frame of a
    block ``image [bn, bt, P + 1]``: ``[bn, bt, K]``."""
    bn, bt, p1 = image.shape
    frame_start = (np.arange(bn)[:, None] * bt + np.arange(bt)[None]) * p1
    return frame_start[..., None] + index[:, None]


def _paint_layer(image: np.ndarray, layer: _Layer, pb: slice, tb: slice) -> np.ndarray:
    """Blend one layer into a block; returns its coverage ``[bn, bt, K]``."""
    flat = _flat_index(image, layer.index[pb])
    alpha = layer.b[pb, None] * layer.param[pb, tb, None]
    alpha += layer.a[pb, None]
    np.clip(alpha, 0.0, 1.0, out=alpha)
    under = image.reshape(-1)[flat]
    delta = layer.level[pb, None] - under
    delta *= alpha
    under += delta
    image.reshape(-1)[flat] = under
    return alpha


def _paint_valve(image: np.ndarray, valve: _Valve, pb: slice, tb: slice) -> None:
    """Draw both leaflets (and annular calcium) of one valve into a block ``[bn, bt, P + 1]``."""
    flat = _flat_index(image, valve.window[pb])
    patch = image.reshape(-1)[flat]
    rows, cols = valve.rows[pb, None], valve.cols[pb, None]
    level = valve.level[pb, None, None]
    for leaf in range(2):
        hinge = valve.hinge[pb, tb, leaf]
        dr, dc = rows - hinge[..., :1], cols - hinge[..., 1:]
        d = valve.direction[pb, tb, leaf]
        along = dr * d[..., :1] + dc * d[..., 1:]
        across = np.abs(dr * d[..., 1:] - dc * d[..., :1])
        length = valve.length[pb, leaf, None, None]
        width = valve.half_width[pb, leaf, None, None] + valve.tip_extra[pb, None, None] * _clip01(along / length)
        alpha = np.clip(width + 0.5 - across, 0.0, 1.0)
        alpha *= np.clip(np.minimum(along + 0.5, length + 0.5 - along), 0.0, 1.0)
        patch += alpha * (level - patch)
        if valve.calcium_px[pb].any():
            radius = valve.calcium_px[pb, None, None]
            alpha = np.clip(radius + 0.5 - np.sqrt(dr * dr + dc * dc), 0.0, 1.0)
            patch += alpha * (valve.calcium_level[pb, None, None] - patch)
    image.reshape(-1)[flat] = patch


def _render_block(scene: _Scene, sector: _Sector, pb: slice, tb: slice, rng: np.random.Generator,
                  noise: float) -> tuple[np.ndarray, np.ndarray]:
    """Grey frames ``[bn, bt, P]`` (uint8) of patients ``pb`` at frames ``tb``, and LV cavity areas."""
    image = np.repeat(scene.background[pb, None], tb.stop - tb.start, axis=1)
    area = None
    for i, layer in enumerate(scene.layers):
        alpha = _paint_layer(image, layer, pb, tb)
        if i == scene.lv_cavity:
            area = alpha.sum(-1)
    for valve in scene.valves:
        _paint_valve(image, valve, pb, tb)
    image += scene.speckle[np.arange(pb.start, pb.stop)[:, None], scene.speckle_level[pb, tb]]
    np.maximum(image, scene.clutter[pb, None], out=image)
    if noise > 0:  # uniform frame-to-frame noise with SD FRAME_NOISE_GREY (bytes are cheap to draw)
        grain = np.frombuffer(rng.bytes(image.size), np.int8).reshape(image.shape)
        image += grain * np.float32(noise * FRAME_NOISE_GREY * np.sqrt(3.0) / 128.0)
    rim = np.flatnonzero(sector.alpha < 1.0)
    image[..., rim] *= sector.alpha[rim]
    np.clip(image, 0.0, 255.0, out=image)
    return image[..., :-1].astype(np.uint8), area


def render_echo(pop: Population, beats: BeatTrain, rng: np.random.Generator, *, start_s: np.ndarray,
                size: int = 112, fps: float = 50.0, duration_s: float = 2.8, noise: float = 1.0,
                view: str = "a4c") -> EchoBatch:
    """Render one grayscale cine per patient; frame ``i`` is at ``start_s + i / fps`` seconds on
    the BeatTrain clock. Deterministic given ``rng``'s state."""
    if view not in ECHO_VIEWS:
        raise ConfigError(f"echo view {view!r} is not available; choose from {', '.join(ECHO_VIEWS)}")
    n = len(pop)
    start_s = np.broadcast_to(np.asarray(start_s, float), (n,))
    n_frames = int(round(duration_s * fps))
    if np.any(start_s < 0) or np.any(start_s + duration_s > beats.duration_s + 1e-9):
        raise ValueError(f"echo clip [start_s, start_s + {duration_s}] must lie within [0, {beats.duration_s}] s")
    t = start_s[:, None] + np.arange(n_frames)[None] / fps
    if n == 0:
        empty = np.zeros((0, n_frames), np.float32)
        return EchoBatch(np.zeros((0, n_frames, size, size), np.uint8), float(fps), start_s.copy(), empty, empty,
                         np.zeros((0, 2), np.float32), [], [], np.zeros((0, n_frames, 2, 2), np.float32))

    sector = _sector(size)
    scene, cycle, centre_px, mv_hinges = _build_scene(pop, beats, rng, t, sector, noise)
    frames = np.zeros((n, n_frames, size * size), np.uint8)
    area = np.zeros((n, n_frames), np.float32)
    p1 = len(sector.index) + 1
    bn = max(1, min(n, BLOCK_ELEMENTS // (p1 * n_frames)))
    bt = max(1, min(n_frames, BLOCK_ELEMENTS // (p1 * bn)))
    for p0 in range(0, n, bn):  # cache-sized blocks of patients x frames
        pb = slice(p0, min(n, p0 + bn))
        for t0 in range(0, n_frames, bt):
            tb = slice(t0, min(n_frames, t0 + bt))
            grey, area[pb, tb] = _render_block(scene, sector, pb, tb, rng, noise)
            frames[pb, tb][..., sector.index] = grey

    return EchoBatch(
        frames=frames.reshape(n, n_frames, size, size),
        fps=float(fps),
        start_s=start_s.copy(),
        lv_area_px=area,
        lv_volume_ml=cycle.volume.astype(np.float32),
        lv_center_px=centre_px.astype(np.float32),
        ed_frames=events_to_samples(beats.r, start_s, start_s + n_frames / fps, fps),
        es_frames=events_to_samples(beats.t_end, start_s, start_s + n_frames / fps, fps),
        mitral_annulus_px=mv_hinges.astype(np.float32),
    )


# ------------------------------------------------------------------------------------------------
# Measurement: what an echocardiographer traces, from the pixels alone
# ------------------------------------------------------------------------------------------------

CAVITY_DARK, HALF_TISSUE = 30.0, 70.0  # grey levels: surely blood; half-way between blood and myocardium
_IN_PLANE = np.zeros((3, 3, 3), bool)
_IN_PLANE[1] = ndimage.generate_binary_structure(2, 1)  # connectivity within a frame only


def smooth_frames(frames: np.ndarray) -> np.ndarray:
    """Light Gaussian smoothing within each frame, to tame speckle before thresholding."""
    return ndimage.gaussian_filter(frames.astype(np.float32), (0, 1.2, 1.2), truncate=2.5)


def lv_cavity_masks(frames: np.ndarray, lv_center_px: np.ndarray, mitral_annulus_px: np.ndarray) -> np.ndarray:
    """LV cavity in every frame ``[T, H, W]`` by image analysis, as when tracing an echo by hand.

    Dark pixels (hysteresis: seeds below ``CAVITY_DARK``, grown 3 px into pixels below
    ``HALF_TISSUE``) connected to the LV centre, on the apical side of the mitral annulus line
    ``mitral_annulus_px`` ``[T, 2 hinges, (row, col)]`` (which closes the cavity when the valve is open).
    The renderer's geometry only supplies the seed point and the annulus, not the boundary.
    """
    smooth = smooth_frames(frames)
    _, h, w = smooth.shape
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float32)
    (ra, ca), (rb, cb) = np.transpose(mitral_annulus_px, (1, 2, 0))[..., None, None]  # [T, 1, 1] each

    def side(r, c):
        return (rb - ra) * (c - ca) - (cb - ca) * (r - ra)

    apical = np.sign(side(rows, cols)) == np.sign(side(*lv_center_px))
    labels, _ = ndimage.label((smooth < CAVITY_DARK) & apical, structure=_IN_PLANE)
    r, c = np.rint(lv_center_px).astype(int)
    seed = (labels == labels[:, r, c][:, None, None]) & (labels[:, r, c][:, None, None] > 0)
    return ndimage.binary_dilation(seed, _IN_PLANE, iterations=3, mask=(smooth < HALF_TISSUE) & apical)


def measure_lv_area(frames: np.ndarray, lv_center_px: np.ndarray, mitral_annulus_px: np.ndarray) -> np.ndarray:
    """LV cavity area in pixels per frame ``[T]``, measured from the images (see :func:`lv_cavity_masks`)."""
    return lv_cavity_masks(frames, lv_center_px, mitral_annulus_px).sum(axis=(1, 2)).astype(np.float64)
