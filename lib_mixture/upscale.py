"""The upscale workflow's pixel-space step: the target size and how the source fits it.

An upscale resizes the source image once (with the host's upscaler, e.g. R-ESRGAN), then the
tiled mixture refines it in img2img. This module holds the host-independent part:

* :func:`target_size` - the output size of an :class:`~lib_mixture.preset.Upscale` for a
  source size, with errors that name the field and what would work;
* :func:`fit_geometry` - where the resized source lands on the target canvas (crop, pad or
  stretch);
* :func:`upscale_image` - runs both on a PIL image, given the host's resize function.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image

from .fields import MAX_SIDE, MIN_SIDE
from .preset import PresetError, Upscale

GRID = 8  # px per latent cell


@dataclass(frozen=True)
class FitGeometry:
    """Resize the source to ``resize_w`` x ``resize_h``, then place its top-left corner at
    ``(x, y)`` on the ``width`` x ``height`` target: negative offsets crop, positive ones pad."""

    width: int
    height: int
    resize_w: int
    resize_h: int
    x: int
    y: int


def target_size(upscale: Upscale, src_w: int, src_h: int) -> tuple[int, int]:
    """Output ``(width, height)`` in px, multiples of 8.

    A scale rounds each side to the nearest multiple of 8 (the latent grid; at most 4 px off),
    so the aspect ratio can change by that much; the fit mode absorbs it.

    Raises:
        PresetError: the size is out of [64, 16384] px per side (names ``upscale.scale`` and
            the scales that work for this source).
    """
    if src_w < 1 or src_h < 1:
        raise PresetError([f"the source image is empty ({src_w}x{src_h})"], "upscale")
    if upscale.width is not None and upscale.height is not None:
        return upscale.width, upscale.height
    scale = float(upscale.scale if upscale.scale is not None else 2.0)
    w = max(GRID, round(src_w * scale / GRID) * GRID)
    h = max(GRID, round(src_h * scale / GRID) * GRID)
    if min(w, h) < MIN_SIDE or max(w, h) > MAX_SIDE:
        lo = MIN_SIDE / min(src_w, src_h)
        hi = MAX_SIDE / max(src_w, src_h)
        allowed = (f"scales from {math.ceil(lo * 100) / 100:g} to {math.floor(hi * 100) / 100:g}"
                   if lo <= hi else "no scale (the aspect ratio is too extreme); give width and height")
        raise PresetError([
            f"upscale.scale: {scale:g} takes this {src_w}x{src_h} image to {w}x{h}; each side must be in "
            f"[{MIN_SIDE}, {MAX_SIDE}] px, which allows {allowed} for this image"], "upscale")
    return w, h


def fit_geometry(src_w: int, src_h: int, width: int, height: int, fit: str) -> FitGeometry:
    """Where a ``src_w`` x ``src_h`` source lands on a ``width`` x ``height`` target.

    ``stretch`` resizes to the target exactly; ``crop`` scales to cover it and centres (the
    overhang is cut); ``pad`` scales to fit inside and centres (the border is filled).
    """
    if fit == "stretch":
        return FitGeometry(width, height, width, height, 0, 0)
    if fit not in ("crop", "pad"):
        raise ValueError(f"fit must be 'crop', 'pad' or 'stretch', got {fit!r}")
    pick = max if fit == "crop" else min
    k = pick(width / src_w, height / src_h)
    # Round so the side that decided k lands exactly on the target.
    rw = width if math.isclose(k, width / src_w) else max(1, round(src_w * k))
    rh = height if math.isclose(k, height / src_h) else max(1, round(src_h * k))
    return FitGeometry(width, height, rw, rh, (width - rw) // 2, (height - rh) // 2)


ResizeFn = Callable[[Image.Image, int, int], Image.Image]


def lanczos(image: Image.Image, w: int, h: int) -> Image.Image:
    return image.resize((w, h), resample=Image.LANCZOS)


def upscale_image(image: Image.Image, upscale: Upscale, resize: ResizeFn = lanczos) -> Image.Image:
    """The source resized, cropped or padded to :func:`target_size`.

    ``resize(image, w, h)`` does the resampling (the host passes its upscaler). Padding
    repeats the outermost pixels outwards, so the refinement sees no hard border to keep.
    A mask (mode ``L``) given here is treated the same way (use ``resize=lanczos``).
    """
    width, height = target_size(upscale, image.width, image.height)
    g = fit_geometry(image.width, image.height, width, height, upscale.fit)
    resized = image if (image.width, image.height) == (g.resize_w, g.resize_h) else resize(image, g.resize_w, g.resize_h)
    if resized.size != (g.resize_w, g.resize_h):  # an upscaler that overshoots (ESRGAN x4 steps)
        resized = lanczos(resized, g.resize_w, g.resize_h)
    if (g.x, g.y) == (0, 0) and resized.size == (width, height):
        return resized
    return place(resized, g)


def place(resized: Image.Image, g: FitGeometry) -> Image.Image:
    """``resized`` put at ``(g.x, g.y)`` on the target: cropped where it overhangs, the
    uncovered border filled by repeating its edge pixels."""
    a = np.asarray(resized)
    # crop what overhangs
    x0, y0 = max(0, -g.x), max(0, -g.y)
    a = a[y0:y0 + g.height, x0:x0 + g.width]
    # pad what is left uncovered
    left, top = max(0, g.x), max(0, g.y)
    right, bottom = g.width - left - a.shape[1], g.height - top - a.shape[0]
    pad = [(top, bottom), (left, right)] + [(0, 0)] * (a.ndim - 2)
    if any(p != (0, 0) for p in pad):
        a = np.pad(a, pad, mode="edge")
    return Image.fromarray(np.ascontiguousarray(a))
