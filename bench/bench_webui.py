#!/usr/bin/env python3
"""Time per step and peak memory through a real A1111 WebUI on the CPU, tiny model.

Configurations, each on its own fresh server process (so the process's memory high-water
mark belongs to that configuration alone); for one canvas size all of them are up side by
side and their jobs interleaved, so load from other work on the machine hits them alike:

* ``off``: the WebUI without extensions;
* ``ours b1`` / ``ours b8``: this extension, a tile grid with tile batch size 1 / 8;
* ``TD b1`` / ``TD b8``: the "Tiled Diffusion" extension (pkuliyi2015/
  multidiffusion-upscaler-for-automatic1111), method "Mixture of Diffusers", the same tiles,
  overlap and batch sizes; only when its checkout is given (``--td`` or ``MOD_TD_DIR``).

Tiles: 512x512 px (64x64 latent) with a 64 px (8 latent) minimum overlap; both extensions
place the same grid for these sizes (3x3 tiles at 1024, 5x5 at 2048), spread evenly with
flush edges. Both extensions even out their batches (25 tiles at batch 8: 4 calls of
7, 7, 7 and 4 tiles).

Time per step: ``s/step`` is the sampling time divided by the steps, the sampling time
being from the WebUI's own sampler progress bar starting (``0/N``) to its end (``N/N``), as
seen in the server log by polling it every 20 ms. That leaves out the fixed cost of a job
(prompt encoding, the full-canvas VAE decode, PNG encoding, HTTP), which at 2048x2048 is
most of the request; it keeps everything the extensions do per step (this extension builds
its plan at the first step, inside the window; Tiled Diffusion builds its own before the
sampler starts, outside it). ``job s`` is the whole request as a caller sees it.
With ``--repeats N`` (default 2) the fastest of N jobs is kept.

Memory: ``peak RSS`` is the server process's ``VmHWM`` (``/proc/<pid>/status``) after its
jobs: its peak resident set over its whole life on that configuration (start-up, a 128x128
warm-up, the measured jobs). ``sampling RSS`` is the largest ``VmRSS`` sampled every 20 ms
while the sampler runs: what the denoising itself needs. The gap between the two is the VAE
decode of the full canvas, which the host does after sampling without tiling
(``--opt-sdp-attention`` is on, as in the launcher, so the decoder's attention does not build
the full attention matrix). With the tiny model the UNet is small, so at 2048x2048 the
decode dominates every configuration's peak.

    MOD_WEBUI_DIR=/work/webui python3 bench/bench_webui.py --td /work/td-bench/td
    MOD_WEBUI_DIR=/work/webui python3 bench/bench_webui.py --quick      # 1024 only, 1 job each

Threads: each server runs torch on one CPU thread by default (``--threads``). On a small
machine shared with other work, two OpenMP threads per process oversubscribe the cores and
every small operator waits at a barrier for a descheduled thread; times then vary several
fold from run to run, and most for many small model calls (tile batch 1). One thread makes
the ratios repeatable.

Up to five servers run at once (about 1.2-1.5 GB resident each when idle, on this model).

Tiled Diffusion's API arguments are positional: the values its ``ui()`` returns, in order.
``TD_ARGS`` below names them (from its scripts/tilediffusion.py, v. commit 22798f6); the
script checks the count and the labels against the server's ``/sdapi/v1/script-info``
before using them. Only standard library in this process (the WebUI runs in its own venv).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests" / "webui"))

import launcher  # noqa: E402

OUR_NAME = "sd-webui-mixture-of-diffusers"
TD_NAME = "multidiffusion-upscaler-for-automatic1111"
TILE_PX, OVERLAP_PX = 512, 64

# Tiled Diffusion's positional arguments, in its ui() return order: (name, default, label in
# /sdapi/v1/script-info or None when not checked). 21 values, then 8 regions x 10 values.
TD_ARGS = [
    ("enabled", False, None),                       # 0  InputAccordion
    ("method", "MultiDiffusion", "Method"),         # 1  "MultiDiffusion" | "Mixture of Diffusers"
    ("overwrite_size", False, "Overwrite image size"),
    ("keep_input_size", True, "Keep input image size"),
    ("image_width", 1024, "Image width"),
    ("image_height", 1024, "Image height"),          # 5
    ("tile_width", 96, "Latent tile width"),         # latent px (image px / 8)
    ("tile_height", 96, "Latent tile height"),
    ("overlap", 48, "Latent tile overlap"),          # latent px
    ("batch_size", 4, "Latent tile batch size"),     # 1..8
    ("upscaler_name", "None", "Upscaler"),           # 10 img2img only
    ("scale_factor", 2.0, "Scale Factor"),
    ("noise_inverse", False, "Enable Noise Inversion"),
    ("noise_inverse_steps", 10, "Inversion steps"),
    ("noise_inverse_retouch", 1, "Retouch"),
    ("noise_inverse_renoise_strength", 1, "Renoise strength"),  # 15
    ("noise_inverse_renoise_kernel", 64, "Renoise kernel size"),
    ("control_tensor_cpu", False, "Move ControlNet tensor to CPU (if applicable)"),
    ("enable_bbox_control", False, "Enable Control"),
    ("draw_background", False, "Draw full canvas background"),
    ("causal_layers", False, "Causalize layers"),    # 20
]
TD_REGIONS = 8  # BBOX_MAX_NUM (its --md-max-regions, default 8)
TD_REGION_ARGS = [("enable", False), ("x", 0.4), ("y", 0.4), ("w", 0.2), ("h", 0.2), ("prompt", ""),
                  ("neg_prompt", ""), ("blend_mode", "Background"), ("feather_ratio", 0.2), ("seed", -1)]


def td_args(**values) -> list:
    """Tiled Diffusion's full positional argument list: defaults, overridden by name."""
    names = [n for n, _, _ in TD_ARGS]
    unknown = set(values) - set(names)
    if unknown:
        raise KeyError(f"unknown Tiled Diffusion arguments: {sorted(unknown)}")
    out = [values.get(n, d) for n, d, _ in TD_ARGS]
    for _ in range(TD_REGIONS):
        out += [d for _, d in TD_REGION_ARGS]
    return out


