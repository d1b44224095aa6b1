"""Usage: python bench/bench_engine.py [--quick] [--threads N] [--no-sd15]   (mixture overhead, step memory, planner; CPU)

(a) Overhead. A 3840x2160 canvas (latent 480x270) under 768x768 tiles with >= 256 px overlap
    (`plan_tiles`: 7x4 = 28 tiles of 96x96 latents). The engine's own time is one mixture
    step whose ``predict`` returns a precomputed tensor (no model): cropping, cat, sigma
    repeat, weighting and accumulation into the canvas buffer. The model time is the same
    step with a real model minus that (tiny UNet: measured on the whole step in a full run),
    or one tile forward (cond + uncond, batch 2) times the tiles (SD1.5-size UNet: one
    forward at 96x96 takes a minute on 2 cores, so it is timed once and multiplied out).
    Rows: crop batch 1 and 4 (crops per model call) for one image, and 4 images at crop
    batch 4 (model time then scaled by 4 from the one-image tile time: CPU time is linear
    in the batch).
(b) Memory. One mixture step at 1024x1024 and at 3840x2160, same tiles, crop batch 4, each in
    its own subprocess (one thread; glibc told to return large blocks and use one arena, so
    RSS follows live memory): after building everything and one warm-up model call, free
    heap is trimmed, the kernel's peak-RSS counter is reset (``/proc/self/clear_refs`` = 5)
    and ``VmHWM`` read after the step. "extra" = peak minus the RSS just before; it is
    compared with the canvas-sized buffer the step allocates (the float32 output
    accumulator; the input latent is already resident) and with the extra of one lone model
    call on one crop batch. Run with the precomputed predict (engine alone) and, unless
    ``--quick``, with the tiny UNet.
(c) Planner. Tiles, redundancy (sum of tile areas / canvas area) and model calls per step
    at crop batch 8 for the paper's 4K grid (presets/paper-fig8-4k-grid.json: 640x480 tiles,
    overlap 320 x 240 px, 11x8 = 88 tiles) and for the planner's fewest-tiles plan at the
    same minimum overlap (240 px on both axes).

Models have random weights (seed 0), fp32, CPU. Tiny UNet: diffusers UNet2DConditionModel,
block_out_channels (32, 64), layers_per_block 1, cross_attention_dim 32, 2 attention heads,
cross-attention blocks at half resolution (at full resolution, attention over 9216 tokens with
4-dim heads takes ~20 s per tile on this CPU and measures nothing about the engine).
SD1.5-size UNet: block_out_channels (320, 640, 1280, 1280), layers_per_block 2,
cross_attention_dim 768, attention_head_dim 8, sample_size 64, 77-token text embedding.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import statistics
import subprocess
import sys
import time
import warnings

# Before torch loads OpenMP: on a shared CPU, spinning OpenMP threads that wait for each other
# make small ops 10-50x slower and the timings meaningless (measured: 923 ms vs 36 ms for the
# 4-image overhead step on 2 busy cores). Passive waiting costs nothing measurable here.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from _common import proc_status_kib, use_repo  # noqa: E402

ROOT = use_repo()

CANVAS_4K = (3840, 2160)
CANVAS_1K = (1024, 1024)
TILE, OVERLAP = 768, 256


def _torch():
    import torch

    return torch


def tiny_unet():
    torch = _torch()
    warnings.filterwarnings("ignore")
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=32, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        norm_num_groups=8, cross_attention_dim=32, attention_head_dim=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D")).eval()


def sd15_unet():
    torch = _torch()
    warnings.filterwarnings("ignore")
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")).eval()


def crops_for(width, height):
    from lib_mixture.geometry import to_latent
    from lib_mixture.plan import CropSpec
    from lib_mixture.planner import plan_tiles

    plan = plan_tiles(width, height, TILE, TILE, OVERLAP)
    return plan, [CropSpec(to_latent(t)) for t in plan.tiles]


def cfg_predict(unet, text_len, text_dim, scale=7.0):
    """The host's side: cond and uncond of every crop in one model call, CFG on eps."""
    torch = _torch()
    g = torch.Generator().manual_seed(1)
    cond, uncond = torch.randn(1, text_len, text_dim, generator=g), torch.randn(1, text_len, text_dim, generator=g)

    def predict(x, sigma, specs):
        n = x.shape[0]
        t = torch.full((2 * n,), 500.0)
        emb = torch.cat([cond.expand(n, -1, -1), uncond.expand(n, -1, -1)])
        with torch.no_grad():
            eps = unet(torch.cat([x, x]), t, encoder_hidden_states=emb).sample
        c, u = eps[:n], eps[n:]
        return u + (c - u) * scale

    return predict


