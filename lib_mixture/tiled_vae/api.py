"""The public entry points: check the arguments, build the program, run or describe it."""

from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from .adapters import decoder_program, encoder_program
from .config import ProgressFn, StopFn, TiledVAEConfig
from .execute import execute
from .ops import Conv, Op
from .planning import grid, split, trace
from .runtime import stash_device
from .sizing import attention_bytes, predict, prepare, tile_bytes


def _config(config: Optional[TiledVAEConfig], tile_size: Optional[int]) -> TiledVAEConfig:
    cfg = TiledVAEConfig() if config is None else TiledVAEConfig(**vars(config))
    if tile_size is not None:
        cfg.tile_size = tile_size
    cfg.validate()
    return cfg


def _program(vae, mode: str) -> Tuple[List[Op], nn.Module]:
    return decoder_program(vae) if mode == "decode" else encoder_program(vae)


def _checked_program(vae, x, mode: str) -> Tuple[List[Op], nn.Module]:
    """The ``mode`` ("decode"/"encode") program, once ``x`` is known to be a 4-D tensor with
    the channels that program takes (``ValueError`` naming the input otherwise)."""
    what, dims = ("latent", "(B, C, h, w)") if mode == "decode" else ("image", "(B, C, H, W)")
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"{what} must be a {dims} tensor, got {getattr(x, 'shape', type(x))}")
    ops, module = _program(vae, mode)
    c_in = next(op for op in ops if isinstance(op, Conv)).weight.shape[1]
    if x.shape[1] != c_in:
        raise ValueError(f"{what} has {x.shape[1]} channels but this VAE {mode}s {c_in}-channel {what}s")
    return ops, module


def tiled_decode(vae, latent: torch.Tensor, tile_size: Optional[int] = None,
                 on_progress: Optional[ProgressFn] = None, should_stop: Optional[StopFn] = None,
                 config: Optional[TiledVAEConfig] = None) -> torch.Tensor:
    """Decode ``latent`` like ``vae.decode(latent)`` with bounded memory.

    Args:
        vae: diffusers ``AutoencoderKL``, an ldm/sgm ``AutoencoderKL`` (A1111's
            ``first_stage_model``), an object with ``.first_stage_model``, or a bare decoder
            (then no ``post_quant_conv`` is applied). It must already sit on its compute
            device; its forward hooks are not called.
        latent: ``(B, C_latent, h, w)`` unscaled latent (what ``vae.decode`` takes, i.e.
            already divided by the scaling factor). Cast to the VAE's dtype and device.
        tile_size: core tile edge in latent pixels (overrides ``config.tile_size``).
        on_progress: ``on_progress(done, total)`` after every tile (and attention op);
            ``total`` can grow after an out-of-memory retry.
        should_stop: called before every tile; may raise (propagated) or return true
            (raises :class:`TiledVAEInterrupted`).
        config: :class:`TiledVAEConfig`.

    Returns:
        ``(B, C_out, 8h, 8w)`` image in the VAE's dtype (range about [-1, 1] for SD), on the
        VAE's device (on the CPU with ``config.offload``).

    Raises:
        ValueError: bad input shape or settings, or an image too large for the settings
            (the message names what to change).
    """
    cfg = _config(config, tile_size)
    ops, module = _checked_program(vae, latent, "decode")
    if latent.shape[0] < 1 or latent.shape[2] < 1 or latent.shape[3] < 1:
        raise ValueError(f"latent is empty: {tuple(latent.shape)}")
    return execute(ops, latent, module, cfg, "latent", on_progress, should_stop)