def check_td_args(ui: launcher.WebUI) -> None:
    info = [s for s in ui.get("/sdapi/v1/script-info") if s["name"] == "tiled diffusion" and not s["is_img2img"]]
    if not info:
        raise SystemExit("Tiled Diffusion is not loaded by the server (see its log)")
    args = info[0]["args"]
    expected = len(TD_ARGS) + TD_REGIONS * len(TD_REGION_ARGS)
    if len(args) != expected:
        raise SystemExit(f"Tiled Diffusion takes {len(args)} arguments, this script knows {expected}")
    for i, (name, _, label) in enumerate(TD_ARGS):
        if label is not None and args[i].get("label") != label:
            raise SystemExit(f"Tiled Diffusion argument {i} is {args[i].get('label')!r}, expected {label!r} ({name})")


# ---- measuring -------------------------------------------------------------------------------

def proc_status(pid: int, key: str) -> int:
    """A ``/proc/<pid>/status`` memory field in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


class JobWatch:
    """While a job runs: when the sampler's progress bar starts and ends (from the server log),
    and the largest VmRSS sampled in between, every ``period`` seconds.

    The WebUI's own k-diffusion bar is the line without a prefix: ``  0%|...| 0/3 [`` when
    sampling starts, ``100%|...| 3/3 [`` when it ends ("Total progress" and Tiled Diffusion's
    tile bar carry a prefix and are not matched).
    """

    def __init__(self, ui: launcher.WebUI, steps: int, period: float = 0.02):
        self.ui, self.pid, self.period = ui, ui.proc.pid, period
        self.begin_re = re.compile(rf"^\s*0%\|[^|]*\|\s*0/{steps} \[", re.M)
        self.end_re = re.compile(rf"^\s*100%\|[^|]*\|\s*{steps}/{steps} \[", re.M)
        self.offset = ui.log_path.stat().st_size
        self.text = ""
        self.t_begin = self.t_end = None
        self.sampling_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _poll_log(self, now: float) -> None:
        with open(self.ui.log_path, "rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        if not chunk:
            return
        self.offset += len(chunk)
        self.text += chunk.decode("utf-8", errors="replace").replace("\r", "\n")
        if self.t_begin is None and self.begin_re.search(self.text):
            self.t_begin = now
        if self.t_begin is not None and self.t_end is None and self.end_re.search(self.text):
            self.t_end = now

    def _run(self):
        while not self._stop.is_set():
            rss = proc_status(self.pid, "VmRSS")
            now = time.monotonic()
            self._poll_log(now)
            if self.t_begin is not None and self.t_end is None:
                self.sampling_peak = max(self.sampling_peak, rss)
            self._stop.wait(self.period)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._poll_log(time.monotonic())

    @property
    def sampling_seconds(self) -> float:
        if self.t_begin is None or self.t_end is None:
            raise RuntimeError("the sampler's progress bar was not seen in the log:\n" + self.text[-2000:])
        return self.t_end - self.t_begin


def job(size: int, steps: int, seed: int = 1) -> dict:
    return {"prompt": "a wide mountain landscape, detailed", "negative_prompt": "blurry", "steps": steps,
            "sampler_name": "Euler", "scheduler": "Automatic", "cfg_scale": 7.0, "width": size, "height": size,
            "seed": seed, "batch_size": 1, "n_iter": 1, "send_images": True, "save_images": False}


def config_scripts(kind: str, batch: int) -> dict:
    if kind == "ours":
        tiles = {"width": TILE_PX, "height": TILE_PX, "overlap": OVERLAP_PX, "batch_size": batch}
        return {"Mixture of Diffusers": {"args": [True, {"version": 1, "tiles": tiles}]}}
    if kind == "td":
        args = td_args(enabled=True, method="Mixture of Diffusers", tile_width=TILE_PX // 8,
                       tile_height=TILE_PX // 8, overlap=OVERLAP_PX // 8, batch_size=batch)
        return {"Tiled Diffusion": {"args": args}}
    return {}


class Config:
    """One configuration on its own server process."""

    def __init__(self, label: str, kind: str, batch: int, ckpt: Path, td_dir: Path | None, log_dir: Path | None,
                 size: int, threads: int):
        self.label, self.kind, self.batch = label, kind, batch
        extensions = {"ours": {OUR_NAME: ROOT}, "td": {TD_NAME: td_dir}, "off": {}}[kind]
        log_path = log_dir / f"{label.replace(' ', '_')}_{size}.log" if log_dir else None
        env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)} if threads else {}
        self.ui = launcher.WebUI(ckpt, extensions=extensions, log_path=log_path, request_timeout=3600,
                                 startup_timeout=900, env=env)
        self.jobs: list[tuple[float, float, int]] = []  # (job s, sampling s, sampling peak KiB)
        self.idle = self.hwm = 0

    def start(self) -> None:
        self.ui.start()
        if self.kind == "td":
            check_td_args(self.ui)
        self.ui.post("/sdapi/v1/txt2img", job(128, 1))  # warm-up: lazy initialisation, prompt cache
        self.idle = proc_status(self.ui.proc.pid, "VmRSS")

    def run(self, size: int, steps: int) -> None:
        payload = dict(job(size, steps), alwayson_scripts=config_scripts(self.kind, self.batch))
        with JobWatch(self.ui, steps) as watch:
            t0 = time.perf_counter()
            res = self.ui.post("/sdapi/v1/txt2img", payload)
            elapsed = time.perf_counter() - t0
        if len(res.get("images", [])) != 1:
            raise RuntimeError(f"{self.label}: no image returned")
        self.jobs.append((elapsed, watch.sampling_seconds, watch.sampling_peak))

    def finish(self) -> None:
        self.hwm = proc_status(self.ui.proc.pid, "VmHWM")
        log = self.ui.log_text()
        after_start = log[log.find(launcher.STARTUP_MARKER):]
        self.ui.stop()
        if self.kind == "td" and "Mixture of Diffusers hooked into" not in after_start:
            raise RuntimeError(f"{self.label}: Tiled Diffusion did not hook the sampler:\n" + after_start[-3000:])
        if "Traceback" in after_start:
            raise RuntimeError(f"{self.label}: the server logged a traceback:\n" + after_start[-3000:])

    def row(self, size: int, steps: int) -> dict:
        job_s = min(j[0] for j in self.jobs)
        sampling_s = min(j[1] for j in self.jobs)
        return {"config": self.label, "size": size, "s_step": sampling_s / steps, "job_s": job_s,
                "peak_mb": self.hwm / 1024, "sampling_mb": max(j[2] for j in self.jobs) / 1024,
                "idle_mb": self.idle / 1024}


def measure_size(configs, ckpt, td_dir, log_dir, size, steps, repeats, threads) -> list[dict]:
    """All configurations of one canvas size: their servers up side by side, jobs interleaved."""
    runs = [Config(label, kind, batch, ckpt, td_dir, log_dir, size, threads) for label, kind, batch in configs]
    try:
        with ThreadPoolExecutor(len(runs)) as pool:
            for f in [pool.submit(c.start) for c in runs]:
                f.result()
        for r in range(repeats):
            for c in runs:
                print(f"... {size}x{size} {c.label} (run {r + 1}/{repeats})", file=sys.stderr, flush=True)
                c.run(size, steps)
                job_s, sampling_s, peak = c.jobs[-1]
                print(f"    job {job_s:.2f} s, sampling {sampling_s:.2f} s, sampling RSS {peak / 1024:.0f} MB",
                      file=sys.stderr, flush=True)
        for c in runs:
            c.finish()
    finally:
        for c in runs:
            c.ui.stop()
    return [c.row(size, steps) for c in runs]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1024x1024 only, one repeat")
    ap.add_argument("--sizes", default="1024,2048", help="square canvas sizes in px (default 1024,2048)")
    ap.add_argument("--steps", type=int, default=3, help="steps of the measured job (>= 2; default 3)")
    ap.add_argument("--repeats", type=int, default=2, help="jobs per configuration; the fastest is kept (default 2)")
    ap.add_argument("--td", default=os.environ.get("MOD_TD_DIR"),
                    help="Tiled Diffusion checkout (default $MOD_TD_DIR); without it only ours runs")
    ap.add_argument("--ckpt", default=os.environ.get("MOD_TINY_CKPT"),
                    help="tiny checkpoint (default $MOD_TINY_CKPT, else built into a temporary folder)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads per server (OMP_NUM_THREADS; default 1; 0: the host's default)")
    ap.add_argument("--keep-logs", help="folder to keep each server's log in")
    args = ap.parse_args(argv)
    if args.steps < 2:
        ap.error("--steps must be 2 or more")
    if not launcher.webui_available():
        print("MOD_WEBUI_DIR does not point at a WebUI with venv/bin/python; nothing to measure", file=sys.stderr)
        return 2
    sizes = [1024] if args.quick else [int(s) for s in args.sizes.split(",")]
    repeats = 1 if args.quick else args.repeats
    td_dir = Path(args.td).resolve() if args.td else None
    if td_dir is not None and not (td_dir / "scripts" / "tilediffusion.py").is_file():
        print(f"no Tiled Diffusion at {td_dir}; measuring ours only", file=sys.stderr)
        td_dir = None
    if args.ckpt:
        ckpt = Path(args.ckpt)
    else:
        import tempfile

        import tiny_checkpoint

        ckpt = tiny_checkpoint.build_tiny_checkpoint(Path(tempfile.mkdtemp(prefix="mod-bench-ckpt-")))
    keep = Path(args.keep_logs) if args.keep_logs else None
    if keep:
        keep.mkdir(parents=True, exist_ok=True)

    configs = [("off", "off", 1), ("ours b1", "ours", 1), ("ours b8", "ours", 8)]
    if td_dir is not None:
        configs += [("TD b1", "td", 1), ("TD b8", "td", 8)]
    rows = []
    for size in sizes:
        rows += measure_size(configs, ckpt, td_dir, keep, size, args.steps, repeats, args.threads)

    threads = args.threads or "default"
    print(f"\nWebUI {launcher.default_webui_dir()}, CPU ({os.cpu_count()} cores, {threads} thread(s) per server), "
          f"tiny SD1.x model, Euler, "
          f"{args.steps} steps, tiles {TILE_PX}px overlap {OVERLAP_PX}px, best of {repeats}; "
          f"s/step = sampling time (server log progress bar) / steps; job s = whole request")
    header = f"{'config':<10} {'size':>9} {'s/step':>8} {'ratio':>6} {'job s':>7} {'peak RSS MB':>12} {'sampling RSS MB':>16}"
    print(header)
    print("-" * len(header))
    for size in sizes:
        base = next(r for r in rows if r["size"] == size and r["config"] == "off")
        for r in (r for r in rows if r["size"] == size):
            ratio = r["s_step"] / base["s_step"] if base["s_step"] > 0 else float("nan")
            print(f"{r['config']:<10} {f'{size}x{size}':>9} {r['s_step']:8.3f} {ratio:6.2f} {r['job_s']:7.2f} "
                  f"{r['peak_mb']:12.0f} {r['sampling_mb']:16.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
