"""Model adapters: a VAE's encoder or decoder walked into a flat program of :mod:`.ops`.

Three flavours: diffusers ``AutoencoderKL`` (``mid_block``, ``up_blocks``...), the ldm/sgm
``first_stage_model`` used by A1111 (``mid.block_1``, ``up[i].block``...), and plain
``nn.Sequential`` networks such as TAESD. Anything else raises ``NotImplementedError``
naming the module, so callers can fall back to the plain VAE.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .ops import Act, AddSkip, AttnSpec, Conv, Global, Norm, Op, Pool, Save, Up


class Builder:
    """Appends ops to a program; one residual slot number per ``Save``/``AddSkip`` pair."""

    def __init__(self):
        self.ops: List[Op] = []
        self._slot = 0

    def conv(self, m, pre_pad=(0, 0), name="conv"):
        self.ops.append(Conv(m, pre_pad, name))

    def norm(self, m, name="norm"):
        self.ops.append(Norm(m, name))

    def act(self, fn):
        self.ops.append(Act(fn))

    def save(self) -> int:
        """Open a residual slot on the current stream; returns its number."""
        self._slot += 1
        self.ops.append(Save(self._slot))
        return self._slot

    def down(self, conv: Optional[nn.Module], pre_pad, name: str) -> None:
        """A downsampler: the strided convolution, or 2x2 average pooling without one."""
        if conv is not None:
            self.conv(conv, pre_pad, name=name)
        else:
            self.ops.append(Pool())

    def up(self, conv: Optional[nn.Module], name: str) -> None:
        """An upsampler: nearest x2, then the convolution if any."""
        self.ops.append(Up())
        if conv is not None:
            self.conv(conv, name=name)

    def out_head(self, norm, act, conv, prefix: str, norm_name: str) -> None:
        """The closing ``norm -> act -> conv_out`` of an encoder or decoder."""
        self.norm(norm, f"{prefix}.{norm_name}")
        self.act(act)
        self.conv(conv, name=f"{prefix}.conv_out")

    def resnet(self, norm1, act, conv1, norm2, conv2, shortcut, scale, name):
        s = self.save()
        self.norm(norm1, name + ".norm1")
        self.act(act)
        self.conv(conv1, name=name + ".conv1")
        self.norm(norm2, name + ".norm2")
        self.act(act)
        self.conv(conv2, name=name + ".conv2")
        sc = Conv(shortcut, name=name + ".shortcut") if shortcut is not None else None
        self.ops.append(AddSkip(s, sc, scale))


# ---- diffusers AutoencoderKL ------------------------------------------------------------


def _diffusers_resnet(b: Builder, r: nn.Module, name: str) -> None:
    for attr in ("norm1", "conv1", "norm2", "conv2", "nonlinearity"):
        if not hasattr(r, attr):
            raise NotImplementedError(f"{name}: not a diffusers ResnetBlock2D ({type(r).__name__})")
    if getattr(r, "upsample", None) is not None or getattr(r, "downsample", None) is not None:
        raise NotImplementedError(f"{name}: resnets with built-in up/downsampling are not supported")
    if getattr(r, "time_embedding_norm", "default") not in ("default", "group", "layer", None):
        raise NotImplementedError(f"{name}: time_embedding_norm={r.time_embedding_norm!r} is not supported")
    b.resnet(r.norm1, r.nonlinearity, r.conv1, r.norm2, r.conv2, getattr(r, "conv_shortcut", None),
             getattr(r, "output_scale_factor", 1.0), name)


def _diffusers_attn(b: Builder, a: nn.Module, name: str) -> None:
    for attr in ("spatial_norm", "norm_q", "norm_k", "norm_cross"):
        if getattr(a, attr, None) not in (None, False):
            raise NotImplementedError(f"{name}: attention with {attr} is not supported")
    if getattr(a, "is_cross_attention", False):
        raise NotImplementedError(f"{name}: cross-attention is not supported")
    out = a.to_out[0]
    spec = AttnSpec(
        norm=getattr(a, "group_norm", None),
        wq=a.to_q.weight, bq=a.to_q.bias, wk=a.to_k.weight, bk=a.to_k.bias,
        wv=a.to_v.weight, bv=a.to_v.bias, wo=out.weight, bo=out.bias,
        heads=int(a.heads), residual=bool(getattr(a, "residual_connection", True)),
        rescale=float(getattr(a, "rescale_output_factor", 1.0)),
    )
    if spec.norm is not None and not isinstance(spec.norm, nn.GroupNorm):
        raise NotImplementedError(f"{name}: attention norm must be GroupNorm")
    b.ops.append(Global(spec, name))


def _diffusers_mid(b: Builder, mid: nn.Module, name: str) -> None:
    _diffusers_resnet(b, mid.resnets[0], f"{name}.resnets.0")
    for i, (attn, res) in enumerate(zip(mid.attentions, mid.resnets[1:])):
        if attn is not None:
            _diffusers_attn(b, attn, f"{name}.attentions.{i}")
        _diffusers_resnet(b, res, f"{name}.resnets.{i + 1}")


def _diffusers_block_resnets(b: Builder, blk: nn.Module, name: str) -> None:
    attns = getattr(blk, "attentions", None)
    for i, res in enumerate(blk.resnets):
        _diffusers_resnet(b, res, f"{name}.resnets.{i}")
        if attns is not None and attns[i] is not None:
            _diffusers_attn(b, attns[i], f"{name}.attentions.{i}")


def _diffusers_decoder(b: Builder, dec: nn.Module) -> None:
    b.conv(dec.conv_in, name="decoder.conv_in")
    _diffusers_mid(b, dec.mid_block, "decoder.mid_block")
    for i, blk in enumerate(dec.up_blocks):
        _diffusers_block_resnets(b, blk, f"decoder.up_blocks.{i}")
        for u in getattr(blk, "upsamplers", None) or []:
            if getattr(u, "use_conv_transpose", False) or getattr(u, "norm", None) is not None \
                    or not getattr(u, "interpolate", True):
                raise NotImplementedError(f"decoder.up_blocks.{i}: unsupported Upsample2D options")
            conv = (u.conv if getattr(u, "name", "conv") == "conv" else u.Conv2d_0) \
                if getattr(u, "use_conv", False) else None
            b.up(conv, f"decoder.up_blocks.{i}.upsample")
    b.out_head(dec.conv_norm_out, dec.conv_act, dec.conv_out, "decoder", "conv_norm_out")


def _diffusers_encoder(b: Builder, enc: nn.Module) -> None:
    b.conv(enc.conv_in, name="encoder.conv_in")
    for i, blk in enumerate(enc.down_blocks):
        _diffusers_block_resnets(b, blk, f"encoder.down_blocks.{i}")
        for d in getattr(blk, "downsamplers", None) or []:
            if getattr(d, "norm", None) is not None:
                raise NotImplementedError(f"encoder.down_blocks.{i}: Downsample2D with a norm is not supported")
            pre = (0, 1) if getattr(d, "padding", 1) == 0 else (0, 0)
            b.down(d.conv if getattr(d, "use_conv", False) else None, pre, f"encoder.down_blocks.{i}.downsample")
    _diffusers_mid(b, enc.mid_block, "encoder.mid_block")
    b.out_head(enc.conv_norm_out, enc.conv_act, enc.conv_out, "encoder", "conv_norm_out")


# ---- ldm / sgm first_stage_model (A1111) -------------------------------------------------


def _ldm_resnet(b: Builder, r: nn.Module, name: str) -> None:
    for attr in ("norm1", "conv1", "norm2", "conv2"):
        if not hasattr(r, attr):
            raise NotImplementedError(f"{name}: not an ldm ResnetBlock ({type(r).__name__})")
    shortcut = None
    if getattr(r, "in_channels", None) != getattr(r, "out_channels", None):
        shortcut = getattr(r, "conv_shortcut", None) if getattr(r, "use_conv_shortcut", False) else None
        shortcut = shortcut if shortcut is not None else getattr(r, "nin_shortcut", None)
    b.resnet(r.norm1, F.silu, r.conv1, r.norm2, r.conv2, shortcut, 1.0, name)


def _ldm_attn(b: Builder, a: nn.Module, name: str) -> None:
    if isinstance(a, nn.Identity):
        return
    for attr in ("norm", "q", "k", "v", "proj_out"):
        if not hasattr(a, attr):
            raise NotImplementedError(f"{name}: unsupported attention block {type(a).__name__}")

    def lin(conv):  # the 1x1 convolutions as linear layers
        return conv.weight.reshape(conv.weight.shape[0], -1), conv.bias

    (wq, bq), (wk, bk), (wv, bv), (wo, bo) = (lin(a.q), lin(a.k), lin(a.v), lin(a.proj_out))
    b.ops.append(Global(AttnSpec(a.norm, wq, bq, wk, bk, wv, bv, wo, bo, heads=1), name))


def _ldm_mid(b: Builder, mid: nn.Module, name: str) -> None:
    _ldm_resnet(b, mid.block_1, f"{name}.block_1")
    if hasattr(mid, "attn_1"):
        _ldm_attn(b, mid.attn_1, f"{name}.attn_1")
    _ldm_resnet(b, mid.block_2, f"{name}.block_2")


def _ldm_level(b: Builder, level: nn.Module, name: str) -> None:
    """The resnets (each followed by its attention, if the level has any) of one level."""
    attns = getattr(level, "attn", [])
    for i, blk in enumerate(level.block):
        _ldm_resnet(b, blk, f"{name}.block.{i}")
        if len(attns) > 0:
            _ldm_attn(b, attns[i], f"{name}.attn.{i}")


def _ldm_decoder(b: Builder, dec: nn.Module) -> None:
    b.conv(dec.conv_in, name="decoder.conv_in")
    _ldm_mid(b, dec.mid, "decoder.mid")
    for i_level in reversed(range(len(dec.up))):
        level = dec.up[i_level]
        _ldm_level(b, level, f"decoder.up.{i_level}")
        if i_level != 0 and hasattr(level, "upsample"):
            us = level.upsample
            b.up(us.conv if getattr(us, "with_conv", True) else None, f"decoder.up.{i_level}.upsample")
    if getattr(dec, "give_pre_end", False):
        return
    b.out_head(dec.norm_out, F.silu, dec.conv_out, "decoder", "norm_out")
    if getattr(dec, "tanh_out", False):
        b.act(torch.tanh)


def _ldm_encoder(b: Builder, enc: nn.Module) -> None:
    b.conv(enc.conv_in, name="encoder.conv_in")
    n = len(enc.down)
    for i_level in range(n):
        level = enc.down[i_level]
        _ldm_level(b, level, f"encoder.down.{i_level}")
        if i_level != n - 1 and hasattr(level, "downsample"):
            ds = level.downsample
            b.down(ds.conv if getattr(ds, "with_conv", True) else None, (0, 1), f"encoder.down.{i_level}.downsample")
    _ldm_mid(b, enc.mid, "encoder.mid")
    b.out_head(enc.norm_out, F.silu, enc.conv_out, "encoder", "norm_out")


# ---- plain nn.Sequential (TAESD) --------------------------------------------------------

_POINTWISE = (nn.ReLU, nn.SiLU, nn.Tanh, nn.Identity, nn.LeakyReLU, nn.GELU)


def _sequential(b: Builder, seq: nn.Sequential, name: str) -> None:
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
            b.up(None, n)
        elif isinstance(getattr(m, "conv", None), nn.Sequential) and hasattr(m, "skip") and hasattr(m, "fuse"):
            slot = b.save()
            _sequential(b, m.conv, n + ".conv")
            if not isinstance(m.skip, (nn.Conv2d, nn.Identity)):
                raise NotImplementedError(f"{n}.skip: expected a convolution or identity")
            shortcut = Conv(m.skip, name=n + ".skip") if isinstance(m.skip, nn.Conv2d) else None
            b.ops.append(AddSkip(slot, shortcut))
            b.act(m.fuse)
        else:
            raise NotImplementedError(f"{n}: unsupported layer {type(m).__name__} in a sequential VAE")


# ---- entry points -------------------------------------------------------------------------


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


def decoder_program(vae) -> Tuple[List[Op], nn.Module]:
    """The decoder's program (``post_quant_conv`` first, when the VAE has one) and the module
    whose parameters give the compute device and dtype."""
    _, dec, _, pqc = _resolve(vae)
    if dec is None:
        raise ValueError("this VAE has no decoder")
    b = Builder()
    if pqc is not None:
        b.conv(pqc, name="post_quant_conv")
    flavor = _flavor(dec)
    if flavor == "sequential":
        _sequential(b, dec, "decoder")
    else:
        (_diffusers_decoder if flavor == "diffusers" else _ldm_decoder)(b, dec)
    return b.ops, dec


def encoder_program(vae) -> Tuple[List[Op], nn.Module]:
    """The encoder's program (``quant_conv`` last, when the VAE has one) and its module."""
    enc, _, qc, _ = _resolve(vae)
    if enc is None:
        raise ValueError("this VAE has no encoder")
    b = Builder()
    flavor = _flavor(enc)
    if flavor == "sequential":
        _sequential(b, enc, "encoder")
    else:
        (_diffusers_encoder if flavor == "diffusers" else _ldm_encoder)(b, enc)
    if qc is not None:
        b.conv(qc, name="quant_conv")
    return b.ops, enc

