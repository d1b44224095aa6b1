"""A real denoising loop: k-diffusion samplers drive the mixture over a diffusers UNet.

The model is a small `UNet2DConditionModel` with random (seeded) weights, wrapped as a
k-diffusion eps denoiser on Stable Diffusion's scaled-linear noise schedule
(`DiscreteEpsDDPMDenoiser`: ``x0 = x - sigma * eps(x / sqrt(sigma^2 + 1), t(sigma))``).
Classifier-free guidance is done per crop: the predict callback runs cond and uncond for the
whole batch of crops at once, each crop with its own text embedding (its ``cond`` handle)
and its own guidance scale, and returns the CFG-combined denoised latent.

Canvas: latent 24x40 (192x320 px) under a 3x2 grid of 16x16 latent tiles (128 px, overlap
4 cells) plus two regions with their own prompts and scales. That is smaller than an SD
canvas so that the loops stay within a few seconds on two CPU cores; nothing here depends on
the size. All noise is deterministic: the initial noise from a seeded generator, and the
ancestral samplers get a ``noise_sampler`` drawing from their own seeded generator.
"""

from __future__ import annotations

import functools
import random
import warnings

import pytest

torch = pytest.importorskip("torch")
with warnings.catch_warnings():  # k-diffusion's imports (clip, pkg_resources) warn on import
    warnings.simplefilter("ignore")
    k_sampling = pytest.importorskip("k_diffusion.sampling")
    k_external = pytest.importorskip("k_diffusion.external")
    diffusers = pytest.importorskip("diffusers")

from lib_mixture.geometry import Box, to_latent  # noqa: E402
from lib_mixture.guide import GuideSpec, active_calls, apply_guides  # noqa: E402
from lib_mixture.mixture import compile_mixture  # noqa: E402
from lib_mixture.plan import MAIN, CropSpec  # noqa: E402
from lib_mixture.planner import plan_tiles  # noqa: E402
from lib_mixture.weights import weight_map  # noqa: E402

LATENT_H, LATENT_W = 24, 40
TILE_PX, OVERLAP_PX = 128, 32
STEPS = 5
DEFAULT_CFG = 7.0
SEQ_LEN, EMB_DIM = 8, 32
UNCOND = "uncond"

SAMPLERS = {
    "euler": k_sampling.sample_euler,
    "euler_ancestral": k_sampling.sample_euler_ancestral,
    "dpmpp_2m": k_sampling.sample_dpmpp_2m,
    "heun": k_sampling.sample_heun,
    "dpmpp_2s_ancestral": k_sampling.sample_dpmpp_2s_ancestral,
}
ANCESTRAL = {"euler_ancestral", "dpmpp_2s_ancestral"}

# Same crops, different batching or order: the UNet then runs on other batch sizes (other
# oneDNN kernels and summation orders) and the mixture accumulates the crops in another
# order. Both are float32 rounding, ~1e-7 relative per step; the sampler steps amplify it
# through the network, so the comparison allows 1e-4 relative to the output's largest value,
# i.e. ~1e3 ulps, while any real change (a crop lost, a wrong weight, a crop given another
# crop's prompt or scale) moves the result by O(1e-1) or more (checked below).
ORDER_TOLERANCE = 1e-4


