"""Guide images (paper, section 4.4 and Algorithm 2).

While a guide is in effect, the canvas inside its box is replaced by the guide's latent
noised to the current level, always with the *same* noise (the canvas's initial noise), so
the guide is seen consistently at every step. The printed equation reads
``sqrt(abar) x_g + (1 - abar) x_T``; the paper's own implementation noises with the
scheduler's ``add_noise``, i.e. the forward-process marginal ``sqrt(abar) x_g +
sqrt(1 - abar) x_T``, which is what is used here. In the sigma (variance-exploding) form
of k-diffusion samplers the same state is ``x_g + sigma * x_T``: the two differ only by the
factor ``sqrt(abar)`` that maps one parameterisation onto the other.

Strength is the fraction of sampling steps during which the guide is enforced: 1.0 keeps
the box fixed to the guide, 0.1 only nudges the start (the paper's Fig. 11 semantics).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from .geometry import Box

_REL_TOL = 1e-5  # sampler noise levels may arrive as float32 copies of the schedule


@dataclass(frozen=True)
class GuideSpec:
    """A guide latent ``[1 or B, C, h, w]`` placed at latent ``box``, with a strength in [0, 1]."""

    box: Box
    latent: torch.Tensor
    strength: float


def guide_cutoff(levels: Sequence[float] | torch.Tensor, strength: float) -> float | None:
    """The lowest noise level at which a guide of ``strength`` is still enforced.

    ``levels`` is the sampler's schedule in sampling order (descending sigmas, or descending
    timesteps), one value per step; a trailing final 0 of k-diffusion schedules is ignored.
    A guide is enforced on the first ``round(strength * steps)`` steps. Returns None when
    that is no step at all.
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"guide strength must be in [0, 1], got {strength}")
    values = [float(v) for v in levels]
    if values and values[-1] == 0.0:
        values = values[:-1]
    active_steps = math.floor(strength * len(values) + 0.5)
    if active_steps == 0:
        return None
    return values[active_steps - 1]


def is_active(level: float, cutoff: float | None) -> bool:
    return cutoff is not None and level >= cutoff * (1 - _REL_TOL)


def noised_sigma(latent: torch.Tensor, noise: torch.Tensor, sigma: float) -> torch.Tensor:
    """k-diffusion form: ``x = x_g + sigma * eps``."""
    return latent + sigma * noise


def noised_alpha_bar(latent: torch.Tensor, noise: torch.Tensor, alpha_bar: float) -> torch.Tensor:
    """DDIM form: ``x = sqrt(abar) * x_g + sqrt(1 - abar) * eps``."""
    return math.sqrt(alpha_bar) * latent + math.sqrt(1.0 - alpha_bar) * noise


def apply_guides(x: torch.Tensor, noise: torch.Tensor, guides: Sequence[GuideSpec],
                 cutoffs: Sequence[float | None], level: float, *, sigma: float | None = None,
                 alpha_bar: float | None = None) -> bool:
    """Overwrite, in place, the boxes of ``x`` whose guide is active at ``level``.

    ``noise`` is the canvas's initial unit noise ``[B, C, H, W]``. Give ``sigma`` for
    k-diffusion samplers or ``alpha_bar`` for DDIM-type ones; ``level`` is what the cutoffs
    were computed from (the sigma or the timestep). In place, because k-diffusion samplers
    hand the model their own state tensor: the override then persists into the update.
    Returns whether anything was written.
    """
    if (sigma is None) == (alpha_bar is None):
        raise ValueError("give exactly one of sigma (k-diffusion) or alpha_bar (DDIM-type)")
    wrote = False
    for guide, cutoff in zip(guides, cutoffs):
        if not is_active(level, cutoff):
            continue
        rows, cols = guide.box.slices()
        eps = noise[:, :, rows, cols]
        latent = guide.latent.to(device=x.device, dtype=x.dtype)
        value = noised_sigma(latent, eps, sigma) if sigma is not None else noised_alpha_bar(latent, eps, alpha_bar)
        x[:, :, rows, cols] = value
        wrote = True
    return wrote
