"""Tiled VAE encode/decode with exact GroupNorm statistics and tile-bounded memory.

Why this exists
---------------
A VAE decode of a large image holds activations of ``128 x H x W`` (SD) at full image
resolution, which exhausts GPU memory long before the UNet does. Running the decoder
tile by tile bounds that memory, but every ``GroupNorm`` then normalises each tile with
its own statistics, which shifts colours per tile and draws seams.

How it works
------------
1. **Adapter.** The VAE's encoder or decoder is walked into a flat *program* of primitive
   ops that reuse the module's own weights: ``Conv`` (any kernel/stride/dilation, with the
   asymmetric ``(0, 1, 0, 1)`` pre-pad of SD's downsampler), nearest ``Up`` x2, ``Pool``,
   ``Norm`` (GroupNorm), ``Act`` (pointwise), ``Save``/``AddSkip`` (residual connections)
   and ``Global`` (self-attention). Three adapters exist: diffusers ``AutoencoderKL``
   (``Encoder``/``Decoder`` with ``mid_block``, ``up_blocks``...), the ldm/sgm
   ``first_stage_model`` used by A1111 (``mid.block_1``, ``up[i].block``...), and plain
   ``nn.Sequential`` networks such as TAESD (no GroupNorm: one pass, exact tiles).
2. **Segments.** The program is cut (a) around every self-attention op, which is global and
   runs on a materialised buffer, and (b) where the data sits at the coarsest (latent)
   resolution next to a change of resolution. Everything at latent resolution is cheap and
   is kept as a full buffer; the expensive full-resolution part is one *tiled segment*.
3. **Exact tiles.** A tiled segment partitions its coarsest resolution into non-overlapping
   *cores*. For each core the required input region is planned backwards through the ops
   (receptive field, clipped at the image border where the real zero padding is
   re-created). Tiles therefore need no blending: the core of every tile is computed from
   exactly the inputs the full pass would use, and is written without overlap.
4. **Shared GroupNorm statistics, multi-pass.** A segment with ``K`` GroupNorms on more than
   one tile takes ``K + 1`` passes over the tiles. Pass ``k`` recomputes each tile up to
   GroupNorm ``k`` (using the already-final statistics of GroupNorms ``0..k-1``) and measures
   per-tile, per-(sample, group) ``n_i, mean_i, var_i`` on the tile's *core* only,
   so each pixel is counted exactly once. The tiles are combined with the law of total
   variance ``mean = sum n_i mean_i / N``,
   ``var = sum n_i (var_i + (mean_i - mean)^2) / N``. The last pass writes the output. This
   trades compute (prefixes are recomputed, roughly ``K/2`` times the segment's cost) for
   memory that depends on the tile size only. A segment that fits in one tile is run once.
   ``TiledVAEConfig.stash_mib`` buys the compute back with host memory: each tile's
   activations (and open residual branches) are kept between passes when the whole stash
   fits the budget, so a pass resumes where the previous one stopped.
5. **Attention** (the VAE mid block; 1 head, at latent resolution) is computed exactly over
   the whole latent: GroupNorm statistics over the full buffer, K and V for all tokens,
   queries in row chunks through ``scaled_dot_product_attention``, written back in place.
   This, with the latent-resolution buffers between stages, is the only memory that grows
   with the image: ``C_mid x h x w`` values per buffer (SD: ``C_mid = 512``), at most three
   at a time (buffer, K, V). With ``TiledVAEConfig.offload`` they live in host memory and K/V
   are streamed to the device in blocks (online softmax), so device memory stays bounded.

The result equals the untiled computation up to float rounding (different summation order
in convolutions of different shapes and in the statistics).

Public API: :func:`tiled_decode`, :func:`tiled_encode`, :class:`TiledVAEConfig`,
:class:`TiledVAEInterrupted`, :func:`moments_to_latent`, :func:`plan_tiled_vae`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

__all__ = [
    "TiledVAEConfig",
    "TiledVAEInterrupted",
    "tiled_decode",
    "tiled_encode",
    "moments_to_latent",
    "plan_tiled_vae",
]

Region = Tuple[int, int, int, int]  # (y0, y1, x0, x1), half-open, in pixels of its own resolution
Size = Tuple[int, int]  # (H, W)

ProgressFn = Callable[[int, int], None]
StopFn = Callable[[], object]

_MIB = 1 << 20


# ----------------------------------------------------------------------------------------
# configuration and errors
# ----------------------------------------------------------------------------------------


@dataclass
class TiledVAEConfig:
    """Settings of :func:`tiled_decode` / :func:`tiled_encode`.

    Attributes:
        tile_size: edge of a tile's core in **latent** pixels (1 latent px = 8 image px for
            SD VAEs), for the full-resolution part of the network. ``None`` picks it from
            the free device memory on CUDA (``torch.cuda.mem_get_info``) and uses
            ``cpu_tile_size`` elsewhere. The latent-resolution parts get larger tiles with
            the same memory unless ``scale_low_res_tiles`` is off.
        min_tile_size: smallest tile edge the out-of-memory retry goes down to.
        max_tiles: refuse (``ValueError``) plans with more tiles per pass than this.
        memory_fraction: share of the free CUDA memory the automatic tile size plans for.
        cpu_tile_size: automatic tile edge off CUDA (CPU, MPS...).
        scale_low_res_tiles: give the latent-resolution segments the tile edge that uses the
            same memory as ``tile_size`` at full resolution (fewer, larger tiles).
        attention_chunk_mib: memory for one chunk of attention scores (queries x keys).
        offload: keep the latent-resolution buffers and the output on the CPU; tiles are
            copied to the compute device one at a time. The result is returned on the CPU.
        stash_mib: host (CPU) memory, in MiB, for keeping every tile's activations between
            the GroupNorm passes. 0 (default) recomputes each tile from the segment input in
            every pass: memory independent of the image, about ``K/2`` times the compute for
            ``K`` GroupNorms. With a stash, each pass resumes from the previous one where the
            whole stash fits in the budget (roughly 2-3 full-resolution activations for
            single-pass speed); the result is the same either way.
    """

    tile_size: Optional[int] = None
    min_tile_size: int = 8
    max_tiles: int = 4096
    memory_fraction: float = 0.75
    cpu_tile_size: int = 64
    scale_low_res_tiles: bool = True
    attention_chunk_mib: int = 256
    offload: bool = False
    stash_mib: int = 0

    def validate(self) -> None:
        """Raise ``ValueError`` naming the bad field."""
        if self.tile_size is not None and (not isinstance(self.tile_size, int) or self.tile_size < 1):
            raise ValueError(f"tile_size must be a positive int (latent pixels) or None, got {self.tile_size!r}")
        if not isinstance(self.min_tile_size, int) or self.min_tile_size < 1:
            raise ValueError(f"min_tile_size must be a positive int, got {self.min_tile_size!r}")
        if self.tile_size is not None and self.tile_size < self.min_tile_size:
            raise ValueError(
                f"tile_size={self.tile_size} is below min_tile_size={self.min_tile_size}; "
                "raise tile_size or lower min_tile_size"
            )
        if not isinstance(self.max_tiles, int) or self.max_tiles < 1:
            raise ValueError(f"max_tiles must be a positive int, got {self.max_tiles!r}")
        if not (0.0 < float(self.memory_fraction) <= 1.0):
            raise ValueError(f"memory_fraction must be in (0, 1], got {self.memory_fraction!r}")
        if not isinstance(self.cpu_tile_size, int) or self.cpu_tile_size < 1:
            raise ValueError(f"cpu_tile_size must be a positive int, got {self.cpu_tile_size!r}")
        if not isinstance(self.stash_mib, int) or self.stash_mib < 0:
            raise ValueError(f"stash_mib must be an int >= 0, got {self.stash_mib!r}")
        if not isinstance(self.attention_chunk_mib, int) or self.attention_chunk_mib < 1:
            raise ValueError(f"attention_chunk_mib must be a positive int, got {self.attention_chunk_mib!r}")


class TiledVAEInterrupted(RuntimeError):
    """Raised when ``should_stop()`` returns a true value."""


def _is_oom(exc: BaseException) -> bool:
    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _free_cache(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------------------
# patches and regions
# ----------------------------------------------------------------------------------------


class _Patch:
    """A tensor ``(B, C, h, w)`` holding rows ``y0..y0+h`` and columns ``x0..x0+w`` of a
    feature map at one resolution."""

    __slots__ = ("t", "y0", "x0")

    def __init__(self, t: torch.Tensor, y0: int, x0: int):
        self.t, self.y0, self.x0 = t, y0, x0

    @property
    def region(self) -> Region:
        return (self.y0, self.y0 + self.t.shape[-2], self.x0, self.x0 + self.t.shape[-1])


def _crop(p: _Patch, r: Region) -> _Patch:
    y0, y1, x0, x1 = p.region
    if r[0] < y0 or r[1] > y1 or r[2] < x0 or r[3] > x1:
        raise RuntimeError(f"tiled VAE planning error: region {r} is not inside patch {p.region}")
    if r == p.region:
        return p
    return _Patch(p.t[:, :, r[0] - y0 : r[1] - y0, r[2] - x0 : r[3] - x0], r[0], r[2])


def _bbox(a: Region, b: Region) -> Region:
    return (min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3]))


def _area(r: Region) -> int:
    return max(0, r[1] - r[0]) * max(0, r[3] - r[2])


def _pair(v) -> Tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


# ----------------------------------------------------------------------------------------
# primitive ops (the adapters build programs out of these)
# ----------------------------------------------------------------------------------------


class _Op:
    """A step of a program. ``need`` maps an output region to the input region it reads
    (clipped to the input size); ``forward`` computes exactly the output region."""

    def out_size(self, size: Size) -> Size:
        return size

    def out_channels(self, c: int) -> int:
        return c

    def need(self, r: Region, size_in: Size) -> Region:
        return r

    def forward(self, p: _Patch, r: Region, size_in: Size) -> _Patch:  # pragma: no cover
        raise NotImplementedError


class _Conv(_Op):
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

    def need(self, r: Region, size_in: Size) -> Region:
        out = []
        for ax in (0, 1):
            r0, r1 = self._rows(r[2 * ax], r[2 * ax + 1], ax)
            out += [max(r0, 0), min(r1, size_in[ax])]
        return tuple(out)

    def forward(self, p: _Patch, r: Region, size_in: Size) -> _Patch:
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
        return _Patch(y, r[0], r[2])


class _Up(_Op):
    """Nearest-neighbour upsampling by 2."""

    def out_size(self, size: Size) -> Size:
        return (size[0] * 2, size[1] * 2)

    def need(self, r: Region, size_in: Size) -> Region:
        return (r[0] // 2, (r[1] - 1) // 2 + 1, r[2] // 2, (r[3] - 1) // 2 + 1)

    def forward(self, p: _Patch, r: Region, size_in: Size) -> _Patch:
        src = self.need(r, size_in)
        t = F.interpolate(_crop(p, src).t, scale_factor=2.0, mode="nearest")
        up = _Patch(t, 2 * src[0], 2 * src[2])
        return _crop(up, r)


class _Pool(_Op):
    """2x2 average pooling, stride 2 (downsampler without convolution)."""

    def out_size(self, size: Size) -> Size:
        return (size[0] // 2, size[1] // 2)

    def need(self, r: Region, size_in: Size) -> Region:
        return (2 * r[0], 2 * r[1], 2 * r[2], 2 * r[3])

    def forward(self, p: _Patch, r: Region, size_in: Size) -> _Patch:
        t = F.avg_pool2d(_crop(p, self.need(r, size_in)).t, kernel_size=2, stride=2)
        return _Patch(t, r[0], r[2])


class _Act(_Op):
    """A pointwise activation (module or function)."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]):
        self.fn = fn
        self.inplace = bool(getattr(fn, "inplace", False))
        self.silu = fn is F.silu or type(fn) is nn.SiLU

    def forward(self, p: _Patch, r: Region, size_in: Size, owned: bool = False) -> _Patch:
        """``owned``: the input is a fresh tensor nobody else holds, so it may be overwritten."""
        t = _crop(p, r).t
        if self.silu and owned and t.is_contiguous():
            return _Patch(F.silu(t, inplace=True), r[0], r[2])
        if self.inplace:  # never write into a view of a shared buffer
            t = t.clone()
        return _Patch(self.fn(t), r[0], r[2])


