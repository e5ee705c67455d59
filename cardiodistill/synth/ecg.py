"""12-lead and mobile ECG from a moving cardiac dipole (vectorcardiogram).

Model
-----
The heart is one current dipole ``d(t)`` in Frank axes (X to the patient's left, Y to the feet,
Z to the back), in millivolts. Every deflection of a beat is a kernel in time with a fixed 3-D
vector (see :data:`WAVES`): atrial depolarisation (``P_ra`` then ``P_la``); the QRS loop (septal
``Q``, early anterior ``R1``, main leftward ``R``, terminal ``S``, and ``R2``: the late right
ventricle in right bundle branch block or the notch of left bundle branch block); ``Q_mi``, the
unopposed forces pointing away from an old infarct; ``ST``, the injury current of ischaemia or of
strain (flat-topped); and repolarisation ``T``. A premature ventricular complex (a beat the
:class:`~cardiodistill.synth.rhythm.BeatTrain` marks ``ectopic``) is drawn with its own three
waves instead (``PVC_R``, ``PVC_S``: a broad QRS from one focus; ``PVC_T``: a discordant T). A kernel is a split generalised Gaussian
``exp(-|x|^p / 2)`` with ``x = (t - c) / sigma_left`` before its centre and ``(t - c) / sigma_right``
after, ``p = 2`` for smooth waves and ``p = 4`` for the ST plateau. Centres and widths are linear in
each beat's QRS onset and QT interval from the :class:`~cardiodistill.synth.rhythm.BeatTrain`, so
every modality rendered from one beat train shares its timing:

* with normal conduction the spatial QRS peak is at ``r = qrs_onset + 0.45 QRS`` (within a few ms);
* the T kernel's descending half is a Gaussian of width ``sigma`` centred ``2 sigma`` before
  ``t_end``, so the tangent to its steepest down-slope meets the baseline exactly at ``t_end``
  (the tangent method of measuring QT); the echo treats ``t_end`` as end-systole.

Kernels are evaluated only within 4 sigma of their centre (2 for ``p = 4``) and scattered with
``np.add.at`` into one train per wave; a ``[patients, 3, waves]`` matrix product then mixes the
trains into the dipole. Work grows with beats x window, not beats x samples.

Leads and noise
---------------
The eight independent leads I, II, V1-V6 are the Dower transform of the dipole (Dower, Machado and
Osborne, Clin. Cardiol. 1980), with small per-patient lead-vector jitter for electrode placement.
Noise is generated per electrode (RA, LA, LL, V1-V6) and mapped to leads as the amplifier does
(I = LA - RA, II = LL - RA, Vi = Ei - Wilson's terminal): respiratory baseline wander and slow
drift, mains hum (50 or 60 Hz), bursty band-limited muscle noise and electrode-motion shifts,
each with a random per-patient level. The recorded channels are quantised to the ADC step, then
III, aVR, aVL and aVF are derived from the digital I and II with
:func:`~cardiodistill.signals.leads.derive_limb_leads`, so Einthoven's and Goldberger's identities
hold exactly (up to float32 rounding), as in a digital electrocardiograph.

Physiology (all from :class:`~cardiodistill.synth.population.Population`)
------------------------------------------------------------------------
* QRS frontal axis ``qrs_axis_deg`` (the QRS loop is turned about Z until the axis computed from
  leads I and aVF equals it), amplitudes scaled by ``voltage_scale``, QRS width ``qrs_ms``, PR
  ``pr_ms``, left-atrial size ``la_scale`` (larger, later left-atrial P).
* Prior MI (``mi_territory``): forces toward the scar are lost (smaller R, pathological Q in the
  territory leads; about one in seven infarcts is small, with little Q) and repolarisation turns
  away from it (T inversion).
* Acute ischaemia (``ischaemia_territory``): an injury vector toward the territory over the ST
  segment (ST elevation there, reciprocal depression opposite) and a hyperacute T.
* Wall thickness (hypertensive LVH, aortic stenosis, or a normal heart's spread): QRS voltage grows
  by 11 % per mm above 9.5 mm, leftward and posterior (Sokolow-Lyon usually > 3.5 mV in LVH); above
  11 mm, half the patients have lateral strain (ST depression, T inversion in I, aVL, V5-V6)
  growing with the wall.
* LBBB: no septal q, a broad notched leftward-posterior R (QS in V1), discordant ST-T. RBBB: a late
  rightward-anterior R' (rsR' in V1, broad S in I and V6), T inversion in V1-V3. With either block
  the largest deflection can sit up to ~25 ms before ``r``.
* AF: no P waves; f waves of 4-9 Hz with drifting rate and amplitude, largest in V1 and the
  inferior leads.
* Potassium: T height grows with K, steeply above 5.5 mmol/L (tall, narrow, peaked), P flattens.
* Low LVEF, graded by the deficit below 55 %: lower voltage, poor R-wave progression, a fragmented
  QRS (a late notch, by a patient-specific amount, in normal conduction) and flatter T waves; the
  wider QRS, faster rate, longer QTc, larger atrium and ectopy come from the population model.
* Anaemia, graded by the haemoglobin deficit: flatter T, slight lateral ST depression (the higher
  QRS voltage of thin blood is in ``voltage_scale``).
* Ectopy: each patient's PVC focus is the right ventricular outflow tract (65 %: LBBB-like,
  inferior axis) or the left ventricle (RBBB-like), 1.2-2.2 mV.

Units: seconds, millivolts, Hz. Outputs are float32. Randomness comes only from the Generator
passed in, drawn in a fixed order, so a seed fixes the output.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
from scipy import signal as sps
from scipy.interpolate import CubicSpline

from ..errors import ConfigError, SamplingRateError
from ..signals.leads import LEADS_12, LIMB_LEADS, derive_limb_leads
from .population import Population, haemoglobin_deficit
from .rhythm import PVC_ONSET_S, BeatTrain

__all__ = [
    "DOWER",
    "MOBILE_LEADS",
    "RECORDED_LEADS",
    "WAVES",
    "EcgParams",
    "render_12lead",
    "render_dipole",
    "render_mobile",
    "sample_ecg_params",
]

RECORDED_LEADS: tuple[str, ...] = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
MOBILE_LEADS: dict[str, tuple[str, ...]] = {"single_lead": ("I",), "six_lead": LIMB_LEADS}

# Dower transform: Frank X, Y, Z (mV) -> leads (mV), rows in RECORDED_LEADS order.
DOWER = np.array(
    [
        [0.632, -0.235, 0.059],  # I
        [0.235, 1.066, -0.132],  # II
        [-0.515, 0.157, -0.917],  # V1
        [0.044, 0.164, -1.387],  # V2
        [0.882, 0.098, -1.277],  # V3
        [1.213, 0.127, -0.601],  # V4
        [1.125, 0.127, -0.086],  # V5
        [0.831, 0.076, 0.230],  # V6
    ]
)

WAVES: tuple[str, ...] = ("P_ra", "P_la", "Q", "R1", "R", "S", "R2", "Q_mi", "ST", "T", "PVC_R", "PVC_S", "PVC_T")
_W = {name: i for i, name in enumerate(WAVES)}
_QRS = [_W[name] for name in ("Q", "R1", "R", "S", "R2")]
_ECTOPIC = frozenset(_W[name] for name in ("PVC_R", "PVC_S", "PVC_T"))  # drawn only at ectopic beats, the rest never
_POWER = {"ST": 4}  # kernel exponent; every other wave is a (split) Gaussian
_MIN_SIGMA_S = 0.003
_BLOCK = 64  # patients rendered together: bounds the temporaries and keeps them in cache


def _unit(*v: float) -> np.ndarray:
    v = np.asarray(v, float)
    return v / np.linalg.norm(v)


# Unit vectors from the centre of the heart toward each territory (index = population.TERRITORIES).
_TERRITORY = np.stack(
    [
        np.zeros(3),
        _unit(0.30, -0.35, -1.00),  # anterior (LAD): V1-V4, reciprocal III, aVF
        _unit(-0.15, 1.00, 0.15),  # inferior (RCA): II, III, aVF, reciprocal I, aVL
        _unit(1.00, -0.30, 0.35),  # lateral (LCx): I, aVL, V5, V6, reciprocal III, aVF
    ]
)

# Per conduction (none, LBBB, RBBB): vectors (mV, Frank) of Q, R1, R, S, R2 ...
_QRS_VECTORS = np.array(
    [
        [[-0.15, 0.05, -0.20], [0.45, 0.30, -0.25], [1.20, 1.20, 0.35], [-0.25, -0.05, 0.70], [0.0, 0.0, 0.0]],
        [[0.20, 0.00, 0.05], [0.0, 0.0, 0.0], [1.00, 0.30, 1.30], [0.0, 0.0, 0.0], [0.90, 0.10, 1.50]],
        [[-0.15, 0.05, -0.20], [0.45, 0.30, -0.25], [1.20, 1.20, 0.35], [-0.20, -0.05, 0.25], [-0.55, -0.05, -0.75]],
    ]
)
# ... and their centre, left width, right width as fractions of the QRS duration
_QRS_TIMING = np.array(
    [
        [[0.13, 0.06, 0.06], [0.32, 0.09, 0.09], [0.47, 0.10, 0.10], [0.70, 0.095, 0.095], [0.80, 0.10, 0.10]],
        [[0.12, 0.06, 0.06], [0.25, 0.08, 0.08], [0.36, 0.12, 0.11], [0.85, 0.06, 0.06], [0.64, 0.11, 0.11]],
        [[0.10, 0.05, 0.05], [0.22, 0.07, 0.07], [0.33, 0.08, 0.08], [0.52, 0.07, 0.07], [0.78, 0.10, 0.11]],
    ]
)
_P_RA = np.array([0.05, 0.07, -0.04])  # right atrium: inferior, anterior
_P_LA = np.array([0.06, 0.04, 0.04])  # left atrium: leftward, posterior (P biphasic in V1)
_T_NORMAL = np.array([0.40, 0.22, -0.20])  # concordant with the QRS: left, inferior, anterior
_F_WAVE = _unit(0.20, 0.60, -0.75)  # atrial fibrillation, largest in V1 and the inferior leads
_F_WAVE_MINOR = _unit(0.8, 0.2, -0.3)
# premature ventricular complexes: most from the right ventricular outflow tract (LBBB-like, inferior
# axis: left, inferior, posterior), the rest from the left ventricle (RBBB-like: right, anterior)
_PVC_FOCI = np.stack([_unit(0.25, 0.85, 0.60), _unit(-0.55, 0.35, -0.75)])


@dataclass
class EcgParams:
    """Per-patient ECG morphology, drawn once and shared by the 12-lead and the mobile renders.

    One row per patient. A wave's kernel in a beat with QRS onset ``o`` and QT interval ``q`` (s)
    is centred at ``o + a q + b`` with widths ``cl q + dl`` before the centre and ``cr q + dr``
    after it, where ``timing[..., :] = (a, b, cl, dl, cr, dr)``.
    """

    vectors: np.ndarray  # [n, len(WAVES), 3] mV, peak dipole of each wave (Frank X, Y, Z)
    timing: np.ndarray  # [n, len(WAVES), 6] (a, b, cl, dl, cr, dr) as above; b, dl, dr in s
    lead_matrix: np.ndarray  # [n, 8, 3] dipole -> RECORDED_LEADS (Dower with electrode jitter)
    f_amp: np.ndarray  # [n] mV, f-wave amplitude (0 in sinus rhythm)
    f_rate: np.ndarray  # [n] Hz, mean f-wave rate
    f_fm: np.ndarray  # [n, 3, 3] rate modulation, per component (depth Hz, rate Hz, phase rad)
    f_am: np.ndarray  # [n, 3, 3] amplitude modulation (relative depth, rate Hz, phase rad)
    f_phase: np.ndarray  # [n] rad
    f_dirs: np.ndarray  # [n, 2, 3] unit vectors spanning the f-wave loop

    def __len__(self) -> int:
        return len(self.vectors)

    def take(self, index: np.ndarray | slice) -> EcgParams:
        return EcgParams(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


# --------------------------------------------------------------------------------------------
# morphology: templates, then each condition as a small change of the wave vectors


def _draw(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Every random number behind ``sample_ecg_params``, in a fixed order, whatever the conditions."""
    u, normal = rng.uniform, rng.normal
    return {
        "heart_axis": rng.standard_normal((n, 3)),
        "heart_angle": np.deg2rad(normal(0.0, 8.0, n)),
        "wave_gain": np.exp(normal(0.0, 0.12, (n, len(WAVES)))),
        "wave_tilt": normal(0.0, 0.07, (n, len(WAVES), 3)),
        "qrs_centre": normal(0.0, 0.012, (n, len(_QRS))),
        "qrs_width": np.exp(normal(0.0, 0.06, (n, len(_QRS)))),
        "kappa_r": u(0.100, 0.120, n),  # T down-slope width / QT
        "kappa_l": u(0.180, 0.220, n),  # T up-slope width / QT
        "p_sigma": u(0.016, 0.021, n),  # s
        "scar": u(0.8, 1.2, n) * np.where(rng.random(n) < 0.15, 0.35, 1.0),  # 15 % small, non-Q infarcts
        "injury": u(0.15, 0.35, n),  # mV
        "strain": rng.random(n) < 0.5,
        "lead_gain": 1.0 + normal(0.0, 0.04, (n, 8, 3)),
        "lead_shift": normal(0.0, 1.0, (n, 8, 3)) * np.array([0.02, 0.02] + [0.06] * 6)[:, None],
        "f_amp": u(0.035, 0.09, n),
        "f_rate": u(5.0, 7.5, n),
        "f_fm": np.stack([u(0.1, 0.45, (n, 3)), u(0.05, 0.5, (n, 3)), u(0, 2 * np.pi, (n, 3))], -1),
        "f_am": np.stack([u(0.1, 0.3, (n, 3)), u(0.2, 1.5, (n, 3)), u(0, 2 * np.pi, (n, 3))], -1),
        "f_phase": u(0.0, 2 * np.pi, n),
        "f_tilt": normal(0.0, 0.15, (n, 2, 3)),
        "fragmentation": u(0.0, 1.0, n),  # how much a failing ventricle notches its QRS
        "notch_dir": rng.standard_normal((n, 3)),
        "t_flattening": u(0.3, 1.0, n),
        "pvc_focus": (rng.random(n) >= 0.65).astype(int),
        "pvc_tilt": normal(0.0, 0.25, (n, 3)),
        "pvc_mv": u(1.2, 2.2, n),
    }


