"""What one call shares across its stages: devices, progress, interruption, and the
out-of-memory test its retries rely on."""

from __future__ import annotations

from typing import Optional

import torch

from .config import (DEVICE_MEMORY_FRACTION, HOST_MEMORY_FRACTION, ProgressFn, StopFn, TiledVAEConfig,
                     TiledVAEInterrupted)

MIB = 1 << 20


class Run:
    """Progress, interruption and placement for one call."""

    def __init__(self, cfg: TiledVAEConfig, device: torch.device, dtype: torch.dtype,
                 on_progress: Optional[ProgressFn], should_stop: Optional[StopFn]):
        self.cfg, self.device, self.dtype = cfg, device, dtype
        self.buf_device = torch.device("cpu") if cfg.offload else device
        self.stash_device = stash_device(cfg, device)
        self.on_progress, self.should_stop = on_progress, should_stop
        self.done = 0
        self.total = 0
        self.stash_peak = 0  # most bytes the stash held at once (tests and benchmarks)

    def check(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise TiledVAEInterrupted("tiled VAE interrupted")

    def tick(self) -> None:
        self.done += 1
        if self.on_progress is not None:
            self.on_progress(self.done, self.total)


def is_oom(exc: BaseException) -> bool:
    """``exc`` is a device out-of-memory error (the typed one, or CUDA's RuntimeError text)."""
    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def free_memory(device: torch.device) -> float:
    """Bytes a new allocation can get on ``device``: the free CUDA memory plus PyTorch's cached
    blocks, or the host's available memory elsewhere (psutil; else ``/proc/meminfo``; 0 where
    neither answers)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return float(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    try:
        import psutil

        return float(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 - not installed, or no answer on this system
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(int(line.split()[1]) * 1024)
    except OSError:
        pass
    return 0.0


def memory_budget(device: torch.device, free: float, cap: float = 0.0, held: float = 0.0,
                  share: Optional[float] = None) -> float:
    """Bytes for ``TiledVAEConfig.memory_mib`` on ``device``: ``share`` of ``free`` (the bytes
    `free_memory` reads; default share `DEVICE_MEMORY_FRACTION` on CUDA, `HOST_MEMORY_FRACTION`
    elsewhere), and where ``cap`` > 0 at most ``cap`` (a budget for the whole job, bytes) less
    ``held`` (what the job holds there already: its weights, its tensors); never below 0."""
    if share is None:
        share = DEVICE_MEMORY_FRACTION if device.type == "cuda" else HOST_MEMORY_FRACTION
    budget = share * free
    if cap > 0:
        budget = min(budget, cap - held)
    return max(budget, 0.0)


def stash_device(cfg: TiledVAEConfig, device: torch.device) -> torch.device:
    """Where a call on ``device`` keeps its tiles' activations between passes."""
    return device if cfg.stash_on_device else torch.device("cpu")


def free_cache(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
