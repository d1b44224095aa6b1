"""Tile planning: a program cut into segments, the tile grid of a segment, and the regions
each op of a tile must read, planned backwards through the receptive field.

A tiled segment partitions its coarsest resolution into non-overlapping *cores*; for each
core the input region is planned backwards through the ops and clipped at the image border,
where the ops re-create the real zero padding. Cores are therefore exact and need no blending.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from .ops import AddSkip, Global, Norm, Op, Save
from .patch import Rect, Size


@dataclass
class Segment:
    """A run of ops executed as one stage: tiled, or a lone global (attention) op."""

    ops: List[Op]
    sizes: List[Size]  # sizes[i] = size at the input of ops[i]; sizes[-1] = output size
    chans: List[int]  # same for channels
    ref: Size  # coarsest size inside the segment: the tile grid lives there
    ratios: List[Tuple[int, int]]  # sizes[i] // ref, at least 1 (memory estimates)
    norms: List[int]  # op indices of the GroupNorms, in execution order
    is_global: bool = False

    @property
    def out_size(self) -> Size:
        return self.sizes[-1]


def trace(ops: List[Op], size: Size, chans: int) -> Tuple[List[Size], List[int]]:
    """Sizes and channels at the input of every op (and the output, last), for an input of
    ``size`` ``(H, W)`` with ``chans`` channels; ``ValueError`` when a size reaches 0."""
    sizes, cs = [size], [chans]
    for op in ops:
        sizes.append(op.out_size(sizes[-1]))
        cs.append(op.out_channels(cs[-1]))
        if sizes[-1][0] < 1 or sizes[-1][1] < 1:
            raise ValueError(f"input of size {size} is too small for this VAE")
    return sizes, cs


def split(ops: List[Op], sizes: List[Size], chans: List[int]) -> List[Segment]:
    """Cut around global ops and where the coarsest resolution meets a change of resolution."""
    n = len(ops)
    coarse = min(sizes, key=lambda s: s[0] * s[1])
    cuts = {0, n}
    open_slots = 0
    for j in range(n + 1):
        if j < n and isinstance(ops[j], Global):
            cuts.update((j, j + 1))
        if 0 < j < n and open_slots == 0 and sizes[j] == coarse and (sizes[j - 1] != coarse or sizes[j + 1] != coarse):
            cuts.add(j)
        if j < n:
            if isinstance(ops[j], Save):
                open_slots += 1
            elif isinstance(ops[j], AddSkip):
                open_slots -= 1
    bounds = sorted(cuts)
    segs = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        if a == b:
            continue
        sub, ss, cs = ops[a:b], sizes[a : b + 1], chans[a : b + 1]
        if len(sub) == 1 and isinstance(sub[0], Global):
            segs.append(Segment(sub, ss, cs, ss[0], [(1, 1)] * 2, [], True))
            continue
        ref = min(ss, key=lambda s: s[0] * s[1])
        # Sizes off the VAE's grid (an image of 499 px encodes to 62 latent px) do not
        # divide evenly; the floor ratio only sizes memory estimates, cores use `core_at`.
        ratios = [(max(1, s[0] // ref[0]), max(1, s[1] // ref[1])) for s in ss]
        norms = [i for i, op in enumerate(sub) if isinstance(op, Norm)]
        segs.append(Segment(sub, ss, cs, ref, ratios, norms))
    return segs


@dataclass
class Plan:
    """The regions one tile reads and produces at every op up to some position."""

    ins: List[Rect]  # ins[i]: region of the stream entering ops[i]
    outs: List[Rect]  # outs[i]: region ops[i] produces
    keep: Dict[int, Rect]  # slot -> region saved by its Save (only slots this plan uses)


def plan(seg: Segment, end: int, target: Rect, slot_targets: Optional[Dict[int, Rect]] = None) -> Plan:
    """Backward receptive-field planning of ``seg.ops[:end]`` so that the stream at position
    ``end`` covers ``target`` and each residual slot still open there covers
    ``slot_targets[slot]`` (regions at ``seg.sizes[end]`` / at the slot's resolution)."""
    ins: List[Rect] = [None] * end  # type: ignore[list-item]
    outs: List[Rect] = [None] * end  # type: ignore[list-item]
    need = target
    slot_need: Dict[int, Rect] = dict(slot_targets or {})
    keep: Dict[int, Rect] = {}
    for i in reversed(range(end)):
        outs[i] = need
        need = seg.ops[i].plan_back(need, seg.sizes[i], slot_need, keep)
        ins[i] = need
    return Plan(ins, outs, keep)


def open_slots(seg: Segment, pos: int) -> List[Tuple[int, int]]:
    """``(slot, save_index)`` of the residual slots saved before ``pos`` and not yet added."""
    open_: Dict[int, int] = {}
    for i in range(pos):
        op = seg.ops[i]
        if isinstance(op, Save):
            open_[op.slot] = i
        elif isinstance(op, AddSkip):
            open_.pop(op.slot, None)
    return list(open_.items())


def core_at(core: Rect, ref: Size, size: Size) -> Rect:
    """The core ``core`` of the grid at ``ref`` mapped to a feature map of ``size``.

    Each cut ``c`` on an axis of length ``n_ref`` goes to ``c * n // n_ref``: exact multiples
    when ``n`` is one (every SD decoder, encoders of images on the 8 px grid), and still a
    partition of the ``n`` pixels when it is not (an encoder's ``n // 2`` per downsampler on a
    499 px image), which is all the exact GroupNorm statistics and the output need."""
    return (core[0] * size[0] // ref[0], core[1] * size[0] // ref[0],
            core[2] * size[1] // ref[1], core[3] * size[1] // ref[1])


def grid(ref: Size, tile: int) -> List[Rect]:
    """Non-overlapping cores covering ``ref``, at most ``tile`` on a side, evenly sized."""

    def cuts(n: int) -> List[int]:
        k = max(1, math.ceil(n / tile))
        return [round(i * n / k) for i in range(k + 1)]

    ys, xs = cuts(ref[0]), cuts(ref[1])
    return [(y0, y1, x0, x1) for y0, y1 in zip(ys[:-1], ys[1:]) for x0, x1 in zip(xs[:-1], xs[1:])]
