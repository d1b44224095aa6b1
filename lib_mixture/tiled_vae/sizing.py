"""Sizing: the memory model of a tile and of the stash, the work model of a segment's passes,
the device budget, and the tile edge and stash of every segment; :func:`prepare` turns a
program and an input shape into segments, their tile sizes and stash budgets, refusing
(``ValueError``) what the settings cannot handle."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from .config import TiledVAEConfig
from .ops import AddSkip, Conv, Op, Save
from .patch import area
from .planning import Plan, Segment, core_at, grid, open_slots, plan, split, trace
from .runtime import MIB, free_memory


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


def state_bytes(seg: Segment, pl: Plan, pos: int, elt: int, batch: int, views: bool = False,
                slots: Optional[List[Tuple[int, int]]] = None) -> int:
    """Bytes of one tile's stash at ``pos``: its stream and open residual slots over the
    regions of ``pl`` (the tile's final plan). With ``views`` (the stash stays on the compute
    device, so nothing is copied) a stream taken right after the ``Save`` of a slot it keeps is a
    view of that slot and costs nothing more. ``slots``: ``open_slots(seg, pos)``, when known."""
    slots = open_slots(seg, pos) if slots is None else slots
    total = sum(area(pl.keep[s]) * seg.chans[i] for s, i in slots if s in pl.keep)
    prev = seg.ops[pos - 1] if pos > 0 else None
    if not (views and isinstance(prev, Save) and prev.slot in pl.keep):
        total += area(pl.ins[pos]) * seg.chans[pos]
    return total * elt * batch


def stash_bytes(seg: Segment, plans: List[Plan], pos: int, elt: int, batch: int, views: bool = False) -> int:
    """Bytes of every tile's stash at ``pos``."""
    return sum(state_bytes(seg, pl, pos, elt, batch, views) for pl in plans)


def keeps(held: int, old: int, new: int, budget: int) -> bool:
    """Whether a tile's stash of ``new`` bytes replaces its ``old`` one when the stash holds
    ``held`` bytes in all: only within ``budget``, so the stash never holds more (besides, while
    a tile runs, the old stash it resumed from until its new one is stored). A tile that does not
    fit keeps its older stash (still a valid place to resume) or recomputes."""
    return budget > 0 and held - old + new <= budget


# Work of a pass, in multiply-accumulates: those of the convolutions, a cost per element for the
# pointwise ops (GroupNorm, activation, upsampling, residual adds: memory-bound), and a fixed cost
# per op call (Python, kernel launches). The CPU figures are measured
# (`bench/bench_tiled_vae.py --call-cost`, 2 cores, fp32, three runs: 37-60 us an op call and
# 0.8-1.7 ns an element at 78-99 GMAC/s of a 128-channel convolution); the CUDA ones are estimates until a GPU
# measures them (~50 us an op call; 4 bytes an element at ~4 TB/s; ~20 TMAC/s in fp16).
CALL_MACS = {"cpu": 4e6, "cuda": 1e9}
ELEMENT_MACS = {"cpu": 100, "cuda": 20}
MIN_CHOICE = 32  # smallest tile edge (latent px) `choose` weighs beside the largest that fits


def _per_pixel(seg: Segment) -> List[Tuple[int, int]]:
    """``(multiply-accumulates, pointwise elements)`` per output pixel of each op (per batch row)."""
    out = []
    for i, op in enumerate(seg.ops):
        c = seg.chans[i + 1]
        if isinstance(op, Conv):
            out.append((c * op.weight.shape[1] * op.k[0] * op.k[1], 0))
        elif isinstance(op, AddSkip) and op.shortcut is not None:
            out.append((c * op.shortcut.weight.shape[1], c))
        elif isinstance(op, Save):  # keeps a reference: no work
            out.append((0, 0))
        else:
            out.append((0, c))
    return out


