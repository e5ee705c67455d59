"""Batched, reproducible augmentations for contrastive pretraining (two random views per study): ECG and video.

ECG signals are ``x [B, L, S]``: ``B`` studies, ``L`` lead slots (12 for :data:`LEADS_12`), ``S``
samples of per-lead z-scored ECG (so amplitudes are in units of the lead's standard deviation).
``present [B, L]`` is True where a lead was recorded; absent leads are zeros and every function
keeps them exactly zero. Every sample must have at least one present lead and keeps at least one.

Every random draw comes from the explicit ``generator`` (``None``: torch's global generator), which
must live on ``x``'s device; the same seed gives the same output. Outputs keep ``x``'s shape, dtype
and device; random values are drawn in float32 and cast, so the draws do not depend on the dtype.

Video clips are ``x [B, T, H, W]``, z-scored inside the field of view and exactly 0 outside it;
:class:`VideoAugment` keeps the outside at 0 (see its docstring).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..errors import ConfigError

__all__ = [
    "EcgAugment",
    "VideoAugment",
    "baseline_wander",
    "gaussian_noise",
    "random_affine",
    "random_lead_drop",
    "random_scale",
    "split_leads",
    "time_shift",
]


def _rand(shape: tuple[int, ...], x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Uniform [0, 1) float32 draws on ``x``'s device."""
    return torch.rand(shape, generator=generator, device=x.device)


def random_scale(x: Tensor, generator: torch.Generator | None, low: float = 0.8, high: float = 1.2) -> Tensor:
    """Multiply every (sample, lead) by its own gain drawn uniformly from ``[low, high]``."""
    gain = low + (high - low) * _rand(x.shape[:2], x, generator)
    return x * gain[..., None].to(x.dtype)


def gaussian_noise(x: Tensor, present: Tensor, generator: torch.Generator | None, std: float = 0.05) -> Tensor:
    """Add white Gaussian noise of standard deviation ``std`` to the present leads."""
    noise = std * torch.randn(x.shape, generator=generator, device=x.device)
    return x + (noise * present[..., None]).to(x.dtype)


def baseline_wander(
    x: Tensor,
    present: Tensor,
    fs: float,
    generator: torch.Generator | None,
    max_amplitude: float = 0.2,
    max_hz: float = 0.5,
) -> Tensor:
    """Add a slow sinusoid ``A sin(2 pi f t + phi)`` to each present lead, independently per lead.

    Per (sample, lead): amplitude ``A ~ U[0, max_amplitude]``, frequency ``f ~ U[0, max_hz]`` Hz,
    phase ``phi ~ U[0, 2 pi)``; ``t`` is the sample index divided by ``fs`` (Hz).
    """
    amp, freq, phase = (_rand(x.shape[:2], x, generator)[..., None] for _ in range(3))
    t = torch.arange(x.shape[-1], device=x.device) / fs
    wander = max_amplitude * amp * torch.sin(2 * math.pi * max_hz * freq * t + 2 * math.pi * phase)
    return x + (wander * present[..., None]).to(x.dtype)


def time_shift(x: Tensor, generator: torch.Generator | None, max_shift: int) -> Tensor:
    """Circularly shift each sample in time by its own integer ``s ~ U{-max_shift, ..., max_shift}``.

    All leads of a sample shift together (``out[b, :, i] = x[b, :, (i - s) % S]``, as
    ``torch.roll``). Circular, not zero-padded: the record stays full length with no flat edge,
    at the cost of one seam where the end meets the start. ``max_shift`` is in samples.
    """
    batch, n_leads, n_samples = x.shape
    shift = torch.randint(-max_shift, max_shift + 1, (batch, 1), generator=generator, device=x.device)
    index = (torch.arange(n_samples, device=x.device) - shift) % n_samples
    return x.gather(2, index[:, None, :].expand(batch, n_leads, n_samples))


def random_lead_drop(present: Tensor, generator: torch.Generator | None, p: float = 0.3) -> Tensor:
    """Mark each present lead absent with probability ``p``; a sample that would lose all its
    leads keeps one of them, chosen uniformly. Returns the new ``present [B, L]`` (a subset).

    Callers zero the dropped leads of the signal (``x * new_present[..., None]``).
    """
    present = _check_present(present)
    draw = torch.rand(present.shape, generator=generator, device=present.device)
    keep = present & (draw >= p)
    # the survivor of an emptied sample: its present lead with the largest draw (uniform among them)
    survivor = torch.where(present, draw, -1.0).argmax(dim=1)
    rescue = torch.zeros_like(keep)
    rescue[torch.arange(present.shape[0], device=present.device), survivor] = True
    return keep | (rescue & ~keep.any(dim=1, keepdim=True))


