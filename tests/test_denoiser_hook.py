"""The per-step hook against a stand-in with the WebUI CFG denoiser's contract, driven by
real k-diffusion samplers (the WebUI's own CFGDenoiser is exercised by tests/webui/)."""

import math
from types import SimpleNamespace

import pytest
import torch
from k_diffusion import sampling

from lib_mixture.denoiser_hook import HostHooks, PassState, inner_forward, mixture_forward, wrapped_attribute
from lib_mixture.geometry import Box, to_latent
from lib_mixture.guide import GuideSpec, active_calls
from lib_mixture.mixture import compile_mixture
from lib_mixture.plan import MAIN, CropSpec
from lib_mixture.planner import plan_tiles

PREVIEWS = []  # what the stand-in host's store_latent shows


def store_latent(latent):
    PREVIEWS.append(latent)


class ToyModel(torch.nn.Module):
    """A denoiser with cross-'attention' to a prompt embedding and a global (per-crop) term."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv1 = torch.nn.Conv2d(4, 8, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 4, 3, padding=1)
        for p in self.parameters():
            p.data = torch.randn(p.shape, generator=g) * 0.2
        self.proj = torch.randn(16, 8, generator=g) * 0.3

    def forward(self, x, sigma, emb):
        c_in = 1 / torch.sqrt(sigma ** 2 + 1)
        h = self.conv1(x * c_in.view(-1, 1, 1, 1)) + (emb @ self.proj).view(-1, 8, 1, 1)
        h = torch.tanh(h - h.mean(dim=(2, 3), keepdim=True))
        eps = self.conv2(h)
        return x - eps * sigma.view(-1, 1, 1, 1)


class StandInDenoiser(torch.nn.Module):
    """The WebUI CFGDenoiser's observable contract: conds per image, CFG combine, step
    counter, mask blend after denoising, sampler.last_latent, one store_latent per call."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.step = 0
        self.mask = self.nmask = self.init_latent = None
        self.sampler = SimpleNamespace(last_latent=None)
        self.calls = 0

    def forward(self, x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond):
        assert len(cond) == len(uncond) == x.shape[0], "one cond per image row"
        self.calls += 1
        x_in, sigma_in = torch.cat([x, x]), torch.cat([sigma, sigma])
        out = self.model(x_in, sigma_in, torch.stack(list(cond) + list(uncond)))
        return self.combine(out, cond_scale)

    def combine(self, out, cond_scale):
        """CFG combine of [cond rows; uncond rows], mask blend after, last_latent, preview, step."""
        c, u = out.chunk(2)
        denoised = u + (c - u) * cond_scale
        if self.mask is not None:
            denoised = denoised * self.nmask + self.init_latent * self.mask
        self.sampler.last_latent = c
        store_latent(denoised)
        self.step += 1
        return denoised


class HookedDenoiser(StandInDenoiser):
    """What the adapter does to the host class: forward dispatches to the mixture when a
    pass state is present."""

    state = None
    hooks = None

    def forward(self, x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond):
        if self.state is None:
            return StandInDenoiser.forward(self, x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond)
        return mixture_forward(StandInDenoiser.forward, self, x, sigma, uncond, cond, cond_scale, s_min_uncond,
                               image_cond, self.state, self.hooks)


def capture_previews():
    import contextlib

    @contextlib.contextmanager
    def capture():
        global store_latent
        seen = []
        original = store_latent
        globals()["store_latent"] = seen.append
        try:
            yield seen
        finally:
            globals()["store_latent"] = original
    return capture()


HOOKS = HostHooks(join=lambda cs, us: ([e for c in cs for e in c], [e for u in us for e in u]),
                  capture_previews=capture_previews, show_preview=lambda latent: store_latent(latent))

SAMPLERS = {
    "euler": lambda m, x, s, a: sampling.sample_euler(m, x, s, extra_args=a, disable=True),
    "euler_a": lambda m, x, s, a: sampling.sample_euler_ancestral(
        m, x, s, extra_args=a, disable=True, noise_sampler=_noise_sampler(x)),
    "dpmpp_2m": lambda m, x, s, a: sampling.sample_dpmpp_2m(m, x, s, extra_args=a, disable=True),
    "heun": lambda m, x, s, a: sampling.sample_heun(m, x, s, extra_args=a, disable=True),
}


def _noise_sampler(x):
    g = torch.Generator().manual_seed(7)
    return lambda sigma, sigma_next: torch.randn(x.shape, generator=g)


