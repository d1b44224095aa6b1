"""Exact self-attention (the VAE mid block) over the whole latent-resolution buffer.

GroupNorm statistics over the full buffer, K and V for all tokens, then queries in row
chunks through ``scaled_dot_product_attention``, written back in place. With
``TiledVAEConfig.offload`` K and V stay in host memory and are streamed to the device in
blocks (online softmax), so device memory stays bounded.
"""

from __future__ import annotations

import logging
from typing import Tuple

import torch
import torch.nn.functional as F

from .groupnorm import combine, gn_apply, tile_stats
from .ops import AttnSpec
from .runtime import MIB, Run, free_cache, is_oom

log = logging.getLogger(__package__)


def attend_blocks(q: torch.Tensor, K: torch.Tensor, V: torch.Tensor, block: int) -> torch.Tensor:
    """``softmax(q K^T / sqrt(d)) V`` with K and V ``(B, heads, N, d)`` held elsewhere (host
    memory) and brought to ``q``'s device ``block`` keys at a time (online softmax, float32)."""
    scale = q.shape[-1] ** -0.5
    qf = q.float() * scale
    m = torch.full(q.shape[:-1] + (1,), float("-inf"), device=q.device)
    l = torch.zeros_like(m)
    acc = torch.zeros(q.shape, device=q.device, dtype=torch.float32)
    for j in range(0, K.shape[2], block):
        k = K[:, :, j : j + block].to(q.device).float()
        v = V[:, :, j : j + block].to(q.device).float()
        s = qf @ k.transpose(-1, -2)
        m_new = torch.maximum(m, s.amax(dim=-1, keepdim=True))
        p = torch.exp(s - m_new)
        corr = torch.exp(m - m_new)
        l = l * corr + p.sum(dim=-1, keepdim=True)
        acc = acc * corr + p @ v
        m = m_new
        del k, v, s, p
    return (acc / l).to(q.dtype)


def run_attention(spec: AttnSpec, buf: torch.Tensor, run: Run) -> torch.Tensor:
    """Exact self-attention over all pixels of ``buf`` ``(B, C, H, W)``, written in place.
    Out of memory halves the chunk budget and starts over, down to 1 MiB."""
    B, C, H, W = buf.shape
    N = H * W
    heads = spec.heads
    d = spec.wq.shape[0] // heads
    elt = torch.finfo(run.dtype).bits // 8
    chunk_bytes = run.cfg.attention_chunk_mib * MIB
    while True:
        try:
            stats = None
            rows = max(1, min(H, chunk_bytes // max(1, W * C * 8 * B)))
            if spec.norm is not None:
                parts = [tile_stats(buf[:, :, r : r + rows].to(run.device), spec.norm.num_groups)
                         for r in range(0, H, rows)]
                stats = combine(parts)

            def normed(r0: int, r1: int) -> Tuple[torch.Tensor, torch.Tensor]:
                x = buf[:, :, r0:r1].to(device=run.device, dtype=run.dtype)
                xn = gn_apply(x, spec.norm, *stats) if spec.norm is not None else x
                return x, xn.flatten(2).transpose(1, 2).to(spec.wq.dtype)  # (B, n, C)

            def heads_of(t: torch.Tensor) -> torch.Tensor:
                return t.reshape(B, t.shape[1], heads, d).transpose(1, 2)

            kv_dev = run.buf_device  # the compute device unless offloading
            K = torch.empty((B, heads, N, d), device=kv_dev, dtype=run.dtype)
            V = torch.empty((B, heads, N, d), device=kv_dev, dtype=run.dtype)
            for r in range(0, H, rows):
                r1 = min(H, r + rows)
                _, tok = normed(r, r1)
                K[:, :, r * W : r1 * W] = heads_of(F.linear(tok, spec.wk, spec.bk))
                V[:, :, r * W : r1 * W] = heads_of(F.linear(tok, spec.wv, spec.bv))
                del tok
            streamed = kv_dev != run.device
            kblock = max(1, min(N, chunk_bytes // max(1, 4 * B * heads * (2 * d + W * 64))))
            keys = kblock if streamed else N  # scores are (queries x keys)
            qrows = max(1, min(H, chunk_bytes // max(1, W * keys * heads * max(elt, 4) * B)))
            for r in range(0, H, qrows):
                run.check()
                r1 = min(H, r + qrows)
                x, tok = normed(r, r1)
                q = heads_of(F.linear(tok, spec.wq, spec.bq))
                o = attend_blocks(q, K, V, kblock) if streamed else F.scaled_dot_product_attention(q, K, V)
                o = o.transpose(1, 2).reshape(B, -1, heads * d).to(q.dtype)
                o = F.linear(o, spec.wo, spec.bo).transpose(1, 2).reshape(B, C, r1 - r, W)
                if spec.residual:
                    o = o + x
                if spec.rescale != 1.0:
                    o = o / spec.rescale
                buf[:, :, r:r1] = o.to(buf.device)
                del x, tok, q, o
            run.tick()  # counted in run.total by execute
            return buf
        except Exception as exc:  # noqa: BLE001 - only OOM is handled
            if not is_oom(exc) or chunk_bytes <= MIB:
                raise
        K = V = None
        free_cache(run.device)
        chunk_bytes //= 2
        log.warning("tiled VAE: out of memory in attention; retrying with %d MiB chunks", chunk_bytes // MIB)
