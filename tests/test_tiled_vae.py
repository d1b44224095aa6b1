"""Tests of lib_mixture.tiled_vae against the untiled diffusers AutoencoderKL (random weights).

The VAE is small (block_out_channels (16, 16, 32, 32), 8 groups, 1 resnet per down block,
mid-block attention on) so that the whole file runs in well under a minute on 2 CPU cores.
"""

from __future__ import annotations

import logging
import math
import os
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lib_mixture import tiled_vae as tv
from lib_mixture.tiled_vae import attention, execute, groupnorm, sizing
from lib_mixture.tiled_vae.ops import Save

diffusers = pytest.importorskip("diffusers")

TILE = 8  # latent pixels = 64 image pixels


def _make_vae(seed: int = 0) -> "diffusers.AutoencoderKL":
    torch.manual_seed(seed)
    vae = diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 16, 32, 32), layers_per_block=1, norm_num_groups=8,
    ).eval()
    with torch.no_grad():  # non-trivial GroupNorm affine parameters
        for m in vae.modules():
            if isinstance(m, torch.nn.GroupNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    return vae


@pytest.fixture(scope="module")
def vae():
    return _make_vae()


def _latent(h: int, w: int, b: int = 1, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, 4, h, w, generator=g)
    # low-frequency structure so tiles really differ in their statistics
    yy = torch.linspace(-1, 1, h).view(1, 1, h, 1)
    xx = torch.linspace(-1, 1, w).view(1, 1, 1, w)
    return z + 2.0 * yy - 1.5 * xx


def _full_decode(vae, z):
    with torch.no_grad():
        return vae.decode(z).sample


def _psnr(a: torch.Tensor, ref: torch.Tensor) -> float:
    mse = torch.mean((a.double() - ref.double()) ** 2).item()
    rng = (ref.max() - ref.min()).item()
    return float("inf") if mse == 0 else 10 * math.log10(rng * rng / mse)


def _cfg(**kw) -> tv.TiledVAEConfig:
    kw.setdefault("scale_low_res_tiles", False)  # multi-tile latent-resolution segments too
    return tv.TiledVAEConfig(**kw)


@pytest.fixture(scope="module")
def z16():
    return _latent(16, 13)


@pytest.fixture(scope="module")
def ref16(vae, z16):
    return _full_decode(vae, z16)


# ----------------------------------------------------------------------------------------
# exactness
# ----------------------------------------------------------------------------------------


def test_decode_matches_full_decode_multipass(vae, z16, ref16):
    """Default mode (no stash, memory flat): recomputing passes, 2x2 tiles everywhere."""
    out = tv.tiled_decode(vae, z16, tile_size=TILE, config=_cfg())
    assert out.shape == ref16.shape == (1, 3, 128, 104)
    err = (out - ref16).abs().max().item()
    psnr = _psnr(out, ref16)
    print(f"tiled vs full decode: max |err| {err:.2e}, PSNR {psnr:.1f} dB")
    assert err < 1e-4
    assert psnr > 90.0


@pytest.mark.parametrize("stash_mib", [1, 10_000])
def test_decode_with_stash_is_the_same(vae, z16, ref16, stash_mib):
    """A partial (1 MiB: only the small stashes fit) or full stash changes speed, not the result."""
    out = tv.tiled_decode(vae, z16, tile_size=TILE, config=_cfg(stash_mib=stash_mib))
    assert (out - ref16).abs().max().item() < 1e-4


@pytest.mark.parametrize("stash_mib", [1, 10_000])
def test_a_stash_kept_on_the_device_gives_the_stash_in_host_memorys_result(vae, z16, stash_mib):
    """On the device (no copies: a resumed stream is the stashed tensor itself, never overwritten,
    also where a partial stash is resumed by several passes) or in host memory: bit for bit."""
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    for device in devices:
        model, z = vae.to(device), z16.to(device)
        host = tv.tiled_decode(model, z, tile_size=TILE, config=_cfg(stash_mib=stash_mib))
        kept = tv.tiled_decode(model, z, tile_size=TILE, config=_cfg(stash_mib=stash_mib, stash_on_device=True))
        assert torch.equal(host, kept), device
    vae.to("cpu")


def test_decode_batch_and_default_low_res_scaling(vae):
    z = _latent(12, 20, b=2, seed=5)
    ref = _full_decode(vae, z)
    out = tv.tiled_decode(vae, z, tile_size=TILE, config=tv.TiledVAEConfig(stash_mib=10_000))
    assert out.shape == ref.shape
    assert (out - ref).abs().max().item() < 1e-4


def test_single_tile_auto_size_on_cpu(vae):
    z = _latent(8, 8, seed=3)
    ref = _full_decode(vae, z)
    calls = []
    out = tv.tiled_decode(vae, z, on_progress=lambda d, t: calls.append((d, t)))  # cpu_tile_size = 64
    assert (out - ref).abs().max().item() < 1e-4
    assert calls[-1][0] == calls[-1][1] == 4  # 3 single-tile segments + the attention op


def test_encode_matches_full_encode(vae):
    g = torch.Generator().manual_seed(7)
    img = torch.rand(1, 3, 128, 96, generator=g) * 2 - 1
    with torch.no_grad():
        ref = vae.encode(img).latent_dist
    moments = tv.tiled_encode(vae, img, tile_size=TILE, config=_cfg())
    assert moments.shape == ref.parameters.shape == (1, 8, 16, 12)
    err = (moments - ref.parameters).abs().max().item()
    psnr = _psnr(moments, ref.parameters)
    print(f"tiled vs full encode: max |err| {err:.2e}, PSNR {psnr:.1f} dB")
    assert err < 1e-4 and psnr > 90.0
    mean = tv.tiled_encode(vae, img, tile_size=TILE, config=_cfg(stash_mib=10_000), output="mean")
    assert (mean - ref.mean).abs().max().item() < 1e-4
    s1 = tv.tiled_encode(vae, img, config=_cfg(), output="sample", generator=torch.Generator().manual_seed(0))
    assert s1.shape == (1, 4, 16, 12)
    assert (s1 - ref.mean).abs().max().item() < 10 * ref.std.max().item()


@settings(max_examples=12, deadline=None)
@given(h=st.integers(8, 120), w=st.integers(8, 120), tile=st.integers(2, 6), stash=st.booleans(),
       batch=st.integers(1, 2))
def test_encode_any_size_matches_full_encode(vae, h, w, tile, stash, batch):
    """Images off the 8 px grid (a hires fix at 1.3x gives 665x998) encode to exactly the plain
    encoder's latent: its size (the encoder's own floor) and its values."""
    g = torch.Generator().manual_seed(h * 1000 + w)
    img = torch.rand(batch, 3, h, w, generator=g) * 2 - 1
    with torch.no_grad():
        ref = vae.encode(img).latent_dist.parameters
    out = tv.tiled_encode(vae, img, tile_size=tile, config=_cfg(stash_mib=10_000 if stash else 0, min_tile_size=2))
    assert out.shape == ref.shape
    assert (out - ref).abs().max().item() < 1e-4


@settings(max_examples=8, deadline=None)
@given(h=st.integers(1, 17), w=st.integers(1, 17), tile=st.integers(2, 6))
def test_decode_any_latent_size_matches_full_decode(vae, h, w, tile):
    z = _latent(h, w, seed=h * 100 + w)
    ref = _full_decode(vae, z)
    out = tv.tiled_decode(vae, z, tile_size=tile, config=_cfg(min_tile_size=2))
    assert out.shape == ref.shape == (1, 3, 8 * h, 8 * w)
    assert (out - ref).abs().max().item() < 1e-4


# ----------------------------------------------------------------------------------------
# seams
# ----------------------------------------------------------------------------------------


def _naive_tiled_decode(vae, z, tile, pad):
    """The naive approach the seam test must catch: decode overlapping crops independently
    (so every GroupNorm and the attention use per-tile statistics) and keep the cores."""
    f = 8
    out = torch.zeros(z.shape[0], 3, z.shape[2] * f, z.shape[3] * f)
    for y in range(0, z.shape[2], tile):
        for x in range(0, z.shape[3], tile):
            y0, x0 = max(0, y - pad), max(0, x - pad)
            y1, x1 = min(z.shape[2], y + tile + pad), min(z.shape[3], x + tile + pad)
            dec = _full_decode(vae, z[:, :, y0:y1, x0:x1])
            cy, cx = (y - y0) * f, (x - x0) * f
            h, w = min(tile, z.shape[2] - y) * f, min(tile, z.shape[3] - x) * f
            out[:, :, y * f : y * f + h, x * f : x * f + w] = dec[:, :, cy : cy + h, cx : cx + w]
    return out


def _seam_score(out, ref, bounds_px):
    """Error of the pixel-to-pixel differences across tile boundaries, relative to the same
    error elsewhere (median). 1 means boundaries look like the rest of the image."""
    scores = []
    for dim in (-1, -2):
        d_out = out.diff(dim=dim)
        d_ref = ref.diff(dim=dim)
        other = (-2, 1, 0) if dim == -1 else (-1, 1, 0)
        err = (d_out - d_ref).abs().double().mean(dim=other)  # one value per gap j (between j, j+1)
        at = torch.tensor([b - 1 for b in bounds_px])
        mask = torch.ones_like(err, dtype=torch.bool)
        mask[at] = False
        scores.append((err[at].mean() / err[mask].median().clamp_min(1e-12)).item())
    return max(scores)


def _smooth_decoder_vae():
    """Random weights give noise-like images in which a per-tile colour shift hides among the
    pixel-to-pixel differences. Real decoders output locally smooth images; mimic that by
    making every 3x3 decoder convolution a channel mix times a binomial blur."""
    vae = _make_vae(seed=4)
    k = torch.tensor([1.0, 2.0, 1.0])
    k = (k[:, None] * k[None, :]) / 16
    with torch.no_grad():
        for m in vae.decoder.modules():
            if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3):
                m.weight.copy_(m.weight.sum(dim=(2, 3), keepdim=True) * k)
    return vae


