"""What an automatic plan (``"auto"`` tile and batch sizes) is fitted to in this WebUI: the cost
model measured for the loaded model's family on this device and dtype, and the memory the job
may use (`lib_mixture.auto_plan.Budget`)."""

from __future__ import annotations

from typing import Any

import torch

from lib_mixture import cost
from lib_mixture.auto_plan import Budget, free_memory_budget

from . import families, settings
from .vae import free_memory

DTYPES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}


def host_budget(sd_model: Any, device: torch.device | None = None, dtype: torch.dtype | None = None,
                opts: Any = None) -> Budget:
    """The `Budget` of a job with ``sd_model`` on ``device`` in ``dtype`` (default: the WebUI's
    UNet device and dtype): `free_memory_budget` of the memory free now (the weights are loaded:
    what is free is for the activations), or the owner's setting when it is lower."""
    if device is None or dtype is None:
        from modules import devices

        device = device or devices.device
        dtype = dtype or getattr(devices, "dtype_unet", devices.dtype)
    family = families.family(sd_model)
    kind = DTYPES.get(dtype, str(dtype).removeprefix("torch."))
    model = cost.for_host(family, device.type, kind)
    if model is None:
        return Budget(None, 0.0, f"no cost model is measured for {family} on {device.type} in {kind}; "
                                 f"there are: {', '.join(cost.available())}")
    budget = free_memory_budget(model, free_memory(device), str(device))
    owner = settings.auto_memory_bytes(opts)
    if owner and owner < budget.bytes:
        return Budget(model, owner, "Settings → Mixture of Diffusers")
    return budget


def panel_budget() -> Budget | None:
    """The `Budget` for the editor's preview when the panel is built (the model may still be
    loading: then SD 1.x's); None when the WebUI's device cannot be read."""
    try:
        from modules import shared

        return host_budget(getattr(shared, "sd_model", None))
    except Exception:  # the preview goes without; every job reads its own budget
        return None
