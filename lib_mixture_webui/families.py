"""Which model families the mixture runs with, checked before a job does any work.

SD 1.x, SD 2.x (epsilon and v-prediction) and SDXL (base, refiner, inpainting) go through the
WebUI's CFG denoiser with conds the adapter understands (tensors, or SDXL's ``crossattn`` /
``vector`` dicts). SD3 does too, but its MMDiT has no tested path here (16-channel latents, its
own VAE and conditioning), so a job with it stops with one message instead of running untested.
"""

from __future__ import annotations

from typing import Any


class UnsupportedModel(RuntimeError):
    """The loaded checkpoint's family does not run with the mixture."""


def check(model: Any) -> None:
    """Raise `UnsupportedModel` for a family the mixture does not support (SD3)."""
    if getattr(model, "is_sd3", False):
        name = getattr(getattr(model, "sd_checkpoint_info", None), "name_for_extra", None) or "this checkpoint"
        raise UnsupportedModel(f"Mixture of Diffusers does not support SD3 models ({name}); turn Mixture of "
                               "Diffusers off for this job, or use an SD 1.x, SD 2.x or SDXL checkpoint")


def family(model: Any) -> str:
    """The family name cost models use (`lib_mixture.cost.CostModel.family`): ``sdxl``, ``sd2`` or ``sd1``."""
    if getattr(model, "is_sdxl", False):
        return "sdxl"
    if getattr(model, "is_sd2", False):
        return "sd2"
    return "sd1"