def test_seams_do_not_stand_out_and_naive_tiling_is_caught():
    vae = _smooth_decoder_vae()
    z = _latent(16, 16, seed=11)
    ref = _full_decode(vae, z)
    bounds = [TILE * 8]  # 2x2 tiles: boundaries at image px 64
    ours = tv.tiled_decode(vae, z, tile_size=TILE, config=_cfg(stash_mib=10_000))
    naive = _naive_tiled_decode(vae, z, TILE, pad=4)
    s_ours, s_naive = _seam_score(ours, ref, bounds), _seam_score(naive, ref, bounds)
    print(f"seam score (boundary error / typical error): ours {s_ours:.2f}, naive {s_naive:.2f}; "
          f"PSNR ours {_psnr(ours, ref):.1f} dB, naive {_psnr(naive, ref):.1f} dB")
    assert s_naive > 3.0, "the seam metric must flag naive per-tile normalisation"
    assert s_ours < 3.0
    assert _psnr(naive, ref) < 40.0 < _psnr(ours, ref)


# ----------------------------------------------------------------------------------------
# out of memory, dtypes, progress, interruption, errors
# ----------------------------------------------------------------------------------------


def _inject_oom(monkeypatch, max_core: int, exc_factory):
    """Make tiles whose core is larger than ``max_core`` latent px on a side fail like CUDA."""
    real = execute.run_tile
    seen = {"raised": 0, "cores": []}

    def fake(seg, src, core, *a, **k):
        edge = max(core[1] - core[0], core[3] - core[2])
        seen["cores"].append(edge)
        if edge > max_core:
            seen["raised"] += 1
            raise exc_factory()
        return real(seg, src, core, *a, **k)

    monkeypatch.setattr(execute, "run_tile", fake)
    return seen