class _Norm(_Op):
    """GroupNorm applied with statistics shared by all tiles."""

    def __init__(self, gn: nn.Module, name: str = "norm"):
        if not isinstance(gn, nn.GroupNorm):
            raise NotImplementedError(f"{name}: expected nn.GroupNorm, got {type(gn).__name__}")
        self.gn = gn
        self.groups = gn.num_groups
        self.eps = gn.eps
        self.name = name


class _Save(_Op):
    """Keep the current stream for a later :class:`_AddSkip` with the same slot."""

    def __init__(self, slot: int):
        self.slot = slot


class _AddSkip(_Op):
    """``out = (shortcut(saved) + stream) / scale``."""

    def __init__(self, slot: int, shortcut: Optional[_Conv], scale: float = 1.0):
        self.slot, self.shortcut, self.scale = slot, shortcut, float(scale)

    def skip_need(self, r: Region, size_in: Size) -> Region:
        return self.shortcut.need(r, size_in) if self.shortcut is not None else r


@dataclass
class _AttnSpec:
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


class _Global(_Op):
    def __init__(self, spec: _AttnSpec, name: str = "attn"):
        self.spec, self.name = spec, name


# ----------------------------------------------------------------------------------------
# adapters: diffusers AutoencoderKL and ldm / sgm first_stage_model
# ----------------------------------------------------------------------------------------