def const_predict(rows, size=96):
    """No model: a precomputed prediction of the right shape for each number of crops."""
    torch = _torch()
    cache = {}

    def predict(x, sigma, specs):
        k = len(specs)
        if k not in cache:
            cache[k] = torch.randn(k * rows, 4, size, size, generator=torch.Generator().manual_seed(k))
        return cache[k]

    return predict


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def _fmt_s(s):
    return f"{s * 1e3:8.1f} ms" if s < 10 else f"{s:8.2f} s "


# --- (a) overhead ---------------------------------------------------------------------------

def bench_overhead(quick, sd15):
    torch = _torch()
    from lib_mixture.mixture import compile_mixture

    w, h = CANVAS_4K
    plan, crops = crops_for(w, h)
    lh, lw = h // 8, w // 8
    print(f"\n(a) engine overhead per step: {w}x{h} canvas (latent {lw}x{lh}), {TILE}x{TILE} tiles, "
          f">= {OVERLAP} px overlap: {len(plan.columns.starts)}x{len(plan.rows.starts)} = {len(crops)} tiles "
          f"of {TILE // 8}x{TILE // 8} latents, overlaps x {sorted(set(plan.overlaps_x))} y {sorted(set(plan.overlaps_y))} px")
    sigma = torch.tensor([5.0])
    cases = [(1, 1), (1, 4), (4, 4)]  # (images, crops per call)
    overhead = {}
    for images, bs in cases:
        mix = compile_mixture(crops, lh, lw, bs)
        x = torch.randn(images, 4, lh, lw)
        pred = const_predict(images)
        mix(x, sigma, pred)  # build the precomputed tensors, warm the allocator
        med, all_t = timed(lambda: mix(x, sigma, pred), 3 if quick else 9)
        overhead[(images, bs)] = (med, mix.model_calls_per_step, min(all_t), max(all_t))

    print("  timing tiny UNet tile forwards ...", flush=True)
    tiny = tiny_unet()
    tiny_pred = cfg_predict(tiny, 8, 32)
    tile = torch.randn(1, 4, TILE // 8, TILE // 8)
    tile4 = torch.randn(4, 4, TILE // 8, TILE // 8)
    tiny_pred(tile, sigma, [None])  # warm-up
    t_tiny1, _ = timed(lambda: tiny_pred(tile, sigma, [None]), 1 if quick else 3)
    tiny_pred(tile4, sigma, [None] * 4)
    t_tiny4, _ = timed(lambda: tiny_pred(tile4, sigma, [None] * 4), 1 if quick else 2)

    measured_step = {}
    if not quick:
        for images, bs in ((1, 1), (1, 4)):
            print(f"  timing a whole 4K step with the tiny UNet, crop batch {bs} ...", flush=True)
            mix = compile_mixture(crops, lh, lw, bs)
            x = torch.randn(images, 4, lh, lw)
            measured_step[(images, bs)], _ = timed(lambda: mix(x, sigma, tiny_pred), 1)

    t_sd = None
    if sd15:
        print("  building the SD1.5-size UNet and timing one 96x96 tile forward (cond+uncond) ...", flush=True)
        t0 = time.perf_counter()
        sd = sd15_unet()
        built = time.perf_counter() - t0
        sd_pred = cfg_predict(sd, 77, 768)
        t_sd, _ = timed(lambda: sd_pred(tile, sigma, [None]), 1)
        params = sum(p.numel() for p in sd.parameters())
        print(f"  SD1.5-size UNet: {params / 1e6:.0f} M parameters, built in {built:.1f} s, "
              f"one tile forward (batch 2, 96x96) {t_sd:.1f} s (single run)")
        del sd, sd_pred
        gc.collect()

    print(f"  tiny UNet tile forward: 1 tile (batch 2) {_fmt_s(t_tiny1).strip()}, "
          f"4 tiles (batch 8) {_fmt_s(t_tiny4).strip()}")
    head = (f"  {'images':>6} {'crops/call':>10} {'calls':>5} | {'engine overhead':>15} {'(min-max)':>19} | "
            f"{'tiny UNet model':>15} {'ovh/model':>9} | {'SD1.5 model':>11} {'ovh/model':>9}")
    print(head)
    print("  " + "-" * (len(head) - 2))
    for images, bs in cases:
        med, calls, lo, hi = overhead[(images, bs)]
        if (images, bs) in measured_step:
            tiny_model = measured_step[(images, bs)] - med
            tiny_note = ""
        else:
            per_tile = t_tiny1 if bs == 1 else t_tiny4 / 4
            tiny_model = per_tile * len(crops) * images
            tiny_note = "~"
        sd_model = t_sd * len(crops) * images if t_sd is not None else None
        sd_cols = (f"{sd_model:10.0f}s~ {med / sd_model:9.1e}" if sd_model is not None else f"{'-':>11} {'-':>9}")
        print(f"  {images:>6} {bs:>10} {calls:>5} | {_fmt_s(med):>15} ({lo * 1e3:6.1f}-{hi * 1e3:6.1f} ms) | "
              f"{tiny_note + _fmt_s(tiny_model).strip():>15} {med / tiny_model:9.1e} | {sd_cols}")
    print("  ~ = tile forward time x tiles (x images); unmarked tiny-UNet model time = measured step minus overhead")
    return overhead


# --- (b) memory ------------------------------------------------------------------------------

def _trim_and_reset():
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # give free heap back, so it is not counted as held
    except OSError:
        pass
    rss = proc_status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM (peak RSS) to the current RSS
    return rss


def memory_child(width, height, model, bs, threads):
    torch = _torch()
    torch.set_num_threads(threads)
    from lib_mixture.mixture import compile_mixture

    plan, crops = crops_for(width, height)
    lh, lw = height // 8, width // 8
    sigma = torch.tensor([5.0])
    pred = cfg_predict(tiny_unet(), 8, 32) if model == "tiny" else const_predict(1)
    x = torch.randn(1, 4, lh, lw)
    mix = compile_mixture(crops, lh, lw, bs)
    k = len(mix.batches[0])
    probe = torch.randn(k, 4, TILE // 8, TILE // 8)
    pred(probe, sigma, crops[:k])  # warm-up: kernels, allocator pools
    # ... and the mixture's own code paths, on a small canvas (first calls allocate once).
    from lib_mixture.geometry import Box
    from lib_mixture.plan import CropSpec

    t = TILE // 8
    mini = compile_mixture([CropSpec(Box(0, 0, t, t)), CropSpec(Box(t // 2, 0, t, t))], t, t + t // 2, bs)
    mini(torch.randn(1, 4, t, t + t // 2), sigma, pred)

    rss0 = _trim_and_reset()
    out_call = pred(probe, sigma, crops[:k])
    call_extra = proc_status_kib("VmHWM") - rss0
    del out_call

    rss1 = _trim_and_reset()
    t0 = time.perf_counter()
    out = mix(x, sigma, pred)
    dt = time.perf_counter() - t0
    step_extra = proc_status_kib("VmHWM") - rss1
    weights = sum(wt.numel() * wt.element_size() for wt in mix.weights)
    print(json.dumps(dict(width=width, height=height, latent=[lw, lh], tiles=len(crops), calls=len(mix.batches),
                          crops_per_call=k, seconds=dt, rss_before=rss1 * 1024, step_extra=step_extra * 1024,
                          call_extra=call_extra * 1024, canvas_in=x.numel() * 4, canvas_out=out.numel() * 4,
                          weights=weights)))


def bench_memory(quick):
    models = ["const"] if quick else ["const", "tiny"]
    mib = 1024 * 1024
    # Child processes: one thread and glibc's heap made to track live memory (no arenas per
    # thread, large blocks always mmap'ed and returned): without this the same model call
    # measured 150-265 MiB from run to run; with it, 127.1 MiB every time.
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_ARENA_MAX="1")
    results = {}
    for model in models:
        label = "precomputed predict (engine only)" if model == "const" else "tiny UNet"
        print(f"\n(b) peak memory of one mixture step, {label}: {TILE}x{TILE} tiles, >= {OVERLAP} px overlap, "
              "crop batch 4, 1 image, each canvas in its own process, 1 thread")
        rows = []
        for w, h in (CANVAS_1K, CANVAS_4K):
            print(f"  running {w}x{h} ...", flush=True)
            res = subprocess.run([sys.executable, os.path.abspath(__file__), "--memory-child", str(w), str(h), model,
                                  "4", "1"], capture_output=True, text=True, cwd=ROOT, env=env)
            if res.returncode:
                raise SystemExit(f"memory child {w}x{h} failed:\n{res.stderr[-3000:]}")
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        head = (f"  {'canvas':>9} {'latent':>8} {'tiles':>5} {'calls':>5} | {'RSS before':>10} {'step extra':>10} "
                f"{'1 call extra':>12} | {'out buffer':>10} {'in (held)':>9} {'weights':>8} | {'extra-call-out':>14}")
        print(head)
        print("  " + "-" * (len(head) - 2))
        for r in rows:
            rest = r["step_extra"] - r["call_extra"] - r["canvas_out"]
            print(f"  {r['width']:>4}x{r['height']:<4} {r['latent'][0]:>3}x{r['latent'][1]:<4} {r['tiles']:>5} "
                  f"{r['calls']:>5} | {r['rss_before'] / mib:8.1f}Mi {r['step_extra'] / mib:8.2f}Mi "
                  f"{r['call_extra'] / mib:10.2f}Mi | {r['canvas_out'] / mib:8.2f}Mi {r['canvas_in'] / mib:7.2f}Mi "
                  f"{r['weights'] / mib:6.2f}Mi | {rest / mib:12.2f}Mi")
        a, b = rows
        print(f"  canvas area x{(b['width'] * b['height']) / (a['width'] * a['height']):.1f}, tiles "
              f"x{b['tiles'] / a['tiles']:.0f}: step extra {a['step_extra'] / mib:.2f} -> {b['step_extra'] / mib:.2f} MiB, "
              f"growth {(b['step_extra'] - a['step_extra']) / mib:.2f} MiB; output buffer growth "
              f"{(b['canvas_out'] - a['canvas_out']) / mib:.2f} MiB; one crop batch of latents = "
              f"{4 * 4 * (TILE // 8) ** 2 * 4 / mib:.2f} MiB")
        results[model] = rows
    print("  1 call extra: one model call on one batch (4 crops, no canvas). extra-call-out: what the step holds "
          "beyond that and its output (cat'ed crop batch, the previous batch while the next is made).")
    print("  weights: the compiled per-crop maps, allocated at compile time (before the step).")
    return results


# --- (c) planner -----------------------------------------------------------------------------

def bench_planner():
    from lib_mixture.planner import model_calls_per_step, plan_tiles
    from lib_mixture.plan import build_plan
    from lib_mixture.preset import load_preset

    print("\n(c) planner: 3840x2160, 640x480 tiles, crop batch 8")
    paper = build_plan(load_preset(os.path.join(ROOT, "presets", "paper-fig8-4k-grid.json")), batch_size=8)
    own = plan_tiles(3840, 2160, 640, 480, 240)
    rows = [
        ("paper Fig. 8 grid (overlap 320x240)", paper.tiles, paper.redundancy, paper.model_calls_per_step),
        ("planner, min overlap 240 both axes", own, own.redundancy, model_calls_per_step([len(own.tiles)], 8)),
    ]
    head = (f"  {'plan':<38} {'grid':>6} {'tiles':>5} {'overlap x (px)':>15} {'overlap y (px)':>15} "
            f"{'redundancy':>10} {'calls/step':>10}")
    print(head)
    print("  " + "-" * (len(head) - 2))
    for name, t, red, calls in rows:
        print(f"  {name:<38} {len(t.columns.starts):>2}x{len(t.rows.starts):<3} {len(t.tiles):>5} "
              f"{_span(t.overlaps_x):>15} {_span(t.overlaps_y):>15} {red:10.3f} {calls:>10}")
    (_, pt, pr, pc), (_, ot, orr, oc) = rows
    print(f"  paper / planner: tiles {len(pt.tiles) / len(ot.tiles):.3f}, redundancy {pr / orr:.3f}, "
          f"model calls {pc / oc:.3f}  (model work per step scales with redundancy)")
    return rows


def _span(values):
    lo, hi = min(values), max(values)
    return f"{lo}" if lo == hi else f"{lo}-{hi}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats, no SD1.5, no measured model steps")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    ap.add_argument("--no-sd15", action="store_true", help="skip the SD1.5-size UNet (minutes on a CPU)")
    ap.add_argument("--memory-child", nargs=5, metavar=("W", "H", "MODEL", "BS", "THREADS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    torch = _torch()
    if args.memory_child:
        w, h, model, bs, threads = args.memory_child
        memory_child(int(w), int(h), model, int(bs), int(threads))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    print(f"bench_engine: torch {torch.__version__}, CPU, {threads} threads (OMP_WAIT_POLICY="
          f"{os.environ.get('OMP_WAIT_POLICY')}), {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.2f}, {'quick' if args.quick else 'full'} run")
    t0 = time.perf_counter()
    bench_planner()
    bench_overhead(args.quick, sd15=not (args.quick or args.no_sd15))
    bench_memory(args.quick)
    print(f"\ndone in {time.perf_counter() - t0:.0f} s, load average now {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
