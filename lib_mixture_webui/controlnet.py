"""sd-webui-controlnet under the tile grid: every model call on a batch of crops gets, for each
spatial unit, the matching crops of that unit's control image, in the call's row layout.

ControlNet hooks the UNet (its ``forward`` is replaced per job) and reads each unit's hint, a
pixel-space ``[n, C, H, W]`` tensor at the canvas's size (``ControlParams.hint_cond``; the hires
pass's in ``hr_hint_cond``), on every UNet call; its hint must match the call's latent size x 8 and
its rows (or be one row). On the tile path the model call is one batch of crops, crop-major, each
crop with the canvas call's rows (`lib_mixture.denoiser_hook.TiledInner`), so each crop's box x 8
cut from the hint, repeated over that crop's rows, is that crop's own hint. It is set through the
``hint_cond`` setter (which drops ControlNet's caches of the previous hint), T2I-Adapters forget
their cached features (``reset``), and everything is put back after the call. Preprocessors and
"Pixel Perfect" ran once on the whole image before sampling; weights, guidance start and end,
control mode and resize mode are ControlNet's own, per call, unchanged.

With regions (`lib_mixture.denoiser_hook.mixture_forward`) the host lays out each call's rows
itself (cond rows per image and AND prompt, then uncond rows, maybe in several calls), so each
host call gets one crop and a one-row hint that ControlNet broadcasts over the rows; region conds
are marked cond / uncond like the host's (`marked_like_host`), so ControlNet's control modes see
which rows are which.

Supported: ControlNet-type units and T2I-Adapters (cropped), and IP-Adapters (an image prompt: the
same image tokens for every crop, nothing to crop; ControlNet classifies each call's rows as cond or
uncond by their marks, which region conds carry too). Any other unit type (reference, InstantID,
style, ReVision, ControlLLLite, inpaint-only or colorfix preprocessors...), or a unit with an
effective region mask, stops the job before the first step with a message naming the unit and why.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any, Callable, Iterator, Sequence

import torch

from lib_mixture.geometry import LATENT_FACTOR
from lib_mixture.plan import CropSpec

SPATIAL_TYPES = {"ControlNet", "ControlLoRA", "ControlNetUnion", "T2I_Adapter"}
# units that condition every crop alike: nothing to crop
GLOBAL_TYPES = {"IPAdapter"}
# preprocessors whose result is not a control image ControlNet adds residuals from
LATENT_PREPROCESSORS = ("inpaint_only", "colorfix", "reference")
# why a unit that is not a control image to crop is refused, by model type or preprocessor
WHY = {
    "reference": "it runs a whole-canvas model pass of the reference image on every model call and shares its "
                 "attention with the canvas, not with a crop",
    "inpaint_only": "it blends the model's output with the image's latent at the canvas size after every call",
    "colorfix": "it blends the model's output with the image's latent at the canvas size after every call",
    "AttentionInjection": "it runs a whole-canvas model pass of the reference image on every model call",
    "InstantID": "its face embedding and keypoint image are not proven with crops yet",
    "T2I_StyleAdapter": "its image tokens are not proven with crops yet",
    "ReVision": "its image embedding is not proven with crops yet",
    "Controlllite": "it keeps its control features at the first call's size, so later crops would reuse them",
}


class ControlNetNotSupported(RuntimeError):
    """A ControlNet unit whose input the mixture cannot crop per tile and region."""


def active_units(p: Any) -> list | None:
    """The ``ControlParams`` of sd-webui-controlnet's units for this job, or None when ControlNet
    has not hooked this job's model (not installed, or no enabled unit)."""
    for script in getattr(getattr(p, "scripts", None), "alwayson_scripts", ()):
        network = getattr(script, "latest_network", None)
        if network is not None and str(script.title()).lower() == "controlnet":
            params = list(getattr(network, "control_params", None) or [])
            return params or None
    return None


def unit_name(i: int, param: Any) -> str:
    kind = getattr(getattr(param, "control_model_type", None), "name", "unknown type")
    module = (getattr(param, "preprocessor", None) or {}).get("name", "none")
    return f"ControlNet unit {i + 1} ({kind}, preprocessor {module})"


