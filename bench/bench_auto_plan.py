"""Check the automatic tile plan (`lib_mixture.cost.choose`) against measured sampling steps.

`choose` ranks the candidates the extension's "auto" ranks (`lib_mixture.auto_plan.resolve` on a
tile-grid preset: the same grids and batches, `tests/test_auto_plan.py`), with ``--sides`` to
sweep other sides than the model's band.

For every canvas in ``--canvases`` it sweeps square tile grids (``--sides`` px, clamped to the
canvas as the extension clamps them) and crop batch sizes (``--batches``; default: every batch
`choose` would consider that gives another number of model calls), and measures the real
seconds per sampling step of the engine: one CFG denoiser evaluation of lib_mixture's compiled
mixture over the whole canvas (`Preset` with that `TileGrid` -> `build_plan` -> `compile_mixture`,
each crop batch one UNet call on its cond and uncond rows, as in bench_upscale_gpu.py). The UNet
is diffusers' ``UNet2DConditionModel`` with SD 1.5's config and seeded random weights
(`bench_upscale_gpu.build_models`; nothing downloaded). Per plan: one warm-up step (kernels are
chosen per shape), then the median of ``--steps`` steps, and the step's peak memory as
`lib_mixture.cost` defines it: the model's weights (the cost model's ``weights_bytes``) plus
what the step allocates beyond what was allocated before it (CUDA: ``max_memory_allocated``;
CPU: growth of the process's peak RSS, coarse). A plan fits when that measured peak is within
``--budget`` GiB; a step that runs out of memory does not fit.

Each plan is printed beside the cost model's prediction (``--cost``), then one line per canvas
compares the plan `choose` picks for the budget with the fastest measured plan that fits:

    WxH: chose T px batch B (pred X s/step) measured Y s/step; fastest measured T' px batch B'
    Z s/step; chosen/fastest = R (within 10%: yes/no)

The chosen plan is always measured, even when ``--batches`` leaves it out. It is a benchmark,
not a test: it exits 0 whatever the ratio, and ``main`` returns the measured rows.

    python bench/bench_auto_plan.py --device cuda --dtype fp16
    python bench/bench_auto_plan.py --device cpu --dtype fp32 --cost sd15-fp32-sdpa-cpu-2core \\
        --canvases 768x768,1024x576 --sides 256,320,384 --batches 1,64 --budget 6 --steps 1
    python bench/bench_auto_plan.py --tiny --device cpu --canvases 256x256 --sides 128,192 --steps 1   # smoke test

The CPU run keeps to crops of 256 to 384 px, inside the 128 to 384 px the CPU cost model was
measured on, and to one crop a call or all of them (plus the chosen batch): about 15 minutes on
2 idle cores, and up to twice that when other processes share them. On the CPU each plan also
shows its process CPU time per thread and the load average, and a line per canvas compares the
plans by CPU time, which other processes do not stretch. With ``--tiny`` the predictions are
the SD 1.5 model's and mean nothing.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# Before torch: bench_upscale_gpu sets OMP_WAIT_POLICY (spinning OpenMP threads make CPU timings erratic).
from bench_upscale_gpu import (DTYPES, Meter, Schedule, build_models, make_eps, parse_sizes, say,  # noqa: E402
                               tame_glibc, tiled_denoiser)

import torch  # noqa: E402

from lib_mixture import cost  # noqa: E402
from lib_mixture.mixture import compile_mixture  # noqa: E402
from lib_mixture.plan import MixturePlan, build_plan  # noqa: E402
from lib_mixture.preset import Overlap, Preset, TileGrid  # noqa: E402

CPU_COST = "sd15-fp32-sdpa-cpu-2core"
SIGMA = 1.0  # mid-schedule; a step's cost does not depend on it
WITHIN = 0.10  # the criterion: the chosen plan within 10% of the fastest


@dataclass
class Row:
    """One swept plan on one canvas: predicted and measured step time and peak (bytes, weights
    included); ``seconds``/``peak`` None when the step ran out of memory."""

    canvas: tuple[int, int]
    tile_width: int
    tile_height: int
    tiles: int
    batch_size: int
    calls: int
    predicted_seconds: float
    predicted_peak: float
    seconds: float | None
    peak: float | None
    fits: bool  # measured peak within the budget (False on out-of-memory)
    chosen: bool = False
    cpu_seconds: float | None = None  # CPU device: the step's process CPU time / threads (median)
    load: float | None = None  # CPU device: the 1-minute load average after the plan (other processes)


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def make_plan(width: int, height: int, tile_width: int, tile_height: int, overlap: int, batch: int) -> MixturePlan:
    """The extension's plan for a square tile grid preset on this canvas."""
    preset = Preset(tiles=TileGrid(width=tile_width, height=tile_height, overlap=Overlap.square(overlap),
                                   batch_size=batch))
    return build_plan(preset, width, height)