class _Builder:
    def __init__(self):
        self.ops: List[_Op] = []
        self._slot = 0

    def conv(self, m, pre_pad=(0, 0), name="conv"):
        self.ops.append(_Conv(m, pre_pad, name))

    def norm(self, m, name="norm"):
        self.ops.append(_Norm(m, name))

    def act(self, fn):
        self.ops.append(_Act(fn))

    def resnet(self, norm1, act, conv1, norm2, conv2, shortcut, scale, name):
        self._slot += 1
        s = self._slot
        self.ops += [_Save(s)]
        self.norm(norm1, name + ".norm1")
        self.act(act)
        self.conv(conv1, name=name + ".conv1")
        self.norm(norm2, name + ".norm2")
        self.act(act)
        self.conv(conv2, name=name + ".conv2")
        sc = _Conv(shortcut, name=name + ".shortcut") if shortcut is not None else None
        self.ops.append(_AddSkip(s, sc, scale))


def _diffusers_resnet(b: _Builder, r: nn.Module, name: str) -> None:
    for attr in ("norm1", "conv1", "norm2", "conv2", "nonlinearity"):
        if not hasattr(r, attr):
            raise NotImplementedError(f"{name}: not a diffusers ResnetBlock2D ({type(r).__name__})")
    if getattr(r, "upsample", None) is not None or getattr(r, "downsample", None) is not None:
        raise NotImplementedError(f"{name}: resnets with built-in up/downsampling are not supported")
    if getattr(r, "time_embedding_norm", "default") not in ("default", "group", "layer", None):
        raise NotImplementedError(f"{name}: time_embedding_norm={r.time_embedding_norm!r} is not supported")
    b.resnet(r.norm1, r.nonlinearity, r.conv1, r.norm2, r.conv2, getattr(r, "conv_shortcut", None),
             getattr(r, "output_scale_factor", 1.0), name)


def _diffusers_attn(b: _Builder, a: nn.Module, name: str) -> None:
    for attr in ("spatial_norm", "norm_q", "norm_k", "norm_cross"):
        if getattr(a, attr, None) not in (None, False):
            raise NotImplementedError(f"{name}: attention with {attr} is not supported")
    if getattr(a, "is_cross_attention", False):
        raise NotImplementedError(f"{name}: cross-attention is not supported")
    out = a.to_out[0]
    spec = _AttnSpec(
        norm=getattr(a, "group_norm", None),
        wq=a.to_q.weight, bq=a.to_q.bias, wk=a.to_k.weight, bk=a.to_k.bias,
        wv=a.to_v.weight, bv=a.to_v.bias, wo=out.weight, bo=out.bias,
        heads=int(a.heads), residual=bool(getattr(a, "residual_connection", True)),
        rescale=float(getattr(a, "rescale_output_factor", 1.0)),
    )
    if spec.norm is not None and not isinstance(spec.norm, nn.GroupNorm):
        raise NotImplementedError(f"{name}: attention norm must be GroupNorm")
    b.ops.append(_Global(spec, name))


def _diffusers_mid(b: _Builder, mid: nn.Module, name: str) -> None:
    _diffusers_resnet(b, mid.resnets[0], f"{name}.resnets.0")
    for i, (attn, res) in enumerate(zip(mid.attentions, mid.resnets[1:])):
        if attn is not None:
            _diffusers_attn(b, attn, f"{name}.attentions.{i}")
        _diffusers_resnet(b, res, f"{name}.resnets.{i + 1}")


def _diffusers_block_resnets(b: _Builder, blk: nn.Module, name: str) -> None:
    attns = getattr(blk, "attentions", None)
    for i, res in enumerate(blk.resnets):
        _diffusers_resnet(b, res, f"{name}.resnets.{i}")
        if attns is not None and attns[i] is not None:
            _diffusers_attn(b, attns[i], f"{name}.attentions.{i}")


def _diffusers_decoder(b: _Builder, dec: nn.Module) -> None:
    b.conv(dec.conv_in, name="decoder.conv_in")
    _diffusers_mid(b, dec.mid_block, "decoder.mid_block")
    for i, blk in enumerate(dec.up_blocks):
        _diffusers_block_resnets(b, blk, f"decoder.up_blocks.{i}")
        for u in getattr(blk, "upsamplers", None) or []:
            if getattr(u, "use_conv_transpose", False) or getattr(u, "norm", None) is not None \
                    or not getattr(u, "interpolate", True):
                raise NotImplementedError(f"decoder.up_blocks.{i}: unsupported Upsample2D options")
            b.ops.append(_Up())
            if getattr(u, "use_conv", False):
                b.conv(u.conv if getattr(u, "name", "conv") == "conv" else u.Conv2d_0,
                       name=f"decoder.up_blocks.{i}.upsample")
    b.norm(dec.conv_norm_out, "decoder.conv_norm_out")
    b.act(dec.conv_act)
    b.conv(dec.conv_out, name="decoder.conv_out")


def _diffusers_encoder(b: _Builder, enc: nn.Module) -> None:
    b.conv(enc.conv_in, name="encoder.conv_in")
    for i, blk in enumerate(enc.down_blocks):
        _diffusers_block_resnets(b, blk, f"encoder.down_blocks.{i}")
        for d in getattr(blk, "downsamplers", None) or []:
            if getattr(d, "norm", None) is not None:
                raise NotImplementedError(f"encoder.down_blocks.{i}: Downsample2D with a norm is not supported")
            if getattr(d, "use_conv", False):
                pre = (0, 1) if getattr(d, "padding", 1) == 0 else (0, 0)
                b.conv(d.conv, pre, name=f"encoder.down_blocks.{i}.downsample")
            else:
                b.ops.append(_Pool())
    _diffusers_mid(b, enc.mid_block, "encoder.mid_block")
    b.norm(enc.conv_norm_out, "encoder.conv_norm_out")
    b.act(enc.conv_act)
    b.conv(enc.conv_out, name="encoder.conv_out")


def _ldm_resnet(b: _Builder, r: nn.Module, name: str) -> None:
    for attr in ("norm1", "conv1", "norm2", "conv2"):
        if not hasattr(r, attr):
            raise NotImplementedError(f"{name}: not an ldm ResnetBlock ({type(r).__name__})")
    shortcut = None
    if getattr(r, "in_channels", None) != getattr(r, "out_channels", None):
        shortcut = getattr(r, "conv_shortcut", None) if getattr(r, "use_conv_shortcut", False) else None
        shortcut = shortcut if shortcut is not None else getattr(r, "nin_shortcut", None)
    b.resnet(r.norm1, F.silu, r.conv1, r.norm2, r.conv2, shortcut, 1.0, name)