def setup(batch=2, h=24, w=40):
    torch.manual_seed(0)
    emb = {name: torch.randn(16) for name in ("main", "neg", "r0", "r1", "n1")}
    cond = [emb["main"]] * batch
    uncond = [emb["neg"]] * batch
    x = torch.randn(batch, 4, h, w, generator=torch.Generator().manual_seed(1))
    sigmas = sampling.get_sigmas_karras(6, 0.1, 10.0)
    extra = dict(cond=cond, uncond=uncond, cond_scale=7.0, s_min_uncond=0.0, image_cond=None)
    return emb, x * sigmas[0], sigmas, extra


def tile_crops(w, h, tw, th, overlap):
    return [CropSpec(to_latent(t)) for t in plan_tiles(w * 8, h * 8, tw * 8, th * 8, overlap * 8).tiles]


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_one_crop_covering_the_canvas_is_bitwise_the_plain_sampler(name):
    emb, x, sigmas, extra = setup()
    plain = SAMPLERS[name](StandInDenoiser(ToyModel()), x.clone(), sigmas, extra)
    den = HookedDenoiser(ToyModel())
    den.state = PassState(compile_mixture([CropSpec(Box(0, 0, 40, 24))], 24, 40))
    den.hooks = HOOKS
    mixed = SAMPLERS[name](den, x.clone(), sigmas, extra)
    assert torch.equal(mixed, plain)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_tiles_and_regions_sample_the_canvas_with_one_host_call_per_batch(name):
    emb, x, sigmas, extra = setup()
    crops = tile_crops(40, 24, 16, 16, 4)
    crops += [CropSpec(Box(2, 2, 16, 16), cond=0, cfg_scale=4.0, weight=2.0),
              CropSpec(Box(20, 6, 16, 16), cond=1, cfg_scale=9.0)]
    mix = compile_mixture(crops, 24, 40, batch_size=4)
    den = HookedDenoiser(ToyModel())
    den.state = PassState(mix, conds={0: ([emb["r0"]] * 2, [emb["neg"]] * 2), 1: ([emb["r1"]] * 2, [emb["n1"]] * 2)})
    den.hooks = HOOKS
    out = SAMPLERS[name](den, x.clone(), sigmas, extra)
    assert out.shape == x.shape and torch.isfinite(out).all()
    canvas_calls = den.state.calls
    assert canvas_calls == (12 if name == "heun" else 6) - (1 if name == "heun" else 0)  # heun: no 2nd eval at sigma 0
    assert den.step == canvas_calls  # one step per canvas call, whatever the crops
    assert den.calls == canvas_calls * mix.model_calls_per_step
    assert mix.model_calls_per_step == math.ceil(len(tile_crops(40, 24, 16, 16, 4)) / 4) + 2


def test_regions_really_use_their_own_conditioning_and_scale():
    emb, x, sigmas, extra = setup()
    crops = [CropSpec(Box(0, 0, 40, 24)), CropSpec(Box(0, 0, 20, 24), cond=0, cfg_scale=2.0, weight=1e6)]
    den = HookedDenoiser(ToyModel())
    den.hooks = HOOKS
    den.state = PassState(compile_mixture(crops, 24, 40), conds={0: ([emb["r0"]] * 2, [emb["n1"]] * 2)})
    xs = x[:, :, :, :20].clone()
    mixed = den(x.clone(), sigmas[:1].repeat(2), **extra)
    alone = StandInDenoiser(ToyModel())(xs, sigmas[:1].repeat(2), [emb["n1"]] * 2, [emb["r0"]] * 2, 2.0, 0.0, None)
    # The region's weight dominates its box (1e6 vs the background), so its box is its own prediction.
    torch.testing.assert_close(mixed[:, :, 4:20, 4:16], alone[:, :, 4:20, 4:16], rtol=1e-4, atol=1e-4)


def test_batch_size_and_order_do_not_change_the_samples():
    emb, x, sigmas, extra = setup()
    crops = tile_crops(40, 24, 16, 16, 4)
    results = []
    for batch_size, order in ((1, 1), (3, -1), (8, 1)):
        den = HookedDenoiser(ToyModel())
        den.hooks = HOOKS
        den.state = PassState(compile_mixture(crops[::order], 24, 40, batch_size=batch_size))
        results.append(SAMPLERS["dpmpp_2m"](den, x.clone(), sigmas, extra))
    # Batched convolutions round differently from single ones (float32, ~1e-7 relative per call);
    # six sampler steps on values of order 10 leave differences of a few 1e-5.
    for r in results[1:]:
        torch.testing.assert_close(r, results[0], rtol=1e-4, atol=1e-4)


