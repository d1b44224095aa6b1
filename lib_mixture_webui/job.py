"""One generation's mixture: the preset, and per sampling pass its plan, conds and weights."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from modules import images, rng, sd_samplers_common, sd_samplers_timesteps, shared

from lib_mixture.denoiser_hook import PassState
from lib_mixture.geometry import LATENT_FACTOR, Box, to_latent
from lib_mixture.guide import GuideSpec, active_calls
from lib_mixture.guide_source import GuideImage, GuidePolicy, open_guide
from lib_mixture.mixture import compile_mixture
from lib_mixture.plan import MAIN, MixturePlan, build_plan
from lib_mixture.limits import DEFAULT_LIMITS, Limits
from lib_mixture.preset import Canvas, Preset, image_seed

from . import conds as region_conds
from .args import WARNINGS_KEY


class Job:
    """Attached to ``p`` as ``p._mod_job`` by the script; read by the denoiser hook.

    ``error`` holds a configuration problem found while the WebUI swallows exceptions (its
    script hooks only log them); the hook raises it at the first sampling step, where it
    ends the job and reaches an API caller as the error message.
    """

    def __init__(self, p: Any, preset: Preset | None, error: Exception | None = None,
                 limits: Limits = DEFAULT_LIMITS, guides: dict[int, GuideImage] | None = None):
        self.preset = preset
        self.error = error
        self.limits = limits
        self.warnings: list[str] = []
        self._params = p.extra_generation_params  # warnings go into the infotext as they occur
        # The canvas region boxes refer to: the preset's, else the first pass's size.
        if preset is not None and preset.canvas is None and preset.units == "px":
            self.preset = dataclasses.replace(preset, canvas=Canvas(int(p.width), int(p.height)))
        self.noise: dict[bool, torch.Tensor] = {}  # initial unit noise per pass (is_hr_pass)
        self._passes: dict[tuple, PassState | None] = {}
        self.guides = dict(guides or {})  # region index -> decoded guide image (`read_guides`)

    def guide_refs(self) -> dict[str, str]:
        """Each guide source's ``sha256:`` reference, for the infotext."""
        return {self.preset.regions[i].guide.image: g.ref for i, g in self.guides.items()}

    def check_plans(self, p: Any) -> None:
        """Plan every pass this job will mix now, before any work, so that a preset the canvas
        cannot take or one over the server's limits (millions of tiles) stops the job at once.
        The hires size follows the WebUI's own rule for "Upscale by" / "Resize to"."""
        sizes = [(int(p.width), int(p.height))] if self.applies_to(False) else []
        if getattr(p, "enable_hr", False) and self.applies_to(True):
            sizes.append(_hires_size(p))
        for width, height in sizes:
            build_plan(self.preset, width, height, limits=self.limits)

    # ------------------------------------------------------------------ passes

    def applies_to(self, hires: bool) -> bool:
        passes = self.preset.passes
        return passes == "both" or passes == ("hires" if hires else "first")

    def forget_passes(self) -> None:
        self._passes.clear()

    def pass_state(self, p: Any, den: Any, x: torch.Tensor, uncond: Any) -> PassState | None:
        """The mixture state for the pass this call belongs to, built on its first step.

        None when this pass runs without the mixture (not selected, or one crop that covers
        the canvas: the host's own prediction, computed without any overhead).
        """
        hires = bool(getattr(p, "is_hr_pass", False))
        key = (hires, tuple(x.shape), id(den))
        if key not in self._passes:
            self._passes[key] = self._build(p, den, x, uncond, hires) if self.applies_to(hires) else None
        return self._passes[key]

    def _build(self, p: Any, den: Any, x: torch.Tensor, uncond: Any, hires: bool) -> PassState | None:
        height, width = x.shape[-2] * LATENT_FACTOR, x.shape[-1] * LATENT_FACTOR
        plan = build_plan(self.preset, width, height, limits=self.limits)
        crops = plan.crops()
        if len(crops) == 1 and crops[0].box.area * 64 == width * height and not plan.regions \
                and not self._canvas_guide(p, hires):
            return None
        steps, hires_steps = (p.firstpass_steps, den.total_steps) if hires else (den.total_steps, None)
        conds: dict[int, tuple[Any, Any]] = {}
        keys: dict[Any, tuple] = {MAIN: region_conds.token_key(uncond)}
        for r in plan.regions:
            prompts, negatives, warnings = region_conds.region_prompts(p, r.region, hires)
            self._warn(warnings)
            conds[r.index] = region_conds.encode(p, prompts, negatives, width, height, steps, hires_steps)
            keys[r.index] = region_conds.token_key(conds[r.index][1])
        crops = [dataclasses.replace(c, batch_key=keys[c.cond]) for c in crops]
        mixture = compile_mixture(crops, x.shape[-2], x.shape[-1], plan.batch_size, device=x.device)
        # Without regions every crop has the canvas's conds and scale: split only the UNet call.
        state = PassState(mixture, conds, inner=not plan.regions)
        self._add_guides(state, plan, p, den, x, hires)
        return state

    def _add_guides(self, state: PassState, plan: MixturePlan, p: Any, den: Any, x: torch.Tensor, hires: bool) -> None:
        guided = [r for r in plan.regions if r.region.guide is not None]
        canvas_guide = self._canvas_guide(p, hires)
        if not guided and not canvas_guide:
            return
        noise = self.noise.get(hires)
        if noise is None or noise.shape != x.shape:
            self._warn(["guide images were skipped in this pass: its initial noise was not seen "
                        "(the hires pass needs WebUI 1.10 or newer)"])
            return
        state.noise = noise.to(x.device)
        state.guides = [GuideSpec(to_latent(r.box), guide_latent(self.guides[r.index].image, r.box.width, r.box.height),
                                  r.region.guide.strength) for r in guided]
        if canvas_guide:  # the upscaled image guides the whole canvas, under the region guides
            whole = Box(0, 0, x.shape[-1], x.shape[-2])
            state.guides.insert(0, GuideSpec(whole, p.init_latent, self.preset.upscale.guide_strength))
        state.guide_calls = [active_calls(den.total_steps, g.strength) for g in state.guides]
        if isinstance(den, sd_samplers_timesteps.CFGDenoiserTimesteps):
            state.levels = "timestep"
            state.alphas_cumprod = shared.sd_model.alphas_cumprod

    def _canvas_guide(self, p: Any, hires: bool) -> bool:
        """The upscale workflow's whole-canvas guide applies (img2img, strength > 0)."""
        upscale = self.preset.upscale
        latent = getattr(p, "init_latent", None)
        return (not hires and upscale is not None and upscale.guide_strength > 0 and latent is not None
                and latent.shape[-2:] == (p.height // LATENT_FACTOR, p.width // LATENT_FACTOR))

    def _warn(self, messages: list[str]) -> None:
        for m in messages:
            if m not in self.warnings:
                self.warnings.append(m)
                print(f"[Mixture of Diffusers] {m}")
                self._params[WARNINGS_KEY] = "; ".join(self.warnings)

    # ------------------------------------------------------------------ noise

    def install_region_noise(self, p: Any) -> None:
        """Wrap ``p.rng`` so the first noise it draws has each seeded region's own noise in its box.

        Region seeds move with the main seed: an image whose seed lies ``k`` past the job's
        first seed uses each region's seed plus ``k`` (`image_seed`), and its infotext says so
        (`args.infotext_value`), so "PNG Info -> Generate" reproduces it. The plan is made on
        the latent the host really samples (``floor(px / 8)``), so any size the WebUI takes
        works. The (possibly reseeded) noise is kept for guide images.
        """
        generator = getattr(p, "rng", None)
        if generator is None or getattr(generator, "_mod_wrapped", False):
            return
        original_next = generator.next
        offsets = [int(s) - int(p.all_seeds[0]) for s in p.seeds]

        def next_noise():
            first = generator.is_first
            noise = original_next()
            if first and self.preset is not None and self.applies_to(False):
                plan = build_plan(self.preset, noise.shape[-1] * LATENT_FACTOR, noise.shape[-2] * LATENT_FACTOR,
                                  limits=self.limits)
                for r in plan.regions:
                    if r.region.seed < 0:
                        continue
                    seeds = [image_seed(r.region.seed, offsets[i]) for i in range(noise.shape[0])]
                    own = rng.ImageRNG(noise.shape[1:], seeds).next().to(noise.device, noise.dtype)
                    rows, cols = to_latent(r.box).slices()
                    noise[:, :, rows, cols] = own[:, :, rows, cols]
                self.noise[False] = noise
            return noise

        generator.next = next_noise
        generator._mod_wrapped = True


def _hires_size(p: Any) -> tuple[int, int]:
    """The hires pass's canvas in px, as ``calculate_target_resolution`` makes it (without its
    side effects): the scale, or the "Resize to" size with the first pass's aspect ratio kept."""
    w, h = int(p.width), int(p.height)
    rx, ry = int(getattr(p, "hr_resize_x", 0) or 0), int(getattr(p, "hr_resize_y", 0) or 0)
    if rx == 0 and ry == 0:
        return int(w * p.hr_scale), int(h * p.hr_scale)
    if ry == 0:
        return rx, rx * h // w
    if rx == 0:
        return ry * w // h, ry
    return (rx, rx * h // w) if w / h < rx / ry else (ry * w // h, ry)


def read_guides(preset: Preset, policy: GuidePolicy) -> dict[int, GuideImage]:
    """Every region's guide image, read and decoded under ``policy`` (which files this caller
    may have read), by region index; PresetError naming the field otherwise. Called before
    any work, so a refused or oversized image stops the job before the first step."""
    return {i: open_guide(r.guide.image, policy, f"regions[{i}].guide.image")
            for i, r in enumerate(preset.regions) if r.guide is not None}


def guide_latent(image: Any, width: int, height: int) -> torch.Tensor:
    """A decoded guide image (RGB PIL) fitted to a ``width x height`` px box (cropped to fill)
    and encoded with the host's VAE: ``[1, C, height / 8, width / 8]``."""
    import numpy as np

    image = images.resize_image(1, image, width, height)
    array = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1).unsqueeze(0)
    with torch.no_grad():
        latent = sd_samplers_common.images_tensor_to_samples(array.to(shared.device), None, shared.sd_model)
    return latent