def _ldm_attn(b: _Builder, a: nn.Module, name: str) -> None:
    if isinstance(a, nn.Identity):
        return
    for attr in ("norm", "q", "k", "v", "proj_out"):
        if not hasattr(a, attr):
            raise NotImplementedError(f"{name}: unsupported attention block {type(a).__name__}")

    def lin(conv):
        return conv.weight.reshape(conv.weight.shape[0], -1), conv.bias

    (wq, bq), (wk, bk), (wv, bv), (wo, bo) = (lin(a.q), lin(a.k), lin(a.v), lin(a.proj_out))
    b.ops.append(_Global(_AttnSpec(a.norm, wq, bq, wk, bk, wv, bv, wo, bo, heads=1), name))


def _ldm_mid(b: _Builder, mid: nn.Module, name: str) -> None:
    _ldm_resnet(b, mid.block_1, f"{name}.block_1")
    if hasattr(mid, "attn_1"):
        _ldm_attn(b, mid.attn_1, f"{name}.attn_1")
    _ldm_resnet(b, mid.block_2, f"{name}.block_2")


def _ldm_decoder(b: _Builder, dec: nn.Module) -> None:
    b.conv(dec.conv_in, name="decoder.conv_in")
    _ldm_mid(b, dec.mid, "decoder.mid")
    for i_level in reversed(range(len(dec.up))):
        level = dec.up[i_level]
        attns = getattr(level, "attn", [])
        for i, blk in enumerate(level.block):
            _ldm_resnet(b, blk, f"decoder.up.{i_level}.block.{i}")
            if len(attns) > 0:
                _ldm_attn(b, attns[i], f"decoder.up.{i_level}.attn.{i}")
        if i_level != 0 and hasattr(level, "upsample"):
            b.ops.append(_Up())
            if getattr(level.upsample, "with_conv", True):
                b.conv(level.upsample.conv, name=f"decoder.up.{i_level}.upsample")
    if getattr(dec, "give_pre_end", False):
        return
    b.norm(dec.norm_out, "decoder.norm_out")
    b.act(F.silu)
    b.conv(dec.conv_out, name="decoder.conv_out")
    if getattr(dec, "tanh_out", False):
        b.act(torch.tanh)


def _ldm_encoder(b: _Builder, enc: nn.Module) -> None:
    b.conv(enc.conv_in, name="encoder.conv_in")
    n = len(enc.down)
    for i_level in range(n):
        level = enc.down[i_level]
        attns = getattr(level, "attn", [])
        for i, blk in enumerate(level.block):
            _ldm_resnet(b, blk, f"encoder.down.{i_level}.block.{i}")
            if len(attns) > 0:
                _ldm_attn(b, attns[i], f"encoder.down.{i_level}.attn.{i}")
        if i_level != n - 1 and hasattr(level, "downsample"):
            ds = level.downsample
            if getattr(ds, "with_conv", True):
                b.conv(ds.conv, (0, 1), name=f"encoder.down.{i_level}.downsample")
            else:
                b.ops.append(_Pool())
    _ldm_mid(b, enc.mid, "encoder.mid")
    b.norm(enc.norm_out, "encoder.norm_out")
    b.act(F.silu)
    b.conv(enc.conv_out, name="encoder.conv_out")


_POINTWISE = (nn.ReLU, nn.SiLU, nn.Tanh, nn.Identity, nn.LeakyReLU, nn.GELU)


def _sequential(b: _Builder, seq: nn.Sequential, name: str) -> None:
    """A plain ``nn.Sequential`` of convolutions, pointwise activations, nearest x2 upsampling
    and residual blocks ``fuse(conv(x) + skip(x))``: the TAESD encoder and decoder."""
    for i, m in enumerate(seq):
        n = f"{name}.{i}"
        if isinstance(m, nn.Conv2d):
            b.conv(m, name=n)
        elif isinstance(m, _POINTWISE) or type(m).__name__ == "Clamp":  # TAESD's tanh(x / 3) * 3
            b.act(m)
        elif isinstance(m, nn.Upsample):
            if m.mode != "nearest" or m.size is not None or float(m.scale_factor) != 2.0:
                raise NotImplementedError(f"{n}: only nearest upsampling by 2 is supported")
            b.ops.append(_Up())
        elif isinstance(getattr(m, "conv", None), nn.Sequential) and hasattr(m, "skip") and hasattr(m, "fuse"):
            b._slot += 1
            slot = b._slot
            b.ops.append(_Save(slot))
            _sequential(b, m.conv, n + ".conv")
            if not isinstance(m.skip, (nn.Conv2d, nn.Identity)):
                raise NotImplementedError(f"{n}.skip: expected a convolution or identity")
            shortcut = _Conv(m.skip, name=n + ".skip") if isinstance(m.skip, nn.Conv2d) else None
            b.ops.append(_AddSkip(slot, shortcut))
            b.act(m.fuse)
        else:
            raise NotImplementedError(f"{n}: unsupported layer {type(m).__name__} in a sequential VAE")


def _flavor(m: nn.Module) -> str:
    if isinstance(m, nn.Sequential):
        return "sequential"
    if hasattr(m, "up_blocks") or hasattr(m, "down_blocks"):
        return "diffusers"
    if hasattr(m, "up") or hasattr(m, "down"):
        return "ldm"
    raise NotImplementedError(f"unsupported VAE part {type(m).__name__}: expected a diffusers or ldm Encoder/Decoder")


def _resolve(vae) -> Tuple[Optional[nn.Module], Optional[nn.Module], Optional[nn.Module], Optional[nn.Module]]:
    """``(encoder, decoder, quant_conv, post_quant_conv)`` of a VAE, an A1111 model with
    ``first_stage_model``, or a bare Encoder/Decoder."""
    m = getattr(vae, "first_stage_model", None)
    m = m if isinstance(m, nn.Module) else vae
    if not isinstance(m, nn.Module):
        raise ValueError(f"vae must be a torch module (AutoencoderKL or first_stage_model), got {type(vae).__name__}")
    if isinstance(m, nn.Sequential):  # TAESD: one network, encoder or decoder by the caller's choice
        return m, m, None, None
    if hasattr(m, "up_blocks") or hasattr(m, "up"):
        return None, m, None, None
    if hasattr(m, "down_blocks") or hasattr(m, "down"):
        return m, None, None, None
    enc, dec = getattr(m, "encoder", None), getattr(m, "decoder", None)
    if enc is None and dec is None:
        raise ValueError(f"{type(m).__name__} has neither .encoder nor .decoder; pass an AutoencoderKL-like VAE")
    return enc, dec, getattr(m, "quant_conv", None), getattr(m, "post_quant_conv", None)


def _decoder_program(vae) -> Tuple[List[_Op], nn.Module]:
    _, dec, _, pqc = _resolve(vae)
    if dec is None:
        raise ValueError("this VAE has no decoder")
    b = _Builder()
    if pqc is not None:
        b.conv(pqc, name="post_quant_conv")
    flavor = _flavor(dec)
    if flavor == "sequential":
        _sequential(b, dec, "decoder")
    else:
        (_diffusers_decoder if flavor == "diffusers" else _ldm_decoder)(b, dec)
    return b.ops, dec


