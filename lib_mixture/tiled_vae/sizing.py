"""Sizing: the memory model of a tile and of the stash, the device budget, and the tile edge
of every segment; :func:`prepare` turns a program and an input shape into segments and
their tile sizes, refusing (``ValueError``) what the settings cannot handle."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch

from .config import TiledVAEConfig
from .ops import AddSkip, Conv, Op, Save
from .patch import area
from .planning import Plan, Segment, core_at, grid, open_slots, plan, split, trace


def tile_bytes(seg: Segment, tile: int, elt: int, batch: int) -> int:
    """Estimated peak bytes of one tile of edge ``tile`` (interior tile, full halo)."""
    margin = 4 * tile + 64
    ref = (tile + 2 * margin, tile + 2 * margin)
    vseg = Segment(seg.ops, [(ref[0] * r[0], ref[1] * r[1]) for r in seg.ratios], seg.chans, ref,
                   seg.ratios, seg.norms)
    n = len(seg.ops)
    pl = plan(vseg, n, core_at((margin, margin + tile, margin, margin + tile), ref, vseg.sizes[-1]))
    peak = 0
    open_bytes: Dict[int, int] = {}
    for i, op in enumerate(seg.ops):
        cin, cout = seg.chans[i], seg.chans[i + 1]
        live = area(pl.ins[i]) * cin + area(pl.outs[i]) * cout + sum(open_bytes.values())
        if isinstance(op, Conv):
            live += area(pl.ins[i]) * cin  # padded copy at image borders
        if isinstance(op, Save) and op.slot in pl.keep:
            open_bytes[op.slot] = area(pl.ins[i]) * cin
        if isinstance(op, AddSkip):
            live += area(pl.outs[i]) * cout  # shortcut branch
            open_bytes.pop(op.slot, None)
        peak = max(peak, live)
    peak += area(pl.ins[0]) * seg.chans[0]  # the tile's input copy
    return int(peak * elt * batch * 1.25)


def stash_bytes(seg: Segment, plans: List[Plan], pos: int, elt: int, batch: int) -> int:
    """Bytes of every tile's stream and open residual slots at ``pos`` (the stash)."""
    total = 0
    open_ = open_slots(seg, pos)
    for pl in plans:
        total += area(pl.ins[pos]) * seg.chans[pos]
        total += sum(area(pl.keep[s]) * seg.chans[i] for s, i in open_ if s in pl.keep)
    return total * elt * batch


def fit_tile(seg: Segment, budget: int, elt: int, batch: int, lo: int) -> int:
    """The largest tile edge whose :func:`tile_bytes` fits ``budget``, by bisection: the
    segment's whole edge when that fits, ``lo`` when not even ``lo`` does, else rounded
    down to a multiple of 8 from 16 on."""
    hi = max(seg.ref)
    if tile_bytes(seg, hi, elt, batch) <= budget:
        return hi
    if tile_bytes(seg, lo, elt, batch) > budget:
        return lo
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if tile_bytes(seg, mid, elt, batch) <= budget:
            lo = mid
        else:
            hi = mid
    return lo - lo % 8 if lo >= 16 else lo


def budget(device: torch.device, cfg: TiledVAEConfig) -> Optional[int]:
    """Bytes the automatic sizing may plan for on CUDA (free plus cached memory, times
    ``memory_fraction``); ``None`` elsewhere."""
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return int(free * cfg.memory_fraction)


def tile_sizes(segs: List[Segment], cfg: TiledVAEConfig, device: torch.device, elt: int, batch: int) -> List[int]:
    """The tile edge of every segment (0 for attention)."""
    tiled = [s for s in segs if not s.is_global]
    if not tiled:
        return [0] * len(segs)
    lo = cfg.min_tile_size
    avail = None if cfg.tile_size is not None else budget(device, cfg)
    if avail is None:
        t = cfg.tile_size if cfg.tile_size is not None else cfg.cpu_tile_size
        t = max(t, lo)
        heavy = max(tiled, key=lambda s: tile_bytes(s, t, elt, batch))
        avail = tile_bytes(heavy, t, elt, batch)
        fixed = t
    else:
        fixed = None
    out = []
    for s in segs:
        if s.is_global:
            out.append(0)
        elif fixed is None:
            # the segment's own input and output buffers share the device with its tiles
            io = 0 if cfg.offload else batch * elt * (
                s.chans[0] * s.sizes[0][0] * s.sizes[0][1] + s.chans[-1] * s.sizes[-1][0] * s.sizes[-1][1])
            out.append(fit_tile(s, max(0, avail - io), elt, batch, lo))
        elif not cfg.scale_low_res_tiles:
            out.append(fixed)
        else:  # the heaviest segment gets `fixed`; lighter ones larger tiles in the same memory
            out.append(max(fixed, fit_tile(s, avail, elt, batch, lo)))
    return out


def prepare(ops: List[Op], shape: Sequence[int], cfg: TiledVAEConfig, device: torch.device,
            dtype: torch.dtype, what: str) -> Tuple[List[Segment], List[int]]:
    """Segments and their tile sizes for an input of ``shape`` ``(B, C, H, W)``; raises
    ``ValueError`` when the settings cannot handle that size."""
    cfg.validate()
    B = int(shape[0])
    sizes, chans = trace(ops, (int(shape[2]), int(shape[3])), int(shape[1]))
    segs = split(ops, sizes, chans)
    elt = torch.finfo(dtype).bits // 8
    tiles = tile_sizes(segs, cfg, device, elt, B)
    avail = None if cfg.offload else budget(device, cfg)
    for s, t in zip(segs, tiles):
        if s.is_global:
            need = 2 * B * s.sizes[0][0] * s.sizes[0][1] * s.chans[0] * elt
            if avail is not None and need > avail:
                raise ValueError(
                    f"{what} too large for exact global attention: K and V of the "
                    f"{s.sizes[0][0]}x{s.sizes[0][1]} feature map need {need / 2**30:.2f} GiB but "
                    f"{avail / 2**30:.2f} GiB is available; set offload=True (K and V then stay in "
                    "host memory), use a smaller image or free GPU memory"
                )
            continue
        n = len(grid(s.ref, t))
        if n > cfg.max_tiles:
            raise ValueError(
                f"{what} of {tuple(shape[-2:])} needs {n} tiles per pass at tile_size={t} "
                f"(max_tiles={cfg.max_tiles}); raise tile_size or max_tiles, or use a smaller image"
            )
    return segs, tiles