def _rotation(axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Rotation matrices ``[n, 3, 3]`` about ``axis`` ``[n, 3]`` by ``angle`` ``[n]`` rad (Rodrigues)."""
    k = axis / np.linalg.norm(axis, axis=-1, keepdims=True)
    cross = np.zeros(k.shape[:-1] + (3, 3))
    cross[..., 0, 1], cross[..., 0, 2], cross[..., 1, 2] = -k[..., 2], k[..., 1], -k[..., 0]
    cross = cross - np.swapaxes(cross, -1, -2)
    s, c = np.sin(angle)[..., None, None], np.cos(angle)[..., None, None]
    return np.eye(3) + s * cross + (1.0 - c) * cross @ cross


def _toward(vec: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Positive part of the component of ``vec`` ``[n, 3]`` along unit ``u`` ``[n, 3]``, as ``[n, 1]``."""
    return np.clip(np.sum(vec * u, axis=-1, keepdims=True), 0.0, None)


def _templates(pop: Population) -> np.ndarray:
    """Wave vectors ``[n, W, 3]`` by conduction type, before any personal variation."""
    n, bbb = len(pop), pop.bbb.astype(int)
    vec = np.zeros((n, len(WAVES), 3))
    vec[:, _W["P_ra"]] = _P_RA
    vec[:, _W["P_la"]] = _P_LA * pop.la_scale[:, None] ** 1.5
    vec[:, _QRS] = _QRS_VECTORS[bbb]
    vec[:, _W["T"]] = _T_NORMAL
    lbbb, rbbb = bbb == 1, bbb == 2
    main = _unit(*(_QRS_VECTORS[1, 2] + _QRS_VECTORS[1, 4]))
    vec[lbbb, _W["T"]] = -0.38 * main  # discordant repolarisation
    vec[lbbb, _W["ST"]] = -0.12 * main
    vec[rbbb, _W["T"]] = 0.8 * _T_NORMAL - 0.25 * _unit(*_QRS_VECTORS[2, 4])  # T inverted in V1-V3
    return vec


def _personalise(vec: np.ndarray, d: dict[str, np.ndarray]) -> np.ndarray:
    """A small rotation of the whole heart, then a gain and a tilt per wave."""
    vec = np.einsum("nij,nwj->nwi", _rotation(d["heart_axis"], d["heart_angle"]), vec)
    size = np.linalg.norm(vec, axis=-1, keepdims=True)
    return (vec + d["wave_tilt"] * size) * d["wave_gain"][..., None]


def _hypertrophy(vec: np.ndarray, pop: Population, strain: np.ndarray) -> None:
    """Voltage grows with the wall's thickness (hypertensive LVH, aortic stenosis, or a normal heart's
    spread), leftward and posterior; above ~11 mm, strain turns lateral repolarisation away."""
    gain = np.clip(1.0 + 0.11 * (pop.wall_thickness - 9.5), 0.85, 2.0)[:, None]
    r = vec[:, _W["R"]]
    shift = np.clip(gain - 1.0, 0.0, None) * np.linalg.norm(r, axis=-1, keepdims=True) * np.array([0.10, -0.05, 0.35])
    vec[:, _W["R"]] = gain * r + shift
    vec[:, _W["S"]] *= gain
    lateral = _TERRITORY[3]
    grade = (np.clip((pop.wall_thickness - 11.0) / 4.0, 0.0, 1.5) * strain)[:, None]
    vec[:, _W["T"]] -= grade * (2.0 * _toward(vec[:, _W["T"]], lateral) + 0.1) * lateral
    vec[:, _W["ST"]] -= grade * 0.1 * lateral


def _low_ejection_fraction(vec: np.ndarray, pop: Population, d: dict[str, np.ndarray]) -> None:
    """A failing ventricle, graded by how far the LVEF is below 55 %: poor R-wave progression (weaker
    septal forces, a more posterior main R), a fragmented QRS (a late notch from scar and fibrosis,
    by a patient-specific amount, in normal conduction) and flattened T waves."""
    low_ef = np.clip((55.0 - pop.lvef) / 30.0, 0.0, 1.3)[:, None]
    size = np.linalg.norm(vec[:, _W["R"]], axis=-1, keepdims=True)
    vec[:, _W["Q"]] *= 1.0 - 0.4 * np.minimum(low_ef, 1.0)
    vec[:, _W["R"], 2] += 0.30 * low_ef[:, 0] * size[:, 0]
    notch = d["notch_dir"] / np.linalg.norm(d["notch_dir"], axis=-1, keepdims=True)
    vec[:, _W["R2"]] += (pop.bbb == 0)[:, None] * 0.25 * low_ef * d["fragmentation"][:, None] * size * notch
    vec[:, _W["T"]] *= 1.0 - 0.5 * np.minimum(low_ef, 1.0) * d["t_flattening"][:, None]


def _anaemia(vec: np.ndarray, pop: Population) -> None:
    """Anaemia: demand on the subendocardium flattens T and depresses ST laterally, by the Hb deficit."""
    deficit = haemoglobin_deficit(pop.male, pop.haemoglobin)[:, None]
    lateral = _TERRITORY[3]
    vec[:, _W["T"]] *= np.clip(1.0 - 0.06 * deficit, 0.6, 1.0)
    vec[:, _W["ST"]] -= 0.012 * deficit * lateral


def _ectopic(vec: np.ndarray, d: dict[str, np.ndarray]) -> None:
    """The patient's premature ventricular complex: a broad QRS from one focus and a discordant T."""
    focus = _PVC_FOCI[d["pvc_focus"]] + d["pvc_tilt"]
    focus /= np.linalg.norm(focus, axis=-1, keepdims=True)
    amp = d["pvc_mv"][:, None]
    vec[:, _W["PVC_R"]] = amp * focus
    vec[:, _W["PVC_S"]] = -0.3 * amp * _unit(1.0, -0.3, 0.2) - 0.2 * amp * focus
    vec[:, _W["PVC_T"]] = -0.35 * amp * focus


def _frontal_angle(axis_deg: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Frank frontal-plane angle (rad) at which dipole ``r`` ``[n, 3]`` (same frontal length, same Z)
    has the ECG axis ``axis_deg``.

    The hexaxial axis is the direction of ``h = (I, 2 aVF / sqrt(3))``, linear in the dipole through
    the Dower lead vectors. With ``r``'s frontal part ``rho (cos theta, sin theta)``, ``h`` is parallel
    to ``(cos a, sin a)`` when ``rho w . (cos theta, sin theta) + c z = 0`` for the normal ``(sin a, -cos a)``
    projected through the leads (``w``, ``c``); of the two roots, keep the one pointing along the axis.
    """
    hexaxial = np.stack([DOWER[0], (2.0 * DOWER[1] - DOWER[0]) / np.sqrt(3.0)])  # [2, 3]
    a = np.deg2rad(axis_deg)
    along, normal = np.stack([np.cos(a), np.sin(a)], -1), np.stack([np.sin(a), -np.cos(a)], -1)
    w, c = normal @ hexaxial[:, :2], normal @ hexaxial[:, 2]
    rho, z = np.linalg.norm(r[:, :2], axis=-1), r[:, 2]
    offset = np.arccos(np.clip(-c * z / (rho * np.linalg.norm(w, axis=-1)), -1.0, 1.0))
    roots = np.arctan2(w[:, 1], w[:, 0])[:, None] + np.stack([offset, -offset], -1)  # [n, 2]
    frontal = rho[:, None, None] * np.stack([np.cos(roots), np.sin(roots)], -1)  # [n, 2, 2]
    h = frontal @ hexaxial[:, :2].T + z[:, None, None] * hexaxial[:, 2]
    best = np.argmax(np.sum(h * along[:, None], axis=-1), axis=1)
    return roots[np.arange(len(r)), best]


def _orient(vec: np.ndarray, axis_deg: np.ndarray) -> None:
    """Turn the QRS loop about Z so that the main R has the patient's frontal axis; ST-T half as much."""
    r = vec[:, _W["R"]]
    turn = np.angle(np.exp(1j * (_frontal_angle(axis_deg, r) - np.arctan2(r[:, 1], r[:, 0]))))
    z_axis = np.broadcast_to([0.0, 0.0, 1.0], r.shape)
    vec[:, _QRS] = np.einsum("nij,nwj->nwi", _rotation(z_axis, turn), vec[:, _QRS])
    repolarisation = [_W["ST"], _W["T"]]
    vec[:, repolarisation] = np.einsum("nij,nwj->nwi", _rotation(z_axis, 0.5 * turn), vec[:, repolarisation])


def _infarct(vec: np.ndarray, pop: Population, size: np.ndarray) -> None:
    """Prior MI: forces toward the scar are lost, forces away from it unopposed, T turns away."""
    u = _TERRITORY[pop.mi_territory.astype(int)]
    scar = (np.clip(0.6 + (55.0 - pop.lvef) / 30.0, 0.5, 1.4) * size * (pop.mi_territory > 0))[:, None]
    vec[:, _W["Q"]] -= np.minimum(scar, 1.0) * _toward(vec[:, _W["Q"]], u) * u
    for w in (_W["R1"], _W["R"], _W["S"], _W["R2"]):
        vec[:, w] -= np.minimum(0.65 * scar, 0.9) * _toward(vec[:, w], u) * u
    vec[:, _W["Q_mi"]] = -0.45 * scar * u
    vec[:, _W["T"]] -= scar * (1.6 * _toward(vec[:, _W["T"]], u) + 0.12) * u


def _ischaemia(vec: np.ndarray, pop: Population, injury: np.ndarray) -> None:
    """Acute ischaemia: injury current toward the territory over the ST segment, hyperacute T."""
    u = _TERRITORY[pop.ischaemia_territory.astype(int)]
    acute = (pop.ischaemia_territory > 0)[:, None]
    vec[:, _W["ST"]] += acute * injury[:, None] * u
    vec[:, _W["T"]] = np.where(acute, 1.3 * vec[:, _W["T"]] + 0.8 * injury[:, None] * u, vec[:, _W["T"]])


def _potassium_and_atria(vec: np.ndarray, pop: Population) -> None:
    """T height grows with potassium (steeply above 5.5 mmol/L) while P flattens; no P in AF."""
    excess = np.clip(pop.potassium - 5.5, 0.0, None)
    vec[:, _W["T"]] *= (np.exp(0.12 * (pop.potassium - 4.3)) * (1.0 + 0.9 * excess))[:, None]
    p_gain = np.clip(1.0 - 0.35 * excess, 0.1, 1.0) * ~pop.af
    vec[:, [_W["P_ra"], _W["P_la"]]] *= p_gain[:, None, None]


def _timing(pop: Population, d: dict[str, np.ndarray]) -> np.ndarray:
    """Kernel timing ``[n, W, 6]`` = (a, b, cl, dl, cr, dr), see :class:`EcgParams`."""
    n = len(pop)
    qrs, pr = pop.qrs_ms / 1000.0, pop.pr_ms / 1000.0
    excess_k = np.clip(pop.potassium - 5.5, 0.0, None)
    timing = np.zeros((n, len(WAVES), 6))
    # P: PR interval measured from the onset (2.2 sigma before the centre) of the right-atrial P
    sigma_p = d["p_sigma"] * (1.0 + 0.15 * excess_k)
    centre_p = -pr + 2.2 * sigma_p
    timing[:, _W["P_ra"], [1, 3, 5]] = np.stack([centre_p, sigma_p, sigma_p], -1)
    sigma_la = 1.1 * sigma_p * np.sqrt(pop.la_scale)
    timing[:, _W["P_la"], [1, 3, 5]] = np.stack([centre_p + 0.025 * pop.la_scale, sigma_la, sigma_la], -1)
    # QRS: fractions of the QRS duration
    frac = _QRS_TIMING[pop.bbb.astype(int)]
    frac = np.concatenate([frac[..., :1] + d["qrs_centre"][..., None], frac[..., 1:] * d["qrs_width"][..., None]], -1)
    for k, column in enumerate((1, 3, 5)):
        timing[:, _QRS, column] = frac[..., k] * qrs[:, None]
    timing[:, _W["Q_mi"], [1, 3, 5]] = np.stack([0.22 * qrs, 0.10 * qrs, 0.10 * qrs], -1)
    # T: the down-slope Gaussian ends (tangent method) at t_end = onset + QT
    kappa_r = d["kappa_r"] / (1.0 + 0.3 * excess_k)
    kappa_l = d["kappa_l"] * np.where(pop.ischaemia_territory > 0, 1.15, 1.0) / (1.0 + 0.6 * excess_k)
    peak = 1.0 - 2.0 * kappa_r  # T peak at onset + peak * QT
    timing[:, _W["T"], [0, 2, 4]] = np.stack([peak, kappa_l, kappa_r], -1)
    # ST plateau from the J point (onset + QRS) to the T peak
    timing[:, _W["ST"]] = np.stack([0.5 * peak, 0.5 * qrs, 0.55 * peak, -0.55 * qrs, 0.55 * peak, -0.55 * qrs], -1)
    # an ectopic beat: a broad (~160 ms) QRS peaking PVC_ONSET_S after its onset, then its own T
    timing[:, _W["PVC_R"], [1, 3, 5]] = (PVC_ONSET_S, 0.022, 0.030)
    timing[:, _W["PVC_S"], [1, 3, 5]] = (0.125, 0.022, 0.022)
    timing[:, _W["PVC_T"], [0, 2, 4]] = np.stack([peak, kappa_l, kappa_r], -1)
    return timing


def sample_ecg_params(pop: Population, rng: np.random.Generator) -> EcgParams:
    """Draw each patient's dipole morphology and lead vectors. Deterministic given ``rng``'s state."""
    d = _draw(rng, len(pop))
    vec = _personalise(_templates(pop), d)
    _hypertrophy(vec, pop, d["strain"])
    _low_ejection_fraction(vec, pop, d)
    _orient(vec, pop.qrs_axis_deg)
    _infarct(vec, pop, d["scar"])
    _ischaemia(vec, pop, d["injury"])
    _potassium_and_atria(vec, pop)
    _anaemia(vec, pop)
    _ectopic(vec, d)
    vec *= (pop.voltage_scale * (1.0 - 0.2 * np.clip((50.0 - pop.lvef) / 30.0, 0.0, 1.0)))[:, None, None]

    f_dirs = np.stack([_F_WAVE, _F_WAVE_MINOR])[None] + d["f_tilt"]
    return EcgParams(
        vectors=vec,
        timing=_timing(pop, d),
        lead_matrix=DOWER * d["lead_gain"] + d["lead_shift"],
        f_amp=np.where(pop.af, d["f_amp"] * pop.voltage_scale, 0.0),
        f_rate=d["f_rate"],
        f_fm=d["f_fm"],
        f_am=d["f_am"],
        f_phase=d["f_phase"],
        f_dirs=f_dirs / np.linalg.norm(f_dirs, axis=-1, keepdims=True),
    )


# --------------------------------------------------------------------------------------------
# the clean dipole


def _add_kernels(
    out: np.ndarray,
    t: np.ndarray,
    rows: np.ndarray,
    centre: np.ndarray,
    sigma_l: np.ndarray,
    sigma_r: np.ndarray,
    weight: np.ndarray | float = 1.0,
    power: float = 2.0,
) -> None:
    """Add split generalised-Gaussian kernels to ``out`` ``[n_rows, len(t)]`` (float32) in place.

    Kernel ``e`` (height ``weight[e]``) lands in row ``rows[e]``; it is evaluated only where
    ``|t - centre| < reach * sigma`` (reach 4 for a Gaussian, 2 for p = 4), so the work is
    ``n_kernels x window``. ``t`` must be sorted ascending.
    """
    n_t = out.shape[-1]
    reach = 16.0 ** (1.0 / power)  # exp(-reach^p / 2) = exp(-8)
    lo = np.searchsorted(t, centre - reach * sigma_l)
    hi = np.searchsorted(t, centre + reach * sigma_r)
    live = hi > lo
    if not live.any():
        return
    weight = np.broadcast_to(np.asarray(weight, np.float32), centre.shape)
    rows, centre, sigma_l, sigma_r, weight, lo, hi = (a[live] for a in (rows, centre, sigma_l, sigma_r, weight, lo, hi))
    idx = lo[:, None] + np.arange(int((hi - lo).max()))
    inside = idx < hi[:, None]
    idx = np.minimum(idx, n_t - 1)
    x = t[idx].astype(np.float32) - centre[:, None].astype(np.float32)
    x /= np.where(x < 0.0, sigma_l[:, None], sigma_r[:, None]).astype(np.float32)
    x = x * x if power == 2 else np.abs(x) ** power
    kernel = np.exp(np.float32(-0.5) * x) * (inside * weight[:, None])
    np.add.at(out.reshape(-1), rows[:, None] * n_t + idx, kernel)  # unbuffered: overlapping windows add up


def _f_waves(params: EcgParams, t: np.ndarray) -> np.ndarray:
    """Fibrillatory-wave dipole ``[n, 3, len(t)]``: a frequency- and amplitude-modulated loop."""
    fm, am = params.f_fm[..., None], params.f_am[..., None]  # [n, 3, 3, 1]
    tt = t[None, None, :]
    # instantaneous rate f + sum(depth cos(2 pi rate t + phase)), integrated to a phase
    phase = 2 * np.pi * params.f_rate[:, None] * t + params.f_phase[:, None]
    phase = phase + np.sum(fm[:, :, 0] / fm[:, :, 1] * np.sin(2 * np.pi * fm[:, :, 1] * tt + fm[:, :, 2]), axis=1)
    swell = np.sum(am[:, :, 0] * np.sin(2 * np.pi * am[:, :, 1] * tt + am[:, :, 2]), axis=1)
    amp = params.f_amp[:, None] * (1.0 + swell)
    loop = np.stack([np.sin(phase), 0.4 * np.cos(phase)], axis=1)  # [n, 2, S]
    return (params.f_dirs.transpose(0, 2, 1) @ (amp[:, None] * loop)).astype(np.float32)


def _blocks(n: int) -> list[slice]:
    return [slice(i, min(i + _BLOCK, n)) for i in range(0, n, _BLOCK)]


def _dipole(beats: BeatTrain, params: EcgParams, t: np.ndarray) -> np.ndarray:
    """:func:`render_dipole` for one block of patients."""
    trains = np.zeros((len(WAVES), len(params), len(t)), np.float32)  # one train of kernels per wave
    patient, beat = np.nonzero(beats.valid)
    onset = beats.qrs_onset[patient, beat]
    qt = beats.t_end[patient, beat] - onset
    ectopic = beats.ectopic[patient, beat]
    for w, name in enumerate(WAVES):
        keep = np.any(params.vectors[patient, w] != 0.0, axis=1) & (ectopic == (w in _ECTOPIC))
        a, b, cl, dl, cr, dr = params.timing[patient[keep], w].T
        q = qt[keep]
        sigma_l = np.maximum(cl * q + dl, _MIN_SIGMA_S)
        sigma_r = np.maximum(cr * q + dr, _MIN_SIGMA_S)
        _add_kernels(trains[w], t, patient[keep], onset[keep] + a * q + b, sigma_l, sigma_r, power=_POWER.get(name, 2))
    dipole = params.vectors.transpose(0, 2, 1).astype(np.float32) @ trains.transpose(1, 0, 2)
    af = params.f_amp > 0
    if af.any():
        dipole[af] += _f_waves(params.take(af), t)
    return dipole


def render_dipole(pop: Population, beats: BeatTrain, params: EcgParams, t: np.ndarray) -> np.ndarray:
    """The clean cardiac dipole ``[n, 3, len(t)]`` (float32 mV, Frank X, Y, Z) at times ``t`` (s).

    ``t`` is any ascending 1-D array: a sampling grid, video frame times, ...
    """
    t = np.asarray(t, dtype=np.float64)
    if t.ndim != 1 or np.any(np.diff(t) < 0):
        raise ValueError("t must be a 1-D ascending array of times in seconds")
    n = len(pop)
    if len(params) != n or beats.r.shape[0] != n:
        raise ValueError(f"population ({n}), beats ({beats.r.shape[0]}) and params ({len(params)}) differ in size")
    out = np.empty((n, 3, len(t)), np.float32)
    for block in _blocks(n):
        out[block] = _dipole(beats.take(block), params.take(block), t)
    return out


# --------------------------------------------------------------------------------------------
# noise, generated per electrode


@dataclass(frozen=True)
class _NoiseProfile:
    """Median per-patient levels at ``noise = 1``; each patient's level is lognormal around them."""

    wander_mv: float  # respiratory baseline wander, per electrode
    drift_mv: float  # slow electrode drift
    hum_mv: float  # mains interference
    emg_mv: float  # muscle noise RMS
    motion_per_s: float  # electrode-motion events per second
    motion_mv: tuple[float, float]  # log-uniform amplitude range
    motion_decay_s: tuple[float, float]
    emg_band_hz: tuple[float, float] = (20.0, 150.0)


_CLINICAL = _NoiseProfile(0.04, 0.05, 0.004, 0.005, 0.03, (0.1, 0.6), (0.2, 0.8))
_HANDHELD = _NoiseProfile(0.06, 0.08, 0.003, 0.015, 0.12, (0.2, 1.5), (0.1, 0.6))  # tense thumbs, loose contact

# electrodes -> recorded leads: I = LA - RA, II = LL - RA, Vi = Ei - (RA + LA + LL) / 3
_WIRING_12 = np.zeros((8, 9), np.float32)
_WIRING_12[0, [0, 1]] = (-1.0, 1.0)
_WIRING_12[1, [0, 2]] = (-1.0, 1.0)
_WIRING_12[2:, :3] = -1.0 / 3.0
_WIRING_12[2:, 3:] = np.eye(6)
_WIRING_HANDHELD = {  # electrodes RA (right thumb), LA (left thumb) [, LL (left leg)]
    "single_lead": np.array([[-1.0, 1.0]], np.float32),
    "six_lead": np.array([[-1.0, 1.0, 0.0], [-1.0, 0.0, 1.0]], np.float32),
}


def _spline_basis(t: np.ndarray, spacing_s: float) -> np.ndarray:
    """Natural cubic-spline basis ``[n_knots, len(t)]`` with knots every ``spacing_s`` around ``t``."""
    knots = np.arange(t[0] - spacing_s, t[-1] + 2 * spacing_s, spacing_s)
    return CubicSpline(knots, np.eye(len(knots)), bc_type="natural")(t).T.astype(np.float32)


def _band_noise(
    rng: np.random.Generator, shape: tuple[int, ...], n_t: int, fs: float, band_hz: tuple[float, float]
) -> np.ndarray:
    """Unit-variance Gaussian noise ``[*shape, n_t]`` with the spectrum of a 2nd-order Butterworth band-pass.

    Drawn in the frequency domain (random complex amplitudes shaped by the filter's gain, then an
    inverse FFT): the statistics of filtered white noise at a fraction of the cost.
    """
    freq = np.fft.rfftfreq(n_t, 1.0 / fs)
    sos = sps.butter(2, band_hz, btype="bandpass", fs=fs, output="sos")
    gain = np.abs(sps.sosfreqz(sos, worN=freq, fs=fs)[1])
    weight = np.full(len(freq), 2.0)
    weight[0] = 1.0
    if n_t % 2 == 0:
        weight[-1] = 1.0
    gain *= n_t / np.sqrt(2.0 * np.sum(weight * gain**2))  # Parseval: E[mean x^2] = 1
    spectrum = rng.standard_normal((*shape, len(freq), 2), dtype=np.float32).view(np.complex64)[..., 0]
    return np.fft.irfft(spectrum * gain.astype(np.float32), n=n_t, axis=-1).astype(np.float32)


def _narrowband(rng: np.random.Generator, wander: np.ndarray, hum: np.ndarray, n_el: int, t: np.ndarray) -> np.ndarray:
    """Respiration (0.15-0.4 Hz) and mains (50 or 60 Hz), each electrode its own amplitude and phase.

    ``a sin(wt + phi) = (a cos phi) sin(wt) + (a sin phi) cos(wt)``, so one matmul mixes them.
    """
    n = len(wander)
    f_resp = rng.uniform(0.15, 0.4, n)
    phase = rng.uniform(0, 2 * np.pi, (n, 1)) + rng.normal(0.0, 0.4, (n, n_el))
    resp = wander[:, None] * rng.standard_normal((n, n_el)) * np.exp(1j * phase)
    f_mains = np.where(rng.random(n) < 0.5, 50.0, 60.0)
    mains = hum[:, None] * np.abs(rng.standard_normal((n, n_el))) * np.exp(1j * rng.uniform(0, 2 * np.pi, (n, n_el)))
    coeff = np.stack([resp.real, resp.imag, mains.real, mains.imag], axis=-1).astype(np.float32)  # [n, e, 4]
    arg = 2 * np.pi * np.stack([f_resp, f_resp, f_mains, f_mains], axis=1)[..., None] * t
    arg[:, 1::2] += np.pi / 2  # cos(x) = sin(x + pi / 2)
    return coeff @ np.sin(arg).astype(np.float32)


def _add_motion(
    rng: np.random.Generator, noise: np.ndarray, t: np.ndarray, profile: _NoiseProfile, scale: float
) -> None:
    """Electrode motion: sudden baseline shifts (rise 10-40 ms) that relax over a fraction of a second."""
    n, n_el, n_t = noise.shape
    count = rng.poisson(profile.motion_per_s * (t[-1] - t[0]), n)
    total = int(count.sum())
    rows = np.repeat(np.arange(n), count) * n_el + rng.integers(0, n_el, total)
    amp = np.exp(rng.uniform(*np.log(profile.motion_mv), total)) * rng.choice([-1.0, 1.0], total) * scale
    start = rng.uniform(t[0], t[-1], total)
    rise = rng.uniform(0.01, 0.04, total)
    decay = rng.uniform(*profile.motion_decay_s, total)
    _add_kernels(noise.reshape(n * n_el, n_t), t, rows, start, rise, decay, amp)


def _electrode_noise(
    rng: np.random.Generator, n: int, n_el: int, t: np.ndarray, fs: float, profile: _NoiseProfile, scale: float
) -> np.ndarray:
    """Noise at each electrode ``[n, n_el, len(t)]``, float32 mV: wander, drift, hum, EMG, motion."""
    levels = np.array([profile.wander_mv, profile.drift_mv, profile.hum_mv, profile.emg_mv])
    wander, drift, hum, emg = (np.exp(rng.normal(0.0, 0.5, (n, 4))) * levels * scale).T
    noise = _narrowband(rng, wander, hum, n_el, t)
    basis = _spline_basis(t, 2.5)  # slow drift
    knots = rng.standard_normal((n, n_el, len(basis)), dtype=np.float32) * drift[:, None, None].astype(np.float32)
    noise += knots @ basis
    band = (min(profile.emg_band_hz[0], 0.2 * fs), min(profile.emg_band_hz[1], 0.45 * fs))
    muscle = _band_noise(rng, (n, n_el), len(t), fs, band)
    basis = _spline_basis(t, 0.6)  # bursts: a lognormal envelope with mean 1
    envelope = np.exp(0.8 * (rng.standard_normal((n, 1, len(basis)), dtype=np.float32) @ basis) - 0.32)
    noise += (emg[:, None, None] * envelope).astype(np.float32) * muscle
    _add_motion(rng, noise, t, profile, scale)
    return noise


# --------------------------------------------------------------------------------------------
# recordings


def _quantise(x: np.ndarray, resolution_uv: float) -> np.ndarray:
    step = np.float32(resolution_uv / 1000.0)
    return (np.round(x / step) * step).astype(np.float32)


def _n_samples(fs: float, duration_s: float, resolution_uv: float, noise: float) -> int:
    if not np.isfinite(fs) or fs <= 0:
        raise SamplingRateError(f"sampling rate must be a positive number, got {fs!r}")
    if not resolution_uv > 0:
        raise ConfigError(f"resolution_uv must be positive, got {resolution_uv!r}")
    if not noise >= 0:
        raise ConfigError(f"noise must be >= 0, got {noise!r}")
    n_samples = int(round(duration_s * fs))
    if n_samples < 2:
        raise SamplingRateError(f"{duration_s} s at {fs} Hz gives fewer than 2 samples")
    return n_samples


def render_12lead(
    pop: Population,
    beats: BeatTrain,
    params: EcgParams,
    fs: float,
    rng: np.random.Generator,
    *,
    noise: float = 1.0,
    resolution_uv: float = 1.0,
) -> np.ndarray:
    """Resting 12-lead ECG ``[n, 12, round(duration * fs)]``, float32 mV in ``LEADS_12`` order.

    Sample ``i`` is at ``i / fs`` s. ``noise`` scales every noise source (0: clean, and ``rng`` is
    not used). I, II and V1-V6 are quantised to ``resolution_uv``; the other limb leads are
    derived from the digital I and II.
    """
    n_t = _n_samples(fs, beats.duration_s, resolution_uv, noise)
    t = np.arange(n_t) / fs
    out = np.empty((len(pop), len(LEADS_12), n_t), np.float32)
    for block in _blocks(len(pop)):
        dipole = render_dipole(pop.take(block), beats.take(block), params.take(block), t)
        recorded = params.lead_matrix[block].astype(np.float32) @ dipole  # RECORDED_LEADS
        if noise > 0:
            recorded += _WIRING_12 @ _electrode_noise(rng, len(recorded), 9, t, fs, _CLINICAL, noise)
        recorded = _quantise(recorded, resolution_uv)
        out[block, :6] = derive_limb_leads(recorded[:, 0], recorded[:, 1])
        out[block, 6:] = recorded[:, 2:]
    return out


def render_mobile(
    pop: Population,
    beats: BeatTrain,
    params: EcgParams,
    fs: float,
    rng: np.random.Generator,
    *,
    device: str = "six_lead",
    noise: float = 1.0,
    resolution_uv: float = 10.0,
) -> np.ndarray:
    """Handheld ECG from the same beats and dipole as the 12-lead: ``[n, len(MOBILE_LEADS[device]), S]``.

    ``single_lead`` records lead I between the thumbs; ``six_lead`` adds a left-leg electrode,
    records I and II and derives III, aVR, aVL, aVF. Compared with the 12-lead: more muscle noise
    and thumb-contact artefacts, a zero-phase 0.5-40 Hz device band-pass (R peaks stay on the
    beat train), a per-patient gain of 0.85-1.0 and a coarser ADC step.
    """
    if device not in MOBILE_LEADS:
        raise ConfigError(f"unknown mobile device {device!r}; choose one of {', '.join(MOBILE_LEADS)}")
    n_t = _n_samples(fs, beats.duration_s, resolution_uv, noise)
    t = np.arange(n_t) / fs
    wiring = _WIRING_HANDHELD[device]
    sos = sps.butter(2, (0.5, min(40.0, 0.45 * fs)), btype="bandpass", fs=fs, output="sos")
    out = np.empty((len(pop), len(MOBILE_LEADS[device]), n_t), np.float32)
    for block in _blocks(len(pop)):
        dipole = render_dipole(pop.take(block), beats.take(block), params.take(block), t)
        recorded = params.lead_matrix[block, : len(wiring)].astype(np.float32) @ dipole  # I [, II]
        gain = rng.uniform(0.85, 1.0, len(recorded)).astype(np.float32)
        if noise > 0:
            recorded += wiring @ _electrode_noise(rng, len(recorded), wiring.shape[1], t, fs, _HANDHELD, noise)
        recorded = _quantise(sps.sosfiltfilt(sos, recorded, axis=-1) * gain[:, None, None], resolution_uv)
        out[block] = recorded if device == "single_lead" else derive_limb_leads(recorded[:, 0], recorded[:, 1])
    return out
