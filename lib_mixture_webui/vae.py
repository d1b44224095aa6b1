"""Tiled VAE in the host: the VAE's encoder and decoder run through ``lib_mixture.tiled_vae``
while a job that asks for it runs.

The wrappers sit on the *classes* of the ldm (SD1.x/2.x) and sgm (SDXL) ``Encoder`` and
``Decoder`` (listed in `patches.REGISTRY`), so every path that reaches them is covered: the
img2img init encode, hires fix, the final decode, full-quality live previews, the refiner's
VAE. The host still does what surrounds them (scaling factor, ``quant_conv``, the
posterior's sampling with its RNG, dtype and NaN fallbacks). TAESD, when chosen for decode or
encode, is reached through the host's ``sd_vae_taesd.decoder_model``/``encoder_model``
getters, which are wrapped the same way.

The wrappers are inert unless the installation's current job context has a `Route`
(`context.JobContext`, started by the script's ``process``, ended by ``postprocess`` or
``p.close()``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from modules import shared

from lib_mixture.geometry import LATENT_FACTOR
from lib_mixture.preset import VAETiling
from lib_mixture.tiled_vae import (TiledVAEConfig, TiledVAEInterrupted, min_memory, plan_tiled_vae, tile_floor,
                                  tiled_decode, tiled_encode)
from lib_mixture.tiled_vae import runtime
from lib_mixture.tiled_vae.runtime import free_memory  # the WebUI's own reading too (budget.py)

from . import settings

AUTO_MEMORY_FRACTION = 0.6  # of the free memory a plain pass may use before auto mode tiles


@dataclass
class Route:
    """The tiled VAE settings of the running job, and what was done (for the infotext and tests)."""

    settings: VAETiling
    log: list[dict] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    sampling_started: bool = False  # set by the script's process_batch: encodes are hires ones from then on

    def config(self, module: torch.nn.Module, x: torch.Tensor, mode: str) -> TiledVAEConfig:
        """The tiled VAE's settings for ``module``'s ``mode`` of ``x``: the panel's tile size, and a
        memory budget for the tiles and the stash of their activations, which stays on the device
        (no copies), so each tile resumes where its previous GroupNorm pass stopped as far as the
        budget holds (the rest recompute). With the tile size left to it (``vae.tile`` null) the
        tile and the stash are chosen together for the least predicted work
        (`lib_mixture.tiled_vae.sizing`). The budget is `memory_budget`; where the owner's cap
        leaves less than the exact attention needs (the tiles shrink to any budget, it cannot),
        the attention gets what it needs, as the plain VAE's would, and a note says so. A tile
        so small that a pass would have more tiles than the tiled VAE takes is raised to the
        smallest that fits, with a note, rather than failing after sampling."""
        budget = memory_budget(x.device)
        floor = min_memory(module, x.shape, mode)
        if budget < floor <= memory_budget(x.device, capped=False):
            self._skip(f"the tiled VAE {mode} needs {floor / 2**30:.2f} GiB for its attention, more than the "
                       f"{budget / 2**30:.2f} GiB the memory cap (Settings → Mixture of Diffusers) leaves it; "
                       "it uses that much")
            budget = floor
        least = tile_floor(module, x.shape, mode)
        tile = None if self.settings.tile is None else self.settings.tile // LATENT_FACTOR
        if tile is not None and tile < least:
            self._skip(f"vae.tile {self.settings.tile} px makes more than {TiledVAEConfig.max_tiles} tiles a pass "
                       f"in the {mode} of this {x.shape[-1]}x{x.shape[-2]} "
                       f"{'image' if mode == 'encode' else 'latent'}; {least * LATENT_FACTOR} px tiles are used")
            tile = least
        return TiledVAEConfig(tile_size=tile, min_tile_size=max(TiledVAEConfig.min_tile_size, least),
                              stash_on_device=True, memory_mib=max(1, -(-int(budget) // 2**20)))

    def wants_tiles(self, module: torch.nn.Module, x: torch.Tensor, mode: str) -> bool:
        if self.settings.tiling == "off":
            return False
        try:  # the plan of one tile over the whole input: the plain pass's memory
            whole = max(1, max(x.shape[-2:]) // (LATENT_FACTOR if mode == "encode" else 1))
            stages = plan_tiled_vae(module, x.shape, mode, tile_size=whole)
        except NotImplementedError as e:
            self._skip(f"{type(module).__name__} cannot be tiled ({e}); the plain VAE {mode} runs")
            return False
        except ValueError:
            return True  # too large even to plan as one tile: the tiled run says what to change
        if self.settings.tiling == "on":
            return True
        # auto: tiles only when the plain pass would not fit, so small images stay bit-identical
        need = max(s["tile_bytes"] + s["out_bytes"] for s in stages)
        return need > memory_budget(x.device, AUTO_MEMORY_FRACTION)

    def _skip(self, message: str) -> None:
        if message not in self.skipped:
            self.skipped.append(message)
            print(f"[Mixture of Diffusers] {message}")

    def run(self, module: torch.nn.Module, x: torch.Tensor, mode: str) -> torch.Tensor:
        """``module``'s forward of ``x``, tiled, with the tile in the WebUI's progress text.

        Interrupt behaves as in the plain WebUI, whose VAE passes run to the end: a decode
        always finishes, so every image whose sampling ended (finished or interrupted) comes
        back. Only an encode before the job's first sampling step (img2img's source) stops at
        the next tile: the host then ends the job before sampling, as the plain WebUI would
        after its encode, and the placeholder latent returned here is never used.
        """
        state = shared.state
        was_interrupted = bool(state.interrupted)
        label = "Tiled VAE " + mode
        started = time.perf_counter()
        tiles = [0, 0]

        def on_progress(done: int, total: int) -> None:
            tiles[:] = [done, total]
            state.textinfo = f"{label}: tile pass {done}/{total}"

        def should_stop() -> bool:
            return mode == "encode" and not self.sampling_started and not was_interrupted and bool(state.interrupted)

        fn = tiled_encode if mode == "encode" else tiled_decode
        kwargs = {"output": "moments"} if mode == "encode" else {}
        try:
            config = self.config(module, x, mode)
            out = fn(module, x, on_progress=on_progress, should_stop=should_stop, config=config, **kwargs)
        except TiledVAEInterrupted:
            print(f"[Mixture of Diffusers] interrupted during the tiled VAE encode (tile pass {tiles[0]}/{tiles[1]}), "
                  "before any sampling: the job ends with no images, as the WebUI's own interrupt would")
            last = plan_tiled_vae(module, x.shape, "encode", tile_size=max(x.shape[-2:]), config=config)[-1]
            return torch.zeros((x.shape[0], last["out_channels"], *last["out_size"]), device=x.device, dtype=x.dtype)
        except ValueError as e:
            raise ValueError(f"Mixture of Diffusers: tiled VAE {mode} of {tuple(x.shape[-2:])}: {e} "
                             "(the panel's VAE tiling and VAE tile size; vae.tiling and vae.tile in a preset)") from None
        self.log.append({"mode": mode, "shape": tuple(x.shape), "tiles": tiles[1],
                         "seconds": time.perf_counter() - started})
        return out


def memory_budget(device: torch.device, share: float | None = None, capped: bool = True) -> float:
    """Bytes the VAE may use on ``device``: `lib_mixture.tiled_vae.runtime.memory_budget` (``share``
    of the free memory), with ``capped`` at most the owner's cap on the whole job (Settings →
    Mixture of Diffusers) less what the job holds there already (`held_memory`)."""
    cap = settings.auto_memory_bytes() if capped else 0
    return runtime.memory_budget(device, free_memory(device), cap, held_memory(device) if cap else 0.0, share)


def held_memory(device: torch.device) -> float:
    """Bytes the job holds on ``device`` before the VAE runs: what PyTorch has allocated on CUDA;
    elsewhere the loaded model's weights there (the process's other memory is not the job's)."""
    if device.type == "cuda":
        return float(torch.cuda.memory_allocated(device))
    model = getattr(shared, "sd_model", None)
    if not isinstance(model, torch.nn.Module):
        return 0.0
    tensors = list(model.parameters()) + list(model.buffers())
    return float(sum(t.numel() * t.element_size() for t in tensors if t.device == device))


