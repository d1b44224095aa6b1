"""Exact GroupNorm over tiles: per-tile statistics, their combination by the law of total
variance, and the normalisation with given statistics."""

from __future__ import annotations

from typing import Sequence, Tuple

import torch
from torch import nn


class GroupStats:
    """Per-(sample, group) ``n, mean, var`` (float64) of one tile's core."""

    __slots__ = ("n", "mean", "var")

    def __init__(self, n: int, mean: torch.Tensor, var: torch.Tensor):
        self.n, self.mean, self.var = n, mean, var


def tile_stats(x: torch.Tensor, groups: int) -> GroupStats:
    """Statistics of ``x`` ``(B, C, h, w)`` per (sample, group), a few groups at a time so the
    upcast copy stays small: float64 on the CPU, float32 elsewhere (GPUs are slow at
    float64; ``var_mean`` is a one-pass Welford there). Either way fp16 cannot overflow, and
    the tiles are combined in float64."""
    B, C = x.shape[:2]
    cg = C // groups
    step = max(1, min(groups, (1 << 22) // max(1, cg * x.shape[-1] * x.shape[-2] * B)))
    acc = torch.float64 if x.device.type == "cpu" else torch.float32
    means, vars_ = [], []
    for g0 in range(0, groups, step):
        g1 = min(groups, g0 + step)
        xs = x[:, g0 * cg : g1 * cg].to(acc).reshape(B, g1 - g0, -1)
        v, m = torch.var_mean(xs, dim=-1, unbiased=False)
        means.append(m.double())
        vars_.append(v.double())
    return GroupStats(cg * x.shape[-1] * x.shape[-2], torch.cat(means, 1), torch.cat(vars_, 1))


def combine(parts: Sequence[GroupStats]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Law of total variance over tiles:
    ``mean = sum n_i mean_i / N``; ``var = sum n_i (var_i + (mean_i - mean)^2) / N``."""
    n = torch.tensor([float(p.n) for p in parts], dtype=torch.float64, device=parts[0].mean.device)
    return combine_arrays(n, torch.stack([p.mean for p in parts]), torch.stack([p.var for p in parts]))


def combine_arrays(n: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """:func:`combine` on stacked per-tile values: ``n`` ``(T,)``, ``mean``/``var``
    ``(T, B, G)``, float64. Returns the ``(B, G)`` mean and (biased) variance."""
    w = n.view(-1, 1, 1)
    N = n.sum()
    m = (w * mean).sum(0) / N
    v = (w * (var + (mean - m) ** 2)).sum(0) / N
    return m, v


def gn_apply(x: torch.Tensor, gn: nn.GroupNorm, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """``GroupNorm`` of ``x`` ``(B, C, h, w)`` with given per-(sample, group) statistics."""
    B, C = x.shape[:2]
    G = gn.num_groups
    rstd = torch.rsqrt(var + gn.eps)  # float64
    rep = C // G
    scale = rstd.repeat_interleave(rep, dim=1)
    shift = -mean.repeat_interleave(rep, dim=1) * scale
    if gn.affine:
        # the statistics may live on the CPU (combined there) while the weights are on the GPU
        w = gn.weight.detach().to(device=scale.device, dtype=torch.float64)
        scale = scale * w
        shift = shift * w + gn.bias.detach().to(device=scale.device, dtype=torch.float64)
    scale = scale.to(device=x.device, dtype=torch.float32).view(B, C, 1, 1)
    shift = shift.to(device=x.device, dtype=torch.float32).view(B, C, 1, 1)
    if x.dtype == torch.float32:
        return torch.addcmul(shift, x, scale)
    out = torch.empty_like(x)
    step = max(1, C // 4)
    for c0 in range(0, C, step):  # float32 math on a quarter of the channels at a time
        c1 = min(C, c0 + step)
        out[:, c0:c1] = torch.addcmul(shift[:, c0:c1], x[:, c0:c1], scale[:, c0:c1]).to(x.dtype)
    return out