def test_masks_and_init_latent_are_cropped_per_crop_and_restored():
    emb, x, sigmas, extra = setup()
    init = torch.randn(2, 4, 24, 40)
    mask = torch.zeros(4, 24, 40)
    mask[:, :, :10] = 1  # keep the left 10 columns (the WebUI's latent keep-mask is [C, H, W])
    den = HookedDenoiser(ToyModel())
    den.hooks = HOOKS
    den.mask, den.nmask, den.init_latent = mask, 1 - mask, init
    den.state = PassState(compile_mixture(tile_crops(40, 24, 16, 16, 4), 24, 40, batch_size=3))
    out = den(x.clone(), sigmas[:1].repeat(2), **extra)
    torch.testing.assert_close(out[:, :, :, :10], init[:, :, :, :10], rtol=0, atol=1e-6)
    assert den.mask is mask and den.init_latent is init and den.nmask.shape == (4, 24, 40)


def test_live_preview_is_stored_once_per_step_at_full_size():
    emb, x, sigmas, extra = setup()
    den = HookedDenoiser(ToyModel())
    den.hooks = HOOKS
    den.state = PassState(compile_mixture(tile_crops(40, 24, 16, 16, 4), 24, 40, batch_size=1))
    PREVIEWS.clear()
    SAMPLERS["euler"](den, x.clone(), sigmas, extra)
    assert len(PREVIEWS) == 6 and all(p.shape == x.shape for p in PREVIEWS)
    assert den.sampler.last_latent.shape == x.shape


def test_an_interrupt_between_tile_batches_leaves_the_denoiser_whole():
    class Interrupted(BaseException):
        pass

    emb, x, sigmas, extra = setup()
    den = HookedDenoiser(ToyModel())
    init = torch.randn(2, 4, 24, 40)
    den.mask, den.nmask, den.init_latent = torch.zeros(4, 24, 40), torch.ones(4, 24, 40), init
    previous = torch.full_like(x, 3.0)
    den.sampler.last_latent = previous

    def stop_at_second(i, n):
        if i == 1:
            raise Interrupted
    den.hooks = HostHooks(join=HOOKS.join, before_batch=stop_at_second)
    den.state = PassState(compile_mixture(tile_crops(40, 24, 16, 16, 4), 24, 40, batch_size=2))
    with pytest.raises(Interrupted):
        den(x.clone(), sigmas[:1].repeat(2), **extra)
    assert den.sampler.last_latent is previous  # full size, what an interrupt hands back
    assert den.init_latent is init and den.mask.shape == (4, 24, 40) and den.step == 1


def test_guide_box_holds_the_noised_guide_while_active():
    emb, x, sigmas, extra = setup()
    noise = x / sigmas[0]
    guide = GuideSpec(Box(8, 4, 16, 12), torch.randn(1, 4, 12, 16), strength=0.5)
    seen = []

    class Recording(HookedDenoiser):
        def forward(self, x, sigma, *args, **kw):
            out = super().forward(x, sigma, *args, **kw)
            seen.append((float(sigma[0]), x[:, :, 4:16, 8:24].clone()))
            return out
    den = Recording(ToyModel())
    den.hooks = HOOKS
    den.state = PassState(compile_mixture(tile_crops(40, 24, 16, 16, 4), 24, 40), guides=[guide],
                          guide_calls=[active_calls(6, guide.strength)], noise=noise)
    SAMPLERS["euler"](den, x.clone(), sigmas, extra)
    active = [s for s, _ in seen[:3]]  # strength 0.5 of 6 calls
    assert len(seen) == 6
    for s, box in seen:
        expected = guide.latent + s * noise[:, :, 4:16, 8:24]
        if s in active:
            torch.testing.assert_close(box, expected, rtol=1e-5, atol=1e-5)
        else:
            assert not torch.allclose(box, expected, atol=1e-3)


# ---- the tile-grid path: the host's forward once per step, its inner model call split ------------