def wrap_encoder(original: Callable, host: Any) -> Callable:
    """``Encoder.forward`` that tiles while the host's current job asks for it."""
    return _trampoline(original, host, "encode")


def wrap_decoder(original: Callable, host: Any) -> Callable:
    return _trampoline(original, host, "decode")


def wrap_taesd_decoder(getter: Callable, host: Any) -> Callable:
    """``sd_vae_taesd.decoder_model`` whose model tiles while the host's current job asks for it."""
    return _taesd_getter(getter, host, "decode")


def wrap_taesd_encoder(getter: Callable, host: Any) -> Callable:
    return _taesd_getter(getter, host, "encode")


def _trampoline(original: Callable, host: Any, mode: str) -> Callable:
    def forward(self, x, *args, **kwargs):
        route = host.vae_route()
        if route is None or args or kwargs or not route.wants_tiles(self, x, mode):
            return original(self, x, *args, **kwargs)
        return route.run(self, x, mode)

    return forward


class _TiledTAESD(torch.nn.Module):
    """Stands in for the TAESD Sequential the host asked for while a route is active."""

    def __init__(self, inner: torch.nn.Module, route: Route, mode: str):
        super().__init__()
        self.inner, self.route, self.mode = inner, route, mode

    def forward(self, x):
        if not self.route.wants_tiles(self.inner, x, self.mode):
            return self.inner(x)
        return self.route.run(self.inner, x, self.mode)


def _taesd_getter(getter: Callable, host: Any, mode: str) -> Callable:
    def get(*args, **kwargs):
        model = getter(*args, **kwargs)
        route = host.vae_route()
        return model if route is None or model is None else _TiledTAESD(model, route, mode)

    return get