def sweep(model: cost.CostModel, width: int, height: int, args: argparse.Namespace,
          chosen: cost.Choice) -> list[tuple[int, int, int]]:
    """``(tile_width, tile_height, batch)`` to measure: `choose`'s own candidates under an unlimited
    budget (its tile sides, clamping and batches), or its grids at ``--batches`` when given, plus
    the chosen plan. A batch is taken as the smallest one with its number of calls: the engine
    splits a group's crops evenly over its calls, so both make the same plan."""
    _, candidates = cost.choose(model, width, height, args.overlap, math.inf, **side_kwargs(args))
    plans = {(c.tile_width, c.tile_height, c.calls): c.batch_size for c in candidates if args.batches is None}
    if args.batches is not None:
        for tw, th, tiles in dict.fromkeys((c.tile_width, c.tile_height, c.tiles) for c in candidates):
            for b in args.batches:
                calls = math.ceil(tiles / min(b, tiles))
                plans[(tw, th, calls)] = math.ceil(tiles / calls)
    plans[(chosen.tile_width, chosen.tile_height, chosen.calls)] = chosen.batch_size
    return [(tw, th, plans[(tw, th, calls)]) for tw, th, calls in sorted(plans, key=lambda k: (k[0], k[1], -k[2]))]


def side_kwargs(args: argparse.Namespace) -> dict:
    return {} if args.sides is None else {"tile_sides": args.sides}


def measure_step(step, meter: Meter, steps: int) -> tuple[float | None, float | None, float | None]:
    """Median seconds of ``steps`` calls after one warm-up, the largest growth of memory during
    a call beyond what was there before it, and the median process CPU time per thread (on a
    shared CPU other processes stretch the wall time, not this); Nones on out-of-memory."""
    cpu: list[float] = []

    def timed():
        t0 = time.process_time()
        out = step()
        cpu.append((time.process_time() - t0) / torch.get_num_threads())
        return out

    if meter.measure(step)[0] is None:
        return None, None, None
    runs = [meter.measure(timed)[1] for _ in range(steps)]
    if any(r["oom"] for r in runs):
        return None, None, None
    extra = max((r["peak"] or 0) - (r["base"] or 0) for r in runs)
    return statistics.median(r["seconds"] for r in runs), float(extra), statistics.median(cpu)


def measure_plan(plan: MixturePlan, eps, meter: Meter, device: torch.device, steps: int) -> tuple:
    """`measure_step` of the engine's CFG denoiser over the whole canvas."""
    lh, lw = plan.latent_size
    mixture = compile_mixture(plan.crops(), lh, lw, batch_size=plan.batch_size, device=device)
    denoise = tiled_denoiser(eps, mixture)
    x = torch.randn(1, 4, lh, lw, generator=torch.Generator().manual_seed(3)).to(device)
    return measure_step(lambda: denoise(x, SIGMA), meter, steps)