@pytest.mark.parametrize("factory", [
    lambda: torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    lambda: RuntimeError("CUDA error: out of memory"),
])
def test_oom_retries_with_smaller_tiles(vae, z16, ref16, monkeypatch, caplog, factory):
    seen = _inject_oom(monkeypatch, TILE, factory)
    done = []
    with caplog.at_level(logging.WARNING, logger="lib_mixture.tiled_vae"):
        out = tv.tiled_decode(vae, z16, tile_size=2 * TILE, config=_cfg(stash_mib=10_000),
                              on_progress=lambda d, t: done.append((d, t)))
    assert seen["raised"] >= 1
    assert max(seen["cores"][-4:]) <= TILE
    assert "retrying" in caplog.text
    assert (out - ref16).abs().max().item() < 1e-4
    assert done[-1][0] == done[-1][1]  # totals corrected after the retry


def test_oom_at_min_tile_size_and_other_errors_propagate(vae, z16, monkeypatch):
    _inject_oom(monkeypatch, 0, lambda: torch.OutOfMemoryError("CUDA out of memory"))
    with pytest.raises(torch.OutOfMemoryError):
        tv.tiled_decode(vae, z16, tile_size=TILE, config=_cfg(min_tile_size=4))
    _inject_oom(monkeypatch, 0, lambda: RuntimeError("shape mismatch"))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        tv.tiled_decode(vae, z16, tile_size=TILE, config=_cfg())


def _half_dtype():
    for dt in (torch.float16, torch.bfloat16):
        try:
            x = torch.randn(1, 8, 6, 6, dtype=dt)
            torch.nn.functional.conv2d(x, torch.randn(8, 8, 3, 3, dtype=dt), padding=1)
            torch.nn.functional.group_norm(x, 4)
            return dt
        except (RuntimeError, NotImplementedError):
            continue
    return None


