"""Guide images: read before any work, and encoded with the host's VAE when a pass needs them."""

from __future__ import annotations

from typing import Any

import torch

from modules import images, sd_samplers_common, shared

from lib_mixture.guide_source import GuideImage, GuidePolicy, open_guide
from lib_mixture.preset import Preset


def read_guides(preset: Preset, policy: GuidePolicy) -> dict[int, GuideImage]:
    """Every region's guide image, read and decoded under ``policy`` (which files this caller
    may have read), by region index; PresetError naming the field otherwise. Called before
    any work, so a refused or oversized image stops the job before the first step."""
    return {i: open_guide(r.guide.image, policy, f"regions[{i}].guide.image")
            for i, r in enumerate(preset.regions) if r.guide is not None}


def guide_refs(preset: Preset, guides: dict[int, GuideImage]) -> dict[str, str]:
    """Each guide source's ``sha256:`` reference, for the infotext."""
    return {preset.regions[i].guide.image: g.ref for i, g in guides.items()}


def guide_latent(image: Any, width: int, height: int) -> torch.Tensor:
    """A decoded guide image (RGB PIL) fitted to a ``width x height`` px box (cropped to fill)
    and encoded with the host's VAE: ``[1, C, height / 8, width / 8]`` (latent cells)."""
    import numpy as np

    image = images.resize_image(1, image, width, height)
    array = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1).unsqueeze(0)
    with torch.no_grad():
        latent = sd_samplers_common.images_tensor_to_samples(array.to(shared.device), None, shared.sd_model)
    return latent