class LoadedModel(torch.nn.Module):
    """The loaded model's contract: ``apply_model(x, t, cond={"c_crossattn": [emb], "c_concat": [img]})``.
    The inpainting-style ``c_concat`` adds a spatial term, so a wrongly cropped one shows."""

    def __init__(self, model):
        super().__init__()
        self.model, self.calls, self.sizes = model, 0, []

    def apply_model(self, x, t, cond):
        self.calls += 1
        self.sizes.append(tuple(x.shape))
        out = self.model(x, t, cond["c_crossattn"][0])
        concat = cond["c_concat"][0]
        if concat is not None and concat.ndim == 4:
            out = out + 0.1 * concat[:, :1]
        return out


class InnerModel(torch.nn.Module):
    """The sampler's wrapper around the loaded model (k-diffusion's ``CompVisDenoiser``), a child
    module of the CFG denoiser: it scales the input and maps sigma to the model's time once per
    call, then calls ``inner_model.apply_model``; the output is ``x + eps * c_out``."""

    def __init__(self, model):
        super().__init__()
        self.inner_model = LoadedModel(model)
        self.sigma_data = 1.0  # an attribute the host's callbacks may read

    def forward(self, x, sigma, cond):
        c_in = (1 / (sigma ** 2 + 1) ** 0.5).view(-1, 1, 1, 1)
        eps = self.inner_model.apply_model(x * c_in, sigma * 0.5, cond=cond)  # a stand-in sigma-to-t
        return x + eps * 0.5 * torch.tanh(sigma).view(-1, 1, 1, 1)

    @property
    def calls(self):
        return self.inner_model.calls

    @property
    def sizes(self):
        return self.inner_model.sizes


class InnerStandIn(StandInDenoiser):
    """The WebUI CFGDenoiser's forward around an inner model held in ``model_wrap``."""

    def __init__(self, model, image_cond=None):
        super().__init__(model)
        self.model_wrap = InnerModel(model)
        self.forwards = 0

    @property
    def inner_model(self):
        return self.model_wrap

    def forward(self, x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond):
        self.forwards += 1
        x_in, sigma_in = torch.cat([x, x]), torch.cat([sigma, sigma])
        ic = torch.cat([image_cond, image_cond]) if isinstance(image_cond, torch.Tensor) else None
        out = self.inner_model(x_in, sigma_in, cond={"c_crossattn": [torch.stack(list(cond) + list(uncond))],
                                                     "c_concat": [ic]})
        return self.combine(out, cond_scale)


def wrap_inner(den, make):
    """As the WebUI adapter does: the loaded model's ``apply_model`` under the sampler's wrapper."""
    return wrapped_attribute(den.inner_model.inner_model, "apply_model", make)


INNER_HOOKS = HostHooks(join=HOOKS.join, wrap_inner=wrap_inner, capture_previews=capture_previews,
                        show_preview=lambda latent: store_latent(latent))


class InnerHooked(InnerStandIn):
    state = None
    hooks = INNER_HOOKS
    path = "inner"

    def forward(self, x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond):
        path = inner_forward if self.path == "inner" else mixture_forward
        return path(InnerStandIn.forward, self, x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond,
                    self.state, self.hooks)


@pytest.mark.parametrize("name", ["euler", "euler_a", "dpmpp_2m", "heun"])
def test_the_tile_path_equals_mixing_each_crops_cfg_result(name):
    """Mixing the model outputs and combining once (the host's forward once per step) gives what
    combining per crop and mixing gives: CFG is linear and the weights sum to 1 (masks too)."""
    emb, x, sigmas, extra = setup()
    image_cond = torch.randn(2, 5, 24, 40)
    extra = dict(extra, image_cond=image_cond)
    crops = tile_crops(40, 24, 16, 16, 4)
    init, mask = torch.randn(2, 4, 24, 40), torch.zeros(4, 24, 40)
    mask[:, :, :6] = 1  # inpainting: the left columns are kept
    outs, dens = [], []
    for path in ("inner", "per-batch"):
        den = InnerHooked(ToyModel())
        den.path = path
        den.mask, den.nmask, den.init_latent = mask, 1 - mask, init
        den.state = PassState(compile_mixture(crops, 24, 40, batch_size=4), inner=path == "inner")
        outs.append(SAMPLERS[name](den, x.clone(), sigmas, extra))
        dens.append(den)
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-4, atol=1e-4)  # float rounding, values of order 10
    inner, per_batch = dens
    steps = inner.state.calls
    calls = compile_mixture(crops, 24, 40, batch_size=4).model_calls_per_step
    assert inner.forwards == steps and per_batch.forwards == steps * calls  # the host's forward once per step
    assert inner.model_wrap.calls == per_batch.model_wrap.calls == steps * calls  # the same UNet work
    assert set(inner.model_wrap.sizes) == {(12, 4, 16, 16)}  # 3 crops x (cond + uncond) x 2 images, never the canvas
    assert isinstance(inner.model_wrap, InnerModel)  # the host's own inner model again
    assert "apply_model" not in vars(inner.model_wrap.inner_model)  # no instance attribute left behind