def test_half_precision(vae, z16, ref16):
    dt = _half_dtype()
    if dt is None:
        pytest.skip("this CPU build has neither fp16 nor bf16 convolutions")
    half = _make_vae().to(dt)
    z = z16[:, :, :8]  # 1 x 2 tiles
    ref_half = _full_decode(half, z.to(dt)).float()
    out = tv.tiled_decode(half, z.to(dt), tile_size=TILE, config=_cfg(stash_mib=10_000))
    assert out.dtype == dt
    p_half, p_fp32 = _psnr(out.float(), ref_half), _psnr(out.float(), _full_decode(vae, z))
    print(f"{dt}: tiled vs full {dt} decode PSNR {p_half:.1f} dB; vs fp32 decode {p_fp32:.1f} dB")
    assert torch.isfinite(out).all()
    assert p_half > 35.0 and p_fp32 > 35.0


def test_half_statistics_do_not_overflow():
    """Values whose squares overflow fp16 still give exact statistics (float64 accumulation)."""
    x = (torch.randn(1, 32, 64, 64) * 300 + 1000).to(torch.float16)
    stats = groupnorm.combine([groupnorm.tile_stats(x[..., :40, :], 8), groupnorm.tile_stats(x[..., 40:, :], 8)])
    ref = x.double().reshape(1, 8, -1)
    assert torch.allclose(stats[0], ref.mean(-1), rtol=1e-12)
    assert torch.allclose(stats[1], ref.var(-1, unbiased=False), rtol=1e-9)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 11), st.integers(1, 9), st.integers(0, 2 ** 31 - 1))
def test_law_of_total_variance_matches_direct_statistics(cut_y, cut_x, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 6, 12, 10, generator=g) * torch.rand(1, 6, 1, 1, generator=g) * 5 + 3
    parts = [x[..., :cut_y, :cut_x], x[..., :cut_y, cut_x:], x[..., cut_y:, :cut_x], x[..., cut_y:, cut_x:]]
    mean, var = groupnorm.combine([groupnorm.tile_stats(p, 3) for p in parts if p.numel()])
    flat = x.double().reshape(2, 3, -1)
    assert torch.allclose(mean, flat.mean(-1), atol=1e-12)
    assert torch.allclose(var, flat.var(-1, unbiased=False), atol=1e-10)


def test_streamed_attention_matches_sdpa():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 1, n, 16, generator=g) for n in (37, 101, 101))
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    assert (attention.attend_blocks(q, k, v, 13) - ref).abs().max().item() < 1e-5


def test_progress_and_interrupt(vae, z16):
    calls = []
    tv.tiled_decode(vae, z16, tile_size=TILE, config=_cfg(stash_mib=10_000),
                    on_progress=lambda d, t: calls.append((d, t)))
    assert [d for d, _ in calls] == list(range(1, len(calls) + 1))
    assert all(d <= t for d, t in calls) and calls[-1][0] == calls[-1][1]
    assert len({t for _, t in calls}) == 1  # the total is known from the start: the bar never steps back

    class Stop(Exception):
        pass

    def raising():
        if len(seen) >= 3:
            raise Stop()
        seen.append(1)

    seen = []
    with pytest.raises(Stop):
        tv.tiled_decode(vae, z16, tile_size=TILE, config=_cfg(), should_stop=raising)
    n = []
    with pytest.raises(tv.TiledVAEInterrupted):
        tv.tiled_decode(vae, z16, tile_size=TILE, config=_cfg(), should_stop=lambda: n.append(1) or len(n) > 5)
    assert len(n) == 6


def test_bad_inputs(vae, z16):
    with pytest.raises(ValueError, match="latent must be"):
        tv.tiled_decode(vae, z16[0])
    with pytest.raises(ValueError, match="channels"):
        tv.tiled_decode(vae, torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="tile_size"):
        tv.tiled_decode(vae, z16, tile_size=0)
    with pytest.raises(ValueError, match="tile_size"):
        tv.tiled_decode(vae, z16, tile_size=4, config=tv.TiledVAEConfig(min_tile_size=8))
    with pytest.raises(ValueError, match="raise tile_size or max_tiles"):
        tv.tiled_decode(vae, z16, tile_size=8, config=tv.TiledVAEConfig(max_tiles=2))
    with pytest.raises(ValueError, match="too small"):
        tv.tiled_encode(vae, torch.zeros(1, 3, 4, 64))
    with pytest.raises(ValueError, match="channels"):
        tv.tiled_encode(vae, torch.zeros(1, 4, 64, 64))
    with pytest.raises(ValueError, match="output"):
        tv.tiled_encode(vae, torch.zeros(1, 3, 64, 64), output="latent")
    with pytest.raises(ValueError, match="memory_fraction"):
        tv.tiled_decode(vae, z16, config=tv.TiledVAEConfig(memory_fraction=0))
    with pytest.raises(ValueError, match="encoder nor .decoder"):
        tv.tiled_decode(torch.nn.Linear(2, 2), z16)
    with pytest.raises(ValueError, match="has no encoder"):
        tv.tiled_encode(vae.decoder, torch.zeros(1, 3, 64, 64))


