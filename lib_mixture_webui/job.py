"""One generation's configuration: the preset on its canvas, its plans and its warnings."""

from __future__ import annotations

import dataclasses
from typing import Any

from lib_mixture.auto_plan import Budget, resolve
from lib_mixture.limits import DEFAULT_LIMITS, Limits
from lib_mixture.passes import JobPlans
from lib_mixture.preset import Canvas, Preset

from .args import WARNINGS_KEY


class Warnings:
    """Messages for the user: each printed once and kept in the infotext as they occur."""

    def __init__(self, params: dict):
        self.messages: list[str] = []
        self._params = params  # the job's ``p.extra_generation_params``

    def add(self, messages: list[str]) -> None:
        for m in messages:
            if m not in self.messages:
                self.messages.append(m)
                print(f"[Mixture of Diffusers] {m}")
                self._params[WARNINGS_KEY] = "; ".join(self.messages)


class Job:
    """What the user asked for, checked against this job's sizes.

    ``error`` holds a configuration problem found while the WebUI swallows exceptions (its
    script hooks only log them); the denoiser hook raises it at the first sampling step,
    where it ends the job and reaches an API caller as the error message. ``plans`` builds
    each pass's plan once. ``auto``: how the preset's ``"auto"`` tile and batch sizes were chosen
    for ``budget`` on this job's canvases; ``preset`` has them chosen, ``auto.shown`` is what the
    infotext keeps. Raises `PresetError` when no automatic tile size fits the overlap.
    """

    def __init__(self, p: Any, preset: Preset | None, error: Exception | None = None,
                 limits: Limits = DEFAULT_LIMITS, budget: Budget | None = None):
        # The canvas region boxes refer to: the preset's, else the first pass's size.
        if preset is not None and preset.canvas is None and preset.units == "px":
            preset = dataclasses.replace(preset, canvas=Canvas(int(p.width), int(p.height)))
        self.error = error
        self.limits = limits
        self.warnings = Warnings(p.extra_generation_params)
        # a job that mixes no pass (hires only, without hires fix) still gets concrete sizes
        sizes = (mixed_sizes(p, preset) or [(int(p.width), int(p.height))]) if preset is not None else []
        images = max(1, int(getattr(p, "batch_size", 1) or 1))  # sampled together: their rows share each call
        self.auto = resolve(preset, sizes, budget, limits, images) if preset is not None else None
        self.preset = self.auto.preset if self.auto is not None else None
        self.plans = JobPlans(self.preset, limits) if preset is not None else None

    def applies_to(self, hires: bool) -> bool:
        return applies_to(self.preset, hires)

    def check(self, p: Any) -> None:
        """Plan every pass this job will mix now, before any work, so that a preset the canvas
        cannot take or one over the server's limits (millions of tiles) stops the job at once
        (`PresetError`)."""
        for width, height in mixed_sizes(p, self.preset):
            self.plans.for_pixels(width, height)


def applies_to(preset: Preset, hires: bool) -> bool:
    """The preset mixes the first pass (``hires`` False) or the hires pass."""
    return preset.passes == "both" or preset.passes == ("hires" if hires else "first")


def mixed_sizes(p: Any, preset: Preset) -> list[tuple[int, int]]:
    """``(width, height)`` px of each pass of the job the preset mixes. The hires size follows
    the WebUI's own rule for "Upscale by" / "Resize to"."""
    sizes = [(int(p.width), int(p.height))] if applies_to(preset, False) else []
    if getattr(p, "enable_hr", False) and applies_to(preset, True):
        sizes.append(hires_size(p))
    return sizes


def hires_size(p: Any) -> tuple[int, int]:
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