def split_leads(present: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Deal each sample's present leads, in random order, alternately to two disjoint halves
    ``(a, b)`` (``[B, L]`` bool each; with an odd count ``a`` gets the extra lead). A sample with a
    single lead gives it to both halves, so neither is ever empty."""
    present = _check_present(present)
    draw = torch.rand(present.shape, generator=generator, device=present.device)
    order = torch.where(present, draw, 2.0).argsort(dim=1)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(present.shape[1], device=present.device).expand_as(order))
    a = present & (rank % 2 == 0)
    b = present & (rank % 2 == 1)
    return a, torch.where(b.any(dim=1, keepdim=True), b, a)


def _check_present(present: Tensor) -> Tensor:
    """``present`` as bool; every sample must have at least one present lead."""
    present = present.bool()
    if not bool(present.any(dim=1).all()):
        raise ValueError("every sample needs at least one present lead")
    return present


def _per_sample(p: float, old: Tensor, new: Tensor, generator: torch.Generator | None) -> Tensor:
    """Take each sample (first axis) from ``new`` with probability ``p``, otherwise from ``old``."""
    chosen = _rand(old.shape[:1], old, generator) < p
    return torch.where(chosen.view(-1, *([1] * (old.ndim - 1))), new, old)


def _check(name: str, value: float, low: float, high: float = math.inf) -> None:
    if not low <= value <= high:
        raise ConfigError(f"augmentation {name} must be in [{low}, {high}], got {value}")


class EcgAugment:
    """A random ECG view: lead drop, time shift, gain, baseline wander and noise, in that order.

    Each ``p_*`` is the probability that a sample receives that augmentation (drawn per sample);
    the other arguments are the strengths passed to the functions above (``max_shift_s`` in
    seconds, ``fs`` in Hz). ``aug(x, present, generator)`` returns ``(x_aug, present_aug)`` with the
    dropped and absent leads exactly zero; two calls give SimCLR's two views.
    """

    def __init__(
        self,
        fs: float,
        *,
        p_lead_drop: float = 0.5,
        lead_drop: float = 0.3,
        p_shift: float = 0.5,
        max_shift_s: float = 0.5,
        p_scale: float = 0.8,
        scale: tuple[float, float] = (0.8, 1.2),
        p_wander: float = 0.5,
        wander_amplitude: float = 0.2,
        wander_hz: float = 0.5,
        p_noise: float = 0.5,
        noise_std: float = 0.05,
    ) -> None:
        probabilities = {
            "p_lead_drop": p_lead_drop,
            "lead_drop": lead_drop,
            "p_shift": p_shift,
            "p_scale": p_scale,
            "p_wander": p_wander,
            "p_noise": p_noise,
        }
        strengths = {
            "max_shift_s": max_shift_s,
            "wander_amplitude": wander_amplitude,
            "wander_hz": wander_hz,
            "noise_std": noise_std,
        }
        for name, value in probabilities.items():
            _check(name, value, 0.0, 1.0)
        for name, value in strengths.items():
            _check(name, value, 0.0)
        _check("fs", fs, 1e-9)
        _check("scale low", scale[0], 0.0, scale[1])
        self.fs = float(fs)
        self.p_lead_drop, self.lead_drop = p_lead_drop, lead_drop
        self.p_shift, self.max_shift = p_shift, round(max_shift_s * fs)
        self.p_scale, self.scale = p_scale, (float(scale[0]), float(scale[1]))
        self.p_wander, self.wander_amplitude, self.wander_hz = p_wander, wander_amplitude, wander_hz
        self.p_noise, self.noise_std = p_noise, noise_std

    def __call__(self, x: Tensor, present: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        if x.ndim != 3 or present.shape != x.shape[:2]:
            raise ValueError(f"expected x [B, L, S] and present [B, L], got {tuple(x.shape)}, {tuple(present.shape)}")
        g, present = generator, present.bool()
        keep = _per_sample(self.p_lead_drop, present, random_lead_drop(present, g, self.lead_drop), g)
        x = _per_sample(self.p_shift, x, time_shift(x, g, self.max_shift), g)
        x = _per_sample(self.p_scale, x, random_scale(x, g, *self.scale), g)
        wander = baseline_wander(x, keep, self.fs, g, self.wander_amplitude, self.wander_hz)
        x = _per_sample(self.p_wander, x, wander, g)
        x = _per_sample(self.p_noise, x, gaussian_noise(x, keep, g, self.noise_std), g)
        return torch.where(keep[..., None], x, torch.zeros((), dtype=x.dtype, device=x.device)), keep


# ----------------------------------------------------------------------------------- video


def random_affine(
    x: Tensor,
    generator: torch.Generator | None,
    *,
    scale: tuple[float, float] = (0.75, 1.0),
    max_rotation_deg: float = 10.0,
    max_translate: float = 0.1,
    p_flip: float = 0.5,
) -> Tensor:
    """One random zoom-in (random resized crop), rotation, translation and left-right flip per
    clip, the same for all its frames: ``x [B, T, H, W]`` resampled bilinearly, zeros outside.

    ``scale``: side of the crop as a fraction of the frame; ``max_translate`` in fractions of the
    frame (the crop's centre moves at most this far); the flip mirrors the view (both echo screen
    conventions exist, with the ventricles on either side).
    """
    b = x.shape[0]
    side = scale[0] + (scale[1] - scale[0]) * _rand((b,), x, generator)
    angle = math.radians(max_rotation_deg) * (2 * _rand((b,), x, generator) - 1)
    shift = max_translate * (2 * _rand((b, 2), x, generator) - 1)
    flip = torch.where(_rand((b,), x, generator) < p_flip, -1.0, 1.0)
    cos, sin = torch.cos(angle) * side, torch.sin(angle) * side
    theta = torch.stack([torch.stack([cos * flip, -sin, shift[:, 0]], 1),
                         torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1)  # [B, 2, 3], output -> input
    grid = torch.nn.functional.affine_grid(theta, [b, x.shape[1], *x.shape[2:]], align_corners=False)
    return torch.nn.functional.grid_sample(x.float(), grid, mode="bilinear", padding_mode="zeros",
                                           align_corners=False).to(x.dtype)


class VideoAugment:
    """A random view of a batch of clips ``x [B, T, H, W]`` (z-scored inside the field of view,
    0 outside), for SimCLR on echo / cine MR.

    In order: a circular time shift (clips span whole cardiac cycles, so rolling the frames starts
    the cycle at another phase), a random resized crop with rotation and left-right flip, contrast
    ``x * a`` and brightness ``+ b`` inside the image, Gaussian noise (speckle-like, inside the
    image). Each ``p_*`` is the chance per clip; draws come from ``generator`` (reproducible).
    """

    def __init__(
        self,
        *,
        p_time_shift: float = 0.8,
        p_affine: float = 0.8,
        scale: tuple[float, float] = (0.75, 1.0),
        max_rotation_deg: float = 10.0,
        p_flip: float = 0.5,
        p_intensity: float = 0.8,
        contrast: tuple[float, float] = (0.7, 1.3),
        brightness: float = 0.3,
        p_noise: float = 0.5,
        noise_std: float = 0.2,
    ) -> None:
        for name, value in {"p_time_shift": p_time_shift, "p_affine": p_affine, "p_flip": p_flip,
                            "p_intensity": p_intensity, "p_noise": p_noise}.items():
            _check(name, value, 0.0, 1.0)
        _check("scale low", scale[0], 0.05, scale[1])
        _check("contrast low", contrast[0], 0.0, contrast[1])
        for name, value in {"max_rotation_deg": max_rotation_deg, "brightness": brightness,
                            "noise_std": noise_std}.items():
            _check(name, value, 0.0)
        self.p_time_shift, self.p_affine, self.p_intensity, self.p_noise = p_time_shift, p_affine, p_intensity, p_noise
        self.affine = {"scale": (float(scale[0]), float(scale[1])), "max_rotation_deg": max_rotation_deg,
                       "p_flip": p_flip}
        self.contrast, self.brightness, self.noise_std = contrast, brightness, noise_std

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if x.ndim != 4:
            raise ValueError(f"expected clips x [B, T, H, W], got {tuple(x.shape)}")
        g = generator
        b, t, h, w = x.shape
        inside = x != 0  # the field of view (exact zeros outside it), before any resampling
        rolled = time_shift(x.reshape(b, t, h * w).transpose(1, 2), g, t // 2).transpose(1, 2).reshape(x.shape)
        x = _per_sample(self.p_time_shift, x, rolled, g)
        both = torch.cat([x, inside.to(x.dtype)], dim=1)
        warped = random_affine(both, g, **self.affine)
        x, inside = _per_sample(self.p_affine, both, warped, g).split(t, dim=1)
        inside = inside > 0.5
        gain = self.contrast[0] + (self.contrast[1] - self.contrast[0]) * _rand((b, 1, 1, 1), x, g)
        offset = self.brightness * (2 * _rand((b, 1, 1, 1), x, g) - 1)
        x = _per_sample(self.p_intensity, x, x * gain.to(x.dtype) + offset.to(x.dtype), g)
        noise = (self.noise_std * torch.randn(x.shape, generator=g, device=x.device)).to(x.dtype)
        x = _per_sample(self.p_noise, x, x + noise, g)
        return torch.where(inside, x, torch.zeros((), dtype=x.dtype, device=x.device))