def test_bare_decoder_skips_post_quant_conv(vae, z16):
    with torch.no_grad():
        ref = vae.decoder(z16)
    out = tv.tiled_decode(vae.decoder, z16, tile_size=TILE, config=_cfg(stash_mib=10_000))
    assert (out - ref).abs().max().item() < 1e-4


# ----------------------------------------------------------------------------------------
# ldm / A1111 first_stage_model layout (only where the ldm sources are importable)
# ----------------------------------------------------------------------------------------


def _import_ldm():
    for root in (os.environ.get("LDM_REPO"), "/work/webui/repositories/stable-diffusion-stability-ai"):
        if root and os.path.isdir(os.path.join(root or "", "ldm")) and root not in sys.path:
            sys.path.append(root)
    try:
        from ldm.modules.diffusionmodules.model import Decoder, Encoder  # noqa: PLC0415
    except Exception as exc:  # noqa: BLE001 - any import problem means "not available"
        pytest.skip(f"ldm sources not importable: {exc}")
    return Encoder, Decoder


def test_ldm_first_stage_model_layout():
    Encoder, Decoder = _import_ldm()
    torch.manual_seed(0)
    ddconfig = dict(double_z=True, z_channels=4, resolution=64, in_channels=3, out_ch=3, ch=32,
                    ch_mult=(1, 1, 2, 2), num_res_blocks=1, attn_resolutions=[], dropout=0.0)

    class FirstStage(torch.nn.Module):  # the attributes A1111's first_stage_model has
        def __init__(self):
            super().__init__()
            self.encoder = Encoder(**ddconfig)
            self.decoder = Decoder(**ddconfig)
            self.quant_conv = torch.nn.Conv2d(8, 8, 1)
            self.post_quant_conv = torch.nn.Conv2d(4, 4, 1)

    class Host:  # like A1111's sd_model
        first_stage_model = FirstStage().eval()

    m = Host.first_stage_model
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.GroupNorm):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.3, 0.3)
        z = _latent(8, 7, seed=2)
        ref = m.decoder(m.post_quant_conv(z))
        img = torch.rand(1, 3, 64, 56) * 2 - 1
        ref_m = m.quant_conv(m.encoder(img))
        odd = torch.rand(1, 3, 61, 75) * 2 - 1  # ldm's downsampler pads (0, 1) then strides
        ref_odd = m.quant_conv(m.encoder(odd))
    out = tv.tiled_decode(Host, z, tile_size=4, config=_cfg(stash_mib=10_000, min_tile_size=4))
    assert (out - ref).abs().max().item() < 1e-4
    mom = tv.tiled_encode(Host, img, tile_size=4, config=_cfg(stash_mib=10_000, min_tile_size=4))
    assert (mom - ref_m).abs().max().item() < 1e-4
    mom = tv.tiled_encode(Host, odd, tile_size=2, config=_cfg(min_tile_size=2))
    assert mom.shape == ref_odd.shape == (1, 8, 7, 9)
    assert (mom - ref_odd).abs().max().item() < 1e-4


# ----------------------------------------------------------------------------------------
# automatic tile size (the CUDA free-memory path, with the free memory faked)
# ----------------------------------------------------------------------------------------


def test_auto_tile_size_follows_free_memory(vae, z16, ref16, monkeypatch):
    monkeypatch.setattr(sizing, "budget", lambda device, cfg: 6 * 2**20)
    plan = tv.plan_tiled_vae(vae, z16.shape)
    hi = plan[-1]
    assert hi["kind"] == "tiled" and hi["out_size"] == (128, 104)
    assert hi["tiles"] > 1 and hi["tile_bytes"] <= 6 * 2**20
    assert all(p["tile_bytes"] <= 6 * 2**20 for p in plan if p["kind"] == "tiled")
    out = tv.tiled_decode(vae, z16, config=tv.TiledVAEConfig(stash_mib=10_000))
    assert (out - ref16).abs().max().item() < 1e-4
    monkeypatch.setattr(sizing, "budget", lambda device, cfg: 10_000)
    with pytest.raises(ValueError, match="offload=True"):
        tv.tiled_decode(vae, z16)


