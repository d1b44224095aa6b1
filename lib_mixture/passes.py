"""One job's sampling passes without the host: plans built once per canvas, and each pass's
`PassState` from its plan, the conditionings' batch keys and the guide latents.

The host adapter supplies what only the host can make (conditionings, the initial noise,
guide latents through its VAE, the sampler family) and keeps the states by `PassKey`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Hashable, Mapping, Sequence

import torch

from .denoiser_hook import PassState
from .geometry import LATENT_FACTOR, Box, to_latent
from .guide import GuideSpec, active_calls
from .limits import DEFAULT_LIMITS, Limits
from .mixture import compile_mixture
from .plan import MAIN, CropSpec, MixturePlan, PlannedRegion, build_plan
from .preset import Preset


class JobPlans:
    """A job's plans by latent canvas size, each built once.

    The plan of a ``width x height`` px canvas depends only on its latent size
    (``floor(px / 8)`` cells, `build_plan`), so the check before any work, the region noise
    and the pass itself share one plan per size.
    """

    def __init__(self, preset: Preset, limits: Limits = DEFAULT_LIMITS):
        self.preset, self.limits = preset, limits
        self._plans: dict[tuple[int, int], MixturePlan] = {}

    def for_pixels(self, width: int, height: int) -> MixturePlan:
        """The plan of a ``width x height`` px canvas; `PresetError` naming the field when the
        preset cannot be placed there or the plan passes the limits."""
        key = (int(width) // LATENT_FACTOR, int(height) // LATENT_FACTOR)
        if key not in self._plans:
            self._plans[key] = build_plan(self.preset, int(width), int(height), limits=self.limits)
        return self._plans[key]

    def for_latent(self, rows: int, cols: int) -> MixturePlan:
        """The plan of a latent canvas of ``rows x cols`` cells."""
        return self.for_pixels(cols * LATENT_FACTOR, rows * LATENT_FACTOR)


@dataclass(frozen=True)
class PassKey:
    """Which pass a denoiser call belongs to: the batch (region prompts and the initial noise
    change per batch), first or hires pass, and the latent's shape ``[B, C, H, W]``."""

    iteration: int
    hires: bool
    shape: tuple[int, ...]


def runs_plain(plan: MixturePlan, canvas_guide: bool = False) -> bool:
    """True when the pass is the host's own prediction: one crop covering the whole canvas,
    no region and no whole-canvas guide (then the mixture adds nothing but overhead)."""
    crops = plan.crops()
    rows, cols = plan.latent_size
    return len(crops) == 1 and crops[0].box.area == rows * cols and not plan.regions and not canvas_guide


def guided_regions(plan: MixturePlan) -> list[PlannedRegion]:
    """The plan's regions that carry a guide image, in z-order."""
    return [r for r in plan.regions if r.region.guide is not None]


def batched_crops(plan: MixturePlan, batch_keys: Mapping[Any, Hashable]) -> list[CropSpec]:
    """The plan's crops, each with the batch key of its conditioning handle (`MAIN` or a
    region index); crops whose keys differ never share a model call."""
    return [replace(c, batch_key=batch_keys[c.cond]) for c in plan.crops()]


def guide_specs(plan: MixturePlan, latents: Mapping[int, torch.Tensor], canvas_latent: torch.Tensor | None = None,
                canvas_strength: float = 0.0) -> list[GuideSpec]:
    """The pass's guides: the whole-canvas one first (``canvas_latent`` ``[B, C, H, W]``, the
    upscale workflow's image), then each guided region's ``latents[index]``
    (``[1, C, h, w]`` for its latent box) on top, in z-order. Raises KeyError for a guided
    region without a latent."""
    specs = [GuideSpec(to_latent(r.box, plan.factor), latents[r.index], r.region.guide.strength)
             for r in guided_regions(plan)]
    if canvas_latent is not None:
        rows, cols = plan.latent_size
        specs.insert(0, GuideSpec(Box(0, 0, cols, rows), canvas_latent, canvas_strength))
    return specs


def build_pass(plan: MixturePlan, device: torch.device | str, conds: Mapping[Any, tuple[Any, Any]],
               batch_keys: Mapping[Any, Hashable], *, guides: Sequence[GuideSpec] = (),
               noise: torch.Tensor | None = None, total_calls: int = 0, levels: str = "sigma",
               alphas_cumprod: torch.Tensor | None = None) -> PassState:
    """The state the denoiser hook runs one pass with.

    ``conds`` maps a region index to its ``(cond, uncond)``; ``batch_keys`` maps `MAIN` and
    each region index to what must agree for crops to share a call. Guides need the pass's
    initial unit ``noise`` ``[B, C, H, W]`` and the denoiser calls of the pass
    (``total_calls``); ``levels`` is "sigma" (k-diffusion) or "timestep" (DDIM-type, with
    ``alphas_cumprod``). Without regions every crop has the canvas's conds and scale, so only
    the UNet call is split (``inner``).
    """
    rows, cols = plan.latent_size
    mixture = compile_mixture(batched_crops(plan, batch_keys), rows, cols, plan.batch_size, device=device)
    state = PassState(mixture, dict(conds), inner=not plan.regions)
    if guides:
        if noise is None:
            raise ValueError("guides need the pass's initial noise")
        state.noise = noise
        state.guides = list(guides)
        state.guide_calls = [active_calls(total_calls, g.strength) for g in state.guides]
        state.levels, state.alphas_cumprod = levels, alphas_cumprod
    return state


__all__ = ["MAIN", "JobPlans", "PassKey", "batched_crops", "build_pass", "guide_specs", "guided_regions",
           "runs_plain"]