def refuse_unknown_unet_hook(model: Any) -> None:
    """ControlNet's UNet hook on ``model`` without its script's units in reach (another fork or
    version): its control images would not be cropped per tile."""
    unet = getattr(getattr(model, "model", None), "diffusion_model", None)
    patched = vars(unet).get("forward") if unet is not None else None
    if patched is not None and "webui" in getattr(patched, "__name__", ""):
        raise ControlNetNotSupported(
            "Mixture of Diffusers: a ControlNet-like hook is on the UNet but its units were not found, so its "
            "control images cannot be cropped per tile; turn off ControlNet or Mixture of Diffusers for this job")


def check(units: Sequence[Any]) -> None:
    """Raise `ControlNetNotSupported` for a unit whose input cannot be cropped per crop."""
    for i, param in enumerate(units):
        kind = getattr(getattr(param, "control_model_type", None), "name", "")
        module = str((getattr(param, "preprocessor", None) or {}).get("name", ""))
        latent = next((m for m in LATENT_PREPROCESSORS if m in module), None)
        if kind not in SPATIAL_TYPES | GLOBAL_TYPES or latent:
            why = WHY.get(latent or kind, "it is not a control image to crop")
            raise ControlNetNotSupported(
                f"Mixture of Diffusers: {unit_name(i, param)} is not supported: {why}. ControlNet, "
                "T2I-Adapter (their control image is cropped per tile and region) and IP-Adapter units work; turn "
                "that unit off or turn Mixture of Diffusers off")
        if getattr(param, "effective_region_mask", None) is not None:
            raise ControlNetNotSupported(
                f"Mixture of Diffusers: {unit_name(i, param)} has an effective region mask, which is not cropped per "
                "tile and region yet; remove the mask or turn Mixture of Diffusers off")
        if kind in SPATIAL_TYPES and (not isinstance(param.hint_cond, torch.Tensor) or param.hint_cond.ndim != 4):
            raise ControlNetNotSupported(f"Mixture of Diffusers: {unit_name(i, param)} has no control image")


def one_crop_per_call(units: Sequence[Any]) -> bool:
    """Whether a unit needs a one-row hint: ControlNet repeats a T2I-Adapter's features over the rows
    itself under cfg injection ("ControlNet is more important") and global pooling, so per-row hints
    of several crops cannot be given to it."""
    return any(getattr(getattr(u, "control_model_type", None), "name", "") == "T2I_Adapter"
               and (getattr(u, "cfg_injection", False) or getattr(u, "global_average_pooling", False)) for u in units)


def marked_like_host(conds: dict, host_uncond: Any) -> dict:
    """Region conds ``{index: (cond, uncond)}`` marked cond / uncond the way ControlNet marks the
    host's (a first token row of +1024 / -1024, its ``mark_prompt_context``), so every row of a
    host call is classified; copies: the cached conds stay unmarked for jobs without ControlNet."""
    hook = sys.modules.get("scripts.hook")
    mark, is_marked = getattr(hook, "mark_prompt_context", None), getattr(hook, "prompt_context_is_marked", None)
    if mark is None or is_marked is None or not conds:
        return conds
    try:
        first = host_uncond[0][0].cond
    except (TypeError, IndexError, AttributeError):
        return conds
    if not is_marked(first["crossattn"] if isinstance(first, dict) else first):
        return conds
    return {i: (mark(_copy(c), positive=True), mark(_copy(u), positive=False)) for i, (c, u) in conds.items()}


def _copy(cond: Any) -> Any:
    """The containers of a host conditioning copied (lists, multicond and composable objects), the
    tensors shared: ``mark_prompt_context`` replaces entries in place."""
    if isinstance(cond, list):
        return [_copy(c) for c in cond]
    if hasattr(cond, "batch") and hasattr(cond, "shape"):  # MulticondLearnedConditioning
        return type(cond)(shape=cond.shape, batch=_copy(cond.batch))
    if hasattr(cond, "schedules") and hasattr(cond, "weight"):  # ComposableScheduledPromptConditioning
        return type(cond)(_copy(cond.schedules), cond.weight)
    return cond  # ScheduledPromptConditioning: a tuple, replaced, never changed