@dataclass
class Work:
    """Predicted work of a segment's run (:func:`predict`)."""

    macs: float  # multiply-accumulates of the convolutions, all batch rows
    elements: float  # elements the pointwise ops write, all batch rows
    calls: int  # op calls over all tiles and passes
    tiles: int
    passes: int
    resumed: int  # tile passes that resumed from a stash

    def cost(self, device_type: str) -> float:
        """The work in multiply-accumulates on a device of ``device_type`` ("cpu", "cuda"; others
        as CUDA)."""
        kind = device_type if device_type in CALL_MACS else "cuda"
        return self.macs + self.elements * ELEMENT_MACS[kind] + self.calls * CALL_MACS[kind]


def predict(seg: Segment, tile: int, stash_budget: int, elt: int, batch: int, views: bool = False) -> Work:
    """The work of running ``seg`` with tiles of edge ``tile`` and a stash of ``stash_budget``
    bytes (``views``: kept on the compute device, see :func:`state_bytes`), pass by pass as
    `execute.run_segment` does it (the same regions, the same `keeps`)."""
    cores = grid(seg.ref, tile)
    n = len(seg.ops)
    coef = _per_pixel(seg)
    if len(cores) == 1:
        px = [seg.sizes[j + 1][0] * seg.sizes[j + 1][1] for j in range(n)]
        return Work(float(batch * sum(a * m for a, (m, _) in zip(px, coef))),
                    float(batch * sum(a * e for a, (_, e) in zip(px, coef))), n, 1, 1, 0)
    finals = [plan(seg, n, core_at(c, seg.ref, seg.sizes[-1])) for c in cores]
    held, pos, total = [0] * len(cores), [0] * len(cores), 0
    macs, elements, calls, resumed = 0, 0, 0, 0
    ends = seg.norms + [n]
    slots = {end: open_slots(seg, end) for end in seg.norms}
    for end in ends:
        for i, core in enumerate(cores):
            new = state_bytes(seg, finals[i], end, elt, batch, views, slots[end]) if end < n else 0
            write = end < n and keeps(total, held[i], new, stash_budget)
            pl = finals[i] if (write or end == n) else plan(seg, end, core_at(core, seg.ref, seg.sizes[end]))
            for j in range(pos[i], end):
                a = area(pl.outs[j])
                macs += a * coef[j][0]
                elements += a * coef[j][1]
            calls += end - pos[i]
            resumed += pos[i] > 0
            if write:
                total += new - held[i]
                held[i], pos[i] = new, end
    return Work(float(macs * batch), float(elements * batch), calls, len(cores), len(ends), resumed)


def choose(seg: Segment, avail: int, elt: int, batch: int, lo: int, cap: int, device_type: str) -> Tuple[int, int]:
    """The tile edge and stash budget of ``seg`` within ``avail`` bytes: of the largest edge
    that fits (:func:`fit_tile`) and the smaller ones from `MIN_CHOICE` up, the one whose
    :func:`predict`-ed work is least with the rest of ``avail`` as its stash on the device (at
    most ``cap`` bytes when ``cap`` > 0); on a tie the larger edge."""
    top = fit_tile(seg, avail, elt, batch, lo)
    if not seg.norms:
        return top, 0
    edges = {top} | {e for e in (32, 48, 64, 96, 128, 192, 256, 384, 512) if max(lo, MIN_CHOICE) <= e < top}

    def stash(t: int) -> int:
        left = max(0, avail - tile_bytes(seg, t, elt, batch))
        return min(left, cap) if cap > 0 else left

    best = min(edges, key=lambda t: (predict(seg, t, stash(t), elt, batch, True).cost(device_type), -t))
    return best, stash(best)


def fit_tile(seg: Segment, budget: int, elt: int, batch: int, lo: int) -> int:
    """The largest tile edge whose :func:`tile_bytes` fits ``budget``, by bisection: the
    segment's whole edge when that fits, ``lo`` when not even ``lo`` does, else rounded
    down to a multiple of 8 from 16 on (never below ``lo``)."""
    hi, least = max(seg.ref), lo
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
    return max(least, lo - lo % 8) if lo >= 16 else lo


