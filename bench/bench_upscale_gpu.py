"""Full tiled upscale with the real SD1.5 architecture: time and peak memory per phase.

What it measures
----------------
A 512x288 synthetic image is upscaled to each output size and refined the way the
extension's upscale workflow does it, with diffusers models built from the SD1.5 configs
(random seeded weights, nothing downloaded):

1. **upscale**  - ``lib_mixture.upscale.upscale_image`` (Lanczos, fit "crop") in pixels, then
   the image is copied to the device in [-1, 1].
2. **encode**   - ``tiled_encode`` (output "mean") times the scaling factor 0.18215.
3. **sampling** - img2img with an Euler sampler (k-diffusion style, written here) on SD1.5's
   scaled-linear schedule, starting at denoising strength ``--strength`` of ``--steps``
   (A1111's rule: ``int(strength * steps) + 1`` Euler steps). Each step's eps is the
   engine's compiled mixture over a tile grid (``--tile`` px, ``--overlap`` px, ``--tile-batch``
   crops per UNet call); every call runs cond and uncond in one batch, CFG scale 7.
4. **decode**   - ``tiled_decode``.

Per phase: wall time (CUDA synchronised) and memory. On CUDA "peak" is
``torch.cuda.max_memory_allocated`` (weights included) and "extra" is that peak minus what
was allocated when the phase began (weights, input) minus the phase's output tensor: the
working memory beyond the buffers. On the CPU the same is read from the process's peak RSS
(``VmHWM``, reset through ``/proc/self/clear_refs``), with glibc told to mmap large blocks
so RSS follows live tensors; it is coarse ("n/a" where /proc is missing), and a size's first
run also counts one-off caches for new tile shapes (oneDNN primitives: the tiny VAE's encode
read 25 MiB the first time at a size, 7 MiB the second), so CPU "x first" ratios overstate growth.

Comparisons, all in the same run:

(a) the tiled pipeline at every ``--sizes`` entry: extra memory relative to the first size
    (flat for sampling; the tiled VAE keeps a few latent-resolution buffers that grow with
    the image, and with ``--vae-tile`` unset it sizes its tiles from the free memory);
(b) at the first size, the plain pipeline (UNet on the whole latent with the CFG batch,
    ``vae.encode`` / ``vae.decode``) against the tiled one, same image and noise: time and
    memory ratios, and PSNR. Tiles change the result by design, so the PSNR of the two final
    images is only a reference; the PSNR of ``tiled_decode`` vs ``vae.decode`` of the same
    latent checks the tiled VAE (high: > 40 dB in fp32, lower in fp16);
(c) the plain VAE encode/decode at every size, its peak memory, "OOM" where it does not fit.

Run
---
On a CUDA machine with torch and diffusers (only ``diffusers`` is imported; no transformers,
no accelerate)::

    python bench/bench_upscale_gpu.py                          # fp16, 1024^2, 2048^2, 3840x2160
    python bench/bench_upscale_gpu.py --vae-tile 64 --json out.json

Smoke test on the CPU (small models, 128 px tiles, 16-latent-px VAE tiles, fp32)::

    python bench/bench_upscale_gpu.py --tiny --device cpu --sizes 256x256,512x288 --steps 6

A whole 4K job within 8 GiB on the CPU, SD 1.5's full architecture, one sampling step (the README's
CPU table; about 47 minutes on 2 cores)::

    python bench/bench_upscale_gpu.py --device cpu --sizes 3840x2160 --tile auto --tile-batch auto \\
        --budget 8 --vae-auto --skip-plain --no-warmup --steps 2 --strength 0.35

Prints flush line by line, so a run cut short keeps what it printed; ``--json`` is rewritten
after every section.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import os
import platform
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

# Before torch loads OpenMP: busy-waiting OpenMP threads make small CPU ops erratic.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from _common import proc_status_kib, use_repo  # noqa: E402

ROOT = use_repo()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from lib_mixture import cost  # noqa: E402
from lib_mixture.auto_plan import Budget, free_memory_budget, resolve, wants_choice  # noqa: E402
from lib_mixture.mixture import CompiledMixture, compile_mixture  # noqa: E402
from lib_mixture.plan import build_plan  # noqa: E402
from lib_mixture.preset import Overlap, Preset, TileGrid, Upscale  # noqa: E402
from lib_mixture.tiled_vae import TiledVAEConfig, min_memory, plan_tiled_vae, tiled_decode, tiled_encode  # noqa: E402
from lib_mixture.tiled_vae.runtime import free_memory  # noqa: E402
from lib_mixture.tiled_vae.runtime import memory_budget as vae_memory_budget  # noqa: E402
from lib_mixture.upscale import upscale_image  # noqa: E402

MIB = 2.0 ** 20
SOURCE_SIZE = (512, 288)  # (width, height) of the synthetic source image
TEXT_LEN = 77
CFG_SCALE = 7.0
SCALING_FACTOR = 0.18215
SEED = 0

SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
    norm_num_groups=32,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"))
SD15_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, sample_size=512,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32,
    scaling_factor=SCALING_FACTOR)
# --tiny: same block types and latent factor 8 (four VAE levels), few channels. The UNet's
# cross-attention sits at half resolution, as in bench_engine.py (full-resolution attention
# with 2-dim heads is slow on a CPU and tells nothing about tiling).
TINY_UNET = dict(
    sample_size=32, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
    norm_num_groups=8, cross_attention_dim=32, attention_head_dim=2,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"))
TINY_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, sample_size=256,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(16, 32, 64, 64), layers_per_block=1, norm_num_groups=8,
    scaling_factor=SCALING_FACTOR)

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def say(*parts: Any) -> None:
    """print, flushed: a run killed by a timeout keeps every line it printed."""
    print(*parts, flush=True)


# --------------------------------------------------------------------------- models


@dataclass
class Models:
    unet: Any
    vae: Any
    cond: torch.Tensor  # [1, TEXT_LEN, dim] in the model dtype
    uncond: torch.Tensor
    device: torch.device
    dtype: torch.dtype


def build_models(tiny: bool, device: torch.device, dtype: torch.dtype) -> Models:
    """SD1.5 (or tiny) UNet and VAE from config dicts with seeded random weights, and random
    text embeddings for cond and uncond. Weights are initialised on the device itself."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from diffusers.utils import logging as diffusers_logging
    diffusers_logging.set_verbosity_error()  # "modules to keep in float32: []" on every .to(dtype)
    unet_cfg, vae_cfg = (TINY_UNET, TINY_VAE) if tiny else (SD15_UNET, SD15_VAE)
    torch.manual_seed(SEED)
    with device:  # default device for the parameters: no 3.4 GB fp32 init on the host
        unet = UNet2DConditionModel(**unet_cfg)
        vae = AutoencoderKL(**vae_cfg)
    unet = unet.to(device=device, dtype=dtype).eval().requires_grad_(False)
    vae = vae.to(device=device, dtype=dtype).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(SEED + 1)
    dim = unet_cfg["cross_attention_dim"]
    cond, uncond = (torch.randn(1, TEXT_LEN, dim, generator=g).to(device, dtype) for _ in range(2))
    return Models(unet, vae, cond, uncond, device, dtype)


