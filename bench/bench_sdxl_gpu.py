"""SDXL's UNet under the tile grid: seconds per step and peak memory, against the full canvas.

A diffusers ``UNet2DConditionModel`` built from SDXL base's config (random seeded weights, nothing
downloaded, ``--dtype`` fp16 by default) runs one CFG step (cond and uncond rows in one batch, CFG
scale 7) per measured call:

* **tiles**: the engine's compiled mixture on a ``--size`` canvas (default 3840x2160) with
  ``--tile`` px tiles (default 1024) and at least ``--overlap`` px overlap, ``--tile-batch`` crops per
  UNet call (each of ``--batches``); every crop gets its own SDXL size conditioning
  (`lib_mixture.micro_cond`: crop_coords_top_left = its offset, original/target size = the canvas),
  as the extension's default does;
* **full canvas**: the UNet once on the whole latent, at 1024x1024 and at ``--size`` ("OOM" where it
  does not fit).

Per configuration: median seconds per step over ``--repeats`` after a warm-up, UNet calls per step,
and peak memory (CUDA: ``max_memory_allocated``, weights included; "extra" beyond the weights).
Ratios are against the full 1024x1024 step, measured in the same run.

    python bench/bench_sdxl_gpu.py                        # a CUDA device, full-size SDXL UNet
    python bench/bench_sdxl_gpu.py --tiny --device cpu --size 512x384 --tile 256 --overlap 64   # smoke test
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import warnings
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_upscale_gpu import DTYPES, Meter, say  # noqa: E402

from lib_mixture.geometry import LATENT_FACTOR  # noqa: E402
from lib_mixture.mixture import compile_mixture  # noqa: E402
from lib_mixture.plan import build_plan  # noqa: E402
from lib_mixture.preset import Overlap, Preset, TileGrid  # noqa: E402

SEED = 1234
TEXT_LEN = 77
CFG_SCALE = 7.0
SDXL_UNET = dict(  # stabilityai/stable-diffusion-xl-base-1.0, unet/config.json
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816)
TINY_UNET = dict(  # the same block types and conditioning, few channels
    sample_size=32, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=1, attention_head_dim=2, cross_attention_dim=64, norm_num_groups=8,
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
    projection_class_embeddings_input_dim=32 + 6 * 8)


def build_unet(tiny: bool, device: torch.device, dtype: torch.dtype):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from diffusers import UNet2DConditionModel
        from diffusers.utils import logging as diffusers_logging
    diffusers_logging.set_verbosity_error()  # "modules to keep in float32: []" on every .to(dtype)
    cfg = TINY_UNET if tiny else SDXL_UNET
    torch.manual_seed(SEED)
    with device:
        unet = UNet2DConditionModel(**cfg)
    return unet.to(device=device, dtype=dtype).eval().requires_grad_(False), cfg


def parse_size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="3840x2160")
    ap.add_argument("--tile", type=int, default=1024)
    ap.add_argument("--overlap", type=int, default=128)
    ap.add_argument("--batches", default="1,4", help="crops per UNet call to measure (default 1,4)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtype", default="fp16", choices=sorted(DTYPES))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="a few-channel UNet with SDXL's block types (smoke test)")
    args = ap.parse_args(argv)

    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    unet, cfg = build_unet(args.tiny, device, dtype)
    width, height = parse_size(args.size)
    g = torch.Generator().manual_seed(SEED + 1)
    text_dim = cfg["cross_attention_dim"]
    pooled_dim = cfg["projection_class_embeddings_input_dim"] - 6 * cfg["addition_time_embed_dim"]
    context = torch.randn(2, TEXT_LEN, text_dim, generator=g).to(device, dtype)  # cond, uncond
    pooled = torch.randn(2, pooled_dim, generator=g).to(device, dtype)
    meter = Meter(device)
    weights = sum(p.numel() * p.element_size() for p in unet.parameters())

    def step(x: torch.Tensor, time_ids: torch.Tensor) -> torch.Tensor:
        """One CFG prediction for ``x [n, 4, h, w]``; ``time_ids [n, 6]`` per row."""
        n = x.shape[0]
        emb = context.repeat_interleave(n, 0)
        kwargs = dict(text_embeds=pooled.repeat_interleave(n, 0), time_ids=time_ids.repeat(2, 1))
        t = torch.full((2 * n,), 500.0, device=device)
        out = unet(torch.cat([x, x]).to(dtype), t, encoder_hidden_states=emb, added_cond_kwargs=kwargs).sample.float()
        return out[n:] + CFG_SCALE * (out[:n] - out[n:])

    def canvas_ids(w: int, h: int, n: int) -> torch.Tensor:
        return torch.tensor([[h, w, 0, 0, h, w]], dtype=torch.float32, device=device).repeat(n, 1)

    results = []

    def timed(name: str, size: tuple[int, int], calls: int, fn) -> None:
        fn()  # warm-up (cuDNN / oneDNN choose their kernels per shape)
        runs = [meter.measure(fn)[1] for _ in range(args.repeats)]
        if any(r["oom"] for r in runs):
            results.append((name, size, calls, None, None))
            say(f"{name:<28} {size[0]}x{size[1]:<6} OOM")
            return
        sec = statistics.median(r["seconds"] for r in runs)
        peak = max(r["peak"] or 0 for r in runs)
        results.append((name, size, calls, sec, peak))

    say(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}), "
        f"{'tiny' if args.tiny else 'SDXL base'} UNet, {args.dtype}, weights {weights / 2**30:.2f} GiB, "
        f"median of {args.repeats}")
    for w, h in ((1024, 1024), (width, height)):
        x = torch.randn(1, 4, h // LATENT_FACTOR, w // LATENT_FACTOR, generator=g).to(device)
        timed("full canvas", (w, h), 1, lambda x=x, w=w, h=h: step(x, canvas_ids(w, h, 1)))

    x = torch.randn(1, 4, height // LATENT_FACTOR, width // LATENT_FACTOR, generator=g).to(device)
    for batch in [int(b) for b in args.batches.split(",")]:
        preset = Preset(tiles=TileGrid(width=args.tile, height=args.tile, overlap=Overlap.square(args.overlap),
                                       batch_size=batch))
        plan = build_plan(preset, width, height)
        mixture = compile_mixture(plan.crops(), *plan.latent_size, batch_size=batch, device=device)
        def predict(x_crops, sigma, specs):
            # diffusers embeds SDXL's size pairs from time_ids itself: (original h, w, crop top, left,
            # target h, w), here each crop's own offset on the canvas (the extension's default)
            ids = torch.tensor([[height, width, s.box.y * LATENT_FACTOR, s.box.x * LATENT_FACTOR, height, width]
                                for s in specs], dtype=torch.float32, device=device)
            return step(x_crops, ids)

        sig = torch.ones(1)
        timed(f"tiles {args.tile} px, {batch} a call", (width, height), plan.model_calls_per_step,
              lambda: mixture(x, sig, predict))
    ref = results[0][3]
    say(f"{'configuration':<28} {'size':>10} {'UNet calls/step':>16} {'s/step':>8} {'x 1024² full':>13} "
        f"{'peak GiB':>9} {'extra GiB':>10}")
    for name, (w, h), calls, sec, peak in results:
        if sec is None:
            say(f"{name:<28} {f'{w}x{h}':>10} {calls:>16} {'OOM':>8}")
            continue
        peak_text = f"{peak / 2**30:9.2f} {(peak - weights) / 2**30:10.2f}" if device.type == "cuda" else f"{'n/a':>9} {'n/a':>10}"
        say(f"{name:<28} {f'{w}x{h}':>10} {calls:>16} {sec:8.3f} {sec / ref:13.2f} {peak_text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