def tiled_encode(vae, image: torch.Tensor, tile_size: Optional[int] = None,
                 on_progress: Optional[ProgressFn] = None, should_stop: Optional[StopFn] = None,
                 config: Optional[TiledVAEConfig] = None, output: str = "moments",
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Encode ``image`` like ``vae.encode(image)`` with bounded memory.

    Args:
        vae: as for :func:`tiled_decode` (a bare encoder skips ``quant_conv``).
        image: ``(B, C_img, H, W)``, values in [-1, 1] for SD, any size the plain encoder
            takes (off the 8 px grid too: the latent then has the plain encoder's size,
            ``H // 8`` for SD's encoder, and its values).
        tile_size: core tile edge in **latent** pixels (``tile_size * 8`` image pixels).
        on_progress, should_stop, config: as for :func:`tiled_decode`.
        output: ``"moments"`` (``(B, 2 * C_latent, h, w)``: mean and log-variance, what
            ``quant_conv`` returns), ``"mean"`` or ``"sample"`` (``(B, C_latent, h, w)``).
        generator: for ``output="sample"``.

    Returns:
        The latent tensor described by ``output``, unscaled (multiply by the scaling factor
        yourself), in the VAE's dtype.
    """
    cfg = _config(config, tile_size)
    if output not in ("moments", "mean", "sample"):
        raise ValueError(f"output must be 'moments', 'mean' or 'sample', got {output!r}")
    ops, module = _checked_program(vae, image, "encode")
    moments = execute(ops, image, module, cfg, "image", on_progress, should_stop)
    return moments if output == "moments" else moments_to_latent(moments, output, generator)


def plan_tiled_vae(vae, shape: Sequence[int], mode: str = "decode", tile_size: Optional[int] = None,
                   config: Optional[TiledVAEConfig] = None) -> List[dict]:
    """What :func:`tiled_decode` (``mode="decode"``) or :func:`tiled_encode` would do for an
    input of ``shape`` ``(B, C, H, W)``, without running it. One dict per stage, in order:
    ``kind`` ("tiled" or "attention"), ``in_size``/``out_size`` ``(H, W)``, ``in_channels``,
    ``out_channels``, ``tile_size`` (core edge in pixels of the stage's coarsest
    resolution), ``tiles``, ``passes`` (GroupNorm passes + 1, or 1 for a single tile),
    ``out_bytes`` (the full buffer the stage writes), ``tile_bytes`` (estimated peak of one
    tile), ``stash_bytes`` (the most the stash of its activations may hold) and ``work``
    (`sizing.Work`: predicted multiply-accumulates, op calls and tile passes resumed from the
    stash; ``None`` for attention). Raises ``ValueError`` like the real call would."""
    cfg = _config(config, tile_size)
    if mode not in ("decode", "encode"):
        raise ValueError(f"mode must be 'decode' or 'encode', got {mode!r}")
    ops, module = _program(vae, mode)
    param = next(module.parameters())
    elt = torch.finfo(param.dtype).bits // 8
    segs, sized = prepare(ops, shape, cfg, param.device, param.dtype, "latent" if mode == "decode" else "image")
    views = stash_device(cfg, param.device) == param.device  # nothing copied: see sizing.state_bytes
    out = []
    for s, (t, stash) in zip(segs, sized):
        n = 1 if s.is_global else len(grid(s.ref, t))
        out.append(dict(
            kind="attention" if s.is_global else "tiled",
            in_size=s.sizes[0], out_size=s.sizes[-1], in_channels=s.chans[0], out_channels=s.chans[-1],
            tile_size=None if s.is_global else t, tiles=n,
            passes=1 if (s.is_global or n == 1) else len(s.norms) + 1,
            out_bytes=int(shape[0]) * s.chans[-1] * s.sizes[-1][0] * s.sizes[-1][1] * elt,
            tile_bytes=0 if s.is_global else tile_bytes(s, t, elt, int(shape[0])),
            stash_bytes=0 if n == 1 else stash,
            work=None if s.is_global else predict(s, t, stash, elt, int(shape[0]), views),
        ))
    return out


def min_memory(vae, shape: Sequence[int], mode: str = "decode") -> int:
    """The smallest ``TiledVAEConfig.memory_mib`` (in bytes) that :func:`tiled_decode`
    (``mode="decode"``) or :func:`tiled_encode` accept for an input of ``shape`` ``(B, C, H, W)``
    without ``offload``: the K and V of its exact attention (0 for a VAE without attention); the
    tiles themselves shrink to any budget."""
    if mode not in ("decode", "encode"):
        raise ValueError(f"mode must be 'decode' or 'encode', got {mode!r}")
    ops, module = _program(vae, mode)
    elt = torch.finfo(next(module.parameters()).dtype).bits // 8
    sizes, chans = trace(ops, (int(shape[2]), int(shape[3])), int(shape[1]))
    return max([attention_bytes(s, elt, int(shape[0])) for s in split(ops, sizes, chans) if s.is_global] or [0])


def tile_floor(vae, shape: Sequence[int], mode: str = "decode", max_tiles: int = TiledVAEConfig.max_tiles) -> int:
    """The smallest tile edge (latent px) whose grid has at most ``max_tiles`` tiles a pass in
    every tiled stage of :func:`tiled_decode` (``mode="decode"``) or :func:`tiled_encode` for an
    input of ``shape`` ``(B, C, H, W)``: a ``tile_size`` or ``min_tile_size`` below it is refused."""
    if mode not in ("decode", "encode"):
        raise ValueError(f"mode must be 'decode' or 'encode', got {mode!r}")
    ops, _ = _program(vae, mode)
    sizes, chans = trace(ops, (int(shape[2]), int(shape[3])), int(shape[1]))
    floor = 1
    for s in split(ops, sizes, chans):
        if s.is_global:
            continue
        h, w = s.ref
        t = max(floor, math.isqrt(max(0, h * w // max_tiles - 1)))
        while math.ceil(h / t) * math.ceil(w / t) > max_tiles:
            t += 1
        floor = t
    return floor


def moments_to_latent(moments: torch.Tensor, mode: str = "mean",
                      generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """``(B, 2C, h, w)`` moments (mean, log-variance) to a ``(B, C, h, w)`` latent: the mean,
    or a sample ``mean + std * noise`` with the log-variance clamped to [-30, 20]."""
    mean, logvar = moments.chunk(2, dim=1)
    if mode == "mean":
        return mean
    if mode != "sample":
        raise ValueError(f"mode must be 'mean' or 'sample', got {mode!r}")
    std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
    noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=torch.float32)
    return mean + std * noise.to(mean.dtype)
