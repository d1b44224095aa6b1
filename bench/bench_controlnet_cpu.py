"""Seconds per step of a tile grid with and without one ControlNet unit, in the real WebUI with
sd-webui-controlnet, in-process on the CPU: 2048x2048, 512 px tiles, 1 and 4 crops a call.

The unit is the tiny random T2I-Adapter of ``tests/webui/tiny_t2i_adapter.py`` on the tiny SD1
checkpoint; one torch thread; Euler, ``--steps`` steps; only sampling is timed (the VAE decode
returns black images); each figure is the median of ``--repeats`` jobs after a warm-up job:

    cd "$MOD_WEBUI_DIR" && MOD_WEBUI_DIR=$PWD venv/bin/python /path/to/repo/bench/bench_controlnet_cpu.py \\
        --controlnet /path/to/sd-webui-controlnet
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for path in (ROOT / "tests" / "webui", ROOT, HERE):
    sys.path.insert(0, str(path))

ADAPTER = "tiny-t2i-adapter"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--controlnet", required=True, help="an sd-webui-controlnet checkout")
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4)
    args = ap.parse_args(argv)

    import inprocess
    from _common import time_webui_sampling
    import tiny_checkpoint
    from tiny_t2i_adapter import write_adapter

    data = Path(tempfile.mkdtemp(prefix="mod-bench-cn-"))
    (data / "extensions").mkdir()
    (data / "extensions" / "sd-webui-controlnet").symlink_to(Path(args.controlnet).resolve())
    (data / "extensions" / "sd-webui-mixture-of-diffusers").symlink_to(ROOT)
    inprocess.boot(tiny_checkpoint.build_tiny_checkpoint(data / "ckpt"), data_dir=data, load_scripts=True)

    import numpy as np
    import torch
    from modules import scripts

    torch.set_num_threads(1)
    write_adapter(data / "models" / "ControlNet" / f"{ADAPTER}.safetensors")
    sys.modules["scripts.global_state"].update_cn_models()
    from internal_controlnet.external_code import ControlNetUnit

    found = {s.title(): s for s in scripts.scripts_txt2img.alwayson_scripts}
    clock = {"sampling": 0.0}
    time_webui_sampling(clock)

    size = args.size
    y, x = np.mgrid[0:size, 0:size]
    image = np.stack([x % 256, y % 256, (x // 64 + y // 64) % 2 * 255], axis=-1).astype("uint8")

    def units(on):
        return [ControlNetUnit(enabled=on, module="none", model=ADAPTER, image=image, resize_mode="Just Resize")]

    print(f"in-process WebUI v1.10.1 + sd-webui-controlnet, CPU, 1 thread, tiny SD1 + tiny T2I-Adapter, Euler, "
          f"{args.steps} steps, {size}x{size}, tiles 512 px overlap >= 128, median of {args.repeats} jobs")
    print(f"{'crops a call':>12} {'ControlNet':>11} {'s/step':>8} {'x without':>10}")
    for batch in (1, 4):
        config = json.dumps({"version": 1, "tiles": {"width": 512, "height": 512, "overlap": 128, "batch_size": batch}})
        per = {}
        for on in (False, True):
            def job(steps):
                return inprocess.txt2img([(found["ControlNet"], units(on)), (found["Mixture of Diffusers"], [True, config])],
                                         width=size, height=size, steps=steps, sampler_name="Euler", seed=1,
                                         prompt="a wide mountain landscape")
            job(1)
            runs = []
            for _ in range(args.repeats):
                clock["sampling"] = 0.0
                job(args.steps)
                runs.append(clock["sampling"] / args.steps)
            per[on] = statistics.median(runs)
            print(f"{batch:>12} {'on' if on else 'off':>11} {per[on]:8.3f} {per[on] / per[False]:10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