# ----------------------------------------------------------------------------------------
# a stash within a budget, the work model, and tiles and stash chosen together
# ----------------------------------------------------------------------------------------


def _heavy_segment(vae, z, tile):
    """The full-resolution decoder segment of ``z`` and its input buffer, as `execute` builds them."""
    ops, module = tv.api._program(vae, "decode")
    segs, _ = sizing.prepare(ops, z.shape, _cfg(tile_size=tile), torch.device("cpu"), torch.float32, "latent")
    buf = z
    with torch.no_grad():
        for s in segs[:-1]:
            run = execute.Run(_cfg(tile_size=tile), torch.device("cpu"), torch.float32, None, None)
            buf = attention.run_attention(s.ops[0].spec, buf, run) if s.is_global else \
                execute.run_segment(s, buf, max(s.ref), run)
    return segs[-1], buf


def _calls(monkeypatch):
    """Count the op calls `execute` really makes."""
    count = [0]
    real = execute.run_ops

    def counting(seg, pl, start, end, p, saved, stats):
        count[0] += end - start
        return real(seg, pl, start, end, p, saved, stats)

    monkeypatch.setattr(execute, "run_ops", counting)
    return count


@pytest.mark.parametrize("share", [0.0, 0.3, 0.6, 1.0])
def test_a_partial_stash_stays_within_its_budget_and_gives_the_same_image(vae, z16, monkeypatch, share):
    """A stash budget that holds some tiles: those resume, the others recompute; the stash never
    holds more than its budget, the output is the recomputing run's, and the op calls made are
    exactly those `sizing.predict` counts."""
    seg, buf = _heavy_segment(vae, z16, TILE)
    cores = execute.grid(seg.ref, TILE)
    finals = [execute.plan(seg, len(seg.ops), execute.core_at(c, seg.ref, seg.sizes[-1])) for c in cores]
    full = max(sizing.stash_bytes(seg, finals, e, 4, 1, views=True) for e in seg.norms)  # CPU: no copies
    budget = int(share * full)
    ref_run = execute.Run(_cfg(), torch.device("cpu"), torch.float32, None, None)
    with torch.no_grad():
        ref = execute.run_segment(seg, buf, TILE, ref_run)
    count = _calls(monkeypatch)
    run = execute.Run(_cfg(), torch.device("cpu"), torch.float32, None, None)
    with torch.no_grad():
        out = execute.run_segment(seg, buf, TILE, run, budget)
    work = sizing.predict(seg, TILE, budget, 4, 1, views=True)
    assert (out - ref).abs().max().item() < 1e-5
    assert run.stash_peak <= budget
    assert count[0] == work.calls
    recompute = sizing.predict(seg, TILE, 0, 4, 1)
    if share == 0.0:
        assert work.resumed == 0 and work.calls == recompute.calls
    elif share == 1.0:  # every tile resumes in every pass after the first
        assert work.resumed == len(cores) * len(seg.norms)
    else:  # tiles resume from older stashes or recompute: fewer calls than recomputing, more than a whole stash
        assert 0 < work.resumed
        assert sizing.predict(seg, TILE, full, 4, 1, views=True).calls < work.calls < recompute.calls


def test_a_stream_that_is_a_view_of_its_kept_slot_is_counted_once(vae, z16):
    """Right after a ``Save`` the stream is a view of the slot: on the compute device the stash
    holds it once; copied to host memory, twice."""
    seg, _ = _heavy_segment(vae, z16, TILE)
    pl = execute.plan(seg, len(seg.ops), execute.core_at((0, TILE, 0, TILE), seg.ref, seg.sizes[-1]))
    after_save = [e for e in seg.norms if isinstance(seg.ops[e - 1], Save)]
    assert after_save
    for e in seg.norms:
        host, device = sizing.state_bytes(seg, pl, e, 4, 1), sizing.state_bytes(seg, pl, e, 4, 1, views=True)
        assert (device < host) == (e in after_save)


def test_more_stash_is_less_work(vae, z16):
    """The stash is filled tile by tile (a tile whose new stash does not fit keeps its older one),
    so a slightly larger budget can shift which tiles resume: never by more than 15% of the work
    of the best smaller budget, and the whole stash needs less than half the recompute's work."""
    seg, _ = _heavy_segment(vae, z16, TILE)
    costs = [sizing.predict(seg, TILE, b, 4, 1).cost("cpu") for b in range(0, 2**20, 2**14)]
    assert all(c <= 1.15 * min(costs[: i + 1]) for i, c in enumerate(costs))
    assert costs[-1] < 0.5 * costs[0]


