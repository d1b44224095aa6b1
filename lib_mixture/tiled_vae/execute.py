"""Execution: a program's segments run in order; a tiled segment runs its tiles over
``K + 1`` passes (one per GroupNorm to gather the shared statistics, the last writes the
output), each tile resuming from its stash where one fits the budget, and retrying with
smaller tiles after out of memory.

Pass ``k`` recomputes each tile up to GroupNorm ``k`` with the already-final statistics of
GroupNorms ``0..k-1`` and measures that GroupNorm's statistics on the tile's *core* only,
so each pixel is counted exactly once; :func:`groupnorm.combine_arrays` joins the tiles.
"""

from __future__ import annotations

import logging
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from .attention import run_attention
from .config import ProgressFn, StopFn, TiledVAEConfig
from .groupnorm import combine_arrays, tile_stats
from .ops import Op, Stats, TileState
from .patch import Patch, Rect, crop
from .planning import Plan, Segment, core_at, grid, open_slots, plan
from .runtime import Run, free_cache, is_oom
from .sizing import keeps, prepare, state_bytes

log = logging.getLogger(__package__)

State = Tuple[Patch, Dict[int, Patch]]  # stream and open residual slots at a position


def run_ops(seg: Segment, pl: Plan, start: int, end: int, p: Patch, saved: Dict[int, Patch],
            stats: Optional[Stats]) -> State:
    """Run ``seg.ops[start:end]`` on the stream ``p`` and open slots ``saved``, planned by ``pl``."""
    st = TileState(p, saved, pl, seg.sizes, stats)
    for i in range(start, end):
        op = seg.ops[i]
        op.run(st, i)
        st.owned = op.fresh_output
    return st.p, st.saved


def _to(state: State, dev: torch.device) -> State:
    """``state`` on ``dev``: copied from a stash in host memory; a stash on the device as it is (a
    resumed stream is not ``owned``, so no op overwrites it)."""
    p, saved = state
    return Patch(p.t.to(dev), p.y0, p.x0), {s: Patch(v.t.to(dev), v.y0, v.x0) for s, v in saved.items()}


def run_tile(seg: Segment, src: torch.Tensor, core: Rect, end: int, stats: Optional[Stats], run: Run,
             start: int = 0, state: Optional[State] = None, stash_plan: Optional[Plan] = None) -> State:
    """Run ``seg.ops[start:end]`` for the tile with core ``core`` (at ``seg.ref``).

    The input is ``src`` ``(B, C, H, W)`` when ``start == 0``, else ``state`` (a stash taken
    at ``start``). ``stats[op_index] = (mean, var)`` for every GroupNorm in the range;
    ``stats=None`` means "single tile": each GroupNorm uses the statistics of the tensor it
    sees, which then is the whole feature map. Returns the stream at ``end`` (covering the
    core at ``seg.sizes[end]``, or the regions of ``stash_plan`` when given, so the result
    can be stashed) and the residual slots still open there.
    """
    if stash_plan is not None:
        target = stash_plan.ins[end]
        slot_targets = {s: stash_plan.keep[s] for s, _ in open_slots(seg, end) if s in stash_plan.keep}
    else:
        target, slot_targets = core_at(core, seg.ref, seg.sizes[end]), None
    pl = plan(seg, end, target, slot_targets)
    if state is None:
        r0 = pl.ins[0] if end else target
        x = src[:, :, r0[0] : r0[1], r0[2] : r0[3]].to(device=run.device, dtype=run.dtype)
        p, saved = Patch(x, r0[0], r0[2]), {}
        del x
    else:
        p, saved = _to(state, run.device)
    return run_ops(seg, pl, start, end, p, saved, stats)


