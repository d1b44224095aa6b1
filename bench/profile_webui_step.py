"""Where one sampling step's time goes in the real WebUI, in-process: the UNet versus everything
around it (the sampler loop, the host's CFG forward, the extension), for the WebUI alone, this
extension and Tiled Diffusion on the same tiles.

Runs with the WebUI's own python (its modules are imported into this process), one torch
thread, the tiny random SD1.x checkpoint; the configurations' jobs are interleaved (each one
first in turn, so none always follows the full-canvas job) and each
figure is the median of ``--repeats`` jobs after one warm-up job each:

    cd "$MOD_WEBUI_DIR" && venv/bin/python /path/to/repo/bench/profile_webui_step.py \\
        --td /path/to/multidiffusion-upscaler-for-automatic1111 --sizes 1024,2048

Per configuration and size it prints, per sampling step: the sampler's time (``launch_sampling``),
the UNet's (forward hooks on ``diffusion_model``), the rest (``outside``), the host CFG forwards
and the UNet calls. The VAE decode is replaced by black images (only sampling is timed). Tiles: 512 px, at least 128 px overlap, 4 crops a call, Euler a, 8 steps.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for path in (ROOT / "tests" / "webui", ROOT, HERE):
    sys.path.insert(0, str(path))

OUR_NAME = "sd-webui-mixture-of-diffusers"
TD_NAME = "multidiffusion-upscaler-for-automatic1111"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1024", help="square canvas sizes in px (default 1024)")
    ap.add_argument("--repeats", type=int, default=5, help="measured jobs per configuration (median; default 5)")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4, help="crops per UNet call (default 4)")
    ap.add_argument("--td", help="Tiled Diffusion checkout (optional)")
    ap.add_argument("--ckpt", help="tiny checkpoint (default: built into a temporary folder)")
    args = ap.parse_args(argv)

    import inprocess
    from _common import time_webui_sampling
    import tiny_checkpoint

    data = Path(tempfile.mkdtemp(prefix="mod-profile-"))
    (data / "extensions").mkdir()
    (data / "extensions" / OUR_NAME).symlink_to(ROOT)
    if args.td:
        (data / "extensions" / TD_NAME).symlink_to(Path(args.td).resolve())
    ckpt = args.ckpt or tiny_checkpoint.build_tiny_checkpoint(data / "ckpt")
    inprocess.boot(ckpt, data_dir=data, load_scripts=True)

    import torch
    from modules import script_callbacks, scripts, shared

    import bench_webui

    torch.set_num_threads(1)

    scripts_by_title = {s.title(): s for s in scripts.scripts_txt2img.alwayson_scripts}
    clock = {"sampling": 0.0, "unet": 0.0, "unet_calls": 0, "forwards": 0}
    unet = shared.sd_model.model.diffusion_model
    unet.register_forward_pre_hook(lambda m, a: clock.__setitem__("t0", time.perf_counter()))

    def after_unet(m, a, o):
        clock["unet"] += time.perf_counter() - clock["t0"]
        clock["unet_calls"] += 1
    unet.register_forward_hook(after_unet)
    time_webui_sampling(clock)
    script_callbacks.on_cfg_denoiser(lambda p: clock.__setitem__("forwards", clock["forwards"] + 1))

    tiles_px, overlap_px = 512, 128
    ours_args = [True, json.dumps({"version": 1, "tiles": {"width": tiles_px, "height": tiles_px, "overlap": overlap_px,
                                                           "batch_size": args.batch}})]
    configs = {"off": []}
    configs["ours"] = [(scripts_by_title["Mixture of Diffusers"], ours_args)]
    if args.td:
        configs["TD"] = [(scripts_by_title["Tiled Diffusion"],
                          bench_webui.td_args(enabled=True, method="Mixture of Diffusers", tile_width=tiles_px // 8,
                                              tile_height=tiles_px // 8, overlap=overlap_px // 8,
                                              batch_size=args.batch))]

    def job(kind, size, steps):
        return inprocess.txt2img(configs[kind], width=size, height=size, steps=steps, sampler_name="Euler a",
                                 seed=1, prompt="a wide mountain landscape, detailed", negative_prompt="blurry")

    print(f"in-process WebUI, CPU, 1 thread, tiny SD1.x model, Euler a, {args.steps} steps, tiles {tiles_px} px, "
          f"overlap {overlap_px} px, {args.batch} crops a call; per step, median of {args.repeats} jobs")
    print(f"{'config':<6} {'size':>9} {'step ms':>8} {'UNet ms':>8} {'outside ms':>11} {'CFG forwards':>13} "
          f"{'UNet calls':>11}")
    for size in [int(s) for s in args.sizes.split(",")]:
        runs = {k: [] for k in configs}
        for k in configs:
            job(k, size, 2)  # warm-up at this size
        order = list(configs)
        for r in range(args.repeats):
            for k in order[r % len(order):] + order[:r % len(order)]:  # each config first in turn
                clock.update(sampling=0.0, unet=0.0, unet_calls=0, forwards=0)
                job(k, size, args.steps)
                runs[k].append(dict(clock))
        for k, rs in runs.items():
            med = lambda key: statistics.median(r[key] for r in rs) / args.steps  # noqa: E731
            print(f"{k:<6} {f'{size}x{size}':>9} {1000 * med('sampling'):8.1f} {1000 * med('unet'):8.1f} "
                  f"{1000 * (med('sampling') - med('unet')):11.2f} {med('forwards'):13.1f} {med('unet_calls'):11.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
