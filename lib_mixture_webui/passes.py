"""Each sampling pass's mixture state, built on its first step from what only the host has:
region conds, the pass's initial noise, guide latents through its VAE, the sampler family.
The rest (plans, crops and their batch keys, guides, the state) is `lib_mixture.passes`."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from modules import sd_samplers_timesteps, shared

from lib_mixture.denoiser_hook import PassState
from lib_mixture.geometry import LATENT_FACTOR
from lib_mixture.guide_source import GuideImage
from lib_mixture.passes import MAIN, PassKey, build_pass, guide_specs, guided_regions, runs_plain
from lib_mixture.plan import MixturePlan

from . import conds as region_conds
from . import controlnet as cn
from . import sdxl
from .guides import guide_latent
from .job import Job
from .lru import EqualityLRU
from .noise import RegionNoise


class PassBuilder:
    """The states of one job's passes by `PassKey` (batch, pass, latent shape)."""

    def __init__(self, job: Job, noise: RegionNoise, guides: dict[int, GuideImage], cond_cache: EqualityLRU):
        self.job, self.noise, self.guides, self.cond_cache = job, noise, dict(guides), cond_cache
        self._states: dict[PassKey, PassState | None] = {}

    def forget(self) -> None:
        """Build again from the next step (the refiner was loaded: its own conds)."""
        self._states.clear()

    def state(self, p: Any, den: Any, x: torch.Tensor, uncond: Any) -> PassState | None:
        """The mixture state for the pass this call of ``x`` ``[B, C, H, W]`` belongs to.

        None when this pass runs without the mixture (not selected, or one crop that covers
        the canvas: the host's own prediction, computed without any overhead). Raises
        `lib_mixture_webui.controlnet.ControlNetNotSupported` for ControlNet units it cannot crop.
        """
        hires = bool(getattr(p, "is_hr_pass", False))
        key = PassKey(int(getattr(p, "iteration", 0)), hires, tuple(x.shape))
        if key not in self._states:
            self._states[key] = self._build(p, den, x, uncond, hires) if self.job.applies_to(hires) else None
        return self._states[key]

    def _build(self, p: Any, den: Any, x: torch.Tensor, uncond: Any, hires: bool) -> PassState | None:
        plan = self.job.plans.for_latent(x.shape[-2], x.shape[-1])
        controlnet = cn.active_units(p)
        if controlnet is None:
            cn.refuse_unknown_unet_hook(shared.sd_model)
        else:
            cn.check(controlnet)
        if controlnet and (plan.regions or cn.one_crop_per_call(controlnet)):
            if plan.batch_size > 1:
                self.job.warnings.add([f"ControlNet with {'regions' if plan.regions else 'this unit'} takes one crop "
                                       f"per model call: batch 1 instead of {plan.batch_size}"])
            plan = dataclasses.replace(plan, batch_size=1)  # one crop, one hint row, whatever the row layout
        canvas_guide = self._canvas_guide(p, hires)
        if runs_plain(plan, canvas_guide):
            return None
        height, width = conds_canvas(p, x, hires)
        steps, hires_steps = (p.firstpass_steps, den.total_steps) if hires else (den.total_steps, None)
        conds: dict[int, tuple[Any, Any]] = {}
        keys: dict[Any, tuple] = {MAIN: region_conds.token_key(uncond)}
        for r in plan.regions:
            prompts, negatives, warnings = region_conds.region_prompts(p, r.region, hires)
            self.job.warnings.add(warnings)
            conds[r.index] = region_conds.encode(p, prompts, negatives, width, height, steps, hires_steps,
                                                 self.cond_cache)
            keys[r.index] = region_conds.token_key(conds[r.index][1])
        guides = {}
        if guided_regions(plan) or canvas_guide:
            guides = self._guides(p, den, x, plan, hires, canvas_guide)
        if controlnet:
            conds = cn.marked_like_host(conds, uncond)
        state = build_pass(plan, x.device, conds, keys, **guides)
        if controlnet:  # ControlNet's hints per crop, checked once per pass
            state.controls = cn.hint_cropper(controlnet, hires, tuple(x.shape[-2:]))
        state.vectors, warning = sdxl.crop_vectors(shared.sd_model, uncond, (height, width),
                                                   self.job.preset.micro_conditioning)
        if warning:
            self.job.warnings.add([warning])
        return state

    def _guides(self, p: Any, den: Any, x: torch.Tensor, plan: MixturePlan, hires: bool, canvas_guide: bool) -> dict:
        """`build_pass`'s guide arguments; none (with a warning) without the pass's initial noise."""
        noise = self.noise.initial.get(hires)
        if noise is None or noise.shape != x.shape:
            self.job.warnings.add(["guide images were skipped in this pass: its initial noise was not seen "
                                   "(the hires pass needs WebUI 1.10 or newer)"])
            return {}
        latents = {r.index: guide_latent(self.guides[r.index].image, r.box.width, r.box.height)
                   for r in guided_regions(plan)}
        # the upscaled image guides the whole canvas, under the region guides
        canvas = p.init_latent if canvas_guide else None
        specs = guide_specs(plan, latents, canvas, self.job.preset.upscale.guide_strength if canvas_guide else 0.0)
        timesteps = isinstance(den, sd_samplers_timesteps.CFGDenoiserTimesteps)
        return dict(guides=specs, noise=noise.to(x.device), total_calls=den.total_steps,
                    levels="timestep" if timesteps else "sigma",
                    alphas_cumprod=shared.sd_model.alphas_cumprod if timesteps else None)

    def _canvas_guide(self, p: Any, hires: bool) -> bool:
        """The upscale workflow's whole-canvas guide applies (img2img, strength > 0)."""
        upscale = self.job.preset.upscale
        latent = getattr(p, "init_latent", None)
        return (not hires and upscale is not None and upscale.guide_strength > 0 and latent is not None
                and latent.shape[-2:] == (p.height // LATENT_FACTOR, p.width // LATENT_FACTOR))


def conds_canvas(p: Any, x: torch.Tensor, hires: bool) -> tuple[int, int]:
    """``(height, width)`` in px that the host made this pass's conds for (SDXL conditions on it):
    the pass's size as the user gave it (off the 8 px grid too), else the latent's."""
    w, h = (getattr(p, "hr_upscale_to_x", 0), getattr(p, "hr_upscale_to_y", 0)) if hires else (p.width, p.height)
    w, h = int(w or 0), int(h or 0)
    if (h // LATENT_FACTOR, w // LATENT_FACTOR) == tuple(x.shape[-2:]):
        return h, w
    return x.shape[-2] * LATENT_FACTOR, x.shape[-1] * LATENT_FACTOR
