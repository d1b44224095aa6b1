"""The upscale workflow in img2img: the init images (and mask) resized once with one of the
host's upscalers, before the host encodes them; the generation size becomes the target."""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

from modules import images, shared

from lib_mixture.preset import PresetError, Upscale
from lib_mixture.upscale import lanczos, target_size, upscale_image

from .args import SOURCE


def upscaler_names() -> list[str]:
    return [u.name for u in getattr(shared, "sd_upscalers", []) or []]


def find_upscaler(name: str) -> str:
    """The host's spelling of ``name`` (case-insensitive); PresetError listing the choices."""
    names = upscaler_names()
    for candidate in names:
        if candidate.lower() == name.strip().lower():
            return candidate
    hint = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
    did_you_mean = f" (did you mean '{hint[0]}'?)" if hint else ""
    raise PresetError([f"upscale.upscaler: no upscaler named {name!r} in this WebUI{did_you_mean}; "
                       f"available: {', '.join(names) or 'none'}"], SOURCE)


def apply(p: Any, upscale: Upscale) -> str:
    """Resize ``p.init_images`` (and ``p.image_mask``) to the target and set ``p.width``/``p.height``.

    Returns a one-line description for the console. Raises PresetError for an unknown
    upscaler, an unreachable size or a txt2img job.
    """
    sources = getattr(p, "init_images", None)
    if not sources:
        raise PresetError(["upscale: works in img2img, on its init image; in txt2img use hires fix with the "
                           "tile grid, or remove the 'upscale' section"], SOURCE)
    name = find_upscaler(upscale.upscaler)
    first = sources[0]
    width, height = target_size(upscale, first.width, first.height)

    def resize(image, w, h):
        # The host's own loop: the upscaler (maybe several x4 passes), then Lanczos to the size.
        return images.resize_image(0, image, w, h, upscaler_name=name)

    # Every image (a batch may mix sizes) and the mask go to the first image's target.
    fixed = dataclasses.replace(upscale, scale=None, width=width, height=height)
    background = getattr(shared.opts, "img2img_background_color", "#ffffff")
    p.init_images = [upscale_image(images.flatten(image, background), fixed, resize) for image in sources]
    mask = getattr(p, "image_mask", None)
    if mask is not None:
        p.image_mask = upscale_image(mask, fixed, lanczos)
    p.width, p.height = width, height
    p.resize_mode = 0  # the images already have the size: the host's resize is a no-op
    return f"upscaled {first.width}x{first.height} to {width}x{height} with {name} ({upscale.fit})"

