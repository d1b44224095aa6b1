"""The class-level hook on ``CFGDenoiser.forward`` (`patches.REGISTRY`): inert unless ``p``
carries a job context.

Wrapping the class (not an instance) reaches every sampler of every pass in WebUI 1.6 to
1.10 and Forge, including the txt2img first pass that has no per-pass script hook before
1.10.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
from typing import Any

from modules import sd_samplers_common, shared

from lib_mixture.denoiser_hook import HostHooks, inner_forward, mixture_forward, wrapped_attribute
from lib_mixture.geometry import LATENT_FACTOR

from . import conds as region_conds
from . import context, sdxl
from .patches import swapped


def wrap_forward(original, host):
    """``CFGDenoiser.forward`` that runs the mixture for a denoiser whose ``p`` has a job context."""
    def forward(self, x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond):
        ctx = context.of(getattr(self, "p", None))
        if ctx is None:
            return original(self, x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond)
        return dispatch(original, self, ctx, x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond)

    return forward


def dispatch(original, den, ctx, x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond):
    if ctx.job.error is not None:
        raise ctx.job.error
    p = den.p
    if _switch_refiner(den, sigma):
        # The refiner is loaded now: its own conds replace the base model's, and region conds
        # are encoded again with it (the cache key includes the checkpoint).
        cond, uncond = den.sampler.sampler_extra_args["cond"], den.sampler.sampler_extra_args["uncond"]
        ctx.passes.forget()
    state = ctx.passes.state(p, den, x, uncond)
    if state is None:
        return original(den, x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond)
    forward = inner_forward if state.inner else mixture_forward
    return forward(original, den, x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond, state, _HOOKS)


def _switch_refiner(den, sigma) -> bool:
    """Switch to the refiner before the crops, not inside the first crop's host call, where
    it would replace that crop's region conds with the main ones (1.6 takes no sigma)."""
    if getattr(den.p, "refiner_checkpoint_info", None) is None:
        return False
    apply = sd_samplers_common.apply_refiner
    takes_sigma = len(inspect.signature(apply).parameters) >= 2
    return bool(apply(den, sigma) if takes_sigma else apply(den))


def _wrap_inner(den, make):
    """The model call under the sampler's wrapper (a per-call patch in `patches.REGISTRY`).

    Every CFG denoiser of 1.6 to 1.10 keeps a k-diffusion or timesteps wrapper in
    ``inner_model`` whose ``inner_model`` is the loaded model: the wrapper scales the input and
    turns sigma into a timestep once per step, then calls ``apply_model(x, t, cond=...)``. That
    call is split into crop batches (`TiledInner` is a plain callable: the model's module tree is
    untouched)."""
    model = den.inner_model.inner_model

    return wrapped_attribute(model, "apply_model", make)


@contextlib.contextmanager
def _capture_previews():
    """Record the host's per-crop previews instead of decoding each one."""
    seen: list = []
    with swapped(sd_samplers_common, "store_latent", seen.append):
        yield seen


def _before_batch(i: int, n: int) -> None:
    state = shared.state
    if state.interrupted or state.skipped:
        raise sd_samplers_common.InterruptedException
    if n > 1:
        state.textinfo = f"Mixture of Diffusers: tile batch {i + 1}/{n}"


def _show_preview(latent: Any) -> None:
    sd_samplers_common.store_latent(latent)


def _hypertile_params() -> list:
    """The built-in Hypertile's per-layer settings on the current UNet, if it hooked any (looked
    up per call by the layer names it recorded, only when Hypertile is on: no state is kept
    between jobs and no walk over the whole UNet)."""
    model = getattr(shared.sd_model, "model", None)
    layers = getattr(model, "__webui_hypertile_layers", None) if model is not None else None
    if not layers:
        return []
    return [getattr(model.get_submodule(name), "__webui_hypertile_params") for name in layers]


@contextlib.contextmanager
def _around_call(specs):
    """Hypertile splits attention using the canvas's aspect ratio; a crop has its own."""
    params = [p for p in _hypertile_params() if p.enabled]
    hypertile = sys.modules.get("hypertile")
    if not params or hypertile is None:
        yield
        return
    width, height = specs[0].box.width * LATENT_FACTOR, specs[0].box.height * LATENT_FACTOR
    tile = min(hypertile.largest_tile_size_available(width, height), getattr(shared.opts, "hypertile_max_tile_unet", 256))
    saved = [(p, p.aspect_ratio, p.tile_size) for p in params]
    for p in params:
        p.aspect_ratio, p.tile_size = width / height, tile
    try:
        yield
    finally:
        for p, aspect, size in saved:
            p.aspect_ratio, p.tile_size = aspect, size


_HOOKS = HostHooks(join=region_conds.join, wrap_inner=_wrap_inner, capture_previews=_capture_previews,
                   show_preview=_show_preview, before_batch=_before_batch, around_call=_around_call,
                   crop_conds=sdxl.crop_conds)