class _EpsUNet(torch.nn.Module):
    """The inner model k-diffusion expects: ``(x_scaled, t, cond) -> eps``."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, x, t, cond):
        return self.unet(x, t, encoder_hidden_states=cond).sample


@functools.lru_cache(maxsize=None)
def _denoiser():
    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        sample_size=32, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(16, 32), norm_num_groups=8, cross_attention_dim=EMB_DIM, attention_head_dim=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    ).eval()
    # Stable Diffusion's schedule: betas linear in sqrt from 0.00085 to 0.012 over 1000 steps.
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0).to(torch.float32)
    return k_external.DiscreteEpsDDPMDenoiser(_EpsUNet(unet), alphas_cumprod, quantize=False).eval()


@functools.lru_cache(maxsize=None)
def _embeddings():
    """Text embeddings by cond handle: the main prompt, two region prompts, the negative one."""
    g = torch.Generator().manual_seed(1)
    return {handle: torch.randn(1, SEQ_LEN, EMB_DIM, generator=g) for handle in (MAIN, 0, 1, UNCOND)}


def _sigmas():
    return _denoiser().get_sigmas(STEPS)  # descending, final 0 appended


def _noise(batch=1):
    return torch.randn(batch, 4, LATENT_H, LATENT_W, generator=torch.Generator().manual_seed(2))


def cfg_denoised(x, sigma, conds, scales):
    """CFG on the denoised latent for rows that each have their own cond and scale.

    ``x [N, C, h, w]``, ``sigma [N]``, ``conds [N, SEQ_LEN, EMB_DIM]``, ``scales [N]``; cond
    and uncond go through the model as one batch. (CFG on x0 equals CFG on eps: x0 is
    affine in eps with the same coefficients for both halves.)
    """
    n = x.shape[0]
    uncond = _embeddings()[UNCOND].expand(n, -1, -1)
    out = _denoiser()(torch.cat([x, x]), torch.cat([sigma, sigma]), cond=torch.cat([conds, uncond]))
    cond_out, uncond_out = out[:n], out[n:]
    return uncond_out + (cond_out - uncond_out) * scales.view(-1, 1, 1, 1)


def plain_model(x, sigma):
    """The loop without the mixture: the whole canvas, main prompt, default scale."""
    b = x.shape[0]
    return cfg_denoised(x, sigma, _embeddings()[MAIN].expand(b, -1, -1), torch.full((b,), DEFAULT_CFG))


def make_predict(log=None):
    """The host side of the mixture: crop-major rows, one cond and one scale per crop."""
    emb = _embeddings()

    def predict(x, sigma, specs):
        rows = x.shape[0] // len(specs)
        conds = torch.cat([emb[s.cond].expand(rows, -1, -1) for s in specs])
        scales = torch.cat([torch.full((rows,), DEFAULT_CFG if s.cfg_scale is None else s.cfg_scale)
                            for s in specs])
        if log is not None:
            log.append([(s.cond, s.cfg_scale, s.box) for s in specs])
        return cfg_denoised(x, sigma, conds, scales)

    return predict


def tiles():
    plan = plan_tiles(LATENT_W * 8, LATENT_H * 8, TILE_PX, TILE_PX, OVERLAP_PX)
    return [CropSpec(to_latent(t)) for t in plan.tiles]


REGIONS = [
    CropSpec(Box(2, 4, 14, 12), cond=0, cfg_scale=3.0),
    CropSpec(Box(20, 8, 16, 14), cond=1, cfg_scale=11.0, weight=2.0),
]


def scene():
    """Background tiles (main prompt, default scale) and the two regions, in plan order."""
    return tiles() + REGIONS


def sample(name, model, noise, callback=None):
    sigmas = _sigmas()
    kwargs = {}
    if name in ANCESTRAL:
        g = torch.Generator().manual_seed(3)
        kwargs["noise_sampler"] = lambda sigma, sigma_next: torch.randn(noise.shape, generator=g)
    with torch.no_grad():
        return SAMPLERS[name](model, noise * sigmas[0], sigmas, disable=True, callback=callback, **kwargs)


def mixture_model(crops, batch_size, log=None):
    mix = compile_mixture(crops, LATENT_H, LATENT_W, batch_size)
    predict = make_predict(log)
    return lambda x, sigma: mix(x, sigma, predict)


# Sampling runs are cached: several tests look at the same run from different sides.
@functools.lru_cache(maxsize=None)
def _plain_result(name):
    return sample(name, plain_model, _noise())


@functools.lru_cache(maxsize=None)
def _scene_run(name, batch_size=8, order="plan"):
    """(result, per-call log of (cond, scale, box)) of the tiles-and-regions scene."""
    crops = scene()
    if order == "reversed":
        crops = crops[::-1]
    elif order == "shuffled":
        random.Random(4).shuffle(crops)
    log = []
    return sample(name, mixture_model(crops, batch_size, log), _noise()), log


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Run this module's tiny-tensor loops on one thread. On a shared 2-core machine two
    OpenMP threads spin-wait for each other and one model call takes 2-5x longer (measured
    0.3 s vs 1-1.4 s); the results compared here do not depend on it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_setup_is_what_it_claims():
    assert [c.box.as_list() for c in tiles()] == [
        [0, 0, 16, 16], [12, 0, 16, 16], [24, 0, 16, 16], [0, 8, 16, 16], [12, 8, 16, 16], [24, 8, 16, 16]]
    sigmas = _sigmas()
    assert len(sigmas) == STEPS + 1 and float(sigmas[-1]) == 0.0
    assert 14.0 < float(sigmas[0]) < 15.0 and 0.02 < float(sigmas[-2]) < 0.04  # SD's sigma range
    # The scene batches as intended: 6 tiles in one call, each region alone (own size and scale).
    mix = compile_mixture(scene(), LATENT_H, LATENT_W, 8)
    assert mix.batches == ((0, 1, 2, 3, 4, 5), (6,), (7,))


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_one_crop_covering_the_canvas_is_exactly_the_plain_loop(name):
    plain = _plain_result(name)
    mixed = sample(name, mixture_model([CropSpec(Box(0, 0, LATENT_W, LATENT_H))], 4), _noise())
    assert mixed.shape == plain.shape == (1, 4, LATENT_H, LATENT_W)
    assert mixed.dtype == torch.float32
    assert bool(torch.isfinite(plain).all())
    assert torch.equal(mixed, plain)  # bit for bit: the weight is exactly 1, the model call identical


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_tiles_and_regions_sample_to_a_finite_canvas(name):
    result, log = _scene_run(name)
    assert result.shape == (1, 4, LATENT_H, LATENT_W)
    assert bool(torch.isfinite(result).all())
    # Every model call got the crops of one batch with their own prompts and scales.
    calls = {"euler": STEPS, "euler_ancestral": STEPS, "dpmpp_2m": STEPS,
             "heun": 2 * STEPS - 1, "dpmpp_2s_ancestral": 2 * STEPS - 1}[name]
    assert len(log) == 3 * calls
    assert log[:3] == [[(MAIN, None, c.box) for c in tiles()], [(0, 3.0, REGIONS[0].box)],
                       [(1, 11.0, REGIONS[1].box)]]
    # The mixture changed the sample (the plain loop is far away, not within rounding).
    plain = _plain_result(name)
    assert float((result - plain).abs().max()) > 100 * ORDER_TOLERANCE * float(plain.abs().max())


@pytest.mark.parametrize("name", ["dpmpp_2m", "euler_ancestral"])
def test_tile_order_and_batch_size_do_not_change_the_result(name):
    reference = _scene_run(name)[0]
    scale = float(reference.abs().max())
    for batch_size, order in ((1, "shuffled"), (3, "reversed")):
        other = _scene_run(name, batch_size, order)[0]
        diff = float((other - reference).abs().max())
        assert diff <= ORDER_TOLERANCE * scale, (batch_size, order, diff, scale)


def test_tolerance_is_tight_enough_to_catch_a_wrong_crop():
    """The order tolerance is not loose: one region given the other's scale is far outside it."""
    reference = _scene_run("dpmpp_2m")[0]
    wrong = [CropSpec(r.box, r.cond, 11.0 if r.cfg_scale == 3.0 else r.cfg_scale, r.weight) for r in REGIONS]
    result = sample("dpmpp_2m", mixture_model(tiles() + wrong, 8), _noise())
    assert float((result - reference).abs().max()) > 100 * ORDER_TOLERANCE * float(reference.abs().max())