def run_canvas(model: cost.CostModel, width: int, height: int, chosen: cost.Choice, eps, meter: Meter,
               device: torch.device, args: argparse.Namespace) -> list[Row]:
    """Measure the sweep on one canvas, printing each plan as it is measured."""
    budget = args.budget * cost.GIB
    say(f"\n{width}x{height}: overlap {args.overlap} px; choose picks {chosen.tile_width}x{chosen.tile_height} px, "
        f"batch {chosen.batch_size} ({chosen.tiles} tiles, {chosen.calls} calls/step, "
        f"pred {chosen.seconds:.3f} s/step, {chosen.peak_bytes / cost.GIB:.2f} GiB)")
    cpu_columns = " | cpu s  load" if device.type == "cpu" else ""
    say(f"  {'tile px':>9} {'tiles':>5} {'batch':>5} {'calls':>5} | {'pred s':>8} {'meas s':>8} {'m/p':>5} | "
        f"{'pred GiB':>8} {'meas GiB':>8} | fits (pred/meas){cpu_columns}")
    rows = []
    for tw, th, batch in sweep(model, width, height, args, chosen):
        plan = make_plan(width, height, tw, th, args.overlap, batch)
        pred_s, pred_peak = cost.estimate(plan, model)
        seconds, extra, cpu = measure_plan(plan, eps, meter, device, args.steps)
        peak = None if extra is None else model.weights_bytes + extra
        on_cpu = device.type == "cpu"
        row = Row((width, height), tw, th, len(plan.crops()), batch, plan.model_calls_per_step, pred_s, pred_peak,
                  seconds, peak, peak is not None and peak <= budget,
                  (tw, th, batch) == (chosen.tile_width, chosen.tile_height, chosen.batch_size),
                  cpu if on_cpu else None, os.getloadavg()[0] if on_cpu else None)
        rows.append(row)
        say(format_row(row, budget))
    return rows


def format_row(r: Row, budget: float) -> str:
    yes = {True: "yes", False: "no"}
    meas_s = "OOM" if r.seconds is None else f"{r.seconds:.3f}"
    ratio = "-" if r.seconds is None else f"{r.seconds / r.predicted_seconds:.2f}"
    meas_gib = "OOM" if r.peak is None else f"{r.peak / cost.GIB:.2f}"
    cpu = "" if r.load is None else (f" | {'-' if r.cpu_seconds is None else f'{r.cpu_seconds:.2f}':>6} "
                                     f"{r.load:5.2f}")
    return (f"  {f'{r.tile_width}x{r.tile_height}':>9} {r.tiles:>5} {r.batch_size:>5} {r.calls:>5} | "
            f"{r.predicted_seconds:8.3f} {meas_s:>8} {ratio:>5} | {r.predicted_peak / cost.GIB:8.2f} {meas_gib:>8} | "
            f"{yes[r.predicted_peak <= budget]:>8}/{yes[r.fits]:<7}{cpu}{'   <- chosen' if r.chosen else ''}")


def verdict(rows: list[Row]) -> str:
    """The canvas's summary line: the chosen plan against the fastest measured plan that fits."""
    w, h = rows[0].canvas
    chosen = next(r for r in rows if r.chosen)
    fitting = [r for r in rows if r.fits]
    head = (f"{w}x{h}: chose {chosen.tile_width} px batch {chosen.batch_size} (pred {chosen.predicted_seconds:.3f} "
            f"s/step) measured {'OOM' if chosen.seconds is None else f'{chosen.seconds:.3f}'} s/step")
    if not fitting:
        return f"{head}; no measured plan fits the budget (within 10%: no)"
    if chosen.seconds is None:
        return f"{head} (within 10%: no)"
    fastest = min(fitting, key=lambda r: r.seconds)
    ratio = chosen.seconds / fastest.seconds
    within = chosen.fits and ratio <= 1 + WITHIN
    over = "" if chosen.fits else "; the chosen plan's measured peak is over the budget"
    return (f"{head}; fastest measured {fastest.tile_width} px batch {fastest.batch_size} {fastest.seconds:.3f} "
            f"s/step; chosen/fastest = {ratio:.2f} (within 10%: {'yes' if within else 'no'}){over}")