def hint_cropper(units: Sequence[Any], hires: bool, latent_size: tuple[int, int]
                 ) -> Callable[[Sequence[CropSpec], int], Any]:
    """``crops(specs, rows)``: a context manager that, while open, gives every unit the hint of
    the crop batch ``specs`` (each crop's ``rows`` rows, crop-major), then the unit's own again.
    ``hires``: the pass is the hires one (its hint is ``hr_hint_cond``); ``latent_size``: the
    canvas in latent cells, ``(height, width)``. Units of `GLOBAL_TYPES` are left as they are."""
    units = [u for u in units if getattr(getattr(u, "control_model_type", None), "name", "") in SPATIAL_TYPES]
    size = (latent_size[0] * LATENT_FACTOR, latent_size[1] * LATENT_FACTOR)
    for i, param in enumerate(units):
        full = _full_hint(param, hires)
        if tuple(full.shape[-2:]) != size:
            raise ControlNetNotSupported(
                f"Mixture of Diffusers: {unit_name(i, param)}'s control image is {full.shape[-1]}x{full.shape[-2]} px, "
                f"the canvas {size[1]}x{size[0]}; the tiles need them equal")

    @contextlib.contextmanager
    def crops(specs: Sequence[CropSpec], rows: int) -> Iterator[None]:
        saved = [(param, param.hint_cond, param.hr_hint_cond) for param in units]
        try:
            for param, hint, hr_hint in saved:
                crop = _rows(_full_hint(param, hires), specs, rows)
                param.hint_cond = crop  # the setter drops ControlNet's cached hint
                if hires:  # both equal: ControlNet's nearest-size test still says "hires"
                    param.hr_hint_cond = crop
                _forget_features(param)
            yield
        finally:
            for param, hint, hr_hint in saved:
                param.hint_cond = hint
                param.hr_hint_cond = hr_hint
                _forget_features(param)

    return crops


def _full_hint(param: Any, hires: bool) -> torch.Tensor:
    hr = getattr(param, "hr_hint_cond", None)
    return hr if hires and isinstance(hr, torch.Tensor) else param.hint_cond


def _rows(full: torch.Tensor, specs: Sequence[CropSpec], rows: int) -> torch.Tensor:
    """Each crop's pixel box of ``full`` ``[n, C, H, W]`` for its ``rows`` rows, crop-major: one
    image repeated; ``n`` images (one per image of the batch) tiled over cond and uncond rows."""
    n = full.shape[0]
    if n == 1 and len(specs) == 1:  # one row: ControlNet broadcasts it over the call's rows
        s = specs[0]
        return full[..., s.box.y * LATENT_FACTOR:s.box.bottom * LATENT_FACTOR,
                    s.box.x * LATENT_FACTOR:s.box.right * LATENT_FACTOR].contiguous()
    if n != 1 and rows % n:
        raise ControlNetNotSupported(
            f"Mixture of Diffusers: a ControlNet unit has {n} control images (one per image of the batch); with "
            "regions, or with a T2I-Adapter in 'ControlNet is more important' mode, give each unit one image")
    out = []
    for s in specs:
        crop = full[..., s.box.y * LATENT_FACTOR:s.box.bottom * LATENT_FACTOR,
                    s.box.x * LATENT_FACTOR:s.box.right * LATENT_FACTOR]
        out.append(crop.expand(rows, *crop.shape[1:]) if n == 1 else crop.repeat(rows // n, 1, 1, 1))
    return torch.cat(out).contiguous()


def _forget_features(param: Any) -> None:
    """T2I-Adapters keep the features of the first hint they saw; a new crop needs new ones."""
    reset = getattr(getattr(param, "control_model", None), "reset", None)
    if callable(reset) and getattr(getattr(param, "control_model_type", None), "name", "") == "T2I_Adapter":
        reset()
