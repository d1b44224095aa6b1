#!/usr/bin/env python3
"""Sampling time per step through a real A1111 WebUI on the CPU, tiny model: the WebUI alone,
this extension and Tiled Diffusion on the same tiles, side by side in one run.

Configurations, each on its own fresh server process (so the process's memory high-water
mark belongs to that configuration alone); for one canvas size all of them are up side by
side and their jobs interleaved, each configuration first in turn (off, ours, TD; ours, TD, off;
...), so load from other work on the machine hits them alike:

* ``off``: the WebUI without extensions;
* ``ours``: this extension, a tile grid, ``--batch`` crops per model call (default 4);
* ``TD``: the "Tiled Diffusion" extension (pkuliyi2015/multidiffusion-upscaler-for-automatic1111),
  method "Mixture of Diffusers", the same tiles, overlap and batch size; only when its
  checkout is given (``--td`` or ``MOD_TD_DIR``).

Tiles: 512x512 px (64x64 latent) with a 128 px (16 latent) minimum overlap; both extensions
place the same grid for these sizes (3x3 tiles at 1024, 5x5 at 2048), spread evenly with flush
edges. Sampler Euler a, ``--steps`` steps (default 8).

Sampling time, two ways, each the median of ``--repeats`` runs (default 3) after one warm-up
job per server:

* ``bar s``: from the WebUI's own sampler progress bar starting (``0/N``) to its end
  (``N/N``), as seen in the server log by polling it every 20 ms; it keeps everything the
  extensions do per step and leaves out a job's fixed cost (prompt encoding, VAE decode, PNG,
  HTTP);
* ``tN-t1 s``: the whole request of an N-step job minus that of a 1-step job (same seed and
  size): N - 1 steps, whatever the progress bar shows.

``s/step`` is ``tN-t1`` / (N - 1). Ratios are against ``off`` and against ``TD``. ``peak RSS``
is the server's ``VmHWM`` over its life on that configuration.

    MOD_WEBUI_DIR=/work/webui python3 bench/bench_webui.py --td /work/td-bench/td
    MOD_WEBUI_DIR=/work/webui python3 bench/bench_webui.py --quick      # 1024 only, 1 run each

Threads: each server runs torch on one CPU thread by default (``--threads``). On a small
machine shared with other work, two OpenMP threads per process oversubscribe the cores and
every small operator waits at a barrier for a descheduled thread; times then vary several
fold from run to run. One thread makes the ratios repeatable.

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
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests" / "webui"))

import launcher  # noqa: E402
from _common import proc_status_kib  # noqa: E402

OUR_NAME = "sd-webui-mixture-of-diffusers"
TD_NAME = "multidiffusion-upscaler-for-automatic1111"
TILE_PX, OVERLAP_PX = 512, 128

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
            rss = proc_status_kib("VmRSS", self.pid)
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
            "sampler_name": "Euler a", "scheduler": "Automatic", "cfg_scale": 7.0, "width": size, "height": size,
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
        self.jobs: list[tuple[float, float, float, int]] = []  # (job s, bar s, tN-t1 s, sampling peak KiB)
        self.idle = self.hwm = 0

    def start(self) -> None:
        self.ui.start()
        if self.kind == "td":
            check_td_args(self.ui)
        self.ui.post("/sdapi/v1/txt2img", job(128, 1))  # warm-up: lazy initialisation, prompt cache
        self.idle = proc_status_kib("VmRSS", self.ui.proc.pid)

    def run(self, size: int, steps: int) -> None:
        """One N-step job (progress bar watched) and one 1-step job, back to back."""
        scripts = config_scripts(self.kind, self.batch)
        timings = []
        for n in (steps, 1):
            with JobWatch(self.ui, n) as watch:
                t0 = time.perf_counter()
                res = self.ui.post("/sdapi/v1/txt2img", dict(job(size, n), alwayson_scripts=scripts))
                timings.append((time.perf_counter() - t0, watch))
            if len(res.get("images", [])) != 1:
                raise RuntimeError(f"{self.label}: no image returned")
        (t_n, watch), (t_1, _) = timings
        self.jobs.append((t_n, watch.sampling_seconds, t_n - t_1, watch.sampling_peak))

    def finish(self) -> None:
        self.hwm = proc_status_kib("VmHWM", self.ui.proc.pid)
        log = self.ui.log_text()
        after_start = log[log.find(launcher.STARTUP_MARKER):]
        self.ui.stop()
        if self.kind == "td" and "Mixture of Diffusers hooked into" not in after_start:
            raise RuntimeError(f"{self.label}: Tiled Diffusion did not hook the sampler:\n" + after_start[-3000:])
        if "Traceback" in after_start:
            raise RuntimeError(f"{self.label}: the server logged a traceback:\n" + after_start[-3000:])

    def row(self, size: int, steps: int) -> dict:
        med = lambda i: statistics.median(j[i] for j in self.jobs)  # noqa: E731
        return {"config": self.label, "size": size, "job_s": med(0), "bar_s": med(1), "diff_s": med(2),
                "s_step": med(2) / (steps - 1), "runs": len(self.jobs), "peak_mb": self.hwm / 1024,
                "sampling_mb": max(j[3] for j in self.jobs) / 1024}


def measure_size(configs, ckpt, td_dir, log_dir, size, steps, repeats, threads) -> list[dict]:
    """All configurations of one canvas size: their servers up side by side, jobs interleaved."""
    runs = [Config(label, kind, batch, ckpt, td_dir, log_dir, size, threads) for label, kind, batch in configs]
    try:
        with ThreadPoolExecutor(len(runs)) as pool:
            for f in [pool.submit(c.start) for c in runs]:
                f.result()
        for c in runs:  # one warm-up job at the measured size (plans, caches, allocator)
            c.run(size, steps)
            c.jobs.clear()
        for r in range(repeats):
            for c in runs[r % len(runs):] + runs[:r % len(runs)]:  # each configuration first in turn
                print(f"... {size}x{size} {c.label} (run {r + 1}/{repeats})", file=sys.stderr, flush=True)
                c.run(size, steps)
                job_s, bar_s, diff_s, peak = c.jobs[-1]
                print(f"    job {job_s:.2f} s, bar {bar_s:.2f} s, t{steps}-t1 {diff_s:.2f} s, "
                      f"sampling RSS {peak / 1024:.0f} MB", file=sys.stderr, flush=True)
        for c in runs:
            c.finish()
    finally:
        for c in runs:
            c.ui.stop()
    return [c.row(size, steps) for c in runs]


def build_checkpoint() -> Path:
    """The tiny random checkpoint, built by the WebUI's own python (this process needs no torch)."""
    import tempfile

    folder = tempfile.mkdtemp(prefix="mod-bench-ckpt-")
    return launcher.tiny_checkpoint(folder, launcher.default_webui_python(launcher.default_webui_dir()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1024x1024 only, one run")
    ap.add_argument("--sizes", default="1024,2048", help="square canvas sizes in px (default 1024,2048)")
    ap.add_argument("--steps", type=int, default=8, help="steps of the measured job (>= 2; default 8)")
    ap.add_argument("--batch", type=int, default=4, help="crops per model call for both extensions (default 4)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved runs per configuration; the median is "
                                                            "kept (default 3)")
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
    ckpt = Path(args.ckpt) if args.ckpt else build_checkpoint()
    keep = Path(args.keep_logs) if args.keep_logs else None
    if keep:
        keep.mkdir(parents=True, exist_ok=True)

    configs = [("off", "off", 1), ("ours", "ours", args.batch)]
    if td_dir is not None:
        configs.append(("TD", "td", args.batch))
    rows = []
    for size in sizes:
        rows += measure_size(configs, ckpt, td_dir, keep, size, args.steps, repeats, args.threads)

    threads = args.threads or "default"
    print(f"\nWebUI {launcher.default_webui_dir()}, CPU ({os.cpu_count()} cores, {threads} thread(s) per server), "
          f"tiny SD1.x model, Euler a, {args.steps} steps, tiles {TILE_PX}px overlap {OVERLAP_PX}px, "
          f"{args.batch} crops a call, median of {repeats} interleaved runs")
    header = (f"{'config':<6} {'size':>9} {'bar s':>7} {f't{args.steps}-t1 s':>8} {'s/step':>7} {'vs off':>7} "
              f"{'vs TD':>6} {'job s':>7} {'peak RSS MB':>12}")
    print(header)
    print("-" * len(header))
    for size in sizes:
        here = [r for r in rows if r["size"] == size]
        base = next(r for r in here if r["config"] == "off")
        td = next((r for r in here if r["config"] == "TD"), None)
        for r in here:
            vs_td = f"{r['diff_s'] / td['diff_s']:6.2f}" if td else f"{'-':>6}"
            print(f"{r['config']:<6} {f'{size}x{size}':>9} {r['bar_s']:7.2f} {r['diff_s']:8.2f} {r['s_step']:7.3f} "
                  f"{r['diff_s'] / base['diff_s']:7.2f} {vs_td} {r['job_s']:7.2f} {r['peak_mb']:12.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