def param_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def attention_processors(unet: Any) -> str:
    """Names of the attention processor classes diffusers installed (AttnProcessor2_0 = SDPA)."""
    return ", ".join(sorted({type(p).__name__ for p in unet.attn_processors.values()}))


# --------------------------------------------------------------------------- image


def source_image(width: int = SOURCE_SIZE[0], height: int = SOURCE_SIZE[1]) -> Image.Image:
    """Deterministic RGB test image: smooth colour gradients, a zone plate, a checkerboard and
    thin lines (detail for the resampler), plus faint seeded noise."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    u, v = xx / (width - 1), yy / (height - 1)
    img = np.stack([u, v, 0.5 + 0.5 * np.sin(2 * np.pi * (u * v * 2 + 0.25))], axis=-1)
    r2 = (xx - 0.25 * width) ** 2 + (yy - 0.5 * height) ** 2
    plate = 0.5 + 0.5 * np.cos(r2 * np.pi / (1.2 * height))
    inside = r2 < (0.35 * height) ** 2
    img[inside] = 0.3 * img[inside] + 0.7 * plate[inside, None]
    checker = ((xx // 8 + yy // 8) % 2).astype(np.float64)
    box = (xx > 0.6 * width) & (xx < 0.9 * width) & (yy > 0.2 * height) & (yy < 0.5 * height)
    img[box] = checker[box, None] * np.array([0.9, 0.8, 0.2])
    img[(yy.astype(int) % 24 == 0) & (xx > 0.55 * width)] = 0.05
    img += np.random.default_rng(SEED).normal(0.0, 0.02, img.shape)
    return Image.fromarray((np.clip(img, 0.0, 1.0) * 255).round().astype(np.uint8), "RGB")


def upscale_to(image: Image.Image, width: int, height: int) -> Image.Image:
    """The extension's pixel-space upscale step: Lanczos to the target, fit "crop"."""
    return upscale_image(image, Upscale(upscaler="Lanczos", scale=None, width=width, height=height, fit="crop"))


def to_tensor(image: Image.Image, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """PIL RGB -> ``[1, 3, H, W]`` in [-1, 1] on the device (uint8 crosses the bus)."""
    a = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).unsqueeze(0)
    return (a.to(device).to(dtype) / 127.5 - 1.0)


# --------------------------------------------------------------------------- schedule and sampler


