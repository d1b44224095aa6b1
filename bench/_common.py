"""Helpers every benchmark here shares: the repository on ``sys.path`` and memory fields of
``/proc/<pid>/status`` (peak and current RSS, Linux)."""

from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def use_repo() -> str:
    """Put the repository's root first on ``sys.path`` (benchmarks run as scripts); its path."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    return ROOT


def proc_status_kib(key: str, pid: int | str = "self") -> int:
    """A memory field of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``, ...) in KiB; KeyError
    when the kernel does not report it."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def time_webui_sampling(clock: dict) -> None:
    """In a WebUI booted in this process: add every sampling loop's wall time to
    ``clock["sampling"]`` (``Sampler.launch_sampling`` wrapped for the rest of the process) and
    replace the VAE decode by black images, so that only sampling is timed."""
    import time

    import torch
    from modules import processing, sd_samplers_common

    launch = sd_samplers_common.Sampler.launch_sampling

    def timed_launch(self, steps, func):
        t0 = time.perf_counter()
        try:
            return launch(self, steps, func)
        finally:
            clock["sampling"] += time.perf_counter() - t0
    sd_samplers_common.Sampler.launch_sampling = timed_launch
    processing.decode_latent_batch = lambda model, batch, *a, **k: [
        torch.zeros(3, batch.shape[-2] * 8, batch.shape[-1] * 8) for _ in range(batch.shape[0])]