def test_the_tile_path_crops_spatial_conditioning_and_repeats_the_rest():
    from lib_mixture.denoiser_hook import _tile_value

    specs = [CropSpec(Box(0, 0, 4, 3)), CropSpec(Box(2, 1, 4, 3))]
    canvas = torch.arange(2 * 1 * 5 * 7, dtype=torch.float32).view(2, 1, 5, 7)
    text = torch.randn(2, 77, 8)
    vector = torch.randn(2, 12)
    tiled = _tile_value({"c_crossattn": [text], "c_concat": [canvas], "vector": vector, "other": 3}, specs, 2, (5, 7))
    assert torch.equal(tiled["c_crossattn"][0], torch.cat([text, text]))  # crop-major rows
    assert torch.equal(tiled["vector"], torch.cat([vector, vector]))
    assert torch.equal(tiled["c_concat"][0], torch.cat([canvas[:, :, 0:3, 0:4], canvas[:, :, 1:4, 2:6]]))
    assert tiled["other"] == 3
    assert _tile_value([text], specs[:1], 2, (5, 7))[0] is text


def test_an_interrupt_in_the_tile_path_restores_the_inner_model():
    class Interrupted(BaseException):
        pass

    emb, x, sigmas, extra = setup()
    den = InnerHooked(ToyModel())
    real = den.model_wrap

    def stop_at_second(i, n):
        if i == 1:
            raise Interrupted
    den.hooks = HostHooks(join=HOOKS.join, wrap_inner=wrap_inner, before_batch=stop_at_second)
    den.state = PassState(compile_mixture(tile_crops(40, 24, 16, 16, 4), 24, 40, batch_size=2), inner=True)
    with pytest.raises(Interrupted):
        den(x.clone(), sigmas[:1].repeat(2), **extra)
    assert den.model_wrap is real and real.calls == 1
    assert "apply_model" not in vars(real.inner_model)


def test_the_tile_path_enters_the_pass_controls_around_each_call_with_its_crops_and_rows():
    """What a host's spatial input (ControlNet's control image) needs: inside each model call the
    hook holds that call's crops and rows per crop, crop-major, and nothing outside the calls."""
    import contextlib

    from lib_mixture.denoiser_hook import TiledInner

    crops = tile_crops(40, 24, 16, 16, 4)
    mixture = compile_mixture(crops, 24, 40, batch_size=2)
    held, seen = [None], []

    @contextlib.contextmanager
    def crop_controls(specs, rows):
        held[0] = ([s.box for s in specs], rows)
        try:
            yield
        finally:
            held[0] = None

    def model(x, t, cond):
        boxes, rows = held[0]
        assert x.shape[0] == rows * len(boxes) and all(x.shape[-2:] == (b.height, b.width) for b in boxes)
        seen.append(boxes)
        return x

    inner = TiledInner(model, PassState(mixture, inner=True, controls=crop_controls), HostHooks(join=None))
    inner(torch.randn(3, 4, 24, 40), torch.ones(3), cond={"c_crossattn": [torch.randn(3, 77, 16)]})
    assert held[0] is None and [b for boxes in seen for b in boxes] == [c.box for c in crops]


def test_the_per_batch_path_gives_the_pass_controls_one_crop_per_host_call():
    import contextlib

    emb, x, sigmas, extra = setup()
    calls = []

    @contextlib.contextmanager
    def crop_controls(specs, rows):
        calls.append((len(specs), rows))
        yield

    den = HookedDenoiser(ToyModel())
    den.hooks = HostHooks(join=HOOKS.join)
    den.state = PassState(compile_mixture(tile_crops(40, 24, 16, 16, 4), 24, 40, batch_size=1), controls=crop_controls)
    den(x.clone(), sigmas[:1].repeat(2), **extra)
    assert calls and set(calls) == {(1, 1)}
    den.state = PassState(compile_mixture(tile_crops(40, 24, 16, 16, 4), 24, 40, batch_size=2), controls=crop_controls)
    with pytest.raises(RuntimeError, match="one crop per host call"):
        den(x.clone(), sigmas[:1].repeat(2), **extra)