class Schedule:
    """SD1.5's discrete schedule (scaled-linear betas 0.00085..0.012, 1000 steps) as sigmas,
    k-diffusion style: ``sigma_t = sqrt((1 - abar_t) / abar_t)``, increasing in ``t``."""

    def __init__(self) -> None:
        betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
        abar = torch.cumprod(1.0 - betas, dim=0)
        self.sigmas = ((1 - abar) / abar).sqrt()
        self.log_sigmas = self.sigmas.log()

    def sigma_to_t(self, sigma: float) -> float:
        """Continuous timestep of ``sigma`` (linear interpolation in log sigma)."""
        ls = torch.tensor([math.log(sigma)], dtype=torch.float64)
        i = int(torch.searchsorted(self.log_sigmas, ls).clamp(1, len(self.log_sigmas) - 1))
        lo, hi = float(self.log_sigmas[i - 1]), float(self.log_sigmas[i])
        w = min(max((ls.item() - lo) / (hi - lo), 0.0), 1.0)
        return i - 1 + w

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        lo = t.floor().long().clamp(0, len(self.sigmas) - 2)
        w = t - lo
        return ((1 - w) * self.log_sigmas[lo] + w * self.log_sigmas[lo + 1]).exp()

    def get_sigmas(self, n: int, kind: str) -> torch.Tensor:
        """``n`` descending sigmas plus a final 0: "karras" (rho 7) or "simple" (even in t)."""
        if kind == "karras":
            lo, hi, rho = float(self.sigmas[0]), float(self.sigmas[-1]), 7.0
            ramp = torch.linspace(0, 1, n, dtype=torch.float64)
            s = (hi ** (1 / rho) + ramp * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
        else:
            s = self.t_to_sigma(torch.linspace(len(self.sigmas) - 1, 0, n, dtype=torch.float64))
        return torch.cat([s, s.new_zeros(1)]).float()


def img2img_sigmas(schedule: Schedule, steps: int, strength: float, kind: str) -> torch.Tensor:
    """A1111's img2img schedule: the last ``int(strength * steps) + 1`` intervals of ``steps``."""
    t_enc = int(min(strength, 0.999) * steps)
    return schedule.get_sigmas(steps, kind)[steps - t_enc - 1:]


Denoiser = Callable[[torch.Tensor, float], torch.Tensor]


def sample_euler(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """k-diffusion's Euler: ``x += (x - D(x, s)) / s * (s_next - s)`` for each interval."""
    for s, s_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
        d = (x - denoise(x, s)) / s
        x = x + d * (s_next - s)
    return x


def make_eps(models: Models, schedule: Schedule) -> Callable[[torch.Tensor, float], torch.Tensor]:
    """``eps(x, sigma)`` with CFG: ``x [N, 4, h, w]`` (float32) goes through the UNet as
    ``x / sqrt(sigma^2 + 1)`` in one batch of ``2N`` (cond rows, then uncond rows) at
    timestep ``t(sigma)``; returns ``uncond + 7 * (cond - uncond)`` in float32."""

    def eps(x: torch.Tensor, sigma: float) -> torch.Tensor:
        n = x.shape[0]
        x_in = (x * (1.0 / math.sqrt(sigma * sigma + 1.0))).to(models.dtype)
        emb = torch.cat([models.cond.expand(n, -1, -1), models.uncond.expand(n, -1, -1)])
        t = torch.full((2 * n,), schedule.sigma_to_t(sigma), device=x.device, dtype=torch.float32)
        out = models.unet(torch.cat([x_in, x_in]), t, encoder_hidden_states=emb).sample.float()
        cond, uncond = out[:n], out[n:]
        return uncond + (cond - uncond) * CFG_SCALE

    return eps


def tiled_denoiser(eps: Callable, mixture: CompiledMixture) -> Denoiser:
    """``D(x, sigma) = x - sigma * eps_mix`` with eps mixed over the tiles by the engine."""

    def predict(x_crops: torch.Tensor, sigma: torch.Tensor, specs) -> torch.Tensor:
        return eps(x_crops, float(sigma[0]))

    def denoise(x: torch.Tensor, sigma: float) -> torch.Tensor:
        sig = torch.full((x.shape[0],), sigma)  # host tensor: no device sync per crop batch
        return x - sigma * mixture(x, sig, predict)

    return denoise


def plain_denoiser(eps: Callable) -> Denoiser:
    """``D(x, sigma)`` with the UNet on the whole latent."""
    return lambda x, sigma: x - sigma * eps(x, sigma)


def build_mixture(width: int, height: int, args: argparse.Namespace, device: torch.device) -> CompiledMixture:
    """The extension's path: a tile-grid preset -> plan -> compiled mixture on the device; "auto"
    tile size or batch chosen as the WebUI chooses them (`lib_mixture.auto_plan.resolve`, for
    ``--budget`` or the free memory, with the cost model of this device and dtype)."""
    preset = Preset(tiles=TileGrid(width=args.tile, height=args.tile, overlap=Overlap(args.overlap, args.overlap),
                                   batch_size=args.tile_batch))
    if wants_choice(preset):
        resolution = resolve(preset, [(width, height)], auto_budget(args, device))
        say(f"{'':>10}   {width}x{height} {resolution.note}")
        preset = resolution.preset
    plan = build_plan(preset, width, height)
    lh, lw = plan.latent_size
    return compile_mixture(plan.crops(), lh, lw, batch_size=plan.batch_size, device=device)


def vae_config(args: argparse.Namespace, models: Models, shape: tuple, mode: str) -> TiledVAEConfig:
    """The tiled VAE's settings. ``--vae-auto`` is the WebUI's (`lib_mixture_webui.vae.Route.config`):
    the stash on the device and a memory budget (`lib_mixture.tiled_vae.runtime.memory_budget`:
    75% of the free memory, 40% of the host's on the CPU) within ``--budget`` less what the job
    holds (CUDA: what is allocated; the CPU: the models' weights), at least what the exact
    attention needs, for the tile and the stash chosen together."""
    if not args.vae_auto:
        return TiledVAEConfig(stash_mib=args.vae_stash_mib, stash_on_device=args.vae_stash_device)
    device, held = models.device, 0.0
    if args.budget and device.type == "cuda":
        held = torch.cuda.memory_allocated(device)
    elif args.budget:
        held = sum(p.numel() * p.element_size() for m in (models.unet, models.vae) for p in m.parameters())
    memory = vae_memory_budget(device, free_memory(device), (args.budget or 0) * cost.GIB, held)
    memory = max(memory, min_memory(models.vae, shape, mode))
    return TiledVAEConfig(stash_on_device=True, memory_mib=max(1, -(-int(memory) // int(MIB))))


def auto_budget(args: argparse.Namespace, device: torch.device) -> Budget:
    """What "auto" is chosen for: ``--budget`` GiB for the whole job, else the free memory as the
    WebUI counts it (`lib_mixture.auto_plan.free_memory_budget`)."""
    model = cost.for_host("sd1", device.type, args.dtype)
    if model is None:
        return Budget(None, 0.0, f"no cost model is measured for sd1 on {device.type} in {args.dtype}")
    if args.budget:
        return Budget(model, args.budget * cost.GIB, f"--budget {args.budget:g} GiB")
    return free_memory_budget(model, free_memory(device), str(device))


def cap_memory(args: argparse.Namespace, device: torch.device) -> None:
    """``--budget`` on CUDA: the process may allocate at most that much (a smaller card on a big one)."""
    if args.budget and device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.budget * cost.GIB / total), device)
        say(f"memory capped at {args.budget:g} GiB of {total / cost.GIB:.1f} GiB (set_per_process_memory_fraction)")


# --------------------------------------------------------------------------- measurement


def _is_oom(exc: BaseException) -> bool:
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(oom, type) and isinstance(exc, oom):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def _status_bytes(key: str) -> int:
    return proc_status_kib(key) * 1024


def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def tame_glibc() -> None:
    """CPU runs: one malloc arena and large blocks always mmap'ed, so that freed tensors
    leave the resident set and peak RSS follows live memory (see bench_tiled_vae.py)."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(-8, 1)  # M_ARENA_MAX
        libc.mallopt(-3, 65536)  # M_MMAP_THRESHOLD (fixed: no dynamic raise)


class Meter:
    """Wall time and peak memory of one call; see the module docstring for the definitions."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def _start(self) -> int | None:
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()
            self.sync()
            torch.cuda.reset_peak_memory_stats(self.device)
            return torch.cuda.memory_allocated(self.device)
        libc = _libc()
        if libc is not None:
            libc.malloc_trim(0)
        try:
            rss = _status_bytes("VmRSS")
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current RSS
            return rss
        except OSError:
            return None

    def _peak(self) -> int | None:
        if self.cuda:
            return torch.cuda.max_memory_allocated(self.device)
        try:
            return _status_bytes("VmHWM")
        except (OSError, KeyError):
            return None

    def measure(self, fn: Callable[[], Any]) -> tuple[Any, dict]:
        """Run ``fn``; returns (result or None on out-of-memory, {seconds, base, peak, oom})."""
        base = self._start()
        t0 = time.perf_counter()
        try:
            result = fn()
            self.sync()
        except Exception as exc:  # noqa: BLE001 - only out-of-memory is turned into a result
            if not _is_oom(exc):
                raise
            result = None
        seconds = time.perf_counter() - t0
        stats = dict(seconds=seconds, base=base, peak=self._peak(), oom=result is None)
        if result is None:
            gc.collect()
            if self.cuda:
                torch.cuda.empty_cache()
        return result, stats


def nbytes(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.numel() * t.element_size()


@dataclass
class Record:
    """One measured phase. ``extra`` = peak - base - out_bytes (None where unknown)."""

    size: str
    pipeline: str  # "tiled" or "plain"
    phase: str
    seconds: float
    peak: int | None
    base: int | None
    in_bytes: int
    out_bytes: int
    oom: bool = False
    detail: str = ""
    info: dict = field(default_factory=dict)

    @property
    def extra(self) -> int | None:
        if self.oom or self.peak is None or self.base is None:
            return None
        return self.peak - self.base - self.out_bytes

    def as_dict(self) -> dict:
        d = dict(vars(self))
        d["extra"] = self.extra
        return d


def phase(meter: Meter, records: list, size: str, pipeline: str, name: str, fn: Callable[[], Any],
          in_bytes: int, detail: str = "", **info: Any) -> Any:
    """Measure ``fn`` as one phase, append its `Record`, return its result (None on OOM)."""
    out, st = meter.measure(fn)
    records.append(Record(size, pipeline, name, st["seconds"], st["peak"], st["base"], in_bytes,
                          nbytes(out) if isinstance(out, torch.Tensor) else 0, st["oom"], detail, info))
    return out


def psnr(a: torch.Tensor, ref: torch.Tensor) -> float:
    """PSNR of ``a`` against ``ref`` with the reference's value range as the peak."""
    a, ref = a.double().cpu(), ref.double().cpu()
    mse = torch.mean((a - ref) ** 2).item()
    rng = (ref.max() - ref.min()).item()
    if not math.isfinite(mse):
        return float("nan")
    return float("inf") if mse == 0 else 10 * math.log10(rng * rng / mse)


# --------------------------------------------------------------------------- pipelines


def vae_tiling(vae: Any, shape: tuple, mode: str, tile: int | None, config: TiledVAEConfig) -> tuple[str, dict]:
    """What the tiled VAE will do for ``shape``: tiles and passes of the full-resolution stage,
    its stash budget and predicted work over one tile's (`sizing.predict`), and the largest
    latent-resolution buffer between stages (it grows with the image)."""
    plan = plan_tiled_vae(vae, shape, mode, tile_size=tile, config=config)
    whole = plan_tiled_vae(vae, shape, mode, tile_size=max(shape[-2:]), config=TiledVAEConfig())
    kind = next(vae.parameters()).device.type
    pred = sum(s["work"].cost(kind) for s in plan if s["work"]) / sum(s["work"].cost(kind) for s in whole if s["work"])
    stages = [s for s in plan if s["kind"] == "tiled"]
    big = max(stages, key=lambda s: s["in_size"][0] * s["in_size"][1] + s["out_size"][0] * s["out_size"][1])
    buf = max([s["out_bytes"] for s in plan[:-1]] or [0])
    info = dict(vae_tile=big["tile_size"], vae_tiles=big["tiles"], vae_passes=big["passes"], latent_buffer=buf,
                vae_stash=big["stash_bytes"], vae_predicted_x_one_tile=pred)
    return (f"{big['tiles']} tiles x {big['passes']} passes, tile {big['tile_size']}, "
            f"stash {big['stash_bytes'] / MIB:.0f} MiB, predicted {pred:.2f}x one tile's work, "
            f"latent buf {buf / MIB:.1f} MiB"), info


@dataclass
class TiledResult:
    records: list
    image: Image.Image | None = None  # the upscaled source (host)
    latent_in: torch.Tensor | None = None  # tiled_encode result (host, float32)
    latent_out: torch.Tensor | None = None  # after sampling (host, float32)
    decoded: torch.Tensor | None = None  # final image (host, float32)


def noise_like(shape: tuple, device: torch.device) -> torch.Tensor:
    """Seeded float32 noise made on the host, so plain and tiled runs share it on any device."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(SEED + 2)).to(device)


def run_tiled(models: Models, source: Image.Image, width: int, height: int, sigmas: torch.Tensor,
              args: argparse.Namespace, meter: Meter, schedule: Schedule) -> TiledResult:
    """upscale -> tiled encode -> mixture sampling -> tiled decode, each phase measured.
    Stops at the first phase that runs out of memory."""
    size, dev, dt = f"{width}x{height}", models.device, models.dtype
    res = TiledResult([])
    rec = res.records

    def upscale() -> torch.Tensor:
        res.image = upscale_to(source, width, height)
        return to_tensor(res.image, dev, dt)

    img = phase(meter, rec, size, "tiled", "upscale", upscale, 0, f"{source.width}x{source.height} -> {size} Lanczos")
    if img is None:
        return res
    cfg = vae_config(args, models, tuple(img.shape), "encode")
    text, info = vae_tiling(models.vae, tuple(img.shape), "encode", args.vae_tile, cfg)
    z = phase(meter, rec, size, "tiled", "encode",
              lambda: tiled_encode(models.vae, img, tile_size=args.vae_tile, output="mean",
                                   config=cfg) * SCALING_FACTOR,
              nbytes(img), text, **info)
    del img
    if z is None:
        return res
    z = z.float()
    res.latent_in = z.cpu()
    noise = noise_like(tuple(z.shape), dev)
    eps = make_eps(models, schedule)
    state: dict = {}

    def sample() -> torch.Tensor:
        mixture = build_mixture(width, height, args, dev)
        state["mixture"] = mixture
        return sample_euler(tiled_denoiser(eps, mixture), z + noise * float(sigmas[0]), sigmas)

    steps = len(sigmas) - 1
    out = phase(meter, rec, size, "tiled", "sampling", sample, nbytes(z) + nbytes(noise))
    if "mixture" in state:
        m = state["mixture"]
        crops, calls = len(m.crops), m.model_calls_per_step
        rec[-1].detail = (f"{crops} tiles, {calls} calls/step x {steps} steps, "
                          f"{rec[-1].seconds / (steps * crops) * 1e3:.0f} ms/tile")
        rec[-1].info.update(tiles=crops, calls_per_step=calls, steps=steps,
                            tile_latent=[m.crops[0].box.width, m.crops[0].box.height])
    del z, noise, state
    if out is None:
        return res
    res.latent_out = out.cpu()
    cfg = vae_config(args, models, tuple(out.shape), "decode")
    text, info = vae_tiling(models.vae, tuple(out.shape), "decode", args.vae_tile, cfg)
    dec = phase(meter, rec, size, "tiled", "decode",
                lambda: tiled_decode(models.vae, (out / SCALING_FACTOR).to(dt), tile_size=args.vae_tile,
                                     config=cfg),
                nbytes(out), text, **info)
    if dec is not None:
        res.decoded = dec.float().cpu()
    return res


def run_plain(models: Models, image: Image.Image, sigmas: torch.Tensor, meter: Meter,
              schedule: Schedule) -> tuple[list, torch.Tensor | None, torch.Tensor | None]:
    """The untiled pipeline on the same upscaled image and noise: (records, latent after
    encode, decoded image), both on the host."""
    size, dev, dt = f"{image.width}x{image.height}", models.device, models.dtype
    rec: list = []
    img = to_tensor(image, dev, dt)
    z = phase(meter, rec, size, "plain", "encode",
              lambda: models.vae.encode(img).latent_dist.mean * SCALING_FACTOR, nbytes(img), "vae.encode")
    del img
    if z is None:
        return rec, None, None
    z = z.float()
    z_host = z.cpu()
    noise = noise_like(tuple(z.shape), dev)
    den = plain_denoiser(make_eps(models, schedule))
    out = phase(meter, rec, size, "plain", "sampling",
                lambda: sample_euler(den, z + noise * float(sigmas[0]), sigmas), nbytes(z) + nbytes(noise),
                f"whole latent, 1 call/step x {len(sigmas) - 1} steps")
    del z, noise
    if out is None:
        return rec, z_host, None
    dec = phase(meter, rec, size, "plain", "decode",
                lambda: models.vae.decode((out / SCALING_FACTOR).to(dt)).sample, nbytes(out), "vae.decode")
    return rec, z_host, None if dec is None else dec.float().cpu()


def plain_vae(models: Models, tiled: TiledResult, meter: Meter) -> tuple[list, float | None]:
    """Plain ``vae.encode`` / ``vae.decode`` on a tiled run's image and final latent:
    (records, PSNR of the tiled decode against the plain decode of the same latent)."""
    image, latent = tiled.image, tiled.latent_out
    size, dev, dt = f"{image.width}x{image.height}", models.device, models.dtype
    rec: list = []
    img = to_tensor(image, dev, dt)
    z = phase(meter, rec, size, "plain", "encode", lambda: models.vae.encode(img).latent_dist.mean,
              nbytes(img), "vae.encode")
    del img, z
    zin = (latent.to(dev) / SCALING_FACTOR).to(dt)
    dec = phase(meter, rec, size, "plain", "decode", lambda: models.vae.decode(zin).sample, nbytes(zin),
                "vae.decode")
    del zin
    quality = None
    if dec is not None and tiled.decoded is not None:
        quality = psnr(tiled.decoded, dec.float())
    return rec, quality


# --------------------------------------------------------------------------- report


def _mib(v: int | None) -> str:
    return "n/a" if v is None else f"{v / MIB:.1f}"


def _ratio(a: float | None, b: float | None, fmt: str = "{:.2f}") -> str:
    if a is None or b is None or b == 0:
        return "-"
    return fmt.format(a / b)


def _db(v: float | None) -> str:
    return "-" if v is None else ("inf" if v == float("inf") else f"{v:.1f}")


def print_tiled_header() -> None:
    say(f"{'size':>10} | {'phase':8} | {'time s':>7} | {'peak MiB':>9} | {'in+out MiB':>10} | "
        f"{'extra MiB':>9} | {'x first':>7} | detail")
    say("-" * 110)


def print_tiled_rows(records: list, first: dict) -> None:
    """Rows of one size; ``first`` maps phase -> extra of the first size (for "x first")."""
    for r in records:
        if r.oom:
            say(f"{r.size:>10} | {r.phase:8} | {r.seconds:7.2f} | {'OOM':>9} |")
            continue
        first.setdefault(r.phase, r.extra)
        say(f"{r.size:>10} | {r.phase:8} | {r.seconds:7.2f} | {_mib(r.peak):>9} | "
            f"{_mib(r.in_bytes + r.out_bytes):>10} | {_mib(r.extra):>9} | "
            f"{_ratio(r.extra, first.get(r.phase)):>7} | {r.detail}")
    total = sum(r.seconds for r in records)
    say(f"{records[0].size if records else '':>10} | {'total':8} | {total:7.2f} |")


def print_plain_vs_tiled(tiled: list, plain: list) -> None:
    """(b): per phase, tiled and plain side by side with ratios."""
    say(f"{'phase':8} | {'tiled s':>8} | {'plain s':>8} | {'t/p time':>8} | {'tiled pk':>9} | "
        f"{'plain pk':>9} | {'t/p peak':>8} | {'tiled ex':>9} | {'plain ex':>9} | {'t/p extra':>9}")
    say("-" * 110)
    by = {r.phase: r for r in tiled}
    for p in plain:
        t = by.get(p.phase)
        if t is None:
            continue
        if p.oom:
            say(f"{p.phase:8} | {t.seconds:8.2f} | {'OOM':>8} |")
            continue
        say(f"{p.phase:8} | {t.seconds:8.2f} | {p.seconds:8.2f} | {_ratio(t.seconds, p.seconds):>8} | "
            f"{_mib(t.peak):>9} | {_mib(p.peak):>9} | {_ratio(t.peak, p.peak):>8} | {_mib(t.extra):>9} | "
            f"{_mib(p.extra):>9} | {_ratio(t.extra, p.extra):>9}")


def print_plain_vae_row(tiled: list, plain: list, quality: float | None) -> None:
    """(c): one size, plain VAE vs tiled VAE: time, extra memory, decode PSNR."""
    by = {r.phase: r for r in tiled}
    cells = []
    for p in plain:
        t = by.get(p.phase)
        plain_ex = "OOM" if p.oom else _mib(p.extra)
        plain_s = "-" if p.oom else f"{p.seconds:.2f}"
        cells.append(f"{plain_s:>7} {plain_ex:>9} {_mib(t.extra) if t else '-':>9}")
    say(f"{plain[0].size:>10} | " + " | ".join(cells) + f" | {_db(quality):>8}")


def header(args: argparse.Namespace, models: Models, sigmas: torch.Tensor) -> dict:
    """Print and return the run's setup: device, versions, dtype, configs, attention."""
    import diffusers

    dev = models.device
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
        sdpa = (f"SDPA flash={torch.backends.cuda.flash_sdp_enabled()} "
                f"mem_efficient={torch.backends.cuda.mem_efficient_sdp_enabled()} "
                f"math={torch.backends.cuda.math_sdp_enabled()}")
    else:
        name = f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
        sdpa = "SDPA on CPU"
    u = TINY_UNET if args.tiny else SD15_UNET
    v = TINY_VAE if args.tiny else SD15_VAE
    info = dict(device=name, torch=torch.__version__, diffusers=diffusers.__version__, dtype=args.dtype,
                unet=dict(block_out_channels=u["block_out_channels"], layers_per_block=u["layers_per_block"],
                          cross_attention_dim=u["cross_attention_dim"], params_mib=param_bytes(models.unet) / MIB),
                vae=dict(block_out_channels=v["block_out_channels"], layers_per_block=v["layers_per_block"],
                         params_mib=param_bytes(models.vae) / MIB),
                attention=attention_processors(models.unet), sdpa=sdpa,
                tile=args.tile, overlap=args.overlap, tile_batch=args.tile_batch, vae_tile=args.vae_tile,
                steps=args.steps, strength=args.strength, schedule=args.schedule, sampling_steps=len(sigmas) - 1,
                sigmas=[round(s, 4) for s in sigmas.tolist()], cfg_scale=CFG_SCALE, sizes=args.sizes)
    say(f"device: {name} | torch {torch.__version__} | diffusers {diffusers.__version__} | {args.dtype}")
    say(f"UNet {'tiny' if args.tiny else 'SD1.5'} {u['block_out_channels']} x{u['layers_per_block']} layers, "
        f"text {TEXT_LEN}x{u['cross_attention_dim']}, {param_bytes(models.unet) / MIB:.0f} MiB | "
        f"VAE {v['block_out_channels']} x{v['layers_per_block']}, {param_bytes(models.vae) / MIB:.0f} MiB | "
        f"attention: {info['attention']}; {sdpa}")
    say(f"img2img: Euler, {args.schedule} sigmas, {args.steps} steps at strength {args.strength} -> "
        f"{len(sigmas) - 1} steps from sigma {float(sigmas[0]):.3f}, CFG {CFG_SCALE:g} | tiles {args.tile} px, "
        f"overlap {args.overlap} px, {args.tile_batch} crops per call (x2 rows for CFG) | "
        f"VAE tile {args.vae_tile if args.vae_tile else 'auto'} latent px | source {SOURCE_SIZE[0]}x{SOURCE_SIZE[1]}")
    return info


# --------------------------------------------------------------------------- main


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """"1024x1024,3840x2160" -> [(1024, 1024), (3840, 2160)]; sides must be multiples of 8."""
    out = []
    for part in text.split(","):
        w, h = (int(v) for v in part.strip().lower().split("x"))
        if w < 64 or h < 64 or w % 8 or h % 8:
            raise argparse.ArgumentTypeError(f"size {part!r}: each side must be a multiple of 8, at least 64")
        out.append((w, h))
    return out


def int_or_auto(text: str) -> int | str:
    return "auto" if text == "auto" else int(text)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=sorted(DTYPES), help="default fp16 on CUDA, fp32 elsewhere")
    ap.add_argument("--steps", type=int, default=20, help="schedule length (default 20)")
    ap.add_argument("--strength", type=float, default=0.35, help="denoising strength (default 0.35)")
    ap.add_argument("--schedule", choices=("karras", "simple"), default="karras")
    ap.add_argument("--sizes", type=parse_sizes, default=parse_sizes("1024x1024,2048x2048,3840x2160"),
                    help="output sizes WxH, comma separated; the first one is also run untiled")
    ap.add_argument("--tile", type=int_or_auto, help="tile edge in px, or auto (default 768; 128 with --tiny)")
    ap.add_argument("--overlap", type=int, help="minimum tile overlap in px (default 128; 32 with --tiny)")
    ap.add_argument("--tile-batch", type=int_or_auto, default=4, help="crops per UNet call, or auto (default 4)")
    ap.add_argument("--budget", type=float, metavar="GIB", help="the whole job's memory: on CUDA the process is capped "
                    "at it (torch.cuda.set_per_process_memory_fraction); auto sizes and --vae-auto are chosen "
                    "for it (on the CPU too, where the process peak RSS shows whether it held)")
    ap.add_argument("--vae-tile", type=int, help="tiled VAE core tile in latent px (default: from free memory; "
                                                 "16 with --tiny)")
    ap.add_argument("--vae-stash-mib", type=int, default=0,
                    help="host memory for the tiles' activations between GroupNorm passes (0: recompute)")
    ap.add_argument("--vae-stash-device", action="store_true",
                    help="keep the stash in device memory instead (no copies between passes); without "
                         "--vae-stash-mib it takes what the tiles leave of 75%% of the free memory")
    ap.add_argument("--vae-auto", action="store_true",
                    help="the WebUI's tiled VAE: tile and device stash chosen together within 75%% of the free "
                         "memory (and --budget); overrides the two options above")
    ap.add_argument("--tiny", action="store_true", help="small UNet/VAE configs: a CPU smoke test")
    ap.add_argument("--skip-plain", action="store_true", help="skip the untiled comparisons (b) and (c)")
    ap.add_argument("--no-warmup", action="store_true", help="skip the unmeasured warm-up run")
    ap.add_argument("--json", metavar="OUT", help="write every number to this JSON file")
    args = ap.parse_args(argv)
    args.dtype = args.dtype or ("fp16" if args.device.startswith("cuda") else "fp32")
    args.tile = args.tile or (128 if args.tiny else 768)
    args.overlap = args.overlap if args.overlap is not None else (32 if args.tiny else 128)
    if args.vae_tile is None and args.tiny:
        args.vae_tile = 16
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    try:
        sys.stdout.reconfigure(line_buffering=True)
    except AttributeError:
        pass
    device = torch.device(args.device)
    if device.type == "cpu":
        tame_glibc()
    cap_memory(args, device)
    models = build_models(args.tiny, device, DTYPES[args.dtype])
    schedule = Schedule()
    sigmas = img2img_sigmas(schedule, args.steps, args.strength, args.schedule)
    meter, source = Meter(device), source_image()
    report: dict = dict(setup=header(args, models, sigmas), tiled=[], plain_pipeline=[], plain_vae=[],
                        psnr={})

    def dump() -> None:
        if args.json:
            with open(args.json, "w") as f:
                json.dump(report, f, indent=1, default=str)

    with torch.inference_mode():
        if not args.no_warmup:  # kernels, cuBLAS/cuDNN handles, allocator pools: not measured
            t0 = time.perf_counter()
            w, h = args.sizes[0]
            run_tiled(models, source, w, h, sigmas[-3:], args, meter, schedule)
            if not args.skip_plain:
                models.vae.decode(torch.zeros(1, 4, 16, 16, device=device, dtype=models.dtype))
            meter.sync()
            say(f"warm-up (tiled pipeline at {w}x{h}, 2 steps): {time.perf_counter() - t0:.1f} s")

        peak = "max allocated incl. weights" if meter.cuda else "process peak RSS"
        say(f"\n(a) tiled pipeline; peak = {peak}, extra = peak - that before the phase - output, "
            "x first = extra / extra at the first size")
        print_tiled_header()
        first: dict = {}
        runs = []
        for w, h in args.sizes:
            res = run_tiled(models, source, w, h, sigmas, args, meter, schedule)
            runs.append(res)
            print_tiled_rows(res.records, first)
            if res.decoded is not None and not torch.isfinite(res.decoded).all():
                say(f"{'':>10}   warning: the decoded image has non-finite values (fp16 overflow?)")
            report["tiled"] += [r.as_dict() for r in res.records]
            dump()

        if not args.skip_plain and runs[0].decoded is not None:
            tiled0 = runs[0]
            size0 = f"{tiled0.image.width}x{tiled0.image.height}"
            say(f"\n(b) plain vs tiled pipeline at {size0}, same image and noise (t/p = tiled / plain; "
                "pk = peak MiB, ex = extra MiB)")
            rec, z_plain, dec_plain = run_plain(models, tiled0.image, sigmas, meter, schedule)
            print_plain_vs_tiled(tiled0.records, rec)
            report["plain_pipeline"] = [r.as_dict() for r in rec]
            dec_same = models.vae.decode((tiled0.latent_out.to(device) / SCALING_FACTOR).to(models.dtype)).sample
            q = dict(final_tiled_vs_plain=None if dec_plain is None else psnr(tiled0.decoded, dec_plain),
                     encode_tiled_vs_plain=None if z_plain is None else psnr(tiled0.latent_in, z_plain),
                     decode_same_latent=psnr(tiled0.decoded, dec_same.float()))
            del dec_same
            report["psnr"] = q
            say(f"PSNR dB: final image, tiled pipeline vs plain = {_db(q['final_tiled_vs_plain'])} "
                "(tiles change the result by design)")
            say(f"         tiled_encode vs vae.encode latent = {_db(q['encode_tiled_vs_plain'])}; "
                f"tiled_decode vs vae.decode of the same latent = {_db(q['decode_same_latent'])} "
                f"(expect > 40 in fp32, less in fp16)")
            dump()

            say("\n(c) plain VAE at every size vs tiled (s = plain seconds, ex = extra MiB, PSNR = tiled_decode vs "
                "vae.decode of the same latent)")
            say(f"{'size':>10} | {'enc s':>7} {'plain ex':>9} {'tiled ex':>9} | {'dec s':>7} {'plain ex':>9} "
                f"{'tiled ex':>9} | {'PSNR dB':>8}")
            say("-" * 80)
            for res in runs:
                if res.latent_out is None or res.image is None:
                    continue
                rec, quality = plain_vae(models, res, meter)
                print_plain_vae_row(res.records, rec, quality)
                report["plain_vae"] += [dict(r.as_dict(), decode_psnr=quality) for r in rec]
                dump()
    return report


if __name__ == "__main__":
    main()
