"""Peak memory and time of lib_mixture.tiled_vae.tiled_decode vs the plain decode, on the CPU.

Each case runs in its own subprocess so that peak memory is measured cleanly: the worker
builds the VAE and the latent, warms the kernels up on a tiny input, then resets the
kernel's peak-RSS counter (``/proc/self/clear_refs`` = 5), decodes, and reads ``VmHWM``.
"extra" is the peak resident memory above what the process held before the decode (model,
latent, interpreter) minus the output image: the memory the decode itself needed beyond its
input and output buffers. The tiled decode's "extra" is split into the latent-resolution
buffer (the low-resolution feature map handed to the tiled full-resolution stage; it grows
with the latent, see ``plan_tiled_vae``) and the rest, the tile working set, which should not
depend on the image size.

Allocator: glibc's malloc serves blocks below its mmap threshold from a heap that fragments
and keeps freed pages resident, and it raises that threshold dynamically (up to 32 MiB)
after large frees. Thousands of tile tensors of a few sizes then show up as resident memory
no tensor uses: with the default, 249 MiB instead of 87 MiB (tiled 1024x1024, tile 64); with
a fixed 1 MiB threshold the 4K case, whose 30x32 cores put the 4x-resolution tensors just
under 1 MiB, still read 23% above 1024x1024. The workers therefore run with
``MALLOC_MMAP_THRESHOLD_=131072`` (fixed 128 KiB: tile tensors are mapped and unmapped, so
RSS follows the live tensors), for every mode alike; ``--glibc-default`` turns that off.
Fresh pages cost time, so the times are pessimistic for every mode.

VAE: diffusers ``AutoencoderKL`` with random weights (seed 0), the SD layout scaled down so
the run fits a few minutes on 2 cores: block_out_channels (8, 16, 32, 32) (SD: 128, 256,
512, 512), layers_per_block 1 (SD: 2), norm_num_groups 8, latent_channels 4, fp32. The
mid-block self-attention is off by default because, being global, it costs the same
``O((h*w)^2)`` in both decodes (minutes at 4K on 2 cores) and tells nothing about tiling;
``--attention`` turns it on (its buffers, 3 x C_mid x h x w, then add to the
latent-resolution part).

Tile size: 32 latent px by default, so that every size, 1024x1024 included, has interior
tiles (halo on all four sides), the largest working set the tile size allows. With 64, a
1024x1024 image is 2x2 border tiles whose one-sided halos make it ~12% lighter than the
bound that larger images reach; the memory does not grow past that bound.

Usage: python bench/bench_tiled_vae.py [--quick] [--tile 32] [--threads 2] [--attention] [--sd-layout]
                                       [--sizes 1024x768,...]
                                       [--modes plain,tiled,stash,budget] [--stash-mib 4096]
                                       [--budget-mib 96] [--glibc-default]
       python bench/bench_tiled_vae.py --call-cost [--threads 2]
       python bench/bench_tiled_vae.py --predict [--device-type cuda] [--budgets 2,4,6,12]

Modes: "plain" = ``vae.decode``; "tiled" = ``tiled_decode`` with stash_mib=0 (memory bounded
by the tile, ~K/2 x the compute for K GroupNorms); "stash" = ``tiled_decode`` keeping the
tiles' activations between passes within ``--stash-mib`` (fast, memory grows up to the
budget); "budget" = ``tiled_decode`` with ``memory_mib=--budget-mib`` and the stash on the
device: the tile edge and the stash chosen together within that memory (``sizing.choose``).
"pred" is the work model's prediction (``sizing.predict``: multiply-accumulates plus a cost per
op call) of the tiled run over that of one tile covering the image, next to the measured "x plain".

``--call-cost`` measures the figures of that model on this CPU: the multiply-accumulates a
second of a large convolution, the seconds of one op call of a tiled decode whose
convolutions cost next to nothing (4 channels, 4 px tiles), and the seconds an element of a
pointwise op; with the first, the others give ``sizing.CALL_MACS["cpu"]`` and
``sizing.ELEMENT_MACS["cpu"]``.

``--predict`` runs nothing: for the full SD 1.x VAE layout (block_out_channels 128-512, fp16) at
3840x2160 it prints the tile edge and stash ``tiled_decode``/``tiled_encode`` choose within each
memory budget (``memory_mib`` with the stash on the device, the WebUI's setting) and their
predicted work over one tile's, beside the largest tile that fits recomputing every pass (the
former default on a GPU).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import subprocess
import sys
import tempfile
import time

from _common import proc_status_kib, use_repo  # noqa: E402

ROOT = use_repo()

SIZES = [(1024, 1024), (2048, 2048), (2160, 3840)]
QUICK_SIZES = [(512, 512), (1024, 1024)]


def _build_vae(attention: bool, sd_layout: bool = False):
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    if sd_layout:  # SD 1.x's own VAE architecture (random weights)
        return AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(128, 256, 512, 512), layers_per_block=2, mid_block_add_attention=attention,
        ).eval()
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 32, 32), layers_per_block=1, norm_num_groups=8,
        mid_block_add_attention=attention,
    ).eval()


def _latent(h: int, w: int):
    import torch

    g = torch.Generator().manual_seed(1)
    z = torch.randn(1, 4, h, w, generator=g)
    yy = torch.linspace(-1, 1, h).view(1, 1, h, 1)
    xx = torch.linspace(-1, 1, w).view(1, 1, 1, w)
    return z + 2.0 * yy - 1.5 * xx


def _worker(args) -> None:
    import torch

    from lib_mixture import tiled_vae as tv

    torch.set_num_threads(args.threads)
    vae = _build_vae(args.attention, args.sd_layout)
    if args.mode == "budget":
        cfg = tv.TiledVAEConfig(memory_mib=args.budget_mib, stash_on_device=True)
    else:
        cfg = tv.TiledVAEConfig(tile_size=args.tile, stash_mib=args.stash_mib if args.mode == "stash" else 0)

    def run(z):
        if args.mode == "plain":
            with torch.no_grad():
                return vae.decode(z).sample
        return tv.tiled_decode(vae, z, config=cfg)

    run(_latent(16, 16))  # warm-up: kernels, thread pool
    z = _latent(args.h // 8, args.w // 8)
    plan = tv.plan_tiled_vae(vae, z.shape, config=cfg)
    whole = tv.plan_tiled_vae(vae, z.shape, config=tv.TiledVAEConfig(tile_size=max(z.shape[-2:])))
    pred = sum(p["work"].cost("cpu") for p in plan if p["work"]) / sum(p["work"].cost("cpu") for p in whole if p["work"])
    gc.collect()
    rss0 = proc_status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    t0 = time.perf_counter()
    out = run(z)
    dt = time.perf_counter() - t0
    peak = proc_status_kib("VmHWM")
    torch.save(out, args.out)
    print(json.dumps(dict(
        mode=args.mode, h=args.h, w=args.w, seconds=dt, rss0=rss0 * 1024, peak=peak * 1024,
        out_bytes=out.numel() * out.element_size(), in_bytes=z.numel() * z.element_size(),
        latent_buffer=max([p["out_bytes"] for p in plan[:-1]] or [0]),
        tiles=plan[-1]["tiles"], passes=plan[-1]["passes"], tile=plan[-1]["tile_size"], pred=pred,
    )))


def _call_cost(threads: int) -> None:
    """Print the CPU figures behind ``sizing.CALL_MACS["cpu"]``."""
    import torch
    import torch.nn.functional as F
    from diffusers import AutoencoderKL

    from lib_mixture import tiled_vae as tv

    torch.set_num_threads(threads)
    w, x = torch.randn(128, 128, 3, 3), torch.randn(1, 128, 128, 128)
    F.conv2d(x, w, padding=1)
    t0 = time.perf_counter()
    for _ in range(5):
        F.conv2d(x, w, padding=1)
    rate = 128 * 128 * 9 * 128 * 128 * 5 / (time.perf_counter() - t0)
    F.silu(x)
    t0 = time.perf_counter()
    for _ in range(5):
        F.silu(x)
    per_element = (time.perf_counter() - t0) / (5 * x.numel())
    vae = AutoencoderKL(block_out_channels=(4, 4, 4, 4), layers_per_block=2, norm_num_groups=2,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        latent_channels=4).eval()
    z = torch.randn(1, 4, 32, 32)
    cfg = tv.TiledVAEConfig(tile_size=4, scale_low_res_tiles=False, min_tile_size=2)
    calls = sum(p["work"].calls for p in tv.plan_tiled_vae(vae, z.shape, config=cfg) if p["work"])
    tv.tiled_decode(vae, z, config=cfg)
    t0 = time.perf_counter()
    tv.tiled_decode(vae, z, config=cfg)
    per_call = (time.perf_counter() - t0) / calls
    print(f"{threads} threads: {rate / 1e9:.1f} GMAC/s (128-channel 3x3 conv, 128x128), "
          f"{per_call * 1e6:.1f} us per op call ({calls} calls), {per_element * 1e9:.2f} ns per element (SiLU); "
          f"so one call = {rate * per_call:.2e} MACs, one element = {rate * per_element:.0f} MACs")


def _case(args, mode: str, h: int, w: int, out_path: str) -> dict:
    env = dict(os.environ)
    if not args.glibc_default:
        env["MALLOC_MMAP_THRESHOLD_"] = "131072"
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", mode, "--h", str(h), "--w", str(w),
           "--tile", str(args.tile), "--threads", str(args.threads), "--stash-mib", str(args.stash_mib),
           "--budget-mib", str(args.budget_mib)] + (["--sd-layout"] if args.sd_layout else []) + [
           "--out", out_path] + (["--attention"] if args.attention else [])
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        return dict(mode=mode, h=h, w=w, error=(res.stderr.strip().splitlines() or ["?"])[-1])
    return json.loads(res.stdout.strip().splitlines()[-1])


def _psnr(a_path: str, b_path: str) -> float:
    import torch

    a, b = torch.load(a_path), torch.load(b_path)
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    rng = (b.max() - b.min()).item()
    return float("inf") if mse == 0 else 10 * math.log10(rng * rng / mse)


def _predict(device_type: str, budgets: str) -> None:
    """Print the planned 4K SD VAE decode and encode within each budget (nothing runs)."""
    import torch
    from diffusers import AutoencoderKL

    from lib_mixture import tiled_vae as tv

    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4).half().eval()
    print(f"SD 1.x VAE layout, fp16, 3840x2160, work costed for {device_type}; budget = memory_mib "
          "(tiles, stash and the stages' buffers)")
    print(f"{'what':6} | {'budget GiB':>10} | {'tile':>4} | {'tiles':>5} | {'stash GiB':>9} | {'x one tile':>10} | "
          f"largest tile recomputing: tile, x one tile")
    for mode, shape in (("decode", (1, 4, 270, 480)), ("encode", (1, 3, 2160, 3840))):
        whole = tv.plan_tiled_vae(vae, shape, mode, tile_size=max(shape[-2:]), config=tv.TiledVAEConfig())
        one = sum(p["work"].cost(device_type) for p in whole if p["work"])
        for gib in (float(b) for b in budgets.split(",")):
            row = []
            for cfg in (tv.TiledVAEConfig(memory_mib=int(gib * 1024), stash_on_device=True),
                        tv.TiledVAEConfig(memory_mib=int(gib * 1024))):
                plan = tv.plan_tiled_vae(vae, shape, mode, config=cfg)
                big = max((p for p in plan if p["work"]), key=lambda p: p["work"].macs)
                row.append((big, sum(p["work"].cost(device_type) for p in plan if p["work"]) / one))
            (b, x), (r, rx) = row
            print(f"{mode:6} | {gib:10.1f} | {b['tile_size']:>4} | {b['tiles']:>5} | {b['stash_bytes'] / 2**30:9.2f} | "
                  f"{x:10.2f} | {r['tile_size']}, {rx:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="512x512 and 1024x1024 only")
    ap.add_argument("--sizes", help="image sizes WxH, comma separated (instead of the defaults)")
    ap.add_argument("--sd-layout", action="store_true",
                    help="SD 1.x's own VAE architecture (128-512 channels, 2 resnets a block) instead of the small one")
    ap.add_argument("--tile", type=int, default=32, help="tile_size in latent px (default 32 = 256 image px)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--attention", action="store_true", help="keep the mid-block self-attention (slow)")
    ap.add_argument("--modes", default="plain,tiled", help="comma list of plain, tiled, stash, budget")
    ap.add_argument("--stash-mib", type=int, default=4096, help="stash budget of the 'stash' mode")
    ap.add_argument("--budget-mib", type=int, default=96, help="memory_mib of the 'budget' mode")
    ap.add_argument("--call-cost", action="store_true", help="measure the CPU figures of the work model")
    ap.add_argument("--predict", action="store_true", help="plan the 4K SD VAE within --budgets (runs nothing)")
    ap.add_argument("--budgets", default="2,4,6,8,12", help="GiB, comma separated, for --predict")
    ap.add_argument("--device-type", default="cuda", choices=("cuda", "cpu"), help="whose work model --predict uses")
    ap.add_argument("--glibc-default", action="store_true", help="keep glibc's dynamic mmap threshold")
    ap.add_argument("--worker", choices=["plain", "tiled", "stash", "budget"], help=argparse.SUPPRESS)
    ap.add_argument("--h", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--w", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        args.mode = args.worker
        _worker(args)
        return
    if args.call_cost:
        _call_cost(args.threads)
        return
    if args.predict:
        _predict(args.device_type, args.budgets)
        return
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in ("plain", "tiled", "stash", "budget")]
    if bad or not modes:
        ap.error(f"unknown modes {bad}")

    mib = 2.0 ** 20
    sizes = QUICK_SIZES if args.quick else SIZES
    if args.sizes:
        sizes = [(int(h), int(w)) for w, h in (wh.lower().split("x") for wh in args.sizes.split(","))]
    layout = ("block_out_channels (128,256,512,512), layers_per_block 2, 32 groups (SD 1.x)" if args.sd_layout
              else "block_out_channels (8,16,32,32), layers_per_block 1, 8 groups")
    print(f"VAE: AutoencoderKL {layout}, fp32, "
          f"mid attention {'on' if args.attention else 'off'}; CPU, {args.threads} threads; "
          f"tile_size {args.tile} latent px; stash mode budget {args.stash_mib} MiB; "
          f"budget mode memory_mib {args.budget_mib}; "
          f"malloc {'glibc default' if args.glibc_default else 'MALLOC_MMAP_THRESHOLD_=128KiB'}")
    hdr = (f"{'image WxH':>10} | {'mode':5} | {'time s':>7} | {'x plain':>7} | {'extra MiB':>9} | "
           f"{'latent buf':>10} | {'tile set':>8} | {'vs first':>8} | {'tile':>4} | {'tiles x passes':>14} | "
           f"{'pred':>5} | PSNR dB")
    print(hdr)
    print("-" * len(hdr), flush=True)
    first: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for h, w in sizes:  # each row is printed as soon as its case has run
            plain = None
            for m in modes:
                path = os.path.join(tmp, f"{m}{h}x{w}.pt")
                r = _case(args, m, h, w, path)
                size = f"{w}x{h}"
                if "error" in r:
                    print(f"{size:>10} | {m:5} | failed: {r['error']}", flush=True)
                    continue
                r["path"] = path
                extra = (r["peak"] - r["rss0"] - r["out_bytes"]) / mib
                if m == "plain":
                    plain = r
                    print(f"{size:>10} | plain | {r['seconds']:7.1f} | {1.0:7.2f} | {extra:9.1f} | "
                          f"{'-':>10} | {'-':>8} | {'-':>8} | {'-':>4} | {'-':>14} | {'-':>5} |", flush=True)
                    continue
                ratio = r["seconds"] / plain["seconds"] if plain else float("nan")
                buf = r["latent_buffer"] / mib
                work = extra - buf
                first.setdefault(m, work)
                ps = f"{_psnr(r['path'], plain['path']):.1f}" if plain else "n/a"
                print(f"{size:>10} | {m:5} | {r['seconds']:7.1f} | {ratio:7.2f} | {extra:9.1f} | {buf:10.1f} | "
                      f"{work:8.1f} | {work / first[m]:8.3f} | {r['tile']:>4} | {r['tiles']:>6} x {r['passes']:<5} | "
                      f"{r['pred']:5.2f} | {ps}",
                      flush=True)
    print("extra = peak RSS during the decode - RSS before it - output image; latent buf = the "
          "latent-resolution feature map the full-resolution stage reads; tile set = extra - latent buf; "
          "vs first = tile set / tile set of the first size; tile, tiles x passes: the full-resolution stage; "
          "pred = predicted work / one tile's.")


if __name__ == "__main__":
    main()