@pytest.mark.parametrize("mib", [1, 2, 4, 64])
def test_a_memory_budget_chooses_tiles_and_stash_together(vae, z16, ref16, monkeypatch, mib):
    """``memory_mib`` with the stash on the device: every segment's tile and stash fit the budget
    together, the choice is the least predicted work of its candidates, and the image is exact."""
    cfg = tv.TiledVAEConfig(memory_mib=mib, stash_on_device=True, min_tile_size=2)
    plan = tv.plan_tiled_vae(vae, z16.shape, config=cfg)
    for p in plan:
        if p["kind"] == "tiled":
            io = p["out_bytes"] + 4 * p["in_channels"] * p["in_size"][0] * p["in_size"][1]
            assert p["tile_bytes"] + p["stash_bytes"] + io <= max(mib * 2**20, p["tile_bytes"] + io)
    runs = []
    monkeypatch.setattr(execute, "Run", lambda *a: runs.append(execute_run(*a)) or runs[-1])
    out = tv.tiled_decode(vae, z16, config=cfg)
    assert (out - ref16).abs().max().item() < 1e-4
    assert runs[0].stash_peak <= max(p["stash_bytes"] for p in plan)
    ops, _ = tv.api._program(vae, "decode")
    segs, sized = sizing.prepare(ops, z16.shape, cfg, torch.device("cpu"), torch.float32, "latent")
    seg, (tile, stash) = segs[-1], sized[-1]
    left = mib * 2**20 - sizing._io_bytes(seg, cfg, 4, 1)
    chosen = sizing.predict(seg, tile, stash, 4, 1, views=True).cost("cpu")
    for t in range(2, max(seg.ref) + 1):  # no edge the candidates leave out is predicted much cheaper
        if sizing.tile_bytes(seg, t, 4, 1) <= left and t >= sizing.MIN_CHOICE:
            other = sizing.predict(seg, t, left - sizing.tile_bytes(seg, t, 4, 1), 4, 1, views=True).cost("cpu")
            assert chosen <= other * 1.25, (t, tile)


execute_run = execute.Run


def test_a_bigger_budget_is_never_predicted_slower(vae):
    ops, _ = tv.api._program(vae, "decode")
    z = _latent(48, 40)
    costs = []
    for mib in (1, 2, 4, 8, 16, 64):
        cfg = tv.TiledVAEConfig(memory_mib=mib, stash_on_device=True, min_tile_size=2)
        segs, sized = sizing.prepare(ops, z.shape, cfg, torch.device("cpu"), torch.float32, "latent")
        costs.append(sum(sizing.predict(s, t, b, 4, 1, views=True).cost("cpu")
                         for s, (t, b) in zip(segs, sized) if not s.is_global))
    assert all(a >= b for a, b in zip(costs, costs[1:])), costs


@given(h=st.integers(1, 700), w=st.integers(1, 700), max_tiles=st.integers(1, 5000))
@settings(max_examples=60, deadline=None)
def test_tile_floor_is_the_smallest_tile_within_max_tiles(vae, h, w, max_tiles):
    """``tile_floor`` on a decode: the smallest edge whose grid on the latent has at most
    ``max_tiles`` tiles a pass (one less has more)."""
    floor = tv.tile_floor(vae, (1, 4, h, w), "decode", max_tiles)
    assert len(execute.grid((h, w), floor)) <= max_tiles
    assert floor == 1 or len(execute.grid((h, w), floor - 1)) > max_tiles


def test_a_tile_at_the_floor_runs_and_one_below_is_refused(vae):
    z = _latent(24, 20)
    floor = tv.tile_floor(vae, z.shape, "decode", max_tiles=9)
    out = tv.tiled_decode(vae, z, tile_size=floor, config=_cfg(max_tiles=9, min_tile_size=2))
    assert (out - _full_decode(vae, z)).abs().max().item() < 1e-4
    with pytest.raises(ValueError, match="max_tiles=9"):
        tv.tiled_decode(vae, z, tile_size=floor - 1, config=_cfg(max_tiles=9, min_tile_size=2))


def test_fit_tile_never_goes_below_its_smallest_edge(vae, z16):
    seg, _ = _heavy_segment(vae, z16, TILE)
    for lo in (9, 13, 17, 23):
        for budget in range(0, 2**22, 2**17):
            assert sizing.fit_tile(seg, budget, 4, 1, lo) >= lo


def test_memory_mib_is_validated():
    with pytest.raises(ValueError, match="memory_mib"):
        tv.TiledVAEConfig(memory_mib=0).validate()
    with pytest.raises(ValueError, match="memory_mib"):
        tv.TiledVAEConfig(memory_mib=1.5).validate()


