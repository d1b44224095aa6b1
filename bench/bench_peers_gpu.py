"""This engine beside its peers on one canvas: seconds per sampling step and peak memory, side by side.

Every row runs the same UNet: diffusers' ``UNet2DConditionModel`` with SD 1.5's config and seeded
random weights (`bench_upscale_gpu.build_models`; nothing downloaded), the same random cond and
uncond text embeddings, CFG (cond and uncond rows in one call). On a 3840x2160 canvas (``--canvas``;
latent 480x270) the rows are:

floor        the UNet alone on the crop batches of the paper's 4K grid (88 tiles of 640x480 px,
             one every half tile: 11 columns every 320 px x 8 rows every 240 px), ``--batch``
             crops a call: the same calls as the next row without any mixing, so "x floor" is
             the engine's overhead;
engine       this engine (`lib_mixture.mixture.compile_mixture`) on that grid, ``--batch`` crops a
             call, driven by a k-diffusion Euler step as in bench_upscale_gpu.py;
engine-1     the same, one crop a call;
mixdiff      the paper's own implementation, mixdiff 1.1.5's ``StableDiffusionTilingPipeline``,
             on that grid with LMS (its README's scheduler): one UNet call per tile;
planner      this engine on the planner's fewest tiles of 640x480 with the same 240 px minimum
             overlap (`lib_mixture.planner.plan_tiles` through `build_plan`);
bundled      this engine on the bundled 4K grid (presets/upscale-4k-uhd-3840x2160.json: 768 px
             tiles, overlap 128), ``--batch`` crops a call;
full         the whole canvas in one UNet call, no tiles;
panorama-16, panorama-1
             diffusers' ``StableDiffusionPanoramaPipeline`` (MultiDiffusion) at 2048x2048
             (``--panorama-canvas``) with its defaults (64-latent views every 8 latents, CFG 7.5)
             and DDIM (the scheduler it declares), view batch 16 and 1.

Each row runs one warm-up step and ``--steps`` measured steps (CUDA synchronised); s/step is their
median. The pipelines are timed from their own step boundaries (mixdiff: a wrapper around its
scheduler's ``step``; panorama: ``callback_on_step_end``), and stop before their VAE decode.
"extra" is the peak memory beyond what was allocated before the row (weights, embeddings): CUDA
``max_memory_allocated`` minus ``memory_allocated``; on the CPU the process's peak RSS minus its RSS
before (`bench_upscale_gpu.Meter`; coarse). The grids scale with ``--canvas``: the paper's tiles are
always 2/12 of its width by 2/9 of its height (so it must be a multiple of 96 x 72 px), the bundled
grid's tile and overlap scale by canvas width / 3840.

mixdiff and the panorama pipeline
---------------------------------
Neither is a dependency of this repository. Install them beside the venv once (the benchmark
appends ``--peers``, default /tmp/peers_pkg, to ``sys.path``; mixdiff's own pins are for
diffusers 0.16 and torch 2.0, hence ``--no-deps``)::

    pip install --no-deps --target /tmp/peers_pkg mixdiff==1.1.5 transformers tokenizers

On a machine without a package registry, bring the wheels (17 MB; the installed folder is
~140 MB) and install from them there::

    pip download --no-deps -d out/peer-wheels mixdiff==1.1.5 transformers tokenizers   # here
    pip install --no-deps --target /tmp/peers_pkg out/peer-wheels/*.whl                 # there

diffusers imports the panorama pipeline only with transformers (and transformers 5 needs
tokenizers); without them the panorama rows print "skipped". mixdiff runs without transformers.
Its code is used as released; what the benchmark adapts around it, without changing it:

- its imports: ``diffusers.pipeline_utils`` (now ``diffusers.pipelines.pipeline_utils``) is
  aliased in ``sys.modules``; ``transformers.CLIPFeatureExtractor`` (gone in transformers 5) is
  aliased to ``CLIPImageProcessor``; without transformers, a stand-in ``transformers`` module and
  ``StableDiffusionSafetyChecker`` placeholder serve its import (they are type annotations there);
  ``ligo.segments``, when not installed, is a stand-in whose ``segment`` raises (mixdiff uses it only
  for ``seed_tiles_mode="exclusive"``, not called here). All of these are removed after the import.
- on a machine without CUDA, its hard-coded ``torch.Generator("cuda")`` gets a host generator (its
  module's ``torch`` is a view of torch for the duration of the row);
- text: a stand-in tokenizer and text encoder give it the same random cond and uncond embeddings
  as every other row (mixdiff encodes the prompts once before its loop; not timed);
- dtype: mixdiff makes float32 latents and feeds them to the UNet as they are (it was run in fp32
  or under autocast); a forward pre-hook on the UNet casts its input to the UNet's dtype for this
  row, so the UNet runs in ``--dtype`` as everywhere else.

Run
---
On a machine with a CUDA GPU::

    python bench/bench_peers_gpu.py --device cuda --dtype fp16

CPU smoke test (a tiny UNet of the same block types, a 768x432 canvas with the same 11x8 paper
grid, a 640x640 panorama; a few minutes on 2 cores)::

    python bench/bench_peers_gpu.py --tiny --device cpu --dtype fp32 --steps 1

SD 1.5's full UNet on the CPU, the paper's grid scaled to a small canvas (the README's CPU table;
about 22 minutes on 2 cores)::

    python bench/bench_peers_gpu.py --device cpu --steps 1 --canvas 768x432 --panorama-canvas 768x512

Prints flush line by line, so a run cut short keeps the rows it finished.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import gc
import importlib
import importlib.metadata
import math
import os
import platform
import statistics
import sys
import time
import types
from pathlib import Path
from typing import Any, Callable

# Before torch loads OpenMP: busy-waiting OpenMP threads make small CPU ops erratic (bench_engine.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# mixdiff wraps its loop in tqdm: keep its progress bar out of the table.
os.environ.setdefault("TQDM_DISABLE", "1")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

from bench_upscale_gpu import (CFG_SCALE, DTYPES, SEED, Meter, Models, Schedule, attention_processors,  # noqa: E402
                               build_models, make_eps, plain_denoiser, sample_euler, say, tame_glibc,
                               tiled_denoiser)

from lib_mixture.bundled import load_bundled  # noqa: E402
from lib_mixture.geometry import LATENT_FACTOR, Box  # noqa: E402
from lib_mixture.mixture import CompiledMixture, compile_mixture  # noqa: E402
from lib_mixture.plan import CropSpec, build_plan  # noqa: E402
from lib_mixture.preset import Overlap, Preset, TileGrid  # noqa: E402

GIB = 2.0 ** 30
PAPER_GRID = (11, 8)  # columns, rows of the paper's 4K example (Fig. 8): 640x480 tiles on 3840x2160
BUNDLED_4K = "upscale-4k-uhd-3840x2160"
ROWS = ("floor", "engine", "engine-1", "mixdiff", "planner", "bundled", "full", "panorama-16", "panorama-1")
MIXDIFF_INSTALL = "pip install --no-deps --target /tmp/peers_pkg mixdiff==1.1.5 transformers tokenizers"
SD15_SCHEDULE = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)


# --------------------------------------------------------------------------- results


@dataclasses.dataclass
class Result:
    """One row of the table. ``seconds`` is the median measured step, None when the row did not run."""

    key: str
    label: str
    tiles: int | str = "-"
    calls: int | str = "-"
    seconds: float | None = None
    extra: int | None = None
    note: str = ""


def finish(result: Result, times: list[float], stats: dict) -> Result:
    """Fill ``result`` from the measured step times (warm-up dropped) and `Meter` stats."""
    if stats["oom"]:
        result.note = "out of memory"
    elif times:
        result.seconds = statistics.median(times)
        if stats["peak"] is not None and stats["base"] is not None:
            result.extra = stats["peak"] - stats["base"]
    else:
        result.note = "no step was timed"
    return result


def print_table_header(cuda: bool) -> None:
    memory = "extra GiB" if cuda else "RSS+ GiB"
    say(f"{'row':12} | {'what':58} | {'tiles':>5} | {'calls/step':>10} | {'s/step':>8} | {'x floor':>7} | "
        f"{memory:>9}")
    say("-" * 126)


def print_row(r: Result, floor: float | None) -> None:
    if r.seconds is None:
        say(f"{r.key:12} | {r.label:58} | {r.tiles!s:>5} | {r.calls!s:>10} | {r.note}")
        return
    ratio = f"{r.seconds / floor:.2f}" if floor else "-"
    extra = "n/a" if r.extra is None else f"{r.extra / GIB:.3f}"
    say(f"{r.key:12} | {r.label:58} | {r.tiles!s:>5} | {r.calls!s:>10} | {r.seconds:8.3f} | {ratio:>7} | "
        f"{extra:>9}" + (f"  {r.note}" if r.note else ""))


# --------------------------------------------------------------------------- grids


def paper_tile(width: int, height: int) -> tuple[int, int]:
    """The paper's tile (px) on a canvas: 11 columns and 8 rows of tiles that overlap by half a tile
    cover it exactly, so a tile is 2/12 of the width and 2/9 of the height (640x480 on 3840x2160).
    Half a tile must fall on the latent grid."""
    cols, rows = PAPER_GRID
    tw, th = 2 * width / (cols + 1), 2 * height / (rows + 1)
    step = 2 * LATENT_FACTOR
    if tw != int(tw) or th != int(th) or tw % step or th % step:
        raise SystemExit(f"--canvas {width}x{height}: the paper's {cols}x{rows} grid of half-overlapping tiles "
                         f"needs a width that is a multiple of {(cols + 1) * LATENT_FACTOR} px and a height "
                         f"that is a multiple of {(rows + 1) * LATENT_FACTOR} px (3840x2160, 768x432, ...)")
    return int(tw), int(th)


def paper_crops(width: int, height: int) -> list[CropSpec]:
    """The paper's grid as latent crops, row by row: a tile every half tile in each direction."""
    tw, th = (v // LATENT_FACTOR for v in paper_tile(width, height))
    cols, rows = PAPER_GRID
    return [CropSpec(Box(c * tw // 2, r * th // 2, tw, th)) for r in range(rows) for c in range(cols)]


def planner_crops(width: int, height: int, batch: int) -> list[CropSpec]:
    """The planner's fewest tiles of the paper's size with the paper's smaller overlap (half the tile height)."""
    tw, th = paper_tile(width, height)
    preset = Preset(tiles=TileGrid(width=tw, height=th, overlap=Overlap.square(min(tw, th) // 2), batch_size=batch))
    return build_plan(preset, width, height, batch_size=batch).crops()


def _snap(px: float) -> int:
    return max(LATENT_FACTOR, round(px / LATENT_FACTOR) * LATENT_FACTOR)


def bundled_grid(width: int) -> TileGrid | None:
    """The bundled 4K preset's tile grid, scaled by canvas width / its canvas width (1 on 3840x2160);
    None when the preset does not give its tile size in px."""
    preset = load_bundled(BUNDLED_4K)
    t, scale = preset.tiles, width / preset.canvas.width
    if not isinstance(t.width, int) or not isinstance(t.height, int):
        return None
    if scale == 1:
        return t
    return TileGrid(width=_snap(t.width * scale), height=_snap(t.height * scale),
                    overlap=Overlap(_snap(t.overlap.x * scale), _snap(t.overlap.y * scale)), batch_size=t.batch_size)


def bundled_crops(width: int, height: int, batch: int) -> list[CropSpec]:
    preset = dataclasses.replace(load_bundled(BUNDLED_4K), tiles=bundled_grid(width))
    return build_plan(preset, width, height, batch_size=batch).crops()


# --------------------------------------------------------------------------- step-driven rows


def canvas_noise(height: int, width: int, device: torch.device) -> torch.Tensor:
    """Seeded float32 noise for the latent canvas, made on the host so every device draws the same."""
    return torch.randn(1, 4, height, width, generator=torch.Generator().manual_seed(SEED)).to(device)


def time_steps(meter: Meter, steps: int, start: Callable[[], Any],
               step: Callable[[Any, int], Any]) -> tuple[list, dict]:
    """Run ``step`` 1 + ``steps`` times from ``start()`` inside one `Meter` measurement; the
    per-step times without the first (warm-up: kernels chosen per shape), and the stats."""
    times: list[float] = []

    def run() -> bool:
        state = start()
        for i in range(steps + 1):
            t0 = time.perf_counter()
            state = step(state, i)
            meter.sync()
            times.append(time.perf_counter() - t0)
        return True

    _, stats = meter.measure(run)
    return times[1:], stats


def euler_rows(make_denoise: Callable[[], Callable], sigmas: torch.Tensor, height: int, width: int,
               device: torch.device):
    """``start`` and ``step`` for k-diffusion Euler on the canvas: step ``i`` goes from sigma i to
    i+1. ``make_denoise`` runs in ``start``, so what it allocates (the mixture's weight maps) is
    counted in the row's memory."""
    state: dict = {}

    def start() -> torch.Tensor:
        state["denoise"] = make_denoise()
        return canvas_noise(height, width, device) * float(sigmas[0])

    def step(x: torch.Tensor, i: int) -> torch.Tensor:
        return sample_euler(state["denoise"], x, sigmas[i:i + 2])

    return start, step


def run_engine(models: Models, meter: Meter, args: argparse.Namespace, result: Result,
               crops: list[CropSpec], batch: int) -> Result:
    """This engine's mixture over ``crops``, ``batch`` crops a UNet call, CFG eps, Euler steps."""
    lh, lw = args.latent
    schedule = Schedule()
    sigmas = schedule.get_sigmas(args.steps + 1, "karras")
    eps = make_eps(models, schedule)

    def make_denoise() -> Callable:
        mixture = compile_mixture(crops, lh, lw, batch_size=batch, device=models.device)
        result.tiles, result.calls = len(mixture.crops), mixture.model_calls_per_step
        return tiled_denoiser(eps, mixture)

    return finish(result, *time_steps(meter, args.steps, *euler_rows(make_denoise, sigmas, lh, lw, models.device)))


def run_full(models: Models, meter: Meter, args: argparse.Namespace, result: Result) -> Result:
    """The whole latent canvas in one CFG call per step."""
    lh, lw = args.latent
    result.tiles, result.calls = 1, 1
    schedule = Schedule()
    sigmas = schedule.get_sigmas(args.steps + 1, "karras")
    eps = make_eps(models, schedule)
    return finish(result, *time_steps(meter, args.steps,
                                      *euler_rows(lambda: plain_denoiser(eps), sigmas, lh, lw, models.device)))


def floor_calls(models: Models, mixture: CompiledMixture, latent: torch.Tensor) -> list[tuple]:
    """The UNet inputs of each of the mixture's calls, built once: its crops (cond rows, then
    uncond rows), their embeddings and timestep."""
    calls = []
    for batch in mixture.batches:
        x = torch.cat([latent[:, :, rows, cols] for rows, cols in (mixture.crops[i].box.slices() for i in batch)])
        n = x.shape[0]
        emb = torch.cat([models.cond.expand(n, -1, -1), models.uncond.expand(n, -1, -1)])
        t = torch.full((2 * n,), 500.0, device=latent.device)
        calls.append((torch.cat([x, x]).to(models.dtype), emb, t))
    return calls


def run_floor(models: Models, meter: Meter, args: argparse.Namespace, result: Result,
              crops: list[CropSpec], batch: int) -> Result:
    """The UNet alone on the same crop batches as the engine row, outputs dropped: no crop, mix or CFG."""
    lh, lw = args.latent

    def start() -> list[tuple]:
        mixture = compile_mixture(crops, lh, lw, batch_size=batch, device=models.device)  # only for its batches
        result.tiles, result.calls = len(mixture.crops), mixture.model_calls_per_step
        return floor_calls(models, mixture, canvas_noise(lh, lw, models.device))

    def step(calls: list[tuple], i: int) -> list[tuple]:
        for x, emb, t in calls:
            models.unet(x, t, encoder_hidden_states=emb)
        return calls

    return finish(result, *time_steps(meter, args.steps, start, step))


# --------------------------------------------------------------------------- pipelines: shared


class StepClock:
    """Timestamps at a pipeline's step boundaries (device synchronised); the durations of every
    step but the first (its warm-up) are the measured ones."""

    def __init__(self, meter: Meter):
        self.meter, self.stamps = meter, []

    def tick(self) -> int:
        self.meter.sync()
        self.stamps.append(time.perf_counter())
        return len(self.stamps)

    def times(self) -> list[float]:
        return [b - a for a, b in zip(self.stamps, self.stamps[1:])]


def add_path(folder: str | None) -> None:
    """Make packages installed with ``pip --target`` importable, after the venv's own."""
    if folder and os.path.isdir(folder) and folder not in sys.path:
        sys.path.append(folder)
        importlib.invalidate_caches()


# --------------------------------------------------------------------------- mixdiff


class _Placeholder:
    """A name mixdiff imports only for its type annotations."""


@contextlib.contextmanager
def _mixdiff_import_shims():
    """What mixdiff 1.1.5 imports and new diffusers / transformers no longer have, for the
    length of its import (see the module docstring); every shim is removed afterwards."""
    added: list[tuple[Any, str]] = []  # (namespace, name): a dict key or a module attribute

    def put_module(name: str, module: types.ModuleType) -> None:
        if name not in sys.modules:
            sys.modules[name] = module
            added.append((sys.modules, name))

    def put_attr(module: Any, name: str, value: Any) -> None:
        if not hasattr(module, name):
            setattr(module, name, value)
            added.append((module, name))

    import diffusers.pipelines.pipeline_utils as pipeline_utils
    import diffusers.pipelines.stable_diffusion as sd_pipelines
    put_module("diffusers.pipeline_utils", pipeline_utils)
    try:
        import transformers
    except ImportError:
        stub = types.ModuleType("transformers")
        for name in ("CLIPFeatureExtractor", "CLIPTextModel", "CLIPTokenizer"):
            setattr(stub, name, _Placeholder)
        put_module("transformers", stub)
    else:
        try:
            successor = transformers.CLIPImageProcessor
        except Exception:  # noqa: BLE001 - a lazy import that fails: an annotation needs no real class
            successor = _Placeholder
        put_attr(transformers, "CLIPFeatureExtractor", successor)
    try:
        sd_pipelines.StableDiffusionSafetyChecker
    except (ImportError, AttributeError):  # diffusers without transformers
        put_attr(sd_pipelines, "StableDiffusionSafetyChecker", _Placeholder)
    try:
        importlib.import_module("ligo.segments")
    except ImportError:
        def segment(*_a, **_k):
            raise NotImplementedError("ligo-segments is not installed (mixdiff's exclusive seed tiles need it)")
        put_module("ligo", types.ModuleType("ligo"))
        put_module("ligo.segments", types.SimpleNamespace(segment=segment))
    try:
        yield
    finally:
        for namespace, name in reversed(added):
            if isinstance(namespace, dict):
                namespace.pop(name, None)
            else:
                delattr(namespace, name)


def import_mixdiff() -> tuple[Any, str]:
    """mixdiff's tiling module, or None and why it is not importable."""
    try:
        with _mixdiff_import_shims():
            tiling = importlib.import_module("mixdiff.tiling")
    except Exception as exc:  # noqa: BLE001 - any failure makes the row a "skipped" line
        return None, f"{type(exc).__name__}: {exc}"
    return tiling, ""


class PromptIds:
    """Stand-in tokenizer: a prompt becomes 77 ids, all 1 (any prompt) or 0 (the empty one)."""

    model_max_length = 77

    def __call__(self, text, padding=None, max_length=None, truncation=None, return_tensors=None):
        texts = [text] if isinstance(text, str) else list(text)
        ids = torch.tensor([[1 if t else 0] * self.model_max_length for t in texts])
        return types.SimpleNamespace(input_ids=ids)


class PromptTable(torch.nn.Module):
    """Stand-in text encoder: id 0 -> the uncond embedding, 1 -> the cond one (the other rows' own)."""

    def __init__(self, models: Models):
        super().__init__()
        self.register_buffer("table", torch.cat([models.uncond, models.cond]))  # [2, 77, dim]

    @property
    def device(self) -> torch.device:  # what a diffusers pipeline asks its components
        return self.table.device

    def forward(self, input_ids: torch.Tensor):
        return (self.table[input_ids[:, 0].to(self.table.device)],)


@contextlib.contextmanager
def unet_input_in_own_dtype(unet: Any):
    """A forward pre-hook that casts the sample to the UNet's dtype (mixdiff's latents are float32)."""
    def cast(module, args, kwargs):
        if args and args[0].dtype != module.dtype:
            args = (args[0].to(module.dtype), *args[1:])
        return args, kwargs
    handle = unet.register_forward_pre_hook(cast, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


class _HostTorch(types.ModuleType):
    """``torch`` as mixdiff.tiling sees it without CUDA: ``Generator("cuda")`` is a host generator."""

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)

    @staticmethod
    def Generator(device: Any = "cpu") -> torch.Generator:  # noqa: N802 - torch's name
        return torch.Generator("cpu")


@contextlib.contextmanager
def generator_on(tiling: Any, device: torch.device):
    if device.type == "cuda":
        yield
        return
    tiling.torch = _HostTorch("torch")
    try:
        yield
    finally:
        tiling.torch = torch


class _StopBeforeDecode(Exception):
    """Raised after the last measured step: the pipeline's VAE decode is not part of a step."""


def package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def run_mixdiff(models: Models, meter: Meter, args: argparse.Namespace, result: Result) -> Result:
    """mixdiff's tiling pipeline (1.1.5) on the paper's grid with LMS; one UNet call per tile."""
    tiling, why = import_mixdiff()
    cols, rows = PAPER_GRID
    result.tiles, result.calls = cols * rows, cols * rows
    if tiling is None:
        result.note = f"skipped: mixdiff not importable ({why}); install: {MIXDIFF_INSTALL}"
        return result
    if package_version("mixdiff") != "1.1.5":
        result.label = result.label.replace("1.1.5", package_version("mixdiff"))
    from diffusers import LMSDiscreteScheduler

    tw, th = paper_tile(*args.canvas)
    scheduler = LMSDiscreteScheduler(**SD15_SCHEDULE)
    pipe = tiling.StableDiffusionTilingPipeline(
        vae=models.vae, text_encoder=PromptTable(models), tokenizer=PromptIds(), unet=models.unet,
        scheduler=scheduler, safety_checker=None, feature_extractor=None)
    clock = StepClock(meter)
    lms_step = scheduler.step

    def timed_step(*a, **k):
        out = lms_step(*a, **k)
        if clock.tick() == args.steps + 1:
            raise _StopBeforeDecode
        return out
    scheduler.step = timed_step

    def run() -> bool:
        try:
            pipe(prompt=[["a prompt"] * cols for _ in range(rows)], num_inference_steps=args.steps + 1,
                 guidance_scale=CFG_SCALE, seed=SEED, tile_width=tw, tile_height=th,
                 tile_col_overlap=tw // 2, tile_row_overlap=th // 2)
        except _StopBeforeDecode:
            pass
        return True

    with unet_input_in_own_dtype(models.unet), generator_on(tiling, models.device):
        _, stats = meter.measure(run)
    return finish(result, clock.times(), stats)


# --------------------------------------------------------------------------- diffusers' panorama


def import_panorama() -> tuple[Any, str]:
    """diffusers' StableDiffusionPanoramaPipeline, or None and why (it needs transformers)."""
    try:
        importlib.import_module("transformers")
        from diffusers import StableDiffusionPanoramaPipeline
        from diffusers.pipelines.deprecated.stable_diffusion_panorama import pipeline_stable_diffusion_panorama
    except Exception as exc:  # noqa: BLE001 - any failure makes the row a "skipped" line
        return None, f"{type(exc).__name__}: {exc}"
    del pipeline_stable_diffusion_panorama  # imported only to fail early with the real cause
    return StableDiffusionPanoramaPipeline, ""


def run_panorama(models: Models, meter: Meter, args: argparse.Namespace, result: Result, view_batch: int) -> Result:
    """MultiDiffusion at ``--panorama-canvas``, the pipeline's defaults, ``view_batch`` views a call."""
    pipeline_class, why = import_panorama()
    if pipeline_class is None:
        result.note = f"skipped: the panorama pipeline is not importable ({why}); install: {MIXDIFF_INSTALL}"
        return result
    from diffusers import DDIMScheduler

    width, height = args.panorama_canvas
    scheduler = DDIMScheduler(**SD15_SCHEDULE, clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = pipeline_class(vae=models.vae, text_encoder=None, tokenizer=None, unet=models.unet, scheduler=scheduler,
                          safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    views = len(pipe.get_views(height, width))
    result.tiles, result.calls = views, math.ceil(views / view_batch)
    clock = StepClock(meter)

    def on_step_end(pipe, i, t, kwargs) -> dict:
        clock.tick()
        return {}

    def run() -> bool:
        pipe(prompt_embeds=models.cond, negative_prompt_embeds=models.uncond, height=height, width=width,
             num_inference_steps=args.steps + 1, view_batch_size=view_batch, output_type="latent",
             generator=torch.Generator().manual_seed(SEED), callback_on_step_end=on_step_end)
        return True

    _, stats = meter.measure(run)
    return finish(result, clock.times(), stats)


# --------------------------------------------------------------------------- main


def parse_size(text: str) -> tuple[int, int]:
    w, h = (int(v) for v in text.lower().split("x"))
    if w < 64 or h < 64 or w % LATENT_FACTOR or h % LATENT_FACTOR:
        raise argparse.ArgumentTypeError(f"{text!r}: each side must be a multiple of {LATENT_FACTOR}, at least 64")
    return w, h


def parse_rows(text: str) -> list[str]:
    rows = [r.strip() for r in text.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown rows {unknown}; known: {','.join(ROWS)}")
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=sorted(DTYPES), help="default fp16 on CUDA, fp32 elsewhere")
    ap.add_argument("--tiny", action="store_true", help="a tiny UNet of the same block types and small canvases "
                                                        "(CPU smoke test)")
    ap.add_argument("--steps", type=int, default=3, help="measured steps per row, after one warm-up step (default 3)")
    ap.add_argument("--rows", type=parse_rows, default=list(ROWS), help=f"comma list of rows (default all: "
                                                                         f"{','.join(ROWS)})")
    ap.add_argument("--canvas", type=parse_size, help="WxH px (default 3840x2160; 768x432 with --tiny)")
    ap.add_argument("--panorama-canvas", type=parse_size, help="WxH px of the panorama rows (default 2048x2048; "
                                                                "640x640 with --tiny)")
    ap.add_argument("--batch", type=int, default=8, help="crops per UNet call of the engine rows (default 8)")
    ap.add_argument("--peers", default=os.environ.get("PEERS_PATH", "/tmp/peers_pkg"),
                    help="a folder with mixdiff (and transformers) installed by pip --target (default /tmp/peers_pkg)")
    args = ap.parse_args(argv)
    if args.steps < 1 or args.batch < 1:
        ap.error("--steps and --batch must be at least 1")
    args.dtype = args.dtype or ("fp16" if args.device.startswith("cuda") else "fp32")
    args.canvas = args.canvas or ((768, 432) if args.tiny else (3840, 2160))
    args.panorama_canvas = args.panorama_canvas or ((640, 640) if args.tiny else (2048, 2048))
    args.latent = (args.canvas[1] // LATENT_FACTOR, args.canvas[0] // LATENT_FACTOR)  # (height, width)
    paper_tile(*args.canvas)  # fail before any model is built
    return args


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def attention(models: Models) -> str:
    kind = attention_processors(models.unet)
    if models.device.type == "cuda":
        b = torch.backends.cuda
        return (f"{kind} (SDPA flash={b.flash_sdp_enabled()} mem_efficient={b.mem_efficient_sdp_enabled()} "
                f"math={b.math_sdp_enabled()})")
    return f"{kind} (SDPA on the CPU)"


def describe(args: argparse.Namespace, batch: int) -> None:
    """The geometry of every row, before any is measured."""
    w, h = args.canvas
    tw, th = paper_tile(w, h)
    g = bundled_grid(w)
    bundled = f"{g.width}x{g.height} px, overlap {g.overlap.x} px" if g else "tile size not in px"
    say(f"canvas {w}x{h} (latent {args.latent[1]}x{args.latent[0]}), Euler / LMS steps, CFG {CFG_SCALE:g}; "
        f"paper grid {PAPER_GRID[0]}x{PAPER_GRID[1]} tiles of {tw}x{th} px every {tw // 2} x {th // 2} px; "
        f"planner: {tw}x{th} px tiles, overlap >= {min(tw, th) // 2} px; bundled {BUNDLED_4K}: {bundled}; "
        f"{batch} crops a call")
    pw, ph = args.panorama_canvas
    say(f"panorama {pw}x{ph}: 64-latent views every 8 latents, DDIM, CFG 7.5 (the pipeline's defaults)")


def run_row(key: str, models: Models, meter: Meter, args: argparse.Namespace) -> Result:
    w, h = args.canvas
    b = args.batch
    tw, th = paper_tile(w, h)
    pw, ph = args.panorama_canvas
    if key == "floor":
        return run_floor(models, meter, args, Result(key, f"UNet alone, paper grid, {b} crops a call"),
                         paper_crops(w, h), b)
    if key == "engine":
        return run_engine(models, meter, args, Result(key, f"this engine, paper grid, {b} crops a call"),
                          paper_crops(w, h), b)
    if key == "engine-1":
        return run_engine(models, meter, args, Result(key, "this engine, paper grid, 1 crop a call"),
                          paper_crops(w, h), 1)
    if key == "mixdiff":
        return run_mixdiff(models, meter, args, Result(key, "mixdiff 1.1.5 (the paper's own), paper grid, LMS"))
    if key == "planner":
        label = f"this engine, planner's fewest {tw}x{th}, overlap {min(tw, th) // 2} px"
        return run_engine(models, meter, args, Result(key, label), planner_crops(w, h, b), b)
    if key == "bundled":
        g = bundled_grid(w)
        if g is None:
            return Result(key, "this engine, bundled 4K grid", note=f"skipped: presets/{BUNDLED_4K}.json "
                                                                       "gives no tile size in px")
        label = f"this engine, bundled 4K grid ({g.width} px, overlap {g.overlap.x})"
        return run_engine(models, meter, args, Result(key, label), bundled_crops(w, h, b), b)
    if key == "full":
        return run_full(models, meter, args, Result(key, "full canvas, one UNet call (no tiles)"))
    view_batch = int(key.split("-")[1])
    label = f"diffusers panorama {pw}x{ph}, view batch {view_batch}, DDIM"
    return run_panorama(models, meter, args, Result(key, label), view_batch)


def warm_up(models: Models, meter: Meter) -> None:
    """One small UNet call before any row: library handles and workspaces are not a row's memory."""
    x = torch.zeros(2, 4, 16, 16, device=models.device, dtype=models.dtype)
    t = torch.full((2,), 500.0, device=models.device)
    models.unet(x, t, encoder_hidden_states=torch.cat([models.cond, models.uncond]))
    meter.sync()


def main(argv: list[str] | None = None) -> list[Result]:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cpu":
        tame_glibc()
    add_path(args.peers)
    models = build_models(args.tiny, device, DTYPES[args.dtype])
    meter = Meter(device)
    say(f"machine: {machine(device)} | torch {torch.__version__} | diffusers {package_version('diffusers')} | "
        f"{args.dtype} | "
        f"{'tiny' if args.tiny else 'SD 1.5'} UNet, random weights | attention {attention(models)} | "
        f"{datetime.date.today().isoformat()} | median of {args.steps} steps after 1 warm-up")
    describe(args, args.batch)
    print_table_header(meter.cuda)
    results: list[Result] = []
    floor = None
    with torch.inference_mode():
        warm_up(models, meter)
        for key in args.rows:
            r = run_row(key, models, meter, args)
            if key == "floor":
                floor = r.seconds
            results.append(r)
            print_row(r, floor)
            gc.collect()
    if floor is None:
        say("(x floor: run the floor row to fill it)")
    return results


if __name__ == "__main__":
    main()
