"""The primitive ops a VAE program is made of, and the state one tile runs them on.

Every op answers three questions: the size and channels it produces (:meth:`Op.out_size`,
:meth:`Op.out_channels`), the input region it reads for an output region (:meth:`Op.need`
and, with residual slots, :meth:`Op.plan_back`), and how it advances a tile
(:meth:`Op.run` on a :class:`TileState`). The ops reuse the module's own weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .groupnorm import combine, gn_apply, tile_stats
from .patch import Patch, Rect, Size, bbox, crop

Stats = Dict[int, Tuple[torch.Tensor, torch.Tensor]]  # GroupNorm op index -> (mean, var), (B, G) float64


class TileState:
    """One tile's computation in progress: what :meth:`Op.run` reads and advances.

    Attributes:
        p: the stream.
        saved: open residual slots, ``slot -> Patch``.
        plan: the tile's regions: ``plan.ins[i]``/``plan.outs[i]`` of ``ops[i]`` and
            ``plan.keep`` (slot -> region kept by its ``Save``), see ``planning.Plan``.
        sizes: ``sizes[i]`` = feature-map size at the input of ``ops[i]``.
        stats: shared GroupNorm statistics, or ``None`` for a single tile (each GroupNorm
            then measures what it sees, which is the whole feature map).
        owned: the stream is a fresh tensor nobody else holds, so it may be overwritten.
    """

    __slots__ = ("p", "saved", "plan", "sizes", "stats", "owned")

    def __init__(self, p: Patch, saved: Dict[int, Patch], plan, sizes, stats: Optional[Stats]):
        self.p, self.saved, self.plan, self.sizes, self.stats = p, saved, plan, sizes, stats
        self.owned = False


class Op:
    """A step of a program. ``need`` maps an output region to the input region it reads
    (clipped to the input size); ``forward`` computes exactly the output region."""

    fresh_output = False  # run() leaves a new tensor nobody else holds (the next op may reuse it)

    def out_size(self, size: Size) -> Size:
        return size

    def out_channels(self, c: int) -> int:
        return c

    def need(self, r: Rect, size_in: Size) -> Rect:
        return r

    def plan_back(self, need: Rect, size_in: Size, slot_need: Dict[int, Rect], keep: Dict[int, Rect]) -> Rect:
        """One step of backward planning: the input region for output ``need``. Residual
        ops also update ``slot_need`` (slot -> region its branch must cover) and ``keep``
        (slot -> region its ``Save`` keeps)."""
        return self.need(need, size_in)

    def forward(self, p: Patch, r: Rect, size_in: Size) -> Patch:  # pragma: no cover
        raise NotImplementedError(f"{type(self).__name__} does not run on a tile")

    def run(self, st: TileState, i: int) -> None:
        """Advance ``st`` through this op, which is ``ops[i]`` of its segment."""
        st.p = self.forward(crop(st.p, st.plan.ins[i]), st.plan.outs[i], st.sizes[i])


def _pair(v) -> Tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


class Conv(Op):
    """``nn.Conv2d`` with zero padding, optionally preceded by an explicit zero pre-pad of
    ``(before, after)`` pixels on both axes (SD's downsampler pads ``(0, 1)``)."""

    def __init__(self, conv: nn.Module, pre_pad: Tuple[int, int] = (0, 0), name: str = "conv"):
        if not isinstance(conv, nn.Conv2d):
            raise NotImplementedError(f"{name}: expected nn.Conv2d, got {type(conv).__name__}")
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise NotImplementedError(f"{name}: only explicit zero padding is supported")
        self.name = name
        self.weight, self.bias = conv.weight, conv.bias
        self.stride = _pair(conv.stride)
        self.dilation = _pair(conv.dilation)
        self.groups = conv.groups
        k, p = _pair(conv.kernel_size), _pair(conv.padding)
        self.k = tuple(d * (kk - 1) + 1 for d, kk in zip(self.dilation, k))
        self.pb = tuple(pp + pre_pad[0] for pp in p)
        self.pa = tuple(pp + pre_pad[1] for pp in p)
        self.c_out = conv.out_channels

    def out_size(self, size: Size) -> Size:
        return tuple((n + b + a - k) // s + 1 for n, b, a, k, s in zip(size, self.pb, self.pa, self.k, self.stride))

    def out_channels(self, c: int) -> int:
        return self.c_out

    def _rows(self, o0: int, o1: int, ax: int) -> Tuple[int, int]:
        s, pb, k = self.stride[ax], self.pb[ax], self.k[ax]
        return o0 * s - pb, (o1 - 1) * s - pb + k

    def need(self, r: Rect, size_in: Size) -> Rect:
        out = []
        for ax in (0, 1):
            r0, r1 = self._rows(r[2 * ax], r[2 * ax + 1], ax)
            out += [max(r0, 0), min(r1, size_in[ax])]
        return tuple(out)

    def forward(self, p: Patch, r: Rect, size_in: Size) -> Patch:
        sl, pads = [], []
        for ax, origin in ((0, p.y0), (1, p.x0)):
            r0, r1 = self._rows(r[2 * ax], r[2 * ax + 1], ax)
            c0, c1 = max(r0, 0), min(r1, size_in[ax])
            sl.append(slice(c0 - origin, c1 - origin))
            pads.append((c0 - r0, r1 - c1))  # zeros outside the image, as the full conv sees
        t = p.t[:, :, sl[0], sl[1]]
        if t.dtype != self.weight.dtype:  # a VAE with some layers kept in another dtype
            t = t.to(self.weight.dtype)
        if self.stride == (1, 1):
            # let the convolution zero-pad both sides by the larger amount (no copy of the
            # input) and drop the extra output rows/columns next to the tile's inner edges
            pad = (max(pads[0]), max(pads[1]))
            y = F.conv2d(t, self.weight, self.bias, 1, pad, self.dilation, self.groups)
            oy, ox = pad[0] - pads[0][0], pad[1] - pads[1][0]
            y = y[:, :, oy : oy + r[1] - r[0], ox : ox + r[3] - r[2]]
        elif pads[0][0] == pads[0][1] and pads[1][0] == pads[1][1]:
            y = F.conv2d(t, self.weight, self.bias, self.stride, (pads[0][0], pads[1][0]), self.dilation, self.groups)
        else:
            t = F.pad(t, (pads[1][0], pads[1][1], pads[0][0], pads[0][1]))
            y = F.conv2d(t, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)
        return Patch(y, r[0], r[2])


class Up(Op):
    """Nearest-neighbour upsampling by 2."""

    def out_size(self, size: Size) -> Size:
        return (size[0] * 2, size[1] * 2)

    def need(self, r: Rect, size_in: Size) -> Rect:
        return (r[0] // 2, (r[1] - 1) // 2 + 1, r[2] // 2, (r[3] - 1) // 2 + 1)

    def forward(self, p: Patch, r: Rect, size_in: Size) -> Patch:
        src = self.need(r, size_in)
        t = F.interpolate(crop(p, src).t, scale_factor=2.0, mode="nearest")
        up = Patch(t, 2 * src[0], 2 * src[2])
        return crop(up, r)


class Pool(Op):
    """2x2 average pooling, stride 2 (downsampler without convolution)."""

    def out_size(self, size: Size) -> Size:
        return (size[0] // 2, size[1] // 2)

    def need(self, r: Rect, size_in: Size) -> Rect:
        return (2 * r[0], 2 * r[1], 2 * r[2], 2 * r[3])

    def forward(self, p: Patch, r: Rect, size_in: Size) -> Patch:
        t = F.avg_pool2d(crop(p, self.need(r, size_in)).t, kernel_size=2, stride=2)
        return Patch(t, r[0], r[2])


class Act(Op):
    """A pointwise activation (module or function)."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]):
        self.fn = fn
        self.inplace = bool(getattr(fn, "inplace", False))
        self.silu = fn is F.silu or type(fn) is nn.SiLU

    def forward(self, p: Patch, r: Rect, size_in: Size, owned: bool = False) -> Patch:
        """``owned``: the input is a fresh tensor nobody else holds, so it may be overwritten."""
        t = crop(p, r).t
        if self.silu and owned and t.is_contiguous():
            return Patch(F.silu(t, inplace=True), r[0], r[2])
        if self.inplace:  # never write into a view of a shared buffer
            t = t.clone()
        return Patch(self.fn(t), r[0], r[2])

    def run(self, st: TileState, i: int) -> None:
        st.p = self.forward(st.p, st.plan.outs[i], st.sizes[i], owned=st.owned)


class Norm(Op):
    """GroupNorm applied with statistics shared by all tiles."""

    fresh_output = True  # gn_apply writes a new tensor

    def __init__(self, gn: nn.Module, name: str = "norm"):
        if not isinstance(gn, nn.GroupNorm):
            raise NotImplementedError(f"{name}: expected nn.GroupNorm, got {type(gn).__name__}")
        self.gn = gn
        self.groups = gn.num_groups
        self.eps = gn.eps
        self.name = name

    def run(self, st: TileState, i: int) -> None:
        q = crop(st.p, st.plan.outs[i])
        if st.stats is None and (self.gn.weight is None or self.gn.weight.dtype == q.t.dtype):
            # one tile sees the whole feature map: the module's own kernel, as the plain pass runs it
            st.p = Patch(F.group_norm(q.t, self.groups, self.gn.weight, self.gn.bias, self.eps), q.y0, q.x0)
            return
        mean, var = combine([tile_stats(q.t, self.groups)]) if st.stats is None else st.stats[i]
        st.p = Patch(gn_apply(q.t, self.gn, mean, var), q.y0, q.x0)


class Save(Op):
    """Keep the current stream for a later :class:`AddSkip` with the same slot."""

    def __init__(self, slot: int):
        self.slot = slot

    def plan_back(self, need: Rect, size_in: Size, slot_need: Dict[int, Rect], keep: Dict[int, Rect]) -> Rect:
        s = slot_need.pop(self.slot, None)
        if s is not None:  # the stream here feeds both the main path and the skip branch
            need = bbox(need, s)
            keep[self.slot] = need
        return need

    def run(self, st: TileState, i: int) -> None:
        if self.slot in st.plan.keep:
            st.saved[self.slot] = st.p
        st.p = crop(st.p, st.plan.outs[i])


class AddSkip(Op):
    """``out = (shortcut(saved) + stream) / scale``."""

    def __init__(self, slot: int, shortcut: Optional[Conv], scale: float = 1.0):
        self.slot, self.shortcut, self.scale = slot, shortcut, float(scale)

    def skip_need(self, r: Rect, size_in: Size) -> Rect:
        return self.shortcut.need(r, size_in) if self.shortcut is not None else r

    def plan_back(self, need: Rect, size_in: Size, slot_need: Dict[int, Rect], keep: Dict[int, Rect]) -> Rect:
        slot_need[self.slot] = self.skip_need(need, size_in)
        return need

    def run(self, st: TileState, i: int) -> None:
        r = st.plan.outs[i]
        s = st.saved.pop(self.slot)
        sc = self.shortcut.forward(s, r, st.sizes[i]) if self.shortcut is not None else crop(s, r)
        del s
        y = sc.t + crop(st.p, r).t
        if self.scale != 1.0:
            y = y / self.scale
        st.p = Patch(y, r[0], r[2])


@dataclass
class AttnSpec:
    """Single- or multi-head spatial self-attention over all pixels (needs the whole map)."""

    norm: Optional[nn.GroupNorm]
    wq: torch.Tensor
    bq: Optional[torch.Tensor]
    wk: torch.Tensor
    bk: Optional[torch.Tensor]
    wv: torch.Tensor
    bv: Optional[torch.Tensor]
    wo: torch.Tensor
    bo: Optional[torch.Tensor]
    heads: int
    residual: bool = True
    rescale: float = 1.0


class Global(Op):
    """Self-attention: global, so it never runs on a tile; the planner gives it a segment of
    its own, run on the whole buffer by ``attention.run_attention``."""

    def __init__(self, spec: AttnSpec, name: str = "attn"):
        self.spec, self.name = spec, name