# ------------------------------------------------------------------ TAESD (plain Sequential)
# The tiny autoencoder's architecture (madebyollin/taesd, as the WebUI builds it), random weights.


class _Clamp(torch.nn.Module):
    def forward(self, x):
        return torch.tanh(x / 3) * 3


_Clamp.__name__ = "Clamp"


class _Block(torch.nn.Module):
    def __init__(self, n_in, n_out):
        super().__init__()
        conv = lambda i, o: torch.nn.Conv2d(i, o, 3, padding=1)  # noqa: E731
        self.conv = torch.nn.Sequential(conv(n_in, n_out), torch.nn.ReLU(), conv(n_out, n_out), torch.nn.ReLU(),
                                        conv(n_out, n_out))
        self.skip = torch.nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else torch.nn.Identity()
        self.fuse = torch.nn.ReLU()

    def forward(self, x):
        return self.fuse(self.conv(x) + self.skip(x))


def _taesd(c=16, latent=4):
    conv = lambda i, o, **kw: torch.nn.Conv2d(i, o, 3, padding=1, **kw)  # noqa: E731
    up = lambda: [torch.nn.Upsample(scale_factor=2), conv(c, c, bias=False)]  # noqa: E731
    torch.manual_seed(3)
    dec = torch.nn.Sequential(_Clamp(), conv(latent, c), torch.nn.ReLU(), _Block(c, c), _Block(c, c), *up(),
                              _Block(c, c), *up(), _Block(c, c), *up(), _Block(c, c), conv(c, 3))
    enc = torch.nn.Sequential(conv(3, c), _Block(c, c), conv(c, c, stride=2, bias=False), _Block(c, c),
                              conv(c, c, stride=2, bias=False), _Block(c, 2 * c),
                              conv(2 * c, c, stride=2, bias=False), _Block(c, c), conv(c, latent))
    return enc.eval(), dec.eval()


def test_taesd_sequential_tiles_exactly():
    enc, dec = _taesd()
    z = _latent(24, 40)
    with torch.no_grad():
        ref = dec(z)
        out = tv.tiled_decode(dec, z, tile_size=8)
    assert out.shape == ref.shape == (1, 3, 192, 320)
    assert _psnr(out, ref) > 100  # no GroupNorm: tiles are exact up to float rounding
    image = torch.rand(1, 3, 192, 320) * 2 - 1
    with torch.no_grad():
        ref = enc(image)
        out = tv.tiled_encode(enc, image, tile_size=8)
    assert out.shape == ref.shape == (1, 4, 24, 40) and _psnr(out, ref) > 100
    odd = image[:, :, :187, :301]  # off the grid: TAESD's padded strided convs round up
    with torch.no_grad():
        ref = enc(odd)
        out = tv.tiled_encode(enc, odd, tile_size=8)
    assert out.shape == ref.shape == (1, 4, 24, 38) and _psnr(out, ref) > 100
    stages = tv.plan_tiled_vae(dec, z.shape, "decode", tile_size=8)
    assert sum(s["tiles"] for s in stages) > 1 and all(s["passes"] == 1 for s in stages)


def test_unsupported_sequential_layers_are_named():
    with pytest.raises(NotImplementedError, match=r"decoder\.1: unsupported layer BatchNorm2d"):
        tv.tiled_decode(torch.nn.Sequential(torch.nn.Conv2d(4, 3, 3, padding=1), torch.nn.BatchNorm2d(3)),
                        _latent(8, 8))


def test_memory_budget_is_a_share_of_the_free_memory_within_the_cap_less_what_is_held():
    from lib_mixture.tiled_vae.runtime import HOST_MEMORY_FRACTION, memory_budget

    cpu, gib = torch.device("cpu"), float(1 << 30)
    assert memory_budget(cpu, 10 * gib) == HOST_MEMORY_FRACTION * 10 * gib  # no cap
    assert memory_budget(torch.device("cuda"), 10 * gib) == tv.TiledVAEConfig().memory_fraction * 10 * gib
    assert memory_budget(cpu, 10 * gib, cap=8 * gib, held=3.5 * gib) == 4 * gib  # the share is less
    assert memory_budget(cpu, 20 * gib, cap=8 * gib, held=3.5 * gib) == 4.5 * gib  # the cap less the held
    assert memory_budget(cpu, 20 * gib, cap=2 * gib, held=3.5 * gib) == 0.0  # never negative
    assert memory_budget(cpu, 20 * gib, share=0.1) == 2 * gib
