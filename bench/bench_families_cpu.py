"""Host UNet calls per step and seconds per step with the tiny SDXL (and SD 2.x v) checkpoints in the
real WebUI, in-process on the CPU: the WebUI alone at 1024x1024, this extension's tiles at 2048x2048
with 1 and 4 crops a call.

Runs with the WebUI's own python, one torch thread; the tiny random checkpoints are built by
``tests/webui/tiny_families.py`` into a temporary folder. Only sampling is timed (the VAE decode
returns black images); each figure is the median of ``--repeats`` jobs after a warm-up job:

    cd "$MOD_WEBUI_DIR" && MOD_WEBUI_DIR=$PWD venv/bin/python /path/to/repo/bench/bench_families_cpu.py --families sdxl

Tiles: 1024 px, at least 128 px overlap (9 tiles on 2048x2048), Euler, ``--steps`` steps.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for path in (ROOT / "tests" / "webui", ROOT, HERE):
    sys.path.insert(0, str(path))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--families", default="sdxl", help="comma-separated: sdxl, sd2-v (default sdxl)")
    ap.add_argument("--repeats", type=int, default=3, help="measured jobs per configuration (median; default 3)")
    ap.add_argument("--steps", type=int, default=4)
    args = ap.parse_args(argv)

    import inprocess
    from _common import time_webui_sampling
    import tiny_checkpoint
    import tiny_families

    data = Path(tempfile.mkdtemp(prefix="mod-bench-families-"))
    inprocess.boot(tiny_checkpoint.build_tiny_checkpoint(data / "sd1"), data_dir=data)

    import torch

    from lib_mixture.plan import build_plan
    from lib_mixture.preset import parse_preset

    torch.set_num_threads(1)
    spec = importlib.util.spec_from_file_location("mod_script", ROOT / "scripts" / "mixture_of_diffusers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    script = module.MixtureOfDiffusersScript()

    clock = {"sampling": 0.0, "calls": 0}
    time_webui_sampling(clock)

    def tiles(batch):
        return {"version": 1, "tiles": {"width": 1024, "height": 1024, "overlap": 128, "batch_size": batch}}

    configs = [("WebUI alone", 1024, None), ("tiles, 1 crop a call", 2048, tiles(1)),
               ("tiles, 4 crops a call", 2048, tiles(4))]
    print(f"in-process WebUI v1.10.1, CPU, 1 thread, Euler, {args.steps} steps, median of {args.repeats} jobs; "
          "tiles 1024 px, overlap >= 128 px")
    print(f"{'model':<8} {'configuration':<22} {'size':>9} {'crops':>6} {'UNet calls/step':>16} {'s/step':>8}")
    for family in args.families.split(","):
        model = inprocess.load_checkpoint(tiny_families.build(data / "families", family))
        handle = model.model.diffusion_model.register_forward_pre_hook(
            lambda m, a: clock.__setitem__("calls", clock["calls"] + 1))
        try:
            for name, size, config in configs:
                scripts_with_args = [] if config is None else [(script, [True, json.dumps(config)])]
                crops = 1 if config is None else len(build_plan(parse_preset(config), size, size).crops())

                def job(steps):
                    return inprocess.txt2img(scripts_with_args, width=size, height=size, steps=steps,
                                             sampler_name="Euler", seed=1, prompt="a wide mountain landscape")
                job(1)  # warm-up
                runs = []
                for _ in range(args.repeats):
                    clock.update(sampling=0.0, calls=0)
                    job(args.steps)
                    runs.append(dict(clock))
                per_step = statistics.median(r["sampling"] for r in runs) / args.steps
                calls = statistics.median(r["calls"] for r in runs) / args.steps
                print(f"{family:<8} {name:<22} {f'{size}x{size}':>9} {crops:>6} {calls:>16.1f} {per_step:>8.3f}")
        finally:
            handle.remove()
    return 0


if __name__ == "__main__":
    sys.exit(main())
