"""Measure the SD 1.5 UNet's model calls on this device and fit a cost model (`lib_mixture.cost`).

The UNet is diffusers' ``UNet2DConditionModel`` with SD 1.5's config and seeded random weights
(`bench_upscale_gpu.build_models`; nothing downloaded). For every crop side in ``--sides`` (latent
cells) and every row count in ``--rows`` (crops x 2: cond and uncond), it times the call (median of
``--repeats`` after a warm-up) and reads its peak memory beyond what was allocated before (CUDA:
``max_memory_allocated``; CPU: the peak RSS, coarse), then fits

    seconds = call + row_cell * rows * cells + row_cell2 * rows * cells^2
    bytes   = base + row_cell_bytes * rows * cells (+ row_cell2_bytes * rows * cells^2 with --quadratic-memory)

and prints each measurement beside its prediction. ``--write`` stores the model, with the
measurements it came from, as ``lib_mixture/costs/<name>.json``: the CLI's ``plan --cost`` and
``--budget`` read it, and (for the default model) the editor's estimate after
``python -m lib_mixture.generated --write``. A call that runs out of memory is reported and left
out of the fit.

    python bench/calibrate_cost.py --device cuda --dtype fp16 --name sd15-fp16-sdpa-<gpu> --write
    python bench/calibrate_cost.py --tiny --device cpu --dtype fp32 --sides 8,16 --rows 2,4   # smoke test
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_upscale_gpu import DTYPES, Meter, build_models, say  # noqa: E402

from lib_mixture.cost import FOLDER, GIB, Measurement, fit  # noqa: E402


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="fp16")
    ap.add_argument("--tiny", action="store_true", help="a tiny UNet of the same block types (smoke test)")
    ap.add_argument("--sides", type=ints, default=ints("32,48,64,80,96,128"), help="crop sides in latent cells")
    ap.add_argument("--rows", type=ints, default=ints("2,4,8,16,32"), help="rows per call (crops x 2)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quadratic-memory", action="store_true",
                    help="fit a memory term in the square of the tokens (attention without a memory-efficient kernel)")
    ap.add_argument("--name", default=None, help="the model's name (default: from the device and dtype)")
    ap.add_argument("--write", action="store_true", help="store lib_mixture/costs/<name>.json")
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    models = build_models(args.tiny, device, dtype)
    weights = sum(p.numel() * p.element_size() for m in (models.unet, models.vae) for p in m.parameters())
    weights += 123_060_480 * torch.finfo(dtype).bits // 8  # the CLIP ViT-L/14 text encoder the WebUI also holds
    gpu = (torch.cuda.get_device_name(device) if device.type == "cuda"
           else f"{torch.get_num_threads()} CPU threads ({platform.machine()})")
    attention = "SDPA" if hasattr(torch.nn.functional, "scaled_dot_product_attention") else "plain"
    where = gpu.split()[-1].lower() if device.type == "cuda" else "cpu"
    name = args.name or f"sd15{'-tiny' if args.tiny else ''}-{args.dtype}-{attention.lower()}-{where}"
    meter = Meter(device)
    say(f"device {device} ({gpu}), {'tiny' if args.tiny else 'SD 1.5'} UNet, {args.dtype}, {attention}, "
        f"weights {weights / GIB:.2f} GiB, median of {args.repeats}")

    measured: list[Measurement] = []
    g = torch.Generator().manual_seed(7)
    for side in args.sides:
        for rows in args.rows:
            x = torch.randn(rows, 4, side, side, generator=g).to(device, dtype)
            ctx = torch.cat([models.cond, models.uncond]).repeat(rows // 2 or 1, 1, 1)[:rows]
            t = torch.full((rows,), 500.0, device=device)

            def call(x=x, ctx=ctx, t=t):
                with torch.no_grad():
                    return models.unet(x, t, encoder_hidden_states=ctx).sample
            if meter.measure(call)[0] is None:  # warm-up: kernels are chosen per shape
                say(f"  rows {rows:3} side {side:4}: out of memory")
                continue
            runs = [meter.measure(call)[1] for _ in range(args.repeats)]
            if any(r["oom"] for r in runs):
                say(f"  rows {rows:3} side {side:4}: out of memory")
                continue
            seconds = statistics.median(r["seconds"] for r in runs)
            extra = max((r["peak"] or 0) - (r["base"] or 0) for r in runs)
            measured.append(Measurement(rows, side * side, seconds, float(extra),
                                        f"{rows} rows of {side}x{side} latent cells ({side * 8} px)"))
            say(f"  rows {rows:3} side {side:4}: {seconds:.4f} s, extra {extra / GIB:.3f} GiB")

    source = (f"{gpu}, {args.dtype}, {'a tiny UNet' if args.tiny else 'the SD 1.5 UNet architecture'} with random "
              f"weights, {attention} attention, torch {torch.__version__}, {datetime.date.today().isoformat()}; "
              f"bench/calibrate_cost.py, median of {args.repeats}")
    model = fit(name, source, float(weights), measured, quadratic_memory=args.quadratic_memory,
                family="sd1", device=device.type, dtype=args.dtype)
    say(f"\n{name}: seconds = {model.call:.4g} + {model.row_cell:.4g} rows*cells + {model.row_cell2:.4g} rows*cells^2; "
        f"bytes = {model.base_bytes:.4g} + {model.row_cell_bytes:.4g} rows*cells + {model.row_cell2_bytes:.4g} rows*cells^2")
    say(f"  {'rows':>4} {'cells':>7} | {'s/call':>8} {'model':>8} {'error':>6} | {'GiB':>6} {'model':>6}")
    for m in measured:
        t, b = model.call_seconds(m.rows, m.cells), model.call_bytes(m.rows, m.cells)
        say(f"  {m.rows:>4} {m.cells:>7} | {m.seconds:8.4f} {t:8.4f} {t / m.seconds - 1:+6.1%} | "
            f"{m.extra_bytes / GIB:6.3f} {b / GIB:6.3f}")
    if args.write:
        path = FOLDER / f"{name}.json"
        path.write_text(model.to_json(), encoding="utf-8")
        say(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
