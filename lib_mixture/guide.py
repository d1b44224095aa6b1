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

@dataclass(frozen=True)
class GuideSpec:
    """A guide latent ``[1 or B, C, h, w]`` placed at latent ``box``, with a strength in [0, 1]."""

    box: Box
    latent: torch.Tensor
    strength: float


def active_calls(total_calls: int, strength: float) -> int:
    """How many denoiser calls, from the start of sampling, a guide of ``strength`` is enforced.

    The paper enforces a guide while ``t >= t_g``; on a fixed schedule that is the first
    ``strength`` fraction of the steps. Counting calls rather than comparing noise levels
    works the same for every sampler family (sigmas, timesteps, second-order samplers that
    call the model twice a step, img2img schedules that start part-way).
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"guide strength must be in [0, 1], got {strength}")
    return math.floor(strength * total_calls + 0.5)


def noised_sigma(latent: torch.Tensor, noise: torch.Tensor, sigma: float) -> torch.Tensor:
    """k-diffusion form: ``x = x_g + sigma * eps``."""
    return latent + sigma * noise


def noised_alpha_bar(latent: torch.Tensor, noise: torch.Tensor, alpha_bar: float) -> torch.Tensor:
    """DDIM form: ``x = sqrt(abar) * x_g + sqrt(1 - abar) * eps``."""
    return math.sqrt(alpha_bar) * latent + math.sqrt(1.0 - alpha_bar) * noise


def apply_guides(x: torch.Tensor, noise: torch.Tensor, guides: Sequence[GuideSpec], active: Sequence[bool], *,
                 sigma: float | None = None, alpha_bar: float | None = None) -> bool:
    """Overwrite, in place, the boxes of ``x`` whose guide is ``active``.

    ``noise`` is the canvas's initial unit noise ``[B, C, H, W]``. Give ``sigma`` for
    k-diffusion samplers or ``alpha_bar`` for DDIM-type ones. In place, because k-diffusion
    samplers hand the model their own state tensor: the override then persists into the
    update, as in Algorithm 2. Returns whether anything was written.
    """
    if (sigma is None) == (alpha_bar is None):
        raise ValueError("give exactly one of sigma (k-diffusion) or alpha_bar (DDIM-type)")
    wrote = False
    for guide, on in zip(guides, active):
        if not on:
            continue
        rows, cols = guide.box.slices()
        eps = noise[:, :, rows, cols]
        latent = guide.latent.to(device=x.device, dtype=x.dtype)
        value = noised_sigma(latent, eps, sigma) if sigma is not None else noised_alpha_bar(latent, eps, alpha_bar)
        x[:, :, rows, cols] = value
        wrote = True
    return wrote