def test_one_step_is_eq16_with_per_crop_prompt_and_scale():
    """One canvas prediction, two images with different sigmas: the mixture equals the
    weighted mean of each crop's own CFG prediction (computed crop by crop, float64 weights)."""
    x = _noise(2) * 3.0
    sigma = torch.tensor([8.0, 1.5])
    crops = scene()
    with torch.no_grad():
        mixed = compile_mixture(crops, LATENT_H, LATENT_W, 8)(x, sigma, make_predict())
        num = torch.zeros(2, 4, LATENT_H, LATENT_W, dtype=torch.float64)
        den = torch.zeros(LATENT_H, LATENT_W, dtype=torch.float64)
        for c in crops:
            rows, cols = c.box.slices()
            own = cfg_denoised(x[:, :, rows, cols].contiguous(), sigma, _embeddings()[c.cond].expand(2, -1, -1),
                               torch.full((2,), DEFAULT_CFG if c.cfg_scale is None else c.cfg_scale))
            w = weight_map(c.kind, c.box.height, c.box.width, c.variance, dtype=torch.float64) * c.weight
            num[:, :, rows, cols] += own.double() * w
            den[rows, cols] += w
    expected = (num / den).float()
    # The only difference is the UNet's batch size (2 rows here, 12 in the mixture's tile call):
    # float32 rounding, measured 4e-6 of the largest value; 5e-5 leaves room for other CPUs.
    assert torch.allclose(mixed, expected, atol=5e-5 * float(expected.abs().max()), rtol=0)


