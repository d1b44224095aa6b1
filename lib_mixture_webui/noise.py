"""Seeded regions' initial noise, drawn through the job's ``p.rng``."""

from __future__ import annotations

from typing import Any

import torch

from modules import rng

from lib_mixture.geometry import to_latent
from lib_mixture.preset import image_seed

from .job import Job
from .patches import JobPatches


class RegionNoise:
    """The first noise each batch draws, with every seeded region's own noise in its box.

    ``initial`` keeps each pass's initial unit noise ``[B, C, H, W]`` by ``is_hr_pass`` (the
    first pass's as drawn here, the hires pass's as the host reports it), for guide images.
    """

    def __init__(self, job: Job):
        self.job = job
        self.initial: dict[bool, torch.Tensor] = {}

    def install(self, p: Any, patches: JobPatches) -> None:
        """Wrap this batch's ``p.rng.next`` (restored with the job's other patches).

        Region seeds move with the main seed: an image whose seed lies ``k`` past the job's
        first seed uses each region's seed plus ``k`` (`image_seed`), and its infotext says so
        (`args.infotext_value`), so "PNG Info -> Generate" reproduces it. The plan is made on
        the latent the host really samples (``floor(px / 8)`` cells), so any size the WebUI
        takes works.
        """
        generator = getattr(p, "rng", None)
        if generator is None:
            return
        offsets = [int(s) - int(p.all_seeds[0]) for s in p.seeds]
        patches.wrap(generator, "next", lambda original: self._next(generator, original, offsets))

    def _next(self, generator: Any, original: Any, offsets: list[int]):
        def next_noise():
            first = generator.is_first
            noise = original()
            if first and self.job.applies_to(False):
                self._reseed(noise, offsets)
                self.initial[False] = noise
            return noise

        return next_noise

    def _reseed(self, noise: torch.Tensor, offsets: list[int]) -> None:
        plan = self.job.plans.for_latent(noise.shape[-2], noise.shape[-1])
        for r in plan.regions:
            if r.region.seed < 0:
                continue
            seeds = [image_seed(r.region.seed, offsets[i]) for i in range(noise.shape[0])]
            own = rng.ImageRNG(noise.shape[1:], seeds).next().to(noise.device, noise.dtype)
            rows, cols = to_latent(r.box).slices()
            noise[:, :, rows, cols] = own[:, :, rows, cols]