def _encoder_program(vae) -> Tuple[List[_Op], nn.Module]:
    enc, _, qc, _ = _resolve(vae)
    if enc is None:
        raise ValueError("this VAE has no encoder")
    b = _Builder()
    flavor = _flavor(enc)
    if flavor == "sequential":
        _sequential(b, enc, "encoder")
    else:
        (_diffusers_encoder if flavor == "diffusers" else _ldm_encoder)(b, enc)
    if qc is not None:
        b.conv(qc, name="quant_conv")
    return b.ops, enc


# ----------------------------------------------------------------------------------------
# GroupNorm statistics
# ----------------------------------------------------------------------------------------


class _GroupStats:
    """Per-(sample, group) ``n, mean, var`` (float64) of one tile's core."""

    __slots__ = ("n", "mean", "var")

    def __init__(self, n: int, mean: torch.Tensor, var: torch.Tensor):
        self.n, self.mean, self.var = n, mean, var


def _tile_stats(x: torch.Tensor, groups: int) -> _GroupStats:
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
    return _GroupStats(cg * x.shape[-1] * x.shape[-2], torch.cat(means, 1), torch.cat(vars_, 1))


def _combine(parts: Sequence[_GroupStats]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Law of total variance over tiles:
    ``mean = sum n_i mean_i / N``; ``var = sum n_i (var_i + (mean_i - mean)^2) / N``."""
    n = torch.tensor([float(p.n) for p in parts], dtype=torch.float64, device=parts[0].mean.device)
    return _combine_arrays(n, torch.stack([p.mean for p in parts]), torch.stack([p.var for p in parts]))


def _combine_arrays(n: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """:func:`_combine` on stacked per-tile values: ``n`` ``(T,)``, ``mean``/``var``
    ``(T, B, G)``, float64. Returns the ``(B, G)`` mean and (biased) variance."""
    w = n.view(-1, 1, 1)
    N = n.sum()
    m = (w * mean).sum(0) / N
    v = (w * (var + (mean - m) ** 2)).sum(0) / N
    return m, v


def _gn_apply(x: torch.Tensor, gn: nn.GroupNorm, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
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


# ----------------------------------------------------------------------------------------
# segments and planning
# ----------------------------------------------------------------------------------------


@dataclass
class _Segment:
    ops: List[_Op]
    sizes: List[Size]  # sizes[i] = size at the input of ops[i]; sizes[-1] = output size
    chans: List[int]  # same for channels
    ref: Size  # coarsest size inside the segment: the tile grid lives there
    ratios: List[Tuple[int, int]]  # sizes[i] // ref, at least 1 (memory estimates)
    norms: List[int]  # op indices of the GroupNorms, in execution order
    is_global: bool = False

    @property
    def out_size(self) -> Size:
        return self.sizes[-1]


def _trace(ops: List[_Op], size: Size, chans: int) -> Tuple[List[Size], List[int]]:
    sizes, cs = [size], [chans]
    for op in ops:
        if isinstance(op, (_Save, _AddSkip, _Norm, _Act, _Global)):
            sizes.append(sizes[-1])
            cs.append(cs[-1])
        else:
            sizes.append(op.out_size(sizes[-1]))
            cs.append(op.out_channels(cs[-1]))
        if sizes[-1][0] < 1 or sizes[-1][1] < 1:
            raise ValueError(f"input of size {size} is too small for this VAE")
    return sizes, cs


def _split(ops: List[_Op], sizes: List[Size], chans: List[int], what: str) -> List[_Segment]:
    """Cut around global ops and where the coarsest resolution meets a change of resolution."""
    n = len(ops)
    coarse = min(sizes, key=lambda s: s[0] * s[1])
    cuts = {0, n}
    open_slots = 0
    for j in range(n + 1):
        if j < n and isinstance(ops[j], _Global):
            cuts.update((j, j + 1))
        if 0 < j < n and open_slots == 0 and sizes[j] == coarse and (sizes[j - 1] != coarse or sizes[j + 1] != coarse):
            cuts.add(j)
        if j < n:
            if isinstance(ops[j], _Save):
                open_slots += 1
            elif isinstance(ops[j], _AddSkip):
                open_slots -= 1
    bounds = sorted(cuts)
    segs = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        if a == b:
            continue
        sub, ss, cs = ops[a:b], sizes[a : b + 1], chans[a : b + 1]
        if len(sub) == 1 and isinstance(sub[0], _Global):
            segs.append(_Segment(sub, ss, cs, ss[0], [(1, 1)] * 2, [], True))
            continue
        ref = min(ss, key=lambda s: s[0] * s[1])
        # Sizes off the VAE's grid (an image of 499 px encodes to 62 latent px) do not
        # divide evenly; the floor ratio only sizes memory estimates, cores use `_core_at`.
        ratios = [(max(1, s[0] // ref[0]), max(1, s[1] // ref[1])) for s in ss]
        norms = [i for i, op in enumerate(sub) if isinstance(op, _Norm)]
        segs.append(_Segment(sub, ss, cs, ref, ratios, norms))
    return segs


@dataclass
class _Plan:
    ins: List[Region]  # ins[i]: region of the stream entering ops[i]
    outs: List[Region]  # outs[i]: region ops[i] produces
    keep: Dict[int, Region]  # slot -> region saved by its _Save (only slots this plan uses)


def _plan(seg: _Segment, end: int, target: Region, slot_targets: Optional[Dict[int, Region]] = None) -> _Plan:
    """Backward receptive-field planning of ``seg.ops[:end]`` so that the stream at position
    ``end`` covers ``target`` and each residual slot still open there covers
    ``slot_targets[slot]`` (regions at ``seg.sizes[end]`` / at the slot's resolution)."""
    ins: List[Region] = [None] * end  # type: ignore[list-item]
    outs: List[Region] = [None] * end  # type: ignore[list-item]
    need = target
    slot_need: Dict[int, Region] = dict(slot_targets or {})
    keep: Dict[int, Region] = {}
    for i in reversed(range(end)):
        op = seg.ops[i]
        outs[i] = need
        if isinstance(op, _AddSkip):
            slot_need[op.slot] = op.skip_need(need, seg.sizes[i])
        elif isinstance(op, _Save):
            s = slot_need.pop(op.slot, None)
            if s is not None:
                need = _bbox(need, s)
                keep[op.slot] = need
        else:
            need = op.need(need, seg.sizes[i])
        ins[i] = need
    return _Plan(ins, outs, keep)


def _open_slots(seg: _Segment, pos: int) -> List[Tuple[int, int]]:
    """``(slot, save_index)`` of the residual slots saved before ``pos`` and not yet added."""
    open_: Dict[int, int] = {}
    for i in range(pos):
        op = seg.ops[i]
        if isinstance(op, _Save):
            open_[op.slot] = i
        elif isinstance(op, _AddSkip):
            open_.pop(op.slot, None)
    return list(open_.items())


def _core_at(core: Region, ref: Size, size: Size) -> Region:
    """The core ``core`` of the grid at ``ref`` mapped to a feature map of ``size``.

    Each cut ``c`` on an axis of length ``n_ref`` goes to ``c * n // n_ref``: exact multiples
    when ``n`` is one (every SD decoder, encoders of images on the 8 px grid), and still a
    partition of the ``n`` pixels when it is not (an encoder's ``n // 2`` per downsampler on a
    499 px image), which is all the exact GroupNorm statistics and the output need."""
    return (core[0] * size[0] // ref[0], core[1] * size[0] // ref[0],
            core[2] * size[1] // ref[1], core[3] * size[1] // ref[1])


def _grid(ref: Size, tile: int) -> List[Region]:
    """Non-overlapping cores covering ``ref``, at most ``tile`` on a side, evenly sized."""

    def cuts(n: int) -> List[int]:
        k = max(1, math.ceil(n / tile))
        return [round(i * n / k) for i in range(k + 1)]

    ys, xs = cuts(ref[0]), cuts(ref[1])
    return [(y0, y1, x0, x1) for y0, y1 in zip(ys[:-1], ys[1:]) for x0, x1 in zip(xs[:-1], xs[1:])]


def _tile_bytes(seg: _Segment, tile: int, elt: int, batch: int) -> int:
    """Estimated peak bytes of one tile of edge ``tile`` (interior tile, full halo)."""
    margin = 4 * tile + 64
    ref = (tile + 2 * margin, tile + 2 * margin)
    vseg = _Segment(seg.ops, [(ref[0] * r[0], ref[1] * r[1]) for r in seg.ratios], seg.chans, ref,
                    seg.ratios, seg.norms)
    n = len(seg.ops)
    pl = _plan(vseg, n, _core_at((margin, margin + tile, margin, margin + tile), ref, vseg.sizes[-1]))
    peak = 0
    open_bytes: Dict[int, int] = {}
    for i, op in enumerate(seg.ops):
        cin, cout = seg.chans[i], seg.chans[i + 1]
        live = _area(pl.ins[i]) * cin + _area(pl.outs[i]) * cout + sum(open_bytes.values())
        if isinstance(op, _Conv):
            live += _area(pl.ins[i]) * cin  # padded copy at image borders
        if isinstance(op, _Save) and op.slot in pl.keep:
            open_bytes[op.slot] = _area(pl.ins[i]) * cin
        if isinstance(op, _AddSkip):
            live += _area(pl.outs[i]) * cout  # shortcut branch
            open_bytes.pop(op.slot, None)
        peak = max(peak, live)
    peak += _area(pl.ins[0]) * seg.chans[0]  # the tile's input copy
    return int(peak * elt * batch * 1.25)


def _fit_tile(seg: _Segment, budget: int, elt: int, batch: int, lo: int) -> int:
    hi = max(seg.ref)
    if _tile_bytes(seg, hi, elt, batch) <= budget:
        return hi
    if _tile_bytes(seg, lo, elt, batch) > budget:
        return lo
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _tile_bytes(seg, mid, elt, batch) <= budget:
            lo = mid
        else:
            hi = mid
    return lo - lo % 8 if lo >= 16 else lo


# ----------------------------------------------------------------------------------------
# execution
# ----------------------------------------------------------------------------------------


class _Run:
    """Progress, interruption and placement for one call."""

    def __init__(self, cfg: TiledVAEConfig, device: torch.device, dtype: torch.dtype,
                 on_progress: Optional[ProgressFn], should_stop: Optional[StopFn]):
        self.cfg, self.device, self.dtype = cfg, device, dtype
        self.buf_device = torch.device("cpu") if cfg.offload else device
        self.stash_device = torch.device("cpu")
        self.on_progress, self.should_stop = on_progress, should_stop
        self.done = 0
        self.total = 0

    def check(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise TiledVAEInterrupted("tiled VAE interrupted")

    def tick(self) -> None:
        self.done += 1
        if self.on_progress is not None:
            self.on_progress(self.done, self.total)


_State = Tuple[_Patch, Dict[int, _Patch]]  # stream and open residual slots at a position


def _run_ops(seg: _Segment, pl: _Plan, start: int, end: int, p: _Patch, saved: Dict[int, _Patch],
             stats: Optional[Dict[int, Tuple[torch.Tensor, torch.Tensor]]]) -> _State:
    for i in range(start, end):
        op = seg.ops[i]
        if isinstance(op, _Save):
            if op.slot in pl.keep:
                saved[op.slot] = p
            p = _crop(p, pl.outs[i])
        elif isinstance(op, _AddSkip):
            s = saved.pop(op.slot)
            sc = op.shortcut.forward(s, pl.outs[i], seg.sizes[i]) if op.shortcut is not None else _crop(s, pl.outs[i])
            del s
            y = sc.t + _crop(p, pl.outs[i]).t
            if op.scale != 1.0:
                y = y / op.scale
            p = _Patch(y, pl.outs[i][0], pl.outs[i][2])
        elif isinstance(op, _Norm):
            q = _crop(p, pl.outs[i])
            if stats is None:
                mean, var = _combine([_tile_stats(q.t, op.groups)])
            else:
                mean, var = stats[i]
            p = _Patch(_gn_apply(q.t, op.gn, mean, var), q.y0, q.x0)
        elif isinstance(op, _Act):
            prev = seg.ops[i - 1] if i > start else None
            p = op.forward(p, pl.outs[i], seg.sizes[i], owned=isinstance(prev, _Norm))
        else:
            p = op.forward(_crop(p, pl.ins[i]), pl.outs[i], seg.sizes[i])
    return p, saved


def _run_tile(seg: _Segment, src: torch.Tensor, core: Region, end: int,
              stats: Optional[Dict[int, Tuple[torch.Tensor, torch.Tensor]]], run: _Run,
              start: int = 0, state: Optional[_State] = None,
              stash_plan: Optional[_Plan] = None) -> _State:
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
        slot_targets = {s: stash_plan.keep[s] for s, _ in _open_slots(seg, end) if s in stash_plan.keep}
    else:
        target, slot_targets = _core_at(core, seg.ref, seg.sizes[end]), None
    pl = _plan(seg, end, target, slot_targets)
    if state is None:
        r0 = pl.ins[0] if end else target
        x = src[:, :, r0[0] : r0[1], r0[2] : r0[3]].to(device=run.device, dtype=run.dtype)
        p, saved = _Patch(x, r0[0], r0[2]), {}
        del x
    else:
        p = _Patch(state[0].t.to(run.device), state[0].y0, state[0].x0)
        saved = {s: _Patch(v.t.to(run.device), v.y0, v.x0) for s, v in state[1].items()}
    return _run_ops(seg, pl, start, end, p, saved, stats)


def _stash_bytes(seg: _Segment, plans: List[_Plan], pos: int, elt: int, batch: int) -> int:
    total = 0
    open_ = _open_slots(seg, pos)
    for pl in plans:
        total += _area(pl.ins[pos]) * seg.chans[pos]
        total += sum(_area(pl.keep[s]) * seg.chans[i] for s, i in open_ if s in pl.keep)
    return total * elt * batch


def _run_segment(seg: _Segment, src: torch.Tensor, tile: int, run: _Run) -> torch.Tensor:
    """Run one tiled segment over ``src`` ``(B, C, H, W)``; returns the full output buffer."""
    B = src.shape[0]
    H, W = seg.out_size
    n = len(seg.ops)
    elt = torch.finfo(run.dtype).bits // 8
    dst = torch.empty((B, seg.chans[-1], H, W), device=run.buf_device, dtype=run.dtype)
    stats: Dict[int, Tuple[torch.Tensor, torch.Tensor]] = {}
    stash_budget = run.cfg.stash_mib * _MIB
    k = 0  # next pass: 0..len(norms)-1 gather statistics, len(norms) writes the output
    while True:
        grid = _grid(seg.ref, tile)
        single = len(grid) == 1
        passes_left = 1 if single else len(seg.norms) + 1 - k
        planned = passes_left * len(grid)
        run.total += planned
        done_before = run.done
        stash: Optional[List[Optional[_State]]] = None
        stash_pos = 0
        final_plans = [_plan(seg, n, _core_at(c, seg.ref, seg.sizes[-1])) for c in grid] if stash_budget and not single else []
        try:
            if single:
                run.check()
                p, _ = _run_tile(seg, src, grid[0], n, None, run)
                dst[:] = p.t.to(run.buf_device)
                run.tick()
                return dst
            while k <= len(seg.norms):
                final = k == len(seg.norms)
                end = n if final else seg.norms[k]
                write = bool(final_plans) and not final and \
                    _stash_bytes(seg, final_plans, end, elt, B) <= stash_budget
                new_stash: List[Optional[_State]] = []
                if not final:  # one preallocated record per pass: no small tensors kept per tile
                    t_n = torch.zeros(len(grid), dtype=torch.float64)
                    t_mean = torch.zeros((len(grid), B, seg.ops[end].groups), dtype=torch.float64)
                    t_var = torch.zeros_like(t_mean)
                for i, core in enumerate(grid):
                    run.check()
                    state = stash[i] if stash is not None else None
                    if write and stash is not None:
                        stash[i] = None  # consumed: the new stash replaces it tile by tile
                    p, saved = _run_tile(seg, src, core, end, stats, run, stash_pos, state,
                                         final_plans[i] if write else None)
                    c = _core_at(core, seg.ref, seg.sizes[end])
                    if final:
                        dst[:, :, c[0] : c[1], c[2] : c[3]] = _crop(p, c).t.to(run.buf_device)
                    else:
                        ts = _tile_stats(_crop(p, c).t, seg.ops[end].groups)
                        t_n[i], t_mean[i], t_var[i] = float(ts.n), ts.mean.cpu(), ts.var.cpu()
                        del ts
                    if write:
                        dev = run.stash_device
                        new_stash.append((_Patch(p.t.to(dev), p.y0, p.x0),
                                          {s: _Patch(v.t.to(dev), v.y0, v.x0) for s, v in saved.items()}))
                    del p, saved, state
                    run.tick()
                if not final:
                    stats[end] = _combine_arrays(t_n, t_mean, t_var)
                if write:
                    stash, stash_pos = new_stash, end
                k += 1
            return dst
        except Exception as exc:  # noqa: BLE001 - only OOM is handled
            if not _is_oom(exc) or tile <= run.cfg.min_tile_size:
                raise
            new = max(run.cfg.min_tile_size, tile // 2)
            log.warning("tiled VAE: out of memory with tile_size=%d; retrying this pass with tile_size=%d",
                        tile, new)
        # outside the except block, so the traceback (and its tile tensors) is gone
        stash = None
        _free_cache(run.device)
        run.total -= planned - (run.done - done_before)
        tile = new


def _attend_blocks(q: torch.Tensor, K: torch.Tensor, V: torch.Tensor, block: int) -> torch.Tensor:
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


def _run_attention(spec: _AttnSpec, buf: torch.Tensor, run: _Run) -> torch.Tensor:
    """Exact self-attention over all pixels of ``buf`` ``(B, C, H, W)``, written in place."""
    B, C, H, W = buf.shape
    N = H * W
    heads = spec.heads
    d = spec.wq.shape[0] // heads
    elt = torch.finfo(run.dtype).bits // 8
    chunk_bytes = run.cfg.attention_chunk_mib * _MIB
    while True:
        try:
            stats = None
            rows = max(1, min(H, chunk_bytes // max(1, W * C * 8 * B)))
            if spec.norm is not None:
                parts = [_tile_stats(buf[:, :, r : r + rows].to(run.device), spec.norm.num_groups)
                         for r in range(0, H, rows)]
                stats = _combine(parts)

            def normed(r0: int, r1: int) -> Tuple[torch.Tensor, torch.Tensor]:
                x = buf[:, :, r0:r1].to(device=run.device, dtype=run.dtype)
                xn = _gn_apply(x, spec.norm, *stats) if spec.norm is not None else x
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
                o = _attend_blocks(q, K, V, kblock) if streamed else F.scaled_dot_product_attention(q, K, V)
                o = o.transpose(1, 2).reshape(B, -1, heads * d).to(q.dtype)
                o = F.linear(o, spec.wo, spec.bo).transpose(1, 2).reshape(B, C, r1 - r, W)
                if spec.residual:
                    o = o + x
                if spec.rescale != 1.0:
                    o = o / spec.rescale
                buf[:, :, r:r1] = o.to(buf.device)
                del x, tok, q, o
            run.total += 1
            run.tick()
            return buf
        except Exception as exc:  # noqa: BLE001 - only OOM is handled
            if not _is_oom(exc) or chunk_bytes <= _MIB:
                raise
        K = V = None
        _free_cache(run.device)
        chunk_bytes //= 2
        log.warning("tiled VAE: out of memory in attention; retrying with %d MiB chunks", chunk_bytes // _MIB)


def _budget(device: torch.device, cfg: TiledVAEConfig) -> Optional[int]:
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return int(free * cfg.memory_fraction)


def _tile_sizes(segs: List[_Segment], cfg: TiledVAEConfig, device: torch.device, elt: int, batch: int) -> List[int]:
    tiled = [s for s in segs if not s.is_global]
    if not tiled:
        return [0] * len(segs)
    lo = cfg.min_tile_size
    budget = None if cfg.tile_size is not None else _budget(device, cfg)
    if budget is None:
        t = cfg.tile_size if cfg.tile_size is not None else cfg.cpu_tile_size
        t = max(t, lo)
        heavy = max(tiled, key=lambda s: _tile_bytes(s, t, elt, batch))
        budget = _tile_bytes(heavy, t, elt, batch)
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
            out.append(_fit_tile(s, max(0, budget - io), elt, batch, lo))
        elif not cfg.scale_low_res_tiles:
            out.append(fixed)
        else:  # the heaviest segment gets `fixed`; lighter ones larger tiles in the same memory
            out.append(max(fixed, _fit_tile(s, budget, elt, batch, lo)))
    return out


def _prepare(ops: List[_Op], shape: Sequence[int], cfg: TiledVAEConfig, device: torch.device,
             dtype: torch.dtype, what: str) -> Tuple[List[_Segment], List[int]]:
    """Segments and their tile sizes for an input of ``shape`` ``(B, C, H, W)``; raises
    ``ValueError`` when the settings cannot handle that size."""
    cfg.validate()
    B = int(shape[0])
    sizes, chans = _trace(ops, (int(shape[2]), int(shape[3])), int(shape[1]))
    segs = _split(ops, sizes, chans, what)
    elt = torch.finfo(dtype).bits // 8
    tiles = _tile_sizes(segs, cfg, device, elt, B)
    budget = None if cfg.offload else _budget(device, cfg)
    for s, t in zip(segs, tiles):
        if s.is_global:
            need = 2 * B * s.sizes[0][0] * s.sizes[0][1] * s.chans[0] * elt
            if budget is not None and need > budget:
                raise ValueError(
                    f"{what} too large for exact global attention: K and V of the "
                    f"{s.sizes[0][0]}x{s.sizes[0][1]} feature map need {need / 2**30:.2f} GiB but "
                    f"{budget / 2**30:.2f} GiB is available; set offload=True (K and V then stay in "
                    "host memory), use a smaller image or free GPU memory"
                )
            continue
        n = len(_grid(s.ref, t))
        if n > cfg.max_tiles:
            raise ValueError(
                f"{what} of {tuple(shape[-2:])} needs {n} tiles per pass at tile_size={t} "
                f"(max_tiles={cfg.max_tiles}); raise tile_size or max_tiles, or use a smaller image"
            )
    return segs, tiles


def _execute(ops: List[_Op], x: torch.Tensor, module: nn.Module, cfg: TiledVAEConfig, what: str,
             on_progress: Optional[ProgressFn], should_stop: Optional[StopFn]) -> torch.Tensor:
    param = next(module.parameters())
    device, dtype = param.device, param.dtype
    segs, tiles = _prepare(ops, x.shape, cfg, device, dtype, what)
    log.debug("tiled VAE %s: %d segments, tile sizes %s", what, len(segs), tiles)
    run = _Run(cfg, device, dtype, on_progress, should_stop)
    with torch.no_grad():
        buf = x
        for s, t in zip(segs, tiles):
            if s.is_global:
                if buf is x:
                    buf = x.to(device=run.buf_device, dtype=dtype, copy=True)
                buf = _run_attention(s.ops[0].spec, buf, run)
            else:
                buf = _run_segment(s, buf, t, run)
        return buf


# ----------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------


def _config(config: Optional[TiledVAEConfig], tile_size: Optional[int]) -> TiledVAEConfig:
    cfg = TiledVAEConfig() if config is None else TiledVAEConfig(**vars(config))
    if tile_size is not None:
        cfg.tile_size = tile_size
    cfg.validate()
    return cfg


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
    if not isinstance(latent, torch.Tensor) or latent.dim() != 4:
        raise ValueError(f"latent must be a (B, C, h, w) tensor, got {getattr(latent, 'shape', type(latent))}")
    ops, module = _decoder_program(vae)
    c_in = next(op for op in ops if isinstance(op, _Conv)).weight.shape[1]
    if latent.shape[1] != c_in:
        raise ValueError(f"latent has {latent.shape[1]} channels but this VAE decodes {c_in}-channel latents")
    if latent.shape[0] < 1 or latent.shape[2] < 1 or latent.shape[3] < 1:
        raise ValueError(f"latent is empty: {tuple(latent.shape)}")
    return _execute(ops, latent, module, cfg, "latent", on_progress, should_stop)


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
    if not isinstance(image, torch.Tensor) or image.dim() != 4:
        raise ValueError(f"image must be a (B, C, H, W) tensor, got {getattr(image, 'shape', type(image))}")
    ops, module = _encoder_program(vae)
    c_in = next(op for op in ops if isinstance(op, _Conv)).weight.shape[1]
    if image.shape[1] != c_in:
        raise ValueError(f"image has {image.shape[1]} channels but this VAE encodes {c_in}-channel images")
    moments = _execute(ops, image, module, cfg, "image", on_progress, should_stop)
    return moments if output == "moments" else moments_to_latent(moments, output, generator)


def plan_tiled_vae(vae, shape: Sequence[int], mode: str = "decode", tile_size: Optional[int] = None,
                   config: Optional[TiledVAEConfig] = None) -> List[dict]:
    """What :func:`tiled_decode` (``mode="decode"``) or :func:`tiled_encode` would do for an
    input of ``shape`` ``(B, C, H, W)``, without running it. One dict per stage, in order:
    ``kind`` ("tiled" or "attention"), ``in_size``/``out_size`` ``(H, W)``, ``in_channels``,
    ``out_channels``, ``tile_size`` (core edge in pixels of the stage's coarsest
    resolution), ``tiles``, ``passes`` (GroupNorm passes + 1, or 1 for a single tile),
    ``out_bytes`` (the full buffer the stage writes) and ``tile_bytes`` (estimated peak of one
    tile). Raises ``ValueError`` like the real call would."""
    cfg = _config(config, tile_size)
    if mode not in ("decode", "encode"):
        raise ValueError(f"mode must be 'decode' or 'encode', got {mode!r}")
    ops, module = _decoder_program(vae) if mode == "decode" else _encoder_program(vae)
    param = next(module.parameters())
    elt = torch.finfo(param.dtype).bits // 8
    segs, tiles = _prepare(ops, shape, cfg, param.device, param.dtype, "latent" if mode == "decode" else "image")
    out = []
    for s, t in zip(segs, tiles):
        n = 1 if s.is_global else len(_grid(s.ref, t))
        out.append(dict(
            kind="attention" if s.is_global else "tiled",
            in_size=s.sizes[0], out_size=s.sizes[-1], in_channels=s.chans[0], out_channels=s.chans[-1],
            tile_size=None if s.is_global else t, tiles=n,
            passes=1 if (s.is_global or n == 1) else len(s.norms) + 1,
            out_bytes=int(shape[0]) * s.chans[-1] * s.sizes[-1][0] * s.sizes[-1][1] * elt,
            tile_bytes=0 if s.is_global else _tile_bytes(s, t, elt, int(shape[0])),
        ))
    return out


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