def budget(device: torch.device, cfg: TiledVAEConfig) -> Optional[int]:
    """Bytes the automatic sizing may plan for: ``memory_mib``, else on CUDA the free plus
    cached memory times ``memory_fraction``; ``None`` (no budget) elsewhere."""
    if cfg.memory_mib is not None:
        return cfg.memory_mib * MIB
    if device.type != "cuda":
        return None
    return int(free_memory(device) * cfg.memory_fraction)


def _io_bytes(s: Segment, cfg: TiledVAEConfig, elt: int, batch: int) -> int:
    """The segment's own input and output buffers, which share the device with its tiles."""
    if cfg.offload:
        return 0
    return batch * elt * (s.chans[0] * s.sizes[0][0] * s.sizes[0][1] + s.chans[-1] * s.sizes[-1][0] * s.sizes[-1][1])


def tile_sizes(segs: List[Segment], cfg: TiledVAEConfig, device: torch.device, elt: int,
               batch: int) -> List[Tuple[int, int]]:
    """The tile edge and stash budget (bytes) of every segment (``(0, 0)`` for attention)."""
    tiled = [s for s in segs if not s.is_global]
    if not tiled:
        return [(0, 0)] * len(segs)
    lo = cfg.min_tile_size
    cap = cfg.stash_mib * MIB
    avail = budget(device, cfg)
    out = []
    if cfg.tile_size is None and avail is not None:
        for s in segs:
            if s.is_global:
                out.append((0, 0))
                continue
            left = max(0, avail - _io_bytes(s, cfg, elt, batch))
            if cfg.stash_on_device:  # tiles and stash share the budget
                out.append(choose(s, left, elt, batch, lo, cap, device.type))
            else:
                out.append((fit_tile(s, left, elt, batch, lo), cap))
        return out
    t = max(cfg.tile_size if cfg.tile_size is not None else cfg.cpu_tile_size, lo)
    heavy = max(tiled, key=lambda s: tile_bytes(s, t, elt, batch))
    same = tile_bytes(heavy, t, elt, batch)  # the memory of the heaviest segment's tile
    for s in segs:
        if s.is_global:
            out.append((0, 0))
            continue
        # the heaviest segment gets `t`; lighter ones larger tiles in the same memory
        edge = max(t, fit_tile(s, same, elt, batch, lo)) if cfg.scale_low_res_tiles else t
        stash = cap
        if cfg.stash_on_device and not cap and avail is not None:  # the rest of the budget
            stash = max(0, avail - _io_bytes(s, cfg, elt, batch) - tile_bytes(s, edge, elt, batch))
        out.append((edge, stash))
    return out


def attention_bytes(seg: Segment, elt: int, batch: int) -> int:
    """Device bytes the exact attention of the global segment ``seg`` needs: its K and V."""
    return 2 * batch * seg.sizes[0][0] * seg.sizes[0][1] * seg.chans[0] * elt


def prepare(ops: List[Op], shape: Sequence[int], cfg: TiledVAEConfig, device: torch.device,
            dtype: torch.dtype, what: str) -> Tuple[List[Segment], List[Tuple[int, int]]]:
    """Segments and their ``(tile edge, stash bytes)`` for an input of ``shape`` ``(B, C, H, W)``;
    raises ``ValueError`` when the settings cannot handle that size."""
    cfg.validate()
    B = int(shape[0])
    sizes, chans = trace(ops, (int(shape[2]), int(shape[3])), int(shape[1]))
    segs = split(ops, sizes, chans)
    elt = torch.finfo(dtype).bits // 8
    sized = tile_sizes(segs, cfg, device, elt, B)
    avail = None if cfg.offload else budget(device, cfg)
    for s, (t, _) in zip(segs, sized):
        if s.is_global:
            need = attention_bytes(s, elt, B)
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
    return segs, sized