def run_segment(seg: Segment, src: torch.Tensor, tile: int, run: Run, stash_budget: int = 0) -> torch.Tensor:
    """Run one tiled segment over ``src`` ``(B, C, H, W)`` with tiles of edge ``tile`` and a
    stash of at most ``stash_budget`` bytes; returns the full output buffer.

    Each tile resumes from its own stash (the position it was taken at, or the segment's
    input without one); after a pass a tile's new stash replaces its old one when the whole
    stash stays within the budget (`sizing.keeps`), so as many tiles as fit skip the
    recompute and the others resume from an older stash or from the input."""
    B = src.shape[0]
    H, W = seg.out_size
    n = len(seg.ops)
    elt = torch.finfo(run.dtype).bits // 8
    views = run.stash_device == run.device  # nothing copied: a stream may be a view of a kept slot
    dst = torch.empty((B, seg.chans[-1], H, W), device=run.buf_device, dtype=run.dtype)
    stats: Stats = {}
    k = 0  # next pass: 0..len(norms)-1 gather statistics, len(norms) writes the output
    retry = False
    while True:
        cores = grid(seg.ref, tile)
        single = len(cores) == 1
        passes_left = 1 if single else len(seg.norms) + 1 - k
        planned = passes_left * len(cores)
        if retry:  # the first try is counted in run.total by execute
            run.total += planned
        done_before = run.done
        stash: List[Optional[State]] = [None] * len(cores)
        pos, held, total = [0] * len(cores), [0] * len(cores), 0  # per tile: stash position, bytes
        final_plans = [plan(seg, n, core_at(c, seg.ref, seg.sizes[-1])) for c in cores] \
            if stash_budget and not single else []
        try:
            if single:
                run.check()
                p, _ = run_tile(seg, src, cores[0], n, None, run)
                dst[:] = p.t.to(run.buf_device)
                run.tick()
                return dst
            while k <= len(seg.norms):
                final = k == len(seg.norms)
                end = n if final else seg.norms[k]
                if not final:  # one preallocated record per pass: no small tensors kept per tile
                    t_n = torch.zeros(len(cores), dtype=torch.float64)
                    t_mean = torch.zeros((len(cores), B, seg.ops[end].groups), dtype=torch.float64)
                    t_var = torch.zeros_like(t_mean)
                for i, core in enumerate(cores):
                    run.check()
                    new = state_bytes(seg, final_plans[i], end, elt, B, views) if final_plans and not final else 0
                    write = bool(final_plans) and not final and keeps(total, held[i], new, stash_budget)
                    state = stash[i]
                    if write or final:
                        stash[i] = None  # consumed: replaced below, or no longer needed
                    p, saved = run_tile(seg, src, core, end, stats, run, pos[i] if state is not None else 0,
                                        state, final_plans[i] if write else None)
                    c = core_at(core, seg.ref, seg.sizes[end])
                    if final:
                        dst[:, :, c[0] : c[1], c[2] : c[3]] = crop(p, c).t.to(run.buf_device)
                    else:
                        ts = tile_stats(crop(p, c).t, seg.ops[end].groups)
                        t_n[i], t_mean[i], t_var[i] = float(ts.n), ts.mean.cpu(), ts.var.cpu()
                        del ts
                    if write:
                        stash[i] = _to((p, saved), run.stash_device)
                        total += new - held[i]
                        held[i], pos[i] = new, end
                        run.stash_peak = max(run.stash_peak, total)
                    del p, saved, state
                    run.tick()
                if not final:
                    stats[end] = combine_arrays(t_n, t_mean, t_var)
                k += 1
            return dst
        except Exception as exc:  # noqa: BLE001 - only OOM is handled
            if not is_oom(exc) or tile <= run.cfg.min_tile_size:
                raise
            new_tile = max(run.cfg.min_tile_size, tile // 2)
            log.warning("tiled VAE: out of memory with tile_size=%d; retrying this pass with tile_size=%d",
                        tile, new_tile)
        # outside the except block, so the traceback (and its tile tensors) is gone; the
        # smaller tiles start without a stash, and with half of it (what did not fit is gone)
        stash = []
        free_cache(run.device)
        run.total -= planned - (run.done - done_before)
        tile, stash_budget, retry = new_tile, stash_budget // 2, True


def steps(segs: List[Segment], sized: List[Tuple[int, int]]) -> int:
    """The progress steps of a call: a tile of one pass each, one per attention op."""
    total = 0
    for s, (t, _) in zip(segs, sized):
        n = 1 if s.is_global else len(grid(s.ref, t))
        total += n if n == 1 else n * (len(s.norms) + 1)
    return total


def execute(ops: List[Op], x: torch.Tensor, module: nn.Module, cfg: TiledVAEConfig, what: str,
            on_progress: Optional[ProgressFn], should_stop: Optional[StopFn]) -> torch.Tensor:
    """Run the program ``ops`` on ``x`` ``(B, C, H, W)`` on the device and in the dtype of
    ``module``'s parameters; ``what`` names the input in error messages."""
    param = next(module.parameters())
    device, dtype = param.device, param.dtype
    segs, sized = prepare(ops, x.shape, cfg, device, dtype, what)
    log.debug("tiled VAE %s: %d segments, (tile size, stash bytes) %s", what, len(segs), sized)
    run = Run(cfg, device, dtype, on_progress, should_stop)
    run.total = steps(segs, sized)
    with torch.no_grad():
        buf = x
        for s, (t, stash) in zip(segs, sized):
            if s.is_global:
                if buf is x:
                    buf = x.to(device=run.buf_device, dtype=dtype, copy=True)
                buf = run_attention(s.ops[0].spec, buf, run)
            else:
                buf = run_segment(s, buf, t, run, stash)
        return buf
