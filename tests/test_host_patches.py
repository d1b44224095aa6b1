"""lib_mixture_webui.patches with host stand-ins (no WebUI): the registry, class-level patches
given back by uninstall, per-job patches restored however a job ends."""

import sys
import types

import pytest
import torch

from lib_mixture.preset import VAETiling, parse_preset
from lib_mixture_webui import patches

ADAPTER = ("conds", "context", "controlnet", "guides", "hook", "job", "noise", "passes", "sdxl", "vae")


def _module(name, **attrs):
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    return module


class _Generator:  # modules.rng.ImageRNG
    def __init__(self, shape, seeds, **_):
        self.shape, self.seeds, self.is_first = shape, seeds, True

    def next(self):
        self.is_first = False
        return torch.full((len(self.seeds), *self.shape), float(self.seeds[0]))


@pytest.fixture
def host(monkeypatch):
    """Stand-ins for the host modules the adapter imports; the adapter imported against them."""
    class CFGDenoiser:
        def forward(self, x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond):
            return "host"

    class Encoder:
        def forward(self, x):
            return "encoded"

    class Decoder(Encoder):
        def forward(self, x):
            return "decoded"

    fakes = {
        "modules.sd_samplers_cfg_denoiser": _module("m", CFGDenoiser=CFGDenoiser),
        "modules.sd_samplers_common": _module("m", store_latent=lambda latent: None, apply_refiner=None,
                                              images_tensor_to_samples=None, InterruptedException=Exception),
        "modules.sd_samplers_timesteps": _module("m", CFGDenoiserTimesteps=type("T", (), {})),
        "modules.sd_vae_taesd": _module("m", decoder_model=lambda: "taesd decoder", encoder_model=lambda: None),
        "modules.shared": _module("m", state=types.SimpleNamespace(interrupted=False), sd_model=None, opts=None),
        "modules.rng": _module("m", ImageRNG=_Generator),
        **{f"modules.{n}": _module("m") for n in ("devices", "extra_networks", "images", "prompt_parser")},
        "ldm.modules.diffusionmodules.model": _module("m", Encoder=Encoder, Decoder=Decoder),
    }
    for name in ("modules", "ldm", "ldm.modules", "ldm.modules.diffusionmodules"):
        monkeypatch.setitem(sys.modules, name, _module(name, __path__=[]))
    for name, module in fakes.items():
        monkeypatch.setitem(sys.modules, name, module)
        parent, _, child = name.rpartition(".")
        setattr(sys.modules[parent], child, module)
    for name in ADAPTER:
        monkeypatch.delitem(sys.modules, f"lib_mixture_webui.{name}", raising=False)
    yield types.SimpleNamespace(CFGDenoiser=CFGDenoiser, Encoder=Encoder, Decoder=Decoder, modules=fakes)
    patches.uninstall()
    for name in ADAPTER:
        sys.modules.pop(f"lib_mixture_webui.{name}", None)


def test_the_registry_lists_every_patch_once_with_its_reason():
    keys = [(p.owner, p.attribute) for p in patches.REGISTRY]
    assert len(keys) == len(set(keys))
    assert {p.scope for p in patches.REGISTRY} == {patches.CLASS, patches.JOB, patches.CALL}
    assert all(p.why and p.where.startswith("lib_mixture_webui.") for p in patches.REGISTRY)
    assert all(p.make for p in patches.REGISTRY if p.scope == patches.CLASS)
    assert {k for k, p in zip(keys, patches.REGISTRY) if p.scope != patches.CLASS} == {
        ("p", "close"), ("p.rng", "next"), ("modules.sd_samplers_common", "store_latent"),
        ("modules.shared.sd_model", "apply_model"), ("den", "mask"), ("den", "nmask"), ("den", "init_latent"),
        ("den", "step"), ("den.sampler", "last_latent"), ("hypertile layer params", "aspect_ratio"),
        ("hypertile layer params", "tile_size")}


def test_install_once_and_uninstall_gives_every_class_level_attribute_back(host):
    before = patches.held()
    assert len(before) == 5  # the CFG forward, ldm's Encoder and Decoder, both TAESD getters (no sgm here)
    installation = patches.install()
    assert patches.install() is installation and patches.installed() is installation
    after = patches.held()
    assert all(patches.is_ours(v) and before[k] is not v for k, v in after.items())
    assert host.CFGDenoiser().forward(*[None] * 7) == "host"  # inert without a job context on p
    assert host.Decoder().forward(None) == "decoded" and host.modules["modules.sd_vae_taesd"].decoder_model() == "taesd decoder"
    assert patches.uninstall() == []
    assert patches.held() == before and patches.installed() is None
    assert patches.install() is not installation  # a fresh set, with fresh state


class _P:
    """A processing object: its own ``close`` (a method) and a ``rng`` drawn per batch."""

    def __init__(self):
        self.width, self.height, self.extra_generation_params = 192, 128, {}
        self.seeds, self.all_seeds, self.closed = [7], [7], 0
        self.rng = _Generator((4, 16, 24), [7])

    def close(self):
        self.closed += 1


def start_job(p, installation):
    from lib_mixture_webui import context
    from lib_mixture_webui.job import Job

    preset = parse_preset({"version": 1, "tiles": {"width": 96, "height": 96, "overlap": 32},
                           "regions": [{"x": 0, "y": 0, "width": 96, "height": 128, "seed": 3}]})
    ctx = context.attach(p, context.JobContext(Job(p, preset), installation, {}, VAETiling()))
    ctx.batch_started(p)
    return ctx


@pytest.mark.parametrize("ending", ["finished", "failed", "interrupted"])
def test_after_any_job_every_per_job_patch_is_the_hosts_own(host, ending):
    from lib_mixture_webui import context

    installation = patches.install()
    p, rngs = _P(), []
    ctx = start_job(p, installation)
    rngs.append(p.rng)
    assert patches.is_ours(p.close) and patches.is_ours(p.rng.next) and installation.vae_route() is ctx.vae_route
    noise = p.rng.next()  # the region's seed in its box (latent columns 0-11), the main seed elsewhere
    assert noise[..., :12].eq(3).all() and noise[..., 12:].eq(7).all() and ctx.noise.initial[False] is noise
    p.rng = _Generator((4, 16, 24), [8])  # the next batch draws from a new generator
    ctx.batch_started(p)
    rngs.append(p.rng)
    if ending == "finished":
        context.end(p)  # the script's postprocess; then the WebUI closes p
    elif ending == "interrupted":
        installation.current.vae_route.log.append({"mode": "decode"})
        context.end(p)
    p.close()  # failed: postprocess never ran, only close
    assert p.closed == 1 and "close" not in vars(p)
    assert all("next" not in vars(g) for g in rngs)
    assert installation.current is None and installation.vae_route() is None
    assert installation.last_vae_log == ([{"mode": "decode"}] if ending == "interrupted" else [])
    p.close()
    assert p.closed == 2  # the host's own close, nothing of ours left


def test_a_per_call_swap_is_undone_when_the_call_raises(host):
    common = host.modules["modules.sd_samplers_common"]
    real = common.store_latent
    with pytest.raises(RuntimeError):
        with patches.swapped(common, "store_latent", print):
            assert common.store_latent is print
            raise RuntimeError
    assert common.store_latent is real


def test_a_wrapper_something_else_replaced_is_left_and_reported(host):
    installation = patches.install()
    owner = host.CFGDenoiser
    ours = owner.forward
    owner.forward = lambda self, *a: ours(self, *a)  # another extension wraps over ours
    assert patches.uninstall() == ["CFGDenoiser.forward"]
    assert not installation.applied
