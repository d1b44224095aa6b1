"""The one object the extension keeps on ``p`` (``p._mod``): the job and what it has running.

A context is started by the script's ``process`` and ended by ``postprocess`` or by
``p.close()``, which the WebUI calls even when the job fails; ending it restores every
per-job patch and turns the tiled VAE off, so no job leaks its settings into the next.
"""

from __future__ import annotations

import dataclasses

from typing import Any

import torch

from lib_mixture.guide_source import GuideImage
from lib_mixture.preset import VAETiling

from .job import Job
from .noise import RegionNoise
from .passes import PassBuilder
from .patches import Installation, JobPatches
from .vae import Route

ATTRIBUTE = "_mod"  # the extension's only attribute on ``p``


class JobContext:
    """One job: its `Job`, its passes' states, its region noise, its tiled VAE route and the
    host attributes patched for it. A job with a configuration ``error`` has only the `Job`."""

    def __init__(self, job: Job, host: Installation | None = None, guides: dict[int, GuideImage] | None = None,
                 vae: VAETiling | None = None):
        self.job = job
        self.host = host
        self.patches = JobPatches()
        self.noise = RegionNoise(job) if job.error is None else None
        self.passes = None
        if host is not None and self.noise is not None:
            self.passes = PassBuilder(job, self.noise, guides or {}, host.conds)
        self.vae_route = Route(vae) if vae is not None else None
        self.ended = False

    @property
    def vae_log(self) -> list[dict]:
        """What the tiled VAE did in this job (mode, shape, tiles, seconds per pass)."""
        return self.vae_route.log if self.vae_route is not None else []

    def batch_started(self, p: Any) -> None:
        """Sampling of a batch is next: encodes are hires ones from now on, and this batch's
        ``p.rng`` draws the region noise."""
        if self.vae_route is not None:
            self.vae_route.sampling_started = True
        if self.noise is not None and not self.ended:
            self.noise.install(p, self.patches)

    def saw_hires_noise(self, noise: torch.Tensor) -> None:
        """The hires pass's initial noise (WebUI 1.10+), for guide images there."""
        if self.noise is not None:
            self.noise.initial[True] = noise

    def end(self) -> None:
        """Restore this job's patches and end its VAE route (idempotent)."""
        self.patches.restore()
        self.ended = True
        host = self.host
        if host is not None and host.current is self:
            host.current = None
            host.last_vae_log = list(self.vae_log)


@dataclasses.dataclass(frozen=True)
class Prepared:
    """On ``p`` between ``before_process`` and ``process``: the job's checked configuration
    (``enabled``, ``preset``, ``guides``) and the img2img upscale's console line once it is done,
    so ``process`` neither reads nor upscales again; or the ``error`` that stops the job."""

    enabled: bool
    preset: Any
    guides: dict
    upscaled: str | None = None
    error: Exception | None = None


def of(p: Any) -> JobContext | None:
    """The job context on ``p``, or None."""
    value = getattr(p, ATTRIBUTE, None)
    return value if isinstance(value, JobContext) else None


def prepared(p: Any) -> Prepared | None:
    """What ``before_process`` prepared for this job, if it did."""
    value = getattr(p, ATTRIBUTE, None)
    return value if isinstance(value, Prepared) else None


def mark_prepared(p: Any, value: Prepared) -> None:
    setattr(p, ATTRIBUTE, value)


def clear(p: Any) -> None:
    setattr(p, ATTRIBUTE, None)


def attach(p: Any, context: JobContext) -> JobContext:
    """Put ``context`` on ``p``; with an installation it becomes the running job (its VAE
    settings apply from now on: img2img encodes its init images in ``p.init()``) and
    ``p.close()`` ends it."""
    setattr(p, ATTRIBUTE, context)
    if context.host is not None:
        context.host.current = context
        context.patches.wrap(p, "close", lambda close: _closing(context, close))
    return context


def _closing(context: JobContext, close: Any):
    def close_and_end():
        context.end()
        return close()

    return close_and_end


def end(p: Any) -> None:
    context = of(p)
    if context is not None:
        context.end()
