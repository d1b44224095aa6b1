"""The per-step mixture around a host's CFG denoiser, without importing the host.

The WebUI's ``CFGDenoiser.forward(x, sigma, uncond, cond, cond_scale, s_min_uncond,
image_cond)`` turns one latent into one CFG-combined prediction. `mixture_forward` calls
that original forward once per *batch of crops* (crops of one size and guidance scale,
their conditionings joined), with every spatial attribute of the denoiser cropped to
match, and mixes the results with the compiled weights. The host does everything else per
crop as it always does: AND prompts, prompt schedules, padding, skip-uncond, inpainting
masks, callbacks. Host specifics (how conditionings are joined, how previews are shown,
how an interrupt is raised) come in through `HostHooks`, so this module is tested with the
real k-diffusion samplers and a host stand-in, and runs unchanged in the WebUI.

A tile grid without regions takes a shorter path, `inner_forward`: every crop has the
canvas's own conditioning and guidance scale, and the host's CFG combination is linear in
the model outputs (``uncond + scale * (cond - uncond)``, weights summing to 1 on every pixel),
so mixing the raw model outputs and combining once equals combining per crop and mixing.
The host's forward then runs once per step on the canvas, as without the extension, and only
its model call (the UNet, under the sampler's wrapper: the WebUI's ``apply_model``) is split
into crop batches. Its per-call work (conditioning reconstruction, the sigma-to-timestep
conversion, callbacks, CFG combination, masks, the x0 estimate, the preview) is done once per
step instead of once per batch; the UNet work is the same. The wrapper's scalings are
elementwise and the weights sum to 1, so mixing below them equals mixing above them.

Contract kept with the host, whatever happens inside (an interrupt is a BaseException):
the denoiser's ``step`` advances by exactly one per canvas call; ``mask``, ``nmask`` and
``init_latent`` are the full-size ones again afterwards; ``sampler.last_latent`` is always
full-size (an interrupt returns it as the result); the live preview is stored once per step,
full-size.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch

from .guide import GuideSpec, apply_guides
from .micro_cond import CropVectors
from .mixture import CompiledMixture
from .plan import MAIN, CropSpec


@dataclass
class HostHooks:
    """What the host adapter supplies.

    ``join(conds, unconds)`` makes one batch's conditioning from per-crop ones (each for the
    canvas batch of B images), in crop order. ``capture_previews()`` is a context manager
    that, while open, records the host's per-call live previews into the list it yields
    instead of showing them; ``show_preview(latent)`` shows one. ``wrap_inner(den, make)`` is a
    context manager that, while open, has the host's forward call ``make(model)`` instead of its
    model call ``model(x, sigma_or_t, cond=...)`` (`inner_forward`, with `wrapped_attribute`;
    without it every job takes `mixture_forward`).
    ``before_batch(i, n)`` runs
    before host call ``i`` of ``n`` in a step (progress text; it may raise to interrupt).
    ``around_call(specs)`` is a context manager entered around each host call, for host state
    that depends on the crop's size (the WebUI's Hypertile splits attention by aspect ratio).
    ``crop_conds((cond, uncond), spec, vectors)`` returns a crop's conditionings with its own
    vector (`lib_mixture.micro_cond`); without it region jobs keep the host's vectors.
    """

    join: Callable[[list, list], tuple[Any, Any]]
    wrap_inner: Callable[[Any, Callable[[Any], Any]], Any] | None = None
    capture_previews: Callable[[], Any] | None = None
    show_preview: Callable[[torch.Tensor], None] | None = None
    before_batch: Callable[[int, int], None] | None = None
    around_call: Callable[[Sequence[CropSpec]], Any] | None = None
    crop_conds: Callable[[tuple[Any, Any], CropSpec, CropVectors], tuple[Any, Any]] | None = None


@dataclass
class PassState:
    """Everything one sampling pass needs, built by the adapter before sampling starts.

    ``conds`` maps a crop's ``cond`` handle (a region index) to its ``(cond, uncond)`` for
    the canvas batch; `MAIN` crops use the conditioning the sampler passes in. Guides need
    the canvas's initial unit ``noise`` and, per guide, how many denoiser calls it is enforced
    for (`lib_mixture.guide.active_calls`); ``levels`` says whether the sampler passes sigmas
    (k-diffusion) or timesteps (DDIM-type, then ``alphas_cumprod`` maps a timestep to its
    alpha-bar). ``vectors`` gives crops their own SDXL size conditioning (None: the host's).

    ``controls(specs, rows)``, when set, is a context manager entered around each model call, for
    host inputs read inside the model that are canvas-sized (ControlNet's control images): on the
    tile path (`TiledInner`) the call's crops, each with ``rows`` rows, crop-major;
    `mixture_forward` enters it around each host call with ``rows`` 1: the host lays out that
    call's rows itself, so the plan must give it one crop per call (a one-row input the model
    broadcasts).
    """

    mixture: CompiledMixture
    conds: Mapping[Any, tuple[Any, Any]] = field(default_factory=dict)
    guides: Sequence[GuideSpec] = ()
    guide_calls: Sequence[int] = ()
    noise: torch.Tensor | None = None
    levels: str = "sigma"  # or "timestep"
    alphas_cumprod: torch.Tensor | None = None
    calls: int = 0  # canvas calls so far (tests and progress)
    inner: bool = False  # every crop has the canvas's conditioning and scale: `inner_forward`
    vectors: CropVectors | None = None
    controls: Callable[[Sequence[CropSpec], int], Any] | None = None


def mixture_forward(orig: Callable, den: Any, x: torch.Tensor, sigma: torch.Tensor, uncond: Any, cond: Any,
                    cond_scale: float, s_min_uncond: float, image_cond: Any, state: PassState,
                    hooks: HostHooks) -> torch.Tensor:
    """One canvas prediction as the mixture of the host's predictions on crops of ``x``."""
    if state.guides and state.noise is not None:
        _apply_guides(x, sigma, state, den.step)

    step0 = den.step
    saved = {name: getattr(den, name, None) for name in ("mask", "nmask", "init_latent")}
    sampler = getattr(den, "sampler", None)
    last_latent_before = getattr(sampler, "last_latent", None)
    need_noise_uncond = bool(getattr(den, "need_last_noise_uncond", False))
    rows = x.shape[0]
    finished = False

    def predict(x_in: torch.Tensor, sigma_in: Any, specs: Sequence[CropSpec]):
        k = len(specs)
        pairs = [state.conds[s.cond] if s.cond != MAIN and s.cond in state.conds else (cond, uncond) for s in specs]
        if state.vectors is not None and hooks.crop_conds is not None:
            pairs = [hooks.crop_conds(pair, s, state.vectors) for pair, s in zip(pairs, specs)]
        c, u = hooks.join([p[0] for p in pairs], [p[1] for p in pairs])
        for name, full in saved.items():
            setattr(den, name, _crop_attr(full, specs, rows) if full is not None else None)
        ic = _crop_image_cond(image_cond, specs, rows, x.shape[-2:])
        scale = specs[0].cfg_scale if specs[0].cfg_scale is not None else cond_scale
        den.step = step0  # every crop sees the same schedule index
        around = hooks.around_call(specs) if hooks.around_call is not None else nullcontext()
        controls = nullcontext()
        if state.controls is not None:
            if k != 1:
                raise RuntimeError("spatial host inputs on the per-batch path need one crop per host call")
            controls = state.controls(specs, 1)
        with _previews(hooks) as previews, around, controls:
            out = orig(den, x_in, sigma_in, u, c, scale, s_min_uncond, ic)
        parts = [out, sampler.last_latent if sampler is not None else out]
        parts.append(previews[-1] if previews else parts[1])
        if need_noise_uncond:
            parts.append(den.last_noise_uncond)
        _check_rows(parts, rows * k)
        return tuple(parts)

    try:
        mixed = state.mixture(x, sigma, predict, on_batch=hooks.before_batch)
        finished = True
    finally:
        den.step = step0 + 1
        for name, full in saved.items():
            setattr(den, name, full)
        if sampler is not None and not finished:
            sampler.last_latent = last_latent_before if last_latent_before is not None else x
    state.calls += 1
    denoised, last_latent, preview = mixed[0], mixed[1], mixed[2]
    if sampler is not None:
        sampler.last_latent = last_latent
    if need_noise_uncond:
        den.last_noise_uncond = mixed[3]
    if hooks.show_preview is not None:
        hooks.show_preview(preview)
    return denoised


def inner_forward(orig: Callable, den: Any, x: torch.Tensor, sigma: torch.Tensor, uncond: Any, cond: Any,
                  cond_scale: float, s_min_uncond: float, image_cond: Any, state: PassState,
                  hooks: HostHooks) -> torch.Tensor:
    """One canvas prediction from the host's own forward, its inner model call mixed over crops.

    Only for crops that all use the canvas's conditioning and guidance scale (``state.inner``).
    """
    if state.guides and state.noise is not None:
        _apply_guides(x, sigma, state, den.step)
    with hooks.wrap_inner(den, lambda inner: TiledInner(inner, state, hooks)):
        out = orig(den, x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond)
    state.calls += 1
    return out


@contextmanager
def wrapped_attribute(owner: Any, name: str, make: Callable[[Any], Any]) -> Iterator[None]:
    """Have ``owner.<name>`` be ``make(real)`` until the block ends, ``real`` being its value now
    (a child module, or a bound method such as a model's ``apply_model``). If the host replaced
    it meanwhile (a refiner switch reloads the model), its new value is kept; otherwise the
    host's own is back, also after an interrupt: an attribute the owner held itself is put
    back, one it only inherited from its class is removed again, so nothing is left behind."""
    real = getattr(owner, name)
    had_own = name in vars(owner) or name in getattr(owner, "_modules", {})
    wrapper = make(real)
    setattr(owner, name, wrapper)
    try:
        yield
    finally:
        if getattr(owner, name) is wrapper:
            if had_own:
                setattr(owner, name, real)
            else:
                delattr(owner, name)


class TiledInner:
    """Stands in for the host's model call (``model(x, sigma_or_t, cond=...)``, a bound method
    such as ``apply_model``) during one forward: a canvas-sized call becomes one call per crop
    batch, its outputs mixed with the compiled weights. Conditioning values with one row per
    canvas row are cropped when spatial (``c_concat`` of inpainting models, canvas-sized) and
    repeated per crop otherwise (text embeddings, SDXL's vector, which then gets each crop's own
    size conditioning when ``state.vectors`` is set), in the crops' row order. A
    plain callable, not a module: set on a model it stays out of the model's module tree."""

    def __init__(self, inner: Any, state: PassState, hooks: HostHooks):
        self.inner, self.state, self.hooks = inner, state, hooks

    def __call__(self, x: torch.Tensor, sigma: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        mixture = self.state.mixture
        if tuple(x.shape[-2:]) != (mixture.height, mixture.width):
            return self.inner(x, sigma, *args, **kwargs)
        rows, size, hooks = x.shape[0], tuple(x.shape[-2:]), self.hooks

        def predict(x_in: torch.Tensor, sigma_in: Any, specs: Sequence[CropSpec]) -> torch.Tensor:
            tiled_args = [_tile_value(v, specs, rows, size) for v in args]
            tiled = {k: _tile_value(v, specs, rows, size) for k, v in kwargs.items()}
            if self.state.vectors is not None:
                tiled_args = [_crop_vector(v, self.state.vectors, specs, rows) for v in tiled_args]
                tiled = {k: _crop_vector(v, self.state.vectors, specs, rows) for k, v in tiled.items()}
            around = hooks.around_call(specs) if hooks.around_call is not None else nullcontext()
            controls = self.state.controls(specs, rows) if self.state.controls is not None else nullcontext()
            with around, controls:
                out = self.inner(x_in, sigma_in, *tiled_args, **tiled)
            _check_rows([out], rows * len(specs))
            return out

        return mixture(x, sigma, predict, on_batch=hooks.before_batch)


def _tile_value(value: Any, specs: Sequence[CropSpec], rows: int, size: tuple) -> Any:
    """A conditioning value for a batch of crops: per-row tensors cropped (canvas-sized, 4-D) or
    repeated per crop, crop-major; dicts and lists entry by entry; anything else as it is."""
    if isinstance(value, dict):
        return {k: _tile_value(v, specs, rows, size) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_tile_value(v, specs, rows, size) for v in value)
    if not isinstance(value, torch.Tensor) or value.ndim == 0 or value.shape[0] != rows:
        return value
    if value.ndim == 4 and tuple(value.shape[-2:]) == size:
        crops = [value[:, :, s.box.y:s.box.bottom, s.box.x:s.box.right] for s in specs]
        return crops[0] if len(crops) == 1 else torch.cat(crops)
    return value if len(specs) == 1 else torch.cat([value] * len(specs))


def _crop_vector(value: Any, vectors: CropVectors, specs: Sequence[CropSpec], rows: int) -> Any:
    """A tiled conditioning dict with each crop's own ``vector`` rows (SDXL); others as they are."""
    if isinstance(value, dict) and isinstance(value.get("vector"), torch.Tensor):
        return {**value, "vector": vectors.crop_rows(value["vector"], specs, rows)}
    return value


def _apply_guides(x: torch.Tensor, sigma: torch.Tensor, state: PassState, call: int) -> None:
    active = [call < n for n in state.guide_calls]
    if not any(active):
        return
    level = float(sigma.reshape(-1)[0]) if isinstance(sigma, torch.Tensor) else float(sigma)
    if state.levels == "timestep":
        if state.alphas_cumprod is None:
            raise ValueError("timestep levels need alphas_cumprod")
        alpha_bar = float(state.alphas_cumprod[int(round(level))])
        apply_guides(x, state.noise, state.guides, active, alpha_bar=alpha_bar)
    else:
        apply_guides(x, state.noise, state.guides, active, sigma=level)


def _crop_attr(full: torch.Tensor, specs: Sequence[CropSpec], rows: int) -> torch.Tensor:
    """Crop a spatial attribute (init_latent [B,C,H,W] or a mask [C,H,W] / [B,C,H,W]) per crop.

    A batch of K crops needs K*B rows, crop-major, so masks without a batch dim are
    expanded to B rows first; a single crop keeps the host's own layout.
    """
    crops = [full[..., s.box.y:s.box.bottom, s.box.x:s.box.right] for s in specs]
    if len(crops) == 1:
        return crops[0]
    if full.ndim == 3:
        crops = [c.unsqueeze(0).expand(rows, *c.shape) for c in crops]
    elif full.shape[0] != rows:
        crops = [c.expand(rows, *c.shape[1:]) for c in crops]
    return torch.cat(crops)


def _crop_image_cond(image_cond: Any, specs: Sequence[CropSpec], rows: int, size: torch.Size) -> Any:
    """Spatial image conditioning (inpainting models) is cropped; a placeholder is repeated."""
    if not isinstance(image_cond, torch.Tensor) or image_cond.ndim != 4:
        return image_cond
    if tuple(image_cond.shape[-2:]) == tuple(size):
        crops = [image_cond[:, :, s.box.y:s.box.bottom, s.box.x:s.box.right] for s in specs]
        return crops[0] if len(crops) == 1 else torch.cat(crops)
    return image_cond if len(specs) == 1 else image_cond.repeat(len(specs), 1, 1, 1)


def _check_rows(parts: list, expected: int) -> None:
    for p in parts:
        if p.shape[0] != expected:
            raise RuntimeError(f"the host returned {p.shape[0]} rows for a batch of {expected}; "
                               "another extension may be changing the batch inside the denoiser")


@contextmanager
def _previews(hooks: HostHooks) -> Iterator[list]:
    if hooks.capture_previews is None:
        yield []
        return
    with hooks.capture_previews() as captured:
        yield captured