def cpu_time_line(rows: list[Row]) -> str | None:
    """On the CPU: the same comparison by process CPU time per thread, which other processes on
    the machine do not stretch (a check on a wall-clock verdict taken under load)."""
    fitting = [r for r in rows if r.fits and r.cpu_seconds is not None]
    chosen = next(r for r in rows if r.chosen)
    if not fitting or chosen.cpu_seconds is None:
        return None
    fastest = min(fitting, key=lambda r: r.cpu_seconds)
    w, h = rows[0].canvas
    return (f"{w}x{h} by CPU time per thread: chosen {chosen.cpu_seconds:.2f} s, fastest {fastest.tile_width} px "
            f"batch {fastest.batch_size} {fastest.cpu_seconds:.2f} s; "
            f"chosen/fastest = {chosen.cpu_seconds / fastest.cpu_seconds:.2f}")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=sorted(DTYPES), help="default fp16 on CUDA, fp32 elsewhere")
    ap.add_argument("--tiny", action="store_true", help="a tiny UNet of the same block types (smoke test)")
    ap.add_argument("--canvases", type=parse_sizes, default=parse_sizes("1024x1024,2048x2048,3840x2160"),
                    help="canvases WxH px, comma separated")
    ap.add_argument("--sides", type=ints, help="square tile sides in px (default: choose's own)")
    ap.add_argument("--batches", type=ints, help="crops per call (default: every batch choose considers)")
    ap.add_argument("--overlap", type=int, default=64, help="minimum tile overlap in px (default 64)")
    ap.add_argument("--budget", type=float, default=8.0, metavar="GIB", help="memory budget in GiB (default 8)")
    ap.add_argument("--cost", help=f"cost model (default: {cost.DEFAULT} on CUDA, {CPU_COST} on the CPU)")
    ap.add_argument("--steps", type=int, default=3, help="measured steps per plan after the warm-up (median)")
    args = ap.parse_args(argv)
    cuda = args.device.startswith("cuda")
    args.dtype = args.dtype or ("fp16" if cuda else "fp32")
    args.cost = args.cost or (cost.DEFAULT if cuda else CPU_COST)
    return args


def main(argv=None) -> list[Row]:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cpu":
        tame_glibc()  # freed tensors leave the resident set, so peak RSS follows live memory
    model = cost.load(args.cost)
    models = build_models(args.tiny, device, DTYPES[args.dtype])
    eps = make_eps(models, Schedule())
    meter = Meter(device)
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"CPU, {torch.get_num_threads()} threads")
    memory = ("CUDA max_memory_allocated during the step beyond what was allocated before it" if meter.cuda
              else "growth of the process's peak RSS during the step (coarse)")
    say(f"device {device} ({where}), {'tiny' if args.tiny else 'SD 1.5'} UNet, {args.dtype}, "
        f"torch {torch.__version__}; median of {args.steps} steps after a warm-up")
    say(f"cost model {model.name}: {model.source}")
    say(f"budget {args.budget:g} GiB; peak = the model's weights ({model.weights_bytes / cost.GIB:.2f} GiB) + "
        f"{memory}; m/p = measured / predicted s/step")
    if args.tiny:
        say("tiny UNet: a smoke test; the predictions are the cost model's for SD 1.5 and mean nothing here")
    if device.type == "cpu":
        threads = torch.get_num_threads()
        say(f"cpu s = the step's process CPU time / {threads} threads; load = 1-minute load average after the plan "
            f"(above {threads}: other processes share the cores and stretch the wall time)")
    rows: list[Row] = []
    refused: dict[tuple[int, int], str] = {}  # canvases where choose finds nothing within the budget
    with torch.inference_mode():
        for width, height in args.canvases:
            try:
                chosen, _ = cost.choose(model, width, height, args.overlap, args.budget * cost.GIB, **side_kwargs(args))
            except ValueError as e:
                refused[(width, height)] = str(e)
                continue
            rows += run_canvas(model, width, height, chosen, eps, meter, device, args)
    say("")
    per_canvas = {canvas: [r for r in rows if r.canvas == canvas] for canvas in args.canvases}
    for line in filter(None, (cpu_time_line(r) for r in per_canvas.values() if r)):
        say(line)
    for (w, h), canvas_rows in per_canvas.items():
        say(verdict(canvas_rows) if canvas_rows else f"{w}x{h}: choose picks nothing: {refused.get((w, h))}")
    return rows


if __name__ == "__main__":
    main()
    raise SystemExit(0)