def test_a_region_prompt_and_scale_act_only_inside_its_box_on_one_step():
    x = _noise() * 5.0
    sigma = torch.tensor([5.0])
    variants = {
        "base": REGIONS,
        "scale": [REGIONS[0], CropSpec(REGIONS[1].box, 1, 2.0, REGIONS[1].weight)],
        "prompt": [REGIONS[0], CropSpec(REGIONS[1].box, 0, 11.0, REGIONS[1].weight)],
    }
    with torch.no_grad():
        out = {k: compile_mixture(tiles() + v, LATENT_H, LATENT_W, 8)(x, sigma, make_predict())
               for k, v in variants.items()}
    inside = torch.zeros(LATENT_H, LATENT_W, dtype=torch.bool)
    inside[REGIONS[1].box.slices()] = True
    for k in ("scale", "prompt"):
        diff = (out[k] - out["base"]).abs()[0].amax(dim=0)
        assert float(diff[inside].max()) > 1e-2, k
        assert float(diff[~inside].max()) == 0.0, k  # other crops' calls are untouched, bit for bit


GUIDE_BOX = Box(4, 6, 12, 10)


@pytest.mark.parametrize("name", ["euler", "heun", "euler_ancestral"])
def test_guide_box_is_the_noised_guide_while_active(name):
    """Algorithm 2 in sigma form, inside the denoiser wrapper: while a guide of strength 0.5 is
    in effect, the box holds ``guide + sigma * noise`` (the canvas's initial unit noise), both
    as the model sees it and in the sampler's own state (the override is in place)."""
    noise = _noise()
    guide = GuideSpec(GUIDE_BOX, torch.randn(1, 4, 10, 12, generator=torch.Generator().manual_seed(5)), 0.5)
    total_calls = STEPS if name not in ("heun",) else 2 * STEPS - 1
    active = active_calls(total_calls, guide.strength)
    mix = compile_mixture(scene(), LATENT_H, LATENT_W, 8)
    predict = make_predict()
    rows, cols = GUIDE_BOX.slices()
    seen = []  # (sigma, box as the model got it) per denoiser call

    def guided(x, sigma):
        level = float(sigma[0])
        apply_guides(x, noise, [guide], [len(seen) < active], sigma=level)
        seen.append((level, x[:, :, rows, cols].clone()))
        return mix(x, sigma, predict)

    states = []  # (index of the call just made, box of the sampler's state) per step

    def callback(d):  # k-diffusion calls it after the first model call of a step
        states.append((len(seen) - 1, d["x"][:, :, rows, cols].clone()))

    result = sample(name, guided, noise, callback=callback)
    assert result.shape == (1, 4, LATENT_H, LATENT_W) and bool(torch.isfinite(result).all())
    assert len(seen) == total_calls and active == {5: 3, 9: 5}[total_calls]  # half, rounded up

    def noised(level):
        return guide.latent + level * noise[:, :, rows, cols]

    for i, (level, box) in enumerate(seen):
        if i < active:
            assert torch.equal(box, noised(level)), (i, level)
        else:  # released: the box evolves freely and no longer matches
            assert float((box - noised(level)).abs().max()) > 1e-3, (i, level)
    # The sampler's own state carries the override on the steps whose first call was guided.
    assert len(states) == STEPS
    checked = 0
    for call, box in states:
        if call < active:
            assert torch.equal(box, noised(seen[call][0]))
            checked += 1
    assert checked >= 2
    # The guide did something: the same run without it ends elsewhere in the box.
    unguided = _scene_run(name)[0]
    assert float((result - unguided)[:, :, rows, cols].abs().max()) > 1e-2
